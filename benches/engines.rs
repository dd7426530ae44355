//! Images per second of the inference engines at batch 1, 16 and 128 with 1 and 2 threads,
//! on the same weights and inputs, beside the machine's measured sgemm peak.
//!
//! `cargo bench --bench engines` (about a minute). Weights: `$CIFAR10_MODEL` if set, else
//! seeded weights (speed does not depend on the values). `BENCH_SECONDS` sets the time
//! spent per cell (default 0.6 s).
//!
//! Each engine is a [`Row`]: another backend adds itself in [`rows`].

use std::time::{Duration, Instant};

use infer::cpu::CpuEngine;
use infer::Engine;
use model_format::arch::{self, INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE, NUM_CLASSES};
use model_format::cifar::Records;
use model_format::preprocess::preprocess;
use model_format::Weights;
use tch::{Device, Kind, Tensor};

const BATCHES: [usize; 3] = [1, 16, 128];
const THREADS: [usize; 2] = [1, 2];

/// Something that turns a batch of preprocessed inputs into logits.
trait Runner {
    fn logits(&mut self, input: &[f32], batch: usize, out: &mut [f32]);
}

/// A table row: a backend name and how to build it for a thread count.
struct Row {
    name: &'static str,
    build: Box<dyn Fn(usize) -> Box<dyn Runner>>,
}

struct EngineRunner(Box<dyn Engine>);

impl Runner for EngineRunner {
    fn logits(&mut self, input: &[f32], batch: usize, out: &mut [f32]) {
        self.0.logits_flat(input, batch, out).expect("engine runs");
    }
}

/// The trainer's tch network on CPU; thread count is tch's global intra-op setting.
struct TchRunner {
    net: train::model::Net,
    threads: usize,
}

impl Runner for TchRunner {
    fn logits(&mut self, input: &[f32], batch: usize, out: &mut [f32]) {
        tch::set_num_threads(self.threads as i32);
        let shape = [batch as i64, INPUT_CHANNELS as i64, INPUT_SIZE as i64, INPUT_SIZE as i64];
        let xs = Tensor::from_slice(input).view(shape);
        let logits = tch::no_grad(|| self.net.forward(&xs)).to_kind(Kind::Float).contiguous();
        logits.view([-1]).copy_data(out, batch * NUM_CLASSES);
    }
}

fn rows(weights: &Weights) -> Vec<Row> {
    let (a, b) = (weights.clone(), weights.clone());
    vec![
        Row {
            name: "cpu",
            build: Box::new(move |threads| {
                Box::new(EngineRunner(Box::new(CpuEngine::new(&a, threads).expect("engine builds"))))
            }),
        },
        Row {
            name: "tch",
            build: Box::new(move |threads| {
                Box::new(TchRunner {
                    net: train::model::Net::from_weights(&b, Device::Cpu).expect("net builds"),
                    threads,
                })
            }),
        },
        // The root package always builds infer's `onnx` feature (see its dev-dependencies).
        {
            let c = weights.clone();
            Row {
                name: "onnx",
                build: Box::new(move |threads| {
                    Box::new(EngineRunner(Box::new(
                        infer::onnx::OnnxEngine::from_weights(&c, threads).expect("ONNX Runtime loads the model"),
                    )))
                }),
            }
        },
    ]
}

/// Images per second of `runner` at `batch`, over about `budget`.
fn throughput(runner: &mut dyn Runner, inputs: &[f32], batch: usize, budget: Duration) -> f64 {
    let mut out = vec![0f32; batch * NUM_CLASSES];
    let input = &inputs[..batch * INPUT_LEN];
    runner.logits(input, batch, &mut out); // warm-up: workspaces, lazy initialisation
    let start = Instant::now();
    let mut calls = 0;
    while calls < 3 || start.elapsed() < budget {
        runner.logits(input, batch, &mut out);
        calls += 1;
    }
    (calls * batch) as f64 / start.elapsed().as_secs_f64()
}

/// GFLOP/s of square `n × n` sgemm on `threads` threads, each multiplying its own matrices
/// (how the engine uses threads: one chunk of the batch each).
fn sgemm_peak(threads: usize, n: usize, budget: Duration) -> f64 {
    let work = || {
        let (a, b, mut c) = (vec![1.0f32; n * n], vec![0.5f32; n * n], vec![0f32; n * n]);
        let start = Instant::now();
        let mut calls = 0;
        while calls < 2 || start.elapsed() < budget {
            // SAFETY: all three matrices are n×n, row-major.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    n,
                    n,
                    1.0,
                    a.as_ptr(),
                    n as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
            calls += 1;
        }
        2.0 * (n * n * n * calls) as f64 / start.elapsed().as_secs_f64() / 1e9
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        handles.into_iter().map(|h| h.join().expect("sgemm thread")).sum()
    })
}

fn inputs(max_batch: usize) -> Vec<f32> {
    let records =
        Records::read_file(concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample/test_batch.bin")).expect("data/sample");
    let mut inputs = vec![0f32; max_batch * INPUT_LEN];
    for (i, slot) in inputs.chunks_exact_mut(INPUT_LEN).enumerate() {
        preprocess(records.image(i % records.len()), slot);
    }
    inputs
}

fn main() {
    // matrixmultiply's own pool off: the engines' thread counts are the only parallelism.
    std::env::set_var("MATMUL_NUM_THREADS", "1");
    let budget =
        Duration::from_secs_f64(std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0.6));
    let weights = match std::env::var_os("CIFAR10_MODEL") {
        Some(path) => Weights::load(&path).expect("$CIFAR10_MODEL names a valid model"),
        None => infer::random_weights(2024),
    };
    let inputs = inputs(*BATCHES.iter().max().unwrap());
    let rows = rows(&weights);
    let flops = arch::flops_per_image() as f64;

    let peaks: Vec<f64> = THREADS.iter().map(|&t| sgemm_peak(t, 1024, budget)).collect();
    println!(
        "sgemm peak (matrixmultiply, 1024³ per thread): {}",
        THREADS
            .iter()
            .zip(&peaks)
            .map(|(t, p)| format!("{p:.1} GFLOP/s on {t} thread(s)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("forward pass: {:.1} MFLOP per image\n", flops / 1e6);

    let names: Vec<String> = rows.iter().map(|r| format!("{:>10}", format!("{} img/s", r.name))).collect();
    let ratio_names: Vec<String> = rows[1..].iter().map(|r| format!("{:>12}", format!("cpu/{}", r.name))).collect();
    println!(
        "{:>5} {:>7} {} {} {:>9} {:>8}",
        "batch",
        "threads",
        names.join(" "),
        ratio_names.join(" "),
        "GFLOP/s",
        "of peak"
    );
    for &batch in &BATCHES {
        for (&threads, &peak) in THREADS.iter().zip(&peaks) {
            let speeds: Vec<f64> =
                rows.iter().map(|row| throughput(&mut *(row.build)(threads), &inputs, batch, budget)).collect();
            let gflops = speeds[0] * flops / 1e9;
            let cells: Vec<String> = speeds.iter().map(|s| format!("{s:>10.0}")).collect();
            let ratios: Vec<String> = speeds[1..].iter().map(|s| format!("{:>11.2}x", speeds[0] / s)).collect();
            println!(
                "{batch:>5} {threads:>7} {} {} {gflops:>9.1} {:>7.0}%",
                cells.join(" "),
                ratios.join(" "),
                100.0 * gflops / peak
            );
        }
    }
}
