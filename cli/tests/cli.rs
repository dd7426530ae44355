//! The `cifar10 eval` and `cifar10 classify` commands, run as a user would, on the
//! in-repo 1,000-image sample and a seeded model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use infer::Classifier;
use model_format::cifar::Records;

fn cifar10() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cifar10"))
}

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sample")
}

/// A fresh temporary folder holding a seeded model file.
fn model_dir(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("infer-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.safetensors");
    infer::random_weights(11).save(&model).unwrap();
    (dir, model)
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn eval_json_counts_agree_with_the_library() {
    let (dir, model) = model_dir("eval");
    let output = cifar10()
        .args(["eval", "--json", "--threads", "2", "--batch-size", "64", "--model"])
        .arg(&model)
        .arg("--data-dir")
        .arg(sample_dir())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();

    let records = Records::read_file(sample_dir().join("test_batch.bin")).unwrap();
    let classifier = Classifier::from_path(&model).unwrap();
    let predictions = classifier.classify_records(records.as_bytes()).unwrap();
    let correct = predictions.iter().enumerate().filter(|(i, p)| p.class == records.label(*i) as usize).count();

    assert_eq!(report["total"], records.len());
    assert_eq!(report["correct"], correct);
    assert_eq!(report["precision_at_1"].as_f64().unwrap(), correct as f64 / records.len() as f64);
    assert!(report["images_per_second"].as_f64().unwrap() > 0.0);
    let confusion = report["confusion"].as_array().unwrap();
    let diagonal: u64 = (0..10).map(|c| confusion[c][c].as_u64().unwrap()).sum();
    assert_eq!(diagonal as usize, correct);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_text_reports_the_exact_count() {
    let (dir, model) = model_dir("text");
    let output = cifar10().arg("eval").arg("--model").arg(&model).arg("--data-dir").arg(sample_dir()).output().unwrap();
    let text = stdout(&output);
    assert!(text.contains("/1000)"), "{text}");
    assert!(text.contains("confusion matrix"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn classify_lists_top_k_for_records_and_images() {
    let (dir, model) = model_dir("classify");
    let records = Records::read_file(sample_dir().join("test_batch.bin")).unwrap();
    let bin = dir.join("three.bin");
    std::fs::write(&bin, records.head(3).as_bytes()).unwrap();
    let png = dir.join("red.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([220, 20, 20])).save(&png).unwrap();

    let output = cifar10()
        .args(["classify", "--json", "--top", "2", "--model"])
        .arg(&model)
        .arg(&bin)
        .arg(&png)
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = stdout(&output).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "three records and one image");
    for line in &lines {
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["label"], line["label"]);
        assert!(top[0]["probability"].as_f64() >= top[1]["probability"].as_f64());
    }
    assert_eq!(lines[1]["record"], 1);
    assert_eq!(lines[1]["stored_label"], records.label(1));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_inputs_fail_with_a_message_naming_the_file() {
    let (dir, model) = model_dir("bad");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let short = dir.join("short.bin");
    std::fs::write(&short, vec![1u8; 3073 + 10]).unwrap();
    let output = cifar10().arg("classify").arg("--model").arg(&model).arg(&text).arg(&short).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("notes.txt: not a PNG or JPEG image"), "{stderr}");
    assert!(stderr.contains("short.bin: 3083 bytes is not a whole number"), "{stderr}");

    let broken = dir.join("broken.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let output =
        cifar10().arg("eval").arg("--model").arg(&broken).arg("--data-dir").arg(sample_dir()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.safetensors"), "{stderr}");

    let output = cifar10().args(["eval", "--backend", "tpu", "--model"]).arg(&model).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown backend `tpu`"));
    std::fs::remove_dir_all(dir).unwrap();
}
