//! Training-step time at batch 128, 2 threads, on the CPU (or `--device cuda:N`): our tch
//! trainer's step (forward, backward, SGD, moving average) beside the same model and recipe
//! in PyTorch (`benches/train_step.py`) and in TensorFlow itself with the tutorial's own ops
//! (`benches/train_step_tf.py`, CPU only), in one run, alternated, as one table.
//!
//! Each implementation gets two rows:
//! - **fixed batch**: one random batch reused, so the row is the compute alone;
//! - **real input**: the tutorial's distorted batches made from the CIFAR-10 training files
//!   while the steps run (ours: the trainer's own input thread; PyTorch: a `DataLoader` with
//!   one worker; TensorFlow: a `tf.data` pipeline), a step's time including any wait for its
//!   batch. This is the row to compare with the trainer's logged `sec/batch`.
//!
//! Ours gets two more rows and two lines after the table:
//! - **2 towers × 64** on the same device, fixed batch: the same 128 examples a step split
//!   over two towers, with the ratio of its median step to the 1-tower step (goal: ≤ 1.05,
//!   towers that cost nothing beyond their share of the work);
//! - **host input**: images per second that one input thread makes (the tutorial's
//!   distortions), to size `--input-workers` against a device's appetite.
//!
//! `cargo bench --bench train_step [-- --device cuda:0]`. Environment: `TRAIN_BENCH_STEPS`
//! (default 30) split into `TRAIN_BENCH_ROUNDS` alternating rounds (default 3);
//! `TRAIN_BENCH_DEVICE` (default `cpu`; `--device` wins); `TRAIN_BENCH_PEERS=0` leaves out
//! PyTorch and TensorFlow; `TRAIN_BENCH_PYTHON` (default `.venv/bin/python`, PyTorch);
//! `TRAIN_BENCH_TF_PYTHON` (default `.venv/peers/bin/python`, TensorFlow, from the optional
//! `scripts/setup-bench-peers.sh`); `CIFAR10_DATA_DIR` (default
//! `../shared/cifar10/cifar-10-batches-bin`). A row that cannot run says why.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use model_format::arch::{INPUT_CHANNELS, INPUT_SIZE};
use model_format::cifar::{Dataset, Records};
use model_format::init::initial_tensors;
use tch::{Device, Kind, Tensor};
use train::ema::MovingAverage;
use train::inputs::{BatchMaker, InputQueue};
use train::towers::Towers;

const BATCH: i64 = 128;
const THREADS: i32 = 2;
const WARMUP: usize = 3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq)]
enum Input {
    Fixed,
    Real,
}

impl Input {
    fn flag(self) -> &'static str {
        match self {
            Input::Fixed => "fixed",
            Input::Real => "real",
        }
    }
}

/// Our trainer's step (towers, SGD, moving average), fed a fixed batch or by the trainer's
/// input pipeline.
struct Ours {
    fixed: (Tensor, Tensor),
    records: Option<Arc<Records>>,
    towers: Towers,
    ema: MovingAverage,
    step: u64,
    device: Device,
}

impl Ours {
    /// `towers` towers on `device` sharing each step's `BATCH` examples.
    fn new(records: Option<Arc<Records>>, device: Device, towers: usize) -> Ours {
        tch::set_num_threads(THREADS);
        tch::manual_seed(0);
        let shape = [BATCH, INPUT_CHANNELS as i64, INPUT_SIZE as i64, INPUT_SIZE as i64];
        let fixed = (Tensor::randn(shape, (Kind::Float, device)), Tensor::randint(10, [BATCH], (Kind::Int64, device)));
        let towers = Towers::new(&initial_tensors(0), &[device], towers).expect("towers");
        let ema = MovingAverage::new(towers.master().params(), 0.9999).expect("moving average");
        Ours { fixed, records, towers, ema, step: 0, device }
    }

