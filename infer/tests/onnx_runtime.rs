//! The ONNX Runtime backend against the pure-Rust engine: the exported graph computes the
//! same logits on the test set, a file round trip changes nothing, and bad files, bad
//! inputs and a missing ONNX Runtime library give errors that say what is wrong.

use std::path::PathBuf;

use infer::cpu::CpuEngine;
use infer::onnx::OnnxEngine;
use infer::{Engine, InferError};
use model_format::arch::{INPUT_LEN, NUM_CLASSES, SOFTMAX_WEIGHT};
use model_format::cifar::{Dataset, Records};
use model_format::onnx::proto::{
    tensor_shape_proto::{dimension::Value as Dim, Dimension},
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use model_format::preprocess::preprocess;
use model_format::Weights;

/// Largest difference allowed between ONNX Runtime's logits and the ndarray engine's.
const TOLERANCE: f32 = 1e-4;

/// Tutorial-initialised weights whose final layer is scaled up so that the logits spread
/// over a few units, as a trained model's do: with the initial 1/192 deviation they are
/// all within a few hundredths and the argmax comparison would hinge on rounding.
fn weights() -> Weights {
    let base = infer::random_weights(8);
    let named = base.iter().enumerate().map(|(id, (spec, values))| {
        let scale = if id == SOFTMAX_WEIGHT { 100.0 } else { 1.0 };
        (spec.name, values.iter().map(|v| v * scale).collect::<Vec<f32>>())
    });
    Weights::from_named(named, base.metadata.clone()).unwrap()
}

/// The full test set when the data folder is there (`CIFAR10_DATA_DIR`, which the test command
/// sets), else the 1,000-record sample; under CI the full set is required.
fn test_records() -> Records {
    match Dataset::locate(None).and_then(|data| data.test()) {
        Ok(records) => records,
        Err(why) if std::env::var_os("CI").is_some_and(|v| v == "true") => {
            panic!("CI=true needs the full CIFAR-10 test set: {why}")
        }
        Err(why) => {
            eprintln!("using data/sample ({why})");
            Records::read_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/sample/test_batch.bin")).unwrap()
        }
    }
}

fn preprocessed(records: &Records) -> Vec<f32> {
    let mut inputs = vec![0f32; records.len() * INPUT_LEN];
    for (i, input) in inputs.chunks_exact_mut(INPUT_LEN).enumerate() {
        preprocess(records.image(i), input);
    }
    inputs
}

fn all_logits(engine: &dyn Engine, inputs: &[f32], batch: usize) -> Vec<f32> {
    let count = inputs.len() / INPUT_LEN;
    let mut logits = vec![0f32; count * NUM_CLASSES];
    for (input, out) in inputs.chunks(batch * INPUT_LEN).zip(logits.chunks_mut(batch * NUM_CLASSES)) {
        engine.logits_flat(input, input.len() / INPUT_LEN, out).unwrap();
    }
    logits
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onnx-runtime-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn onnx_runtime_matches_the_cpu_on_the_test_set() {
    let weights = weights();
    let inputs = preprocessed(&test_records());
    let ours = all_logits(&CpuEngine::new(&weights, 2).unwrap(), &inputs, 250);
    let ort = all_logits(&OnnxEngine::from_weights(&weights, 2).unwrap(), &inputs, 250);

    let mut worst = (0.0f32, 0);
    for (i, (a, b)) in ours.iter().zip(&ort).enumerate() {
        let diff = (a - b).abs();
        if diff > worst.0 || diff.is_nan() {
            worst = (diff, i);
        }
    }
    let (diff, at) = worst;
    assert!(diff <= TOLERANCE, "logit {} of image {} differs by {diff}", at % NUM_CLASSES, at / NUM_CLASSES);

    let ours_rows: Vec<&[f32]> = ours.chunks(NUM_CLASSES).collect();
    let mismatched = ours_rows.iter().zip(ort.chunks(NUM_CLASSES)).filter(|(a, b)| argmax(a) != argmax(b)).count();
    assert_eq!(mismatched, 0, "images whose predicted class differs");

    // The comparison means something only if the logits are spread and the predictions vary.
    let spread: f32 =
        ours_rows.iter().map(|row| row[argmax(row)] - row.iter().cloned().fold(f32::INFINITY, f32::min)).sum();
    assert!(spread / ours_rows.len() as f32 > 0.5, "logits are nearly equal");
    let classes: std::collections::BTreeSet<usize> = ours_rows.iter().map(|row| argmax(row)).collect();
    assert!(classes.len() >= 3, "every image gets one of {classes:?}");
}

#[test]
fn an_exported_file_loads_and_runs_like_the_in_memory_export() {
    let weights = weights();
    let dir = temp_dir("round-trip");
    let path = dir.join("model.onnx");
    model_format::onnx::save(&weights, &path).unwrap();

    let records = test_records().head(37);
    let inputs = preprocessed(&records);
    let from_file = OnnxEngine::from_file(&path, 1).unwrap();
    let in_memory = OnnxEngine::from_weights(&weights, 1).unwrap();
    assert_eq!(from_file.name(), "onnx");
    // Same graph, same threads: the same bits, for any batch size (the batch is dynamic).
    let a = all_logits(&from_file, &inputs, 37);
    assert_eq!(a, all_logits(&in_memory, &inputs, 37));
    assert_eq!(a, all_logits(&from_file, &inputs, 37), "a second run gives other bits");
    let singles = all_logits(&from_file, &inputs, 1);
    let ours = all_logits(&CpuEngine::new(&weights, 1).unwrap(), &inputs, 37);
    for ((x, y), z) in a.iter().zip(&singles).zip(&ours) {
        assert!((x - y).abs() <= TOLERANCE && (x - z).abs() <= TOLERANCE, "{x} {y} {z}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_engine_can_be_shared_between_threads() {
    let engine = std::sync::Arc::new(OnnxEngine::from_weights(&weights(), 1).unwrap());
    let inputs = preprocessed(&test_records().head(8));
    let expected = all_logits(engine.as_ref(), &inputs, 8);
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (engine, inputs) = (engine.clone(), inputs.clone());
            std::thread::spawn(move || all_logits(engine.as_ref(), &inputs, 8))
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), expected);
    }
}

#[test]
fn bad_slices_and_empty_batches_are_errors() {
    let engine = OnnxEngine::from_weights(&weights(), 1).unwrap();
    let input = vec![0f32; 2 * INPUT_LEN];
    let mut logits = vec![0f32; 2 * NUM_CLASSES];
    assert!(matches!(engine.logits_flat(&[], 0, &mut []), Err(InferError::EmptyBatch)));
    let err = engine.logits_flat(&input[1..], 2, &mut logits).unwrap_err();
    assert!(matches!(err, InferError::Length { what: "input", .. }), "{err}");
    let err = engine.logits_flat(&input, 2, &mut logits[1..]).unwrap_err();
    assert!(matches!(err, InferError::Length { what: "logits", .. }), "{err}");
}

#[test]
fn broken_and_missing_files_are_named_in_the_error() {
    let dir = temp_dir("broken");
    let bytes = model_format::onnx::to_bytes(&weights());
    let cases: [(&str, Vec<u8>); 3] = [
        ("truncated.onnx", bytes[..bytes.len() / 2].to_vec()),
        ("garbage.onnx", (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ("empty.onnx", Vec::new()),
    ];
    for (name, content) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let err = OnnxEngine::from_file(&path, 1).unwrap_err().to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
    let err = OnnxEngine::from_file(dir.join("absent.onnx"), 1).unwrap_err().to_string();
    assert!(err.contains("absent.onnx") && err.contains("No such file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A valid ONNX model that is not ours: `y = Relu(x)` on `[N, 1, 28, 28]`.
fn foreign_model() -> ModelProto {
    let value = |name: &str| {
        let dims = [Dim::DimParam("N".into()), Dim::DimValue(1), Dim::DimValue(28), Dim::DimValue(28)];
        let shape = TensorShapeProto { dim: dims.into_iter().map(|d| Dimension { value: Some(d) }).collect() };
        let tensor = type_proto::Tensor { elem_type: 1, shape: Some(shape) };
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)) }),
            ..Default::default()
        }
    };
    ModelProto {
        ir_version: model_format::onnx::IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: model_format::onnx::OPSET_VERSION }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                input: vec!["x".into()],
                output: vec!["y".into()],
                name: "relu".into(),
                op_type: "Relu".into(),
                ..Default::default()
            }],
            name: "mnist_like".into(),
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_foreign_model_is_refused_with_what_differs() {
    let dir = temp_dir("foreign");
    let path = dir.join("mnist.onnx");
    std::fs::write(&path, model_format::onnx::encode(&foreign_model())).unwrap();
    let err = OnnxEngine::from_file(&path, 1).unwrap_err().to_string();
    assert!(err.contains("mnist.onnx") && err.contains("not a CIFAR-10 tutorial model"), "{err}");
    assert!(err.contains("input `x` has shape [-1, 1, 28, 28]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// ONNX Runtime can be loaded once per process, so the missing-library case runs in a
/// child process: this test binary again, with only this test and a bad `ORT_DYLIB_PATH`.
#[test]
fn a_missing_onnx_runtime_library_is_a_clear_error() {
    const CHILD: &str = "ONNX_RUNTIME_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let err = OnnxEngine::from_weights(&weights(), 1).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
        assert!(err.contains("ORT_DYLIB_PATH") && err.contains("scripts/setup.sh"), "{err}");
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_missing_onnx_runtime_library_is_a_clear_error", "--test-threads", "1"])
        .env(CHILD, "1")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "the child process failed:\n{stdout}{}", String::from_utf8_lossy(&child.stderr));
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
}
