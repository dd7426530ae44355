//! The int8 model's ONNX export (a QDQ graph, `model_format::onnx::quantized_model`): the
//! official checker (full check, in the project's Python environment) accepts it, and ONNX
//! Runtime running it classifies the test images within ±5 correct of our int8 engine (its
//! float steps between the quantize/dequantize pairs round differently, so the count is
//! close, not exact). The bundled int8 model is used: its engine counts are in the manifest.

use std::path::{Path, PathBuf};
use std::process::Command;

use infer::onnx::OnnxEngine;
use infer::prediction::argmax;
use infer::Engine;
use model_format::arch::{INPUT_LEN, NUM_CLASSES};
use model_format::cifar::{Dataset, Records};
use model_format::onnx::{quantized_model, quantized_to_bytes};
use model_format::preprocess::preprocess;
use model_format::{Model, QuantizedWeights};
use serde_json::Value;

/// Most correct answers by which ONNX Runtime may differ from our int8 engine (issue 16).
const COUNT_TOLERANCE: i64 = 5;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn int8_model() -> QuantizedWeights {
    QuantizedWeights::load(repo("models/cifar10-int8.safetensors")).unwrap_or_else(|e| panic!("{e}"))
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("models/cifar10.manifest.json")).unwrap()).unwrap()
}

/// ONNX Runtime's correct answers on `records` with the exported int8 graph.
fn onnx_correct(records: &Records) -> i64 {
    let engine = OnnxEngine::from_model(&Model::Int8(int8_model()), 2).unwrap();
    let mut correct = 0;
    let mut input = vec![0f32; 500 * INPUT_LEN];
    let mut logits = vec![0f32; 500 * NUM_CLASSES];
    for start in (0..records.len()).step_by(500) {
        let n = 500.min(records.len() - start);
        for (i, x) in input.chunks_exact_mut(INPUT_LEN).take(n).enumerate() {
            preprocess(records.image(start + i), x);
        }
        engine.logits_flat(&input[..n * INPUT_LEN], n, &mut logits[..n * NUM_CLASSES]).unwrap();
        let right = logits.chunks_exact(NUM_CLASSES).take(n).enumerate();
        correct += right.filter(|(i, l)| argmax(l) == records.label(start + i) as usize).count() as i64;
    }
    correct
}

fn check_count(set: &str, records: &Records) {
    let ours = manifest()["int8"]["results"][set]["correct"]["cpu"].as_i64().expect("int8 count in the manifest");
    let theirs = onnx_correct(records);
    eprintln!("{set}: ONNX Runtime on the int8 QDQ graph {theirs}/{}, our int8 engine {ours}", records.len());
    assert!((theirs - ours).abs() <= COUNT_TOLERANCE, "{set}: ONNX Runtime {theirs} vs ours {ours}");
}

#[test]
fn onnx_runtime_counts_the_sample_within_five_of_our_int8_engine() {
    check_count("sample", &Records::read_file(repo("data/sample/test_batch.bin")).unwrap());
}

#[test]
fn onnx_runtime_counts_the_full_test_set_within_five_of_our_int8_engine() {
    match Dataset::locate(None).and_then(|d| d.test()) {
        Ok(records) => check_count("full_test_set", &records),
        Err(e) if std::env::var_os("CI").is_some_and(|v| v == "true") => panic!("CI=true needs the test set: {e}"),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "onnx_int8: full test set NOT RUN: {e}");
        }
    }
}

#[test]
fn the_checker_accepts_the_qdq_graph() {
    let python = repo(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let path = std::env::temp_dir().join(format!("int8-{}.onnx", std::process::id()));
    std::fs::write(&path, quantized_to_bytes(&int8_model())).unwrap();
    let script = "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print('ok')";
    let out = Command::new(python).args(["-c", script]).arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success(), "onnx.checker refused the int8 graph:\n{}", String::from_utf8_lossy(&out.stderr));
    let graph = quantized_model(&int8_model()).graph.unwrap();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    // One QuantizeLinear per layer input; a DequantizeLinear per input and per weight.
    assert_eq!((count("QuantizeLinear"), count("DequantizeLinear")), (5, 10));
}
