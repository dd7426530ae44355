//! The root package's tests, benchmarks and examples link libtorch through `train`; torch-sys's rpath
//! does not reach them, so point them at `$LIBTORCH/lib` (set by `.cargo/config.toml`).
fn main() {
    if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-link-arg-benches=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-link-arg-examples=-Wl,-rpath,{}", lib.display());
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
}
