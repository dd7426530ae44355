//! Writes `models/cifar10.manifest.json` for a trained model: how it was trained (from the
//! flags) and, for each backend, the exact number of correct images on the full test set
//! and on the in-repo sample. `tests/bundled_model.rs` checks the same figures in CI.
//!
//! ```text
//! cargo run --release --example bundle_model -- MODEL COMMAND SEED WALL_SECONDS MACHINE
//! ```

#[path = "../tests/bundled_support/mod.rs"]
mod bundled_support;

use bundled_support::{correct, logits, preprocessed, repo_path, BACKENDS, MANIFEST, SAMPLE};
use model_format::cifar::{Dataset, Records};
use model_format::Weights;
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
