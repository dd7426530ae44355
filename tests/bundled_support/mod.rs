//! Shared by `tests/bundled_model.rs`, `tests/engine_vs_tch.rs`, `tests/short_training.rs`
//! and `examples/bundle_model.rs`: the logits of every backend on a set of test records, the
//! counts the manifest records, the check that a manifest belongs to a model, and the notices
//! a test prints when it falls back to other data.

#![allow(dead_code)]

use infer::cpu::CpuEngine;
use infer::onnx::OnnxEngine;
use infer::prediction::argmax;
use infer::Engine;
use model_format::arch::{INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE, NUM_CLASSES};
use model_format::cifar::{Dataset, Records};
use model_format::preprocess::preprocess;
use model_format::{QuantizedWeights, Weights};
use serde_json::Value;
use tch::{Device, Kind, Tensor};
use train::model::Net;

/// Backends whose counts the manifest records, in manifest order.
pub const BACKENDS: [&str; 3] = ["cpu", "onnx", "tch"];
/// Images per engine call.
const BATCH: usize = 500;

/// The committed model and its manifest, relative to the repository root.
pub const MODEL: &str = "models/cifar10.safetensors";
pub const MANIFEST: &str = "models/cifar10.manifest.json";
/// The int8 model quantized from [`MODEL`] by `examples/bundle_model.rs`; its counts are
/// the manifest's `int8` section.
pub const INT8_MODEL: &str = "models/cifar10-int8.safetensors";
/// Backends whose int8 counts the manifest records (the int8 graph runs in ONNX Runtime too,
/// but its float steps round differently: its count is within a few images, not exact).
pub const INT8_BACKENDS: [&str; 1] = ["cpu"];
/// Training images the bundled int8 model is calibrated on: the first 1,000 of `data_batch_1.bin`.
pub const CALIBRATION_IMAGES: usize = model_format::quantize::DEFAULT_CALIBRATION_IMAGES;
/// Largest int8 model file accepted (issue 16: at most 1.2 MB).
pub const MAX_INT8_BYTES: u64 = 1_200_000;

/// The in-repo sample of the test set.
pub const SAMPLE: &str = "data/sample/test_batch.bin";

pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Writes `line` where `cargo test` shows it, also for a test that passes: libtest captures
/// what the `print!`/`eprint!` macros write, but not writes to the stderr handle itself, so
/// the line appears in the test command's output without `--nocapture`.
pub fn shown(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// True under CI (`CI=true`, as GitHub Actions and most CI services set it): there, data
/// that is missing or unknown fails a test instead of narrowing it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The in-repo sample of the test set.
pub fn sample() -> Records {
    Records::read_file(repo_path(SAMPLE)).unwrap_or_else(|e| panic!("{e}"))
}

/// Every record preprocessed for evaluation, back to back.
pub fn preprocessed(records: &Records) -> Vec<f32> {
    let mut inputs = vec![0f32; records.len() * INPUT_LEN];
    for (i, input) in inputs.chunks_exact_mut(INPUT_LEN).enumerate() {
        preprocess(records.image(i), input);
    }
    inputs
}

/// The logits of `backend` (one of [`BACKENDS`]) for `inputs`, `[n, 10]` flat.
pub fn logits(backend: &str, weights: &Weights, inputs: &[f32]) -> Vec<f32> {
    let n = inputs.len() / INPUT_LEN;
    let mut out = vec![0f32; n * NUM_CLASSES];
    match backend {
        "cpu" => run_engine(&CpuEngine::new(weights, 2).expect("cpu engine"), inputs, &mut out),
        "onnx" => run_engine(&OnnxEngine::from_weights(weights, 2).expect("ONNX Runtime engine"), inputs, &mut out),
        "tch" => {
            tch::set_num_threads(2);
            let net = Net::from_weights(weights, Device::Cpu).expect("tch net");
            for (input, logits) in inputs.chunks(BATCH * INPUT_LEN).zip(out.chunks_mut(BATCH * NUM_CLASSES)) {
                let batch = (input.len() / INPUT_LEN) as i64;
                let xs = Tensor::from_slice(input).view([
                    batch,
                    INPUT_CHANNELS as i64,
                    INPUT_SIZE as i64,
                    INPUT_SIZE as i64,
                ]);
                let ys = tch::no_grad(|| net.forward(&xs)).to_kind(Kind::Float).contiguous().view([-1]);
                logits.copy_from_slice(&Vec::<f32>::try_from(ys).expect("f32 logits"));
            }
        }
        other => panic!("unknown backend {other}"),
    }
    out
}

/// The int8 model's logits with `backend` (one of [`INT8_BACKENDS`]) for `inputs`, `[n, 10]` flat.
pub fn int8_logits(backend: &str, model: &QuantizedWeights, inputs: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; inputs.len() / INPUT_LEN * NUM_CLASSES];
    match backend {
        "cpu" => run_engine(&CpuEngine::new_int8(model, 2).expect("int8 cpu engine"), inputs, &mut out),
        other => panic!("unknown int8 backend {other}"),
    }
    out
}

