//! A short training run from scratch on CPU — the tutorial's recipe, seeded — learns: its
//! averaged weights beat a stated floor on the in-repo sample, and a second run with the
//! same seed gives the same bits.
//!
//! Training data: the five training files when the data folder is found, else the in-repo
//! sample itself (then the floor is a check that the model fits what it saw, and a line in
//! the test output says so).

mod bundled_support;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bundled_support::{sample, shown};
use model_format::cifar::{Dataset, Records};
use tch::Device;
use train::checkpoint::Checkpoint;
use train::evaluate::EvalSet;
use train::trainer::{train, TrainConfig};

const STEPS: u64 = 300;
const SEED: u64 = 7;
/// Precision@1 on the 1,000-image sample that 300 steps must beat: three times chance.
const FLOOR: f64 = 0.30;

fn training_records() -> Records {
    match Dataset::locate(None).and_then(|d| d.train()) {
        Ok(records) => records,
        Err(e) => {
            shown(&format!("short_training: training files unavailable ({e}); training on data/sample instead"));
            sample()
        }
    }
}

fn run(dir: &std::path::Path, records: Arc<Records>) -> Checkpoint {
    let mut config = TrainConfig::new(dir);
    config.max_steps = STEPS;
    config.seed = SEED;
    config.devices = vec![Device::Cpu];
    config.log_frequency = 0;
    config.summary_every = 0;
    config.checkpoint_every = 0;
    let outcome = train(&config, records, None, &AtomicBool::new(false)).unwrap();
    assert_eq!(outcome.step, STEPS);
    Checkpoint::load(&outcome.checkpoint).unwrap()
}

#[test]
fn a_short_seeded_run_learns_and_repeats_bit_for_bit() {
    tch::set_num_threads(2);
    let base = std::env::temp_dir().join(format!("short-training-{}", std::process::id()));
    let records = Arc::new(training_records());
    let first = run(&base.join("a"), Arc::clone(&records));
    let second = run(&base.join("b"), records);
    assert!(first.raw == second.raw && first.ema == second.ema, "two runs with seed {SEED} differ");

    let precision = EvalSet::new(&sample()).precision_of(&first.ema, Device::Cpu).unwrap();
    eprintln!("precision@1 after {STEPS} steps (EMA weights, data/sample): {precision:.3}");
    assert!(precision > FLOOR, "precision@1 {precision:.3} after {STEPS} steps is not above {FLOOR}");
    std::fs::remove_dir_all(&base).unwrap();
}
