//! Compiles the C++ shim (csrc/shim.cpp) against the headers of the libtorch that torch-sys
//! links (the wheel's), with Gloo's headers from the system (Debian's libgloo-dev: the wheel
//! does not ship them; the implementation used is the one inside libtorch_cpu.so).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys tells where libtorch is"));
    let root = lib.parent().expect("libtorch's lib folder has a parent").to_path_buf();
    let include = root.join("include");
    if !std::path::Path::new("/usr/include/gloo/config.h").exists() {
        panic!("gloo's headers are missing (/usr/include/gloo): run scripts/setup.sh, or apt-get install libgloo-dev");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .define("USE_C10D_GLOO", None)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag_if_supported("-w")
        .file("csrc/shim.cpp")
        .compile("c10d_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