    /// Seconds per step for `steps` steps after the warm-up.
    fn run(&mut self, input: Input, steps: usize) -> Result<Vec<f64>, String> {
        let mut queue = match input {
            Input::Fixed => None,
            Input::Real => {
                let records = self.records.clone().ok_or("no training data")?;
                // As the trainer runs it: one input thread, batches queued ahead.
                let pin_for = Some(self.device).filter(|d| d.is_cuda());
                Some(InputQueue::start(records, 1, BATCH as usize, self.step, (1, 4), pin_for))
            }
        };
        let mut times = Vec::with_capacity(steps);
        for i in 0..WARMUP + steps {
            let start = Instant::now();
            let batch = queue.as_mut().map(|q| q.next_batch().expect("input batch"));
            let (images, labels) = batch.as_ref().map_or((&self.fixed.0, &self.fixed.1), |b| (&b.images, &b.labels));
            let out = self.towers.compute(images, labels, false).expect("step");
            self.towers.apply(&out.gradients, 0.1).expect("update");
            self.step += 1;
            self.ema.update(self.towers.master().flat(), self.step).expect("ema");
            // The trainer reads the loss back only at log steps; here every step, as the
            // Python scripts' `loss.item()`/`.numpy()` do, so that all time complete steps.
            out.total_loss.double_value(&[]);
            if i >= WARMUP {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        Ok(times)
    }
}

/// Seconds one thread takes to make each of `batches` distorted batches of `BATCH` images
/// (the trainer's host pipeline, into a reused buffer).
fn host_input(records: &Arc<Records>, batches: usize) -> Vec<f64> {
    let mut maker = BatchMaker::new(Arc::clone(records), 1, BATCH as usize);
    let mut images = vec![0f32; BATCH as usize * model_format::arch::INPUT_LEN];
    let mut labels = vec![0i64; BATCH as usize];
    (0..batches)
        .map(|step| {
            let start = Instant::now();
            maker.fill(step as u64, &mut images, &mut labels);
            start.elapsed().as_secs_f64()
        })
        .collect()
}

/// A Python implementation's name (with its version) and step times, or why there are none.
fn python(
    python: &str,
    script: &str,
    (input, device): (Input, &str),
    steps: usize,
    data_dir: &str,
) -> Result<(String, Vec<f64>), String> {
    let script = format!("{}/benches/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python)
        .args([&script, "--steps", &steps.to_string(), "--warmup", &WARMUP.to_string()])
        .args(["--batch", &BATCH.to_string(), "--threads", &THREADS.to_string()])
        .args(["--input", input.flag(), "--data-dir", data_dir, "--device", device])
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{script} failed: {}", stderr.lines().last().unwrap_or("")));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().ok_or("no output")?;
    let json: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))?;
    let name = json["framework"].as_str().ok_or("no framework")?.to_string();
    Ok((name, json["step_seconds"].as_array().ok_or("no step_seconds")?.iter().filter_map(|v| v.as_f64()).collect()))
}

#[derive(Clone, Copy, PartialEq)]
enum Implementation {
    Ours,
    /// Ours with the step's examples over two towers on the same device.
    OursTwoTowers,
    PyTorch,
    TensorFlow,
}

/// One row of the table: an implementation on one kind of input, its times or why it is absent.
struct Row {
    implementation: Implementation,
    name: String,
    input: Input,
    times: Vec<f64>,
    absent: Option<String>,
}

impl Row {
    fn record(&mut self, result: Result<(String, Vec<f64>), String>) {
        match result {
            Ok((name, times)) => {
                self.name = name;
                self.times.extend(times);
            }
            Err(why) => self.absent = Some(why),
        }
    }

    fn median(&self) -> Option<f64> {
        let mut sorted = self.times.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied()
    }
}

/// `--device X` among the arguments (cargo bench passes those after `--`), else
/// `$TRAIN_BENCH_DEVICE`, else `cpu`.
fn device_name() -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--device")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| env_or("TRAIN_BENCH_DEVICE", "cpu".to_string()))
}

