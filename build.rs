//! The root package's tests, benchmarks and examples link libtorch through `train`; torch-sys's rpath
//! does not reach them, so point them at `$LIBTORCH/lib` (set by `.cargo/config.toml`).
fn main() {
    if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-link-arg-benches=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-link-arg-examples=-Wl,-rpath,{}", lib.display());
    }
    // The platform this build is for: tests/dependencies.rs asks cargo about this platform
    // only, since a fresh machine's cargo cache holds just the crates a build here downloads.
    println!("cargo:rustc-env=CIFAR10_BUILD_TARGET={}", std::env::var("TARGET").expect("cargo sets TARGET"));
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
}
