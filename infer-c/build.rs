//! Gives `libcifar10.so` a soname, as C libraries have (and as `cargo-c` names them):
//! `libcifar10.so.0.<minor>` while the version is 0.x (a new minor version may break the
//! ABI), `libcifar10.so.<major>` after. A program linked against it records that name, so
//! an installed `libcifar10.so.0.1` can sit beside a later, incompatible one.
fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap();
    let soname = if major == "0" { format!("libcifar10.so.0.{minor}") } else { format!("libcifar10.so.{major}") };
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    println!("cargo:rustc-env=CIFAR10_SONAME={soname}");
}
