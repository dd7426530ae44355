//! The CUDA path's correctness, for a machine with a GPU: every test here is ignored unless
//! asked for (`cargo test --release -p train --test cuda -- --ignored`, or the prebuilt
//! binary that `scripts/gpu-check.sh` runs), and stops at once where libtorch sees no CUDA
//! device, so a run that was asked for can never pass without one.
//!
//! Tolerances: on CUDA, libtorch lets cuDNN use TF32 for convolutions by default (inputs
//! rounded to 10 mantissa bits) and cuDNN's autotuned algorithms sum in their own order, so
//! CUDA and CPU agree only to about 1e-3 relative: an update on CUDA must be within 2% of the
//! largest update of its tensor (plus 1e-6) of the CPU's. The 2×64 ≈ 1×128 check on CUDA
//! keeps the towers' CPU bound (1e-6 + 1e-4 of the largest update): both sides run on the
//! same device with the same rounding of the inputs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use model_format::arch::IMAGE_LEN;
use model_format::cifar::Records;
use model_format::init::initial_tensors;
use tch::{Device, Kind, Tensor};
use train::checkpoint::{self, Checkpoint};
use train::towers::Towers;
use train::trainer::{train, TrainConfig};

fn need_cuda() {
    assert!(tch::Cuda::device_count() > 0, "asked to run the CUDA tests, but libtorch sees no CUDA device");
}

fn batch(n: i64) -> (Tensor, Tensor) {
    tch::manual_seed(0);
    let xs = Tensor::randn([n, 3, 24, 24], (Kind::Float, Device::Cpu));
    let ys = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(10);
    (xs, ys)
}

/// One step of `towers` towers per device on `devices` over the same `n` examples; the
/// losses and the updated master weights.
fn one_step(devices: &[Device], towers: usize, n: i64) -> (f64, Vec<Vec<f32>>) {
    let (xs, ys) = batch(n);
    let mut replicas = Towers::new(&initial_tensors(11), devices, towers).unwrap();
    let out = replicas.compute(&xs, &ys, false).unwrap();
    replicas.apply(&out.gradients, 0.1).unwrap();
    (out.total_loss.double_value(&[]), replicas.master().values().unwrap())
}

/// Asserts that `got`'s update from the initial weights is within `relative` of the largest
/// update of each tensor (plus 1e-6) of `expected`'s.
fn updates_agree(got: &[Vec<f32>], expected: &[Vec<f32>], relative: f32) {
    let start = initial_tensors(11);
    for ((g, e), s) in got.iter().zip(expected).zip(&start) {
        let largest = e.iter().zip(s).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(largest > 0.0, "the update changed nothing");
        for (u, v) in g.iter().zip(e) {
            assert!((u - v).abs() <= 1e-6 + relative * largest, "{u} vs {v} (largest update {largest})");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it on a GPU machine"]
fn one_step_on_cuda_is_the_cpu_step_within_tf32_rounding() {
    need_cuda();
    let (cuda_loss, cuda) = one_step(&[Device::Cuda(0)], 1, 128);
    let (cpu_loss, cpu) = one_step(&[Device::Cpu], 1, 128);
    assert!((cuda_loss - cpu_loss).abs() <= 1e-3 * cpu_loss.abs(), "loss {cuda_loss} on CUDA, {cpu_loss} on the CPU");
    updates_agree(&cuda, &cpu, 0.02);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it on a GPU machine"]
fn two_towers_of_64_update_like_one_tower_of_128_on_cuda() {
    need_cuda();
    let (one_loss, one) = one_step(&[Device::Cuda(0)], 1, 128);
    let (two_loss, two) = one_step(&[Device::Cuda(0)], 2, 128);
    assert!((one_loss - two_loss).abs() < 1e-5, "{one_loss} vs {two_loss}");
    updates_agree(&two, &one, 1e-4);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it on a GPU machine"]
fn a_cuda_tower_and_a_cpu_tower_train_together() {
    // `--devices cuda:0,cpu`: inputs, gradients and weights cross between the devices.
    need_cuda();
    let (mixed_loss, mixed) = one_step(&[Device::Cuda(0), Device::Cpu], 1, 128);
    let (cpu_loss, cpu) = one_step(&[Device::Cpu], 1, 128);
    assert!((mixed_loss - cpu_loss).abs() <= 1e-3 * cpu_loss.abs(), "{mixed_loss} vs {cpu_loss}");
    updates_agree(&mixed, &cpu, 0.02);
}

fn records(n: usize) -> Arc<Records> {
    let bytes: Vec<u8> = (0..n)
        .flat_map(|r| {
            let label = (r % 10) as u8;
            std::iter::once(label).chain((0..IMAGE_LEN).map(move |i| ((i * (label as usize + 1) + r) % 256) as u8))
        })
        .collect();
    Arc::new(Records::from_bytes(bytes, "synthetic").unwrap())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cuda-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn final_checkpoint(dir: &Path) -> Checkpoint {
    Checkpoint::load(&checkpoint::latest(dir).unwrap().unwrap()).unwrap()
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it on a GPU machine"]
fn resuming_on_cuda_gives_the_bits_of_a_straight_run() {
    need_cuda();
    // Deterministic cuDNN: without it, two CUDA runs may differ in the last bits anyway.
    train::cudnn::configure(true);
    let data = records(64);
    let never = AtomicBool::new(false);
    let config = |dir: &Path, steps| TrainConfig {
        max_steps: steps,
        batch_size: 16,
        log_frequency: 0,
        seed: 3,
        devices: vec![Device::Cuda(0)],
        checkpoint_every: 0,
        summary_every: 0,
        ..TrainConfig::new(dir)
    };
    let (straight, split) = (temp_dir("straight"), temp_dir("split"));
    train(&config(&straight, 20), Arc::clone(&data), None, &never).unwrap();
    train(&config(&split, 10), Arc::clone(&data), None, &never).unwrap();
    train(&TrainConfig { resume: true, ..config(&split, 20) }, Arc::clone(&data), None, &never).unwrap();
    let (a, b) = (final_checkpoint(&straight), final_checkpoint(&split));
    assert_eq!(b.step, 20);
    assert_eq!(a.raw, b.raw);
    assert_eq!(a.ema, b.ema);
    train::cudnn::configure(false);
    for dir in [straight, split] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it on a GPU machine"]
fn distortions_on_cuda_are_the_host_pipeline_s() {
    need_cuda();
    let data = records(50);
    let mut host = train::inputs::BatchMaker::new(Arc::clone(&data), 5, 32);
    let mut device = train::augment::DeviceInputs::new(Arc::clone(&data), 5, 32, Device::Cuda(0)).unwrap();
    for step in [0, 1, 5] {
        let expected = host.make(step);
        let (images, labels) = device.batch(step).unwrap();
        assert_eq!(Vec::<i64>::try_from(&labels.to_device(Device::Cpu)).unwrap(), expected.labels);
        let got = Vec::<f32>::try_from(&images.to_device(Device::Cpu).flatten(0, -1)).unwrap();
        let worst = got.iter().zip(&expected.images).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "step {step}: largest difference {worst}");
    }
}
