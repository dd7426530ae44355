//! Training-step time on the CPU at batch 128, 2 threads: our tch trainer's step (forward,
//! backward, SGD, moving average) beside the same model and recipe in PyTorch
//! (`benches/train_step.py`, run with `.venv/bin/python`), in one run, as a table.
//!
//! `cargo bench --bench train_step` (env: `TRAIN_BENCH_STEPS`, default 30, in
//! `TRAIN_BENCH_ROUNDS` alternating rounds, default 3;
//! `TRAIN_BENCH_PYTHON`, default `.venv/bin/python`).

use std::process::Command;
use std::time::Instant;

use model_format::arch::{INPUT_CHANNELS, INPUT_SIZE};
use model_format::init::initial_tensors;
use tch::{Device, Kind, Tensor};
use train::ema::MovingAverage;
use train::towers::Towers;

const BATCH: i64 = 128;
const THREADS: i32 = 2;
const WARMUP: usize = 3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Our trainer's step (towers, SGD, moving average) on a fixed random batch.
struct Ours {
    images: Tensor,
    labels: Tensor,
    towers: Towers,
    ema: MovingAverage,
    step: u64,
}

impl Ours {
    fn new() -> Ours {
        tch::set_num_threads(THREADS);
        tch::manual_seed(0);
        let images = Tensor::randn(
            [BATCH, INPUT_CHANNELS as i64, INPUT_SIZE as i64, INPUT_SIZE as i64],
            (Kind::Float, Device::Cpu),
        );
        let labels = Tensor::randint(10, [BATCH], (Kind::Int64, Device::Cpu));
        let towers = Towers::new(&initial_tensors(0), &[Device::Cpu], 1).expect("cpu tower");
        let ema = MovingAverage::new(towers.master().params(), 0.9999);
        Ours { images, labels, towers, ema, step: 0 }
    }

    /// Seconds per step for `steps` steps after the warm-up.
    fn run(&mut self, steps: usize) -> Vec<f64> {
        let mut times = Vec::with_capacity(steps);
        for i in 0..WARMUP + steps {
            let start = Instant::now();
            let out = self.towers.compute(&self.images, &self.labels, false).expect("step");
            self.towers.apply(&out.gradients, 0.1).expect("update");
            self.ema.update(self.towers.master().params(), self.step).expect("ema");
            // The trainer reads the loss back only at log steps; here every step, as the
            // PyTorch script's `loss.item()` does, so that both time complete steps.
            out.total_loss.double_value(&[]);
            self.step += 1;
            if i >= WARMUP {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        times
    }
}

/// The PyTorch script's step times, or why there are none.
fn pytorch(steps: usize) -> Result<(String, Vec<f64>), String> {
    let python: String = env_or("TRAIN_BENCH_PYTHON", ".venv/bin/python".to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/train_step.py");
    let output = Command::new(&python)
        .args([script, "--steps", &steps.to_string(), "--warmup", &WARMUP.to_string()])
        .args(["--batch", &BATCH.to_string(), "--threads", &THREADS.to_string()])
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{python} {script} failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().ok_or("no output")?;
    let json: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))?;
    let name = json["framework"].as_str().unwrap_or("PyTorch").to_string();
    let times = json["step_seconds"].as_array().ok_or("no step_seconds")?.iter().filter_map(|v| v.as_f64()).collect();
    Ok((name, times))
}

fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn row(name: &str, times: &[f64]) {
    let med = median(times);
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "| {name:<28} | {:>9.1} | {:>9.1} | {:>12.1} | {:>8.2} |",
        med * 1e3,
        min * 1e3,
        BATCH as f64 / med,
        1.0 / med
    );
}

fn main() {
    let steps: usize = env_or("TRAIN_BENCH_STEPS", 30);
    let rounds: usize = env_or("TRAIN_BENCH_ROUNDS", 3).max(1);
    let per_round = steps.div_ceil(rounds);
    println!(
        "training step, batch {BATCH}, CPU, {THREADS} threads: {rounds} alternating rounds of {per_round} steps each (after {WARMUP} warm-up steps per round)"
    );
    // Alternating rounds spread any load from other processes over both implementations.
    let mut ours = Ours::new();
    let (mut our_times, mut torch_times, mut torch_name, mut torch_error) =
        (Vec::new(), Vec::new(), String::new(), None);
    for _ in 0..rounds {
        our_times.extend(ours.run(per_round));
        match pytorch(per_round) {
            Ok((name, times)) => {
                torch_name = name;
                torch_times.extend(times);
            }
            Err(why) => torch_error = Some(why),
        }
    }
    println!(
        "| {:<28} | {:>9} | {:>9} | {:>12} | {:>8} |",
        "implementation", "median ms", "min ms", "examples/s", "steps/s"
    );
    println!("|{}|{}|{}|{}|{}|", "-".repeat(30), "-".repeat(11), "-".repeat(11), "-".repeat(14), "-".repeat(10));
    row("cifar10-train (tch 0.24)", &our_times);
    if !torch_times.is_empty() {
        row(&torch_name, &torch_times);
        println!(
            "ours / PyTorch step time: median {:.2}, min {:.2} (goal: <= 1)",
            median(&our_times) / median(&torch_times),
            our_times.iter().copied().fold(f64::INFINITY, f64::min)
                / torch_times.iter().copied().fold(f64::INFINITY, f64::min)
        );
    }
    if let Some(why) = torch_error {
        println!("PyTorch: not run ({why})");
    }
}
