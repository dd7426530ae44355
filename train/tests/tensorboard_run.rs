//! The trainer's own TensorBoard output, read back by TensorBoard's reader
//! (`EventAccumulator`, from the `tensorboard` package that scripts/setup.sh installs in
//! `.venv`): a short run on the in-repo sample with two towers writes the loss, learning rate,
//! precision and histogram tags the tutorial logs, with plausible values at the expected steps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use model_format::cifar::Records;
use serde_json::Value;
use tch::Device;
use train::trainer::{train, TrainConfig};

const BATCH: usize = 8;
const TOWERS: usize = 2;
const LEARNING_RATE: f64 = 0.05;

/// Prints `{"scalars": {tag: [[step, value]]}, "histograms": {tag: [[step, num, min, max]]},
/// "images": {tag: [[step, width, height]]}}` for every event file of a folder.
const READ_BACK_PY: &str = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0})
acc.Reload()
tags = acc.Tags()
print(json.dumps({
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
    "histograms": {t: [[e.step, e.histogram_value.num, e.histogram_value.min, e.histogram_value.max]
                       for e in acc.Histograms(t)] for t in tags["histograms"]},
    "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)] for t in tags["images"]},
}))
"#;

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn read_back(dir: &Path) -> Value {
    let python = repo(".venv/bin/python");
    // scripts/setup.sh installs tensorboard: its absence is a broken setup, not a reason to skip.
    assert!(python.exists(), "{} is missing (run scripts/setup.sh)", python.display());
    let output = Command::new(&python).arg("-c").arg(READ_BACK_PY).arg(dir).output().unwrap();
    assert!(output.status.success(), "TensorBoard's reader failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `(step, value)` rows of a scalar tag.
fn scalars(got: &Value, tag: &str) -> Vec<(u64, f64)> {
    let rows = got["scalars"][tag].as_array().unwrap_or_else(|| panic!("no scalar `{tag}` in {}", got["scalars"]));
    rows.iter().map(|r| (r[0].as_u64().unwrap(), r[1].as_f64().unwrap())).collect()
}

#[test]
fn tensorboard_reads_the_trainers_losses_rates_precision_and_histograms() {
    tch::set_num_threads(2);
    let dir = std::env::temp_dir().join(format!("tensorboard-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sample = Records::read_file(repo("data/sample/test_batch.bin")).unwrap();
    let config = TrainConfig {
        max_steps: 12,
        batch_size: BATCH,
        towers_per_device: TOWERS,
        devices: vec![Device::Cpu],
        learning_rate: LEARNING_RATE,
        log_frequency: 4,
        summary_every: 5,
        eval_every: 10,
        checkpoint_every: 0,
        seed: 5,
        ..TrainConfig::new(&dir)
    };
    let test = sample.head(100);
    train(&config, Arc::new(sample), Some(&test), &AtomicBool::new(false)).unwrap();
    let got = read_back(&dir);

    // Summaries after the steps that start at 0, 5 and 10 (logged with the steps done).
    for tag in ["total_loss (raw)", "total_loss", "cross_entropy (raw)", "cross_entropy"] {
        let rows = scalars(&got, tag);
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 6, 11], "{tag}");
        // ln 10 = 2.3 for the cross-entropy at the start; weight decay adds about 2.4
        for (step, value) in rows {
            assert!(value > 0.5 && value < 10.0, "{tag} at step {step}: {value}");
        }
    }
    let rates = scalars(&got, "learning_rate");
    assert!(rates.iter().all(|&(_, r)| r == f64::from(LEARNING_RATE as f32)), "{rates:?}");
    let precision = scalars(&got, "precision @ 1");
    assert_eq!(precision.len(), 1);
    assert_eq!(precision[0].0, 10);
    let correct = precision[0].1 * 100.0; // a count over 100 images
    assert!((0.0..=100.0).contains(&correct) && (correct - correct.round()).abs() < 1e-3, "{precision:?}");
    let speeds = scalars(&got, "examples_per_sec");
    assert_eq!(speeds.iter().map(|r| r.0).collect::<Vec<_>>(), [4, 8, 12]);
    assert!(speeds.iter().all(|&(_, v)| v > 0.0 && v.is_finite()));

    let histogram = |tag: &str| -> Vec<f64> {
        let rows = got["histograms"][tag].as_array().unwrap_or_else(|| panic!("no histogram `{tag}`"));
        assert_eq!(rows.len(), 3, "{tag}");
        rows[0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    // The first tower's conv1 activations: its batch × 64 channels × 24 × 24, after the ReLU.
    let conv1 = histogram("conv1/activations");
    assert_eq!((conv1[0], conv1[1]), (1.0, (BATCH * 64 * 24 * 24) as f64));
    assert!(conv1[2] >= 0.0 && conv1[3] > 0.0, "{conv1:?}");
    let weights = histogram("conv1.weight");
    assert_eq!(weights[1], 4800.0);
    assert!(weights[2] < 0.0 && weights[3] > 0.0 && weights[3] < 0.2, "{weights:?}");
    let gradients = histogram("local3.weight/gradients");
    assert_eq!(gradients[1], (384 * 2304) as f64);
    assert!(gradients[2] < 0.0 && gradients[3] > 0.0, "{gradients:?}");
    assert!(scalars(&got, "conv1/sparsity").iter().all(|&(_, s)| (0.0..=1.0).contains(&s)));
    let images = got["images"]["images/0"].as_array().expect("distorted input images");
    assert_eq!(images[0], serde_json::json!([1, 24, 24]));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The histograms are built on the summary thread while training goes on, so they must come
/// from a snapshot of their step: the weights histogram logged at step 6 has the min and max
/// of the checkpoint of step 6, not of a later step's weights.
#[test]
fn weight_histograms_show_their_own_step_s_weights() {
    tch::set_num_threads(2);
    let dir = std::env::temp_dir().join(format!("tensorboard-snapshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sample = Records::read_file(repo("data/sample/test_batch.bin")).unwrap();
    let config = TrainConfig {
        max_steps: 12,
        batch_size: BATCH,
        devices: vec![Device::Cpu],
        learning_rate: 0.1,
        log_frequency: 0,
        summary_every: 5,
        checkpoint_every: 6,
        seed: 5,
        ..TrainConfig::new(&dir)
    };
    train(&config, Arc::new(sample), None, &AtomicBool::new(false)).unwrap();
    let got = read_back(&dir);
    let at_6 = train::checkpoint::Checkpoint::load(&dir.join(train::checkpoint::file_name(6))).unwrap();
    for (index, tag) in [(0, "conv1.weight"), (4, "local3.weight")] {
        let rows = got["histograms"][tag].as_array().unwrap_or_else(|| panic!("no histogram `{tag}`"));
        let row = rows.iter().find(|r| r[0].as_u64() == Some(6)).unwrap_or_else(|| panic!("{tag} at step 6"));
        let values = &at_6.raw[index];
        let (min, max) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        // Equal up to the reader's last f64 bit; a step's update moves them by far more.
        let (got_min, got_max) = (row[2].as_f64().unwrap(), row[3].as_f64().unwrap());
        let same = |a: f64, b: f32| (a - f64::from(b)).abs() <= 1e-12 * f64::from(b).abs();
        assert!(
            same(got_min, min) && same(got_max, max),
            "{tag}: logged {got_min}..{got_max}, checkpoint {min}..{max}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