fn main() {
    let steps: usize = env_or("TRAIN_BENCH_STEPS", 30);
    let rounds: usize = env_or("TRAIN_BENCH_ROUNDS", 3).max(1);
    let peers = env_or("TRAIN_BENCH_PEERS", 1) != 0;
    let per_round = steps.div_ceil(rounds);
    let torch_python: String = env_or("TRAIN_BENCH_PYTHON", ".venv/bin/python".to_string());
    let tf_python: String = env_or("TRAIN_BENCH_TF_PYTHON", ".venv/peers/bin/python".to_string());
    let device_name = device_name();
    let device = match train::towers::parse_devices(&device_name).as_deref() {
        Ok([one]) => *one,
        _ => panic!("--device {device_name}: give one device that exists (cpu, cuda:N)"),
    };
    let data_dir = model_format::cifar::resolve_data_dir(None).unwrap_or_else(|| PathBuf::from("(none)"));
    let records = Dataset::open(&data_dir).and_then(|d| d.train()).map(Arc::new);
    let data_dir = data_dir.display().to_string();
    println!(
        "training step, batch {BATCH}, {device_name}, {THREADS} threads: {rounds} alternating rounds of {per_round} \
         steps each (after {WARMUP} warm-up steps per round); real input from {data_dir}"
    );
    let mut ours = Ours::new(records.as_ref().ok().cloned(), device, 1);
    let mut ours_two = Ours::new(records.as_ref().ok().cloned(), device, 2);
    let implementations = [
        (Implementation::Ours, "cifar10-train (tch)"),
        (Implementation::OursTwoTowers, "cifar10-train, 2x64 towers"),
        (Implementation::PyTorch, "PyTorch"),
        (Implementation::TensorFlow, "TensorFlow"),
    ];
    let mut rows: Vec<Row> = implementations
        .iter()
        .flat_map(|&(implementation, name)| {
            [Input::Fixed, Input::Real].map(|input| Row {
                implementation,
                name: name.to_string(),
                input,
                times: Vec::new(),
                absent: None,
            })
        })
        .filter(|row| !(row.implementation == Implementation::OursTwoTowers && row.input == Input::Real))
        .collect();
    if let Err(e) = &records {
        for row in rows.iter_mut().filter(|r| r.input == Input::Real) {
            row.absent = Some(format!("no training data: {e}"));
        }
    }
    for row in
        rows.iter_mut().filter(|r| matches!(r.implementation, Implementation::PyTorch | Implementation::TensorFlow))
    {
        if !peers {
            row.absent = Some("TRAIN_BENCH_PEERS=0".into());
        } else if row.implementation == Implementation::TensorFlow && device != Device::Cpu {
            row.absent = Some("train_step_tf.py runs on the CPU only".into());
        }
    }
    let mut input_times = Vec::new();
    // Alternating rounds spread any load from other processes over every implementation.
    for _ in 0..rounds {
        for row in rows.iter_mut().filter(|r| r.absent.is_none()) {
            let flags = (row.input, device_name.as_str());
            let result = match row.implementation {
                Implementation::Ours => ours.run(row.input, per_round).map(|times| (row.name.clone(), times)),
                Implementation::OursTwoTowers => {
                    ours_two.run(row.input, per_round).map(|times| (row.name.clone(), times))
                }
                Implementation::PyTorch => python(&torch_python, "train_step.py", flags, per_round, &data_dir),
                Implementation::TensorFlow if !std::path::Path::new(&tf_python).exists() => {
                    Err(format!("{tf_python} absent (scripts/setup-bench-peers.sh makes it)"))
                }
                Implementation::TensorFlow => python(&tf_python, "train_step_tf.py", flags, per_round, &data_dir),
            };
            row.record(result);
        }
        if let Ok(records) = &records {
            input_times.extend(host_input(records, per_round));
        }
    }
    print_table(&rows);
    print_towers_ratio(&rows);
    print_input_rate(&input_times);
}

/// The 2-tower step over the 1-tower step, same examples, same device (goal: ≤ 1.05).
fn print_towers_ratio(rows: &[Row]) {
    let median = |implementation| {
        rows.iter().find(|r| r.implementation == implementation && r.input == Input::Fixed).and_then(Row::median)
    };
    match (median(Implementation::Ours), median(Implementation::OursTwoTowers)) {
        (Some(one), Some(two)) => println!(
            "towers: 2 towers x 64 / 1 tower x 128, median fixed-batch step: {:.1} / {:.1} ms = {:.3} (goal <= 1.05)",
            two * 1e3,
            one * 1e3,
            two / one
        ),
        _ => println!("towers: ratio not measured"),
    }
}

/// Images per second one host input thread makes (median batch).
fn print_input_rate(times: &[f64]) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.get(sorted.len() / 2) {
        Some(median) => println!(
            "host input: {:.0} images/s per thread (median batch of {BATCH}: {:.2} ms, {} batches)",
            BATCH as f64 / median,
            median * 1e3,
            sorted.len()
        ),
        None => println!("host input: not measured (no training data)"),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "| {:<26} | {:<11} | {:>9} | {:>9} | {:>10} | {:>14} |",
        "implementation", "input", "median ms", "min ms", "examples/s", "ours / this"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|",
        "-".repeat(28),
        "-".repeat(13),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(12),
        "-".repeat(16)
    );
    for row in rows {
        let label = if row.input == Input::Fixed { "fixed batch" } else { "real input" };
        let Some(median) = row.median().filter(|_| row.absent.is_none()) else {
            println!("| {:<26} | {label:<11} | not run: {}", row.name, row.absent.as_deref().unwrap_or("no times"));
            continue;
        };
        let min = row.times.iter().copied().fold(f64::INFINITY, f64::min);
        // Our step time over this implementation's, on the same kind of input (goal: <= 1).
        let ours = rows[if row.input == Input::Fixed { 0 } else { 1 }].median();
        let ratio = ours.map_or("-".to_string(), |o| format!("{:.2}", o / median));
        println!(
            "| {:<26} | {label:<11} | {:>9.1} | {:>9.1} | {:>10.0} | {ratio:>14} |",
            row.name,
            median * 1e3,
            min * 1e3,
            BATCH as f64 / median
        );
    }
}
