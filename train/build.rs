//! Gives the trainer's binaries and tests an rpath to libtorch (torch-sys's own rpath does
//! not reach downstream binaries), and keeps libtorch_cuda linked even though no symbol of
//! it is referenced directly, so that CUDA devices are visible (tch issue #980).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-changed=build.rs");
}
