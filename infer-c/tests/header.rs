//! The committed header `include/cifar10.h` must be what cbindgen generates from the
//! sources today. `CIFAR10_UPDATE_HEADER=1 cargo test -p cifar10-c --test header`
//! rewrites it.

use std::path::Path;

#[test]
fn committed_header_is_what_cbindgen_generates() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("infer-c/cbindgen.toml");
    // From the source files alone (no `cargo metadata`): the crate has no exported items
    // outside its own modules.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("cbindgen writes UTF-8");

    let path = crate_dir.join("include/cifar10.h");
    if std::env::var_os("CIFAR10_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/cifar10.h");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `CIFAR10_UPDATE_HEADER=1 cargo test -p cifar10-c --test header` and commit it",
        path.display()
    );
    for name in ["cifar10_open_path", "cifar10_classify", "cifar10_top_k", "cifar10_logits", "cifar10_last_error"] {
        assert!(generated.contains(&format!("{name}(")), "{name} missing from the header");
    }
}
