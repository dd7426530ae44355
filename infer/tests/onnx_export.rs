//! The exported ONNX file judged by the tools in the project's Python environment
//! (`scripts/setup.sh` installs them): the official checker with full shape inference, and
//! ONNX Runtime's own Python binding loading the file from disk.
//!
//! (The `onnx` package's `ReferenceEvaluator` is not used: in onnx 1.20 its LRN sums over
//! the wrong axis whenever batch ≠ channels, onnx/onnx#7805.)

use std::path::{Path, PathBuf};
use std::process::Command;

use infer::cpu::CpuEngine;
use infer::Engine;
use model_format::arch::{INPUT_LEN, NUM_CLASSES, SOFTMAX_WEIGHT};
use model_format::cifar::Records;
use model_format::onnx::{BATCH_DIM, INPUT_NAME, IR_VERSION, LOGITS_NAME, OPSET_VERSION, PROBABILITIES_NAME};
use model_format::preprocess::preprocess;
use model_format::Weights;
use serde_json::{json, Value};

/// Largest difference allowed between another runtime's logits and the ndarray engine's.
const TOLERANCE: f32 = 1e-4;

/// Loads the model, runs the checker, evaluates a batch with ONNX Runtime and reports
/// everything as JSON.
const SCRIPT: &str = r#"
import json, sys
import numpy as np
import onnx
import onnxruntime

model_path, input_path, report_path = sys.argv[1:4]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
x = np.fromfile(input_path, dtype="<f4").reshape(-1, 3, 24, 24)
session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
ort_logits, ort_probabilities = session.run(["logits", "probabilities"], {"input": x})

def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

report = {
    "ir_version": model.ir_version,
    "opset": [[o.domain, o.version] for o in model.opset_import],
    "doc_string": model.doc_string,
    "inputs": [[v.name, dims(v)] for v in model.graph.input],
    "outputs": [[v.name, dims(v)] for v in model.graph.output],
    "metadata": {p.key: p.value for p in model.metadata_props},
    "onnxruntime": {"logits": ort_logits.tolist(), "probabilities": ort_probabilities.tolist()},
}
with open(report_path, "w") as f:
    json.dump(report, f)
"#;

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    python
}

/// Tutorial-initialised weights with a scaled-up final layer, so that the logits spread
/// over a few units as a trained model's do.
fn weights() -> Weights {
    let base = infer::random_weights(11);
    let named = base.iter().enumerate().map(|(id, (spec, values))| {
        let scale = if id == SOFTMAX_WEIGHT { 100.0 } else { 1.0 };
        (spec.name, values.iter().map(|v| v * scale).collect::<Vec<f32>>())
    });
    Weights::from_named(named, base.metadata.clone()).unwrap()
}

fn sample_inputs(count: usize) -> Vec<f32> {
    let records =
        Records::read_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/sample/test_batch.bin")).unwrap().head(count);
    let mut inputs = vec![0f32; count * INPUT_LEN];
    for (i, input) in inputs.chunks_exact_mut(INPUT_LEN).enumerate() {
        preprocess(records.image(i), input);
    }
    inputs
}

/// Exports `weights`, runs the Python tools on `inputs` and returns their report.
fn python_report(weights: &Weights, inputs: &[f32]) -> Value {
    let dir = std::env::temp_dir().join(format!("onnx-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (model, input, report) = (dir.join("model.onnx"), dir.join("input.f32"), dir.join("report.json"));
    model_format::onnx::save(weights, &model).unwrap();
    std::fs::write(&input, inputs.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let out = Command::new(python()).arg("-c").arg(SCRIPT).args([&model, &input, &report]).output().unwrap();
    assert!(out.status.success(), "the ONNX tools refused the export:\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    report
}

fn matrix(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

fn assert_close(what: &str, found: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(found.len(), expected.len(), "{what}");
    for (i, (a, b)) in found.iter().zip(expected).enumerate() {
        assert!((a - b).abs() <= tolerance, "{what}[{i}]: {a} vs {b}");
    }
}

#[test]
fn the_checker_accepts_the_export_and_python_onnx_runtime_agrees_with_our_engine() {
    let weights = weights();
    let batch = 3;
    let inputs = sample_inputs(batch);
    let report = python_report(&weights, &inputs);

    assert_eq!(report["ir_version"], json!(IR_VERSION));
    assert_eq!(report["opset"], json!([["", OPSET_VERSION]]));
    assert_eq!(report["inputs"], json!([[INPUT_NAME, [BATCH_DIM, 3, 24, 24]]]));
    assert_eq!(
        report["outputs"],
        json!([[LOGITS_NAME, [BATCH_DIM, NUM_CLASSES]], [PROBABILITIES_NAME, [BATCH_DIM, NUM_CLASSES]]])
    );
    let doc = report["doc_string"].as_str().unwrap();
    assert!(doc.contains("float32 [N,3,24,24]") && doc.contains("does NOT include the standardization"), "{doc}");
    assert_eq!(report["metadata"]["weights_digest"], json!(weights.digest()));

    let mut ours = vec![0f32; batch * NUM_CLASSES];
    CpuEngine::new(&weights, 1).unwrap().logits_flat(&inputs, batch, &mut ours).unwrap();
    let expected_probabilities: Vec<f32> = ours.chunks(NUM_CLASSES).flat_map(softmax).collect();
    assert_close("logits", &matrix(&report["onnxruntime"]["logits"]), &ours, TOLERANCE);
    assert_close("probabilities", &matrix(&report["onnxruntime"]["probabilities"]), &expected_probabilities, 1e-5);
}