/// Quantizes `weights` as the bundled int8 model is made: calibrated on the first
/// [`CALIBRATION_IMAGES`] training images of `dataset`.
pub fn quantize_bundled(weights: &Weights, dataset: &Dataset) -> Result<QuantizedWeights, Box<dyn std::error::Error>> {
    let (images, description) = model_format::quantize::calibration_images(dataset, CALIBRATION_IMAGES)?;
    Ok(model_format::quantize::quantize(weights, &images, &description)?)
}

fn run_engine(engine: &dyn Engine, inputs: &[f32], out: &mut [f32]) {
    for (input, logits) in inputs.chunks(BATCH * INPUT_LEN).zip(out.chunks_mut(BATCH * NUM_CLASSES)) {
        engine.logits_flat(input, input.len() / INPUT_LEN, logits).expect("engine runs");
    }
}

/// Test images whose top logit is the true label.
pub fn correct(logits: &[f32], records: &Records) -> usize {
    logits.chunks_exact(NUM_CLASSES).enumerate().filter(|(i, l)| argmax(l) == records.label(*i) as usize).count()
}

/// Checks that `manifest` describes `weights`: same digest, step and dataset fingerprint.
pub fn check_manifest(manifest: &Value, weights: &Weights) -> Result<(), String> {
    let field = |path: &str| -> Result<&Value, String> {
        path.split('.').try_fold(manifest, |v, key| v.get(key).ok_or_else(|| format!("manifest lacks `{path}`")))
    };
    let digest = field("weights_digest")?.as_str().unwrap_or_default();
    if digest != weights.digest() {
        return Err(format!("manifest weights_digest {digest} is not the model's {}", weights.digest()));
    }
    let steps = field("training.steps")?.as_u64();
    if steps != weights.metadata.step {
        return Err(format!("manifest training.steps {steps:?} is not the model's step {:?}", weights.metadata.step));
    }
    let fingerprint = field("dataset.fingerprint")?.as_str();
    if fingerprint != weights.metadata.dataset_fingerprint.as_deref() {
        return Err(format!(
            "manifest dataset.fingerprint {fingerprint:?} is not the model's {:?}",
            weights.metadata.dataset_fingerprint
        ));
    }
    for set in ["full_test_set", "sample"] {
        for backend in BACKENDS {
            field(&format!("results.{set}.correct.{backend}"))?
                .as_u64()
                .ok_or_else(|| format!("manifest results.{set}.correct.{backend} is not a count"))?;
        }
    }
    Ok(())
}

/// The two largest logits of one image.
pub fn top_two(logits: &[f32]) -> (f32, f32) {
    let mut sorted = logits.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    (sorted[0], sorted[1])
}
