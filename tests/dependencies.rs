//! The edge build of the engine: with `default-features = false`, `infer` depends on
//! ndarray, matrixmultiply, safetensors and model-format only, and `model-format` pulls
//! nothing beyond safetensors' own needs; neither links libtorch or ONNX Runtime.

use std::collections::BTreeSet;
use std::process::Command;

fn direct_dependencies(package: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", package, "-e", "normal", "--depth", "1", "--prefix", "none"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

fn all_dependencies(package: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", package, "-e", "normal", "--prefix", "none"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn the_engine_without_default_features_pulls_only_the_chosen_crates() {
    let direct = direct_dependencies("infer", &["--no-default-features"]);
    let expected: BTreeSet<String> =
        ["matrixmultiply", "model-format", "ndarray", "safetensors"].iter().map(|s| s.to_string()).collect();
    assert_eq!(direct, expected);
    let all = all_dependencies("infer", &["--no-default-features"]);
    for native in ["torch-sys", "tch", "ort", "ort-sys", "cc", "openssl-sys", "ring"] {
        assert!(!all.contains(native), "the edge build pulls {native}");
    }
}

#[test]
fn model_format_stays_lean() {
    let direct = direct_dependencies("model-format", &[]);
    let expected: BTreeSet<String> = ["safetensors", "serde_json"].iter().map(|s| s.to_string()).collect();
    assert_eq!(direct, expected);
}
