//! `cifar10 quantize` and the int8 model in `cifar10 eval`, run as a user would: the bundled
//! int8 model gets its manifest count on the in-repo sample with either backend, and the
//! quantizer is deterministic and refuses bad flags and outputs, naming them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cifar10() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cifar10"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn eval_of_the_bundled_int8_model_gets_its_manifest_count() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("models/cifar10.manifest.json")).unwrap()).unwrap();
    let expected = manifest["int8"]["results"]["sample"]["correct"]["cpu"].as_i64().unwrap();
    let eval = |backend: &str| {
        let output = cifar10()
            .args(["eval", "--json", "--threads", "2", "--backend", backend, "--model"])
            .arg(repo("models/cifar10-int8.safetensors"))
            .arg("--data-dir")
            .arg(repo("data/sample"))
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        report["correct"].as_i64().unwrap()
    };
    assert_eq!(eval("cpu"), expected);
    let onnx = eval("onnx");
    assert!((onnx - expected).abs() <= 5, "ONNX Runtime on the int8 graph: {onnx}, ours {expected}");
}

#[test]
fn quantize_is_deterministic_and_refuses_bad_flags_and_outputs() {
    let dir = std::env::temp_dir().join(format!("cifar10-quantize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Twenty records standing in for a training batch.
    let sample = std::fs::read(repo("data/sample/test_batch.bin")).unwrap();
    std::fs::write(dir.join("data_batch_1.bin"), &sample[..20 * 3073]).unwrap();
    let model = dir.join("model.safetensors");
    infer::random_weights(3).save(&model).unwrap();
    let quantize = |out: &Path, images: &str| {
        cifar10()
            .args(["quantize", "--calibration-images", images, "--model"])
            .arg(&model)
            .arg("--out")
            .arg(out)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    assert!(stdout(&quantize(&a, "20")).contains("20 of data_batch_1.bin"));
    stdout(&quantize(&b, "20"));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same input, same bytes");
    assert!(model_format::Model::load(&a).unwrap().variant() == "int8");
    let again = cifar10().args(["quantize", "--model"]).arg(&a).arg("--out").arg(&b).output().unwrap();
    assert!(stderr(&again).contains("already an int8 model; quantize takes a float32 one"), "{again:?}");

    let before = std::fs::read(&model).unwrap();
    assert!(stderr(&quantize(&model, "20")).contains("same file as the input"));
    assert_eq!(std::fs::read(&model).unwrap(), before, "the float model is untouched");
    assert!(stderr(&quantize(&dir, "20")).contains("not a regular file"));
    assert!(stderr(&quantize(&a, "0")).contains("--calibration-images 0: expected 1 to"));
    // Only twenty training images exist here.
    assert!(stderr(&quantize(&a, "21")).contains("data_batch_2.bin"));
    std::fs::remove_dir_all(dir).unwrap();
}
