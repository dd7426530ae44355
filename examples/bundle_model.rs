//! Writes `models/cifar10.manifest.json` for a trained model: how it was trained (from the
//! flags) and, for each backend, the exact number of correct images on the full test set
//! and on the in-repo sample. It also (re)quantizes the model into
//! `models/cifar10-int8.safetensors` (calibrated on the first 1,000 images of
//! `data_batch_1.bin`) and records the int8 model's counts in the manifest's `int8` section.
//! `tests/bundled_model.rs` checks the same figures in CI.
//!
//! ```text
//! cargo run --release --example bundle_model -- MODEL COMMAND SEED WALL_SECONDS MACHINE
//! ```

#[path = "../tests/bundled_support/mod.rs"]
mod bundled_support;

use bundled_support::{
    correct, int8_logits, logits, preprocessed, quantize_bundled, repo_path, BACKENDS, CALIBRATION_IMAGES,
    INT8_BACKENDS, INT8_MODEL, MANIFEST, SAMPLE,
};
use model_format::cifar::{Dataset, Records};
use model_format::{QuantizedWeights, Weights};
use serde_json::{json, Map, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, command, seed, wall_seconds, machine] = args.as_slice() else {
        return Err("usage: bundle_model MODEL COMMAND SEED WALL_SECONDS MACHINE".into());
    };
    let weights = Weights::load(model)?;
    let data = Dataset::locate(None)?;
    let full = data.test()?;
    let sample = Records::read_file(repo_path(SAMPLE))?;
    let start = std::time::Instant::now();
    let int8 = quantize_bundled(&weights, &data)?;
    let quantize_seconds = start.elapsed().as_secs_f64();
    int8.save(repo_path(INT8_MODEL))?;
    eprintln!("quantized {model} into {INT8_MODEL} in {quantize_seconds:.1} s");
    let manifest = json!({
        "model": "cifar10.safetensors",
        "weights_digest": weights.digest(),
        "training": {
            "command": command,
            "seed": seed.parse::<u64>()?,
            "steps": weights.metadata.step,
            "batch_size": 128,
            "wall_time_seconds": wall_seconds.parse::<f64>()?,
            "machine": machine,
        },
        "dataset": {
            "name": "CIFAR-10 (JPEG-rebuilt copy, ../shared/cifar10)",
            "fingerprint": weights.metadata.dataset_fingerprint,
            "test_set_fingerprint": full.fingerprint(),
            "sample_fingerprint": sample.fingerprint(),
        },
        "results": {
            "full_test_set": counts(&weights, &full),
            "sample": counts(&weights, &sample),
        },
        "int8": {
            "model": "cifar10-int8.safetensors",
            "weights_digest": int8.digest(),
            "file_bytes": std::fs::metadata(repo_path(INT8_MODEL))?.len(),
            "calibration_images": CALIBRATION_IMAGES,
            "calibration": int8.metadata.extra.get(model_format::quantize::CALIBRATION_FIELD),
            "results": {
                "full_test_set": int8_counts(&int8, &full),
                "sample": int8_counts(&int8, &sample),
            },
        },
    });
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    model_format::atomic::write_file(&repo_path(MANIFEST), text.as_bytes())?;
    print!("{text}");
    Ok(())
}

fn counts(weights: &Weights, records: &Records) -> Value {
    let inputs = preprocessed(records);
    let correct: Map<String, Value> =
        BACKENDS.iter().map(|b| (b.to_string(), json!(correct(&logits(b, weights, &inputs), records)))).collect();
    json!({ "total": records.len(), "correct": correct })
}

fn int8_counts(int8: &QuantizedWeights, records: &Records) -> Value {
    let inputs = preprocessed(records);
    let correct: Map<String, Value> = INT8_BACKENDS
        .iter()
        .map(|b| (b.to_string(), json!(correct(&int8_logits(b, int8, &inputs), records))))
        .collect();
    json!({ "total": records.len(), "correct": correct })
}
