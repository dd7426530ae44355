//! The pure-Rust engine against the reference forward pass (`model_format::reference`, direct
//! loops in f64), plus its error and determinism contract.

use infer::cpu::{CpuEngine, Kernel, Workspace};
use infer::{random_weights, Engine, InferError};
use model_format::arch::{INPUT_LEN, NUM_CLASSES};
use model_format::{reference, Weights};

mod support;
use support::{inputs, logits};

#[test]
fn matches_the_naive_forward_pass() {
    for (seed, gain) in [(1, 1.0), (2, 3.0)] {
        let weights = strong_weights(seed, gain);
        let engine = CpuEngine::new(&weights, 1).unwrap();
        let input = inputs(3, seed);
        let got = logits(&engine, &input);
        for (image, row) in input.chunks(INPUT_LEN).zip(got.chunks(NUM_CLASSES)) {
            let want = reference::logits(&weights, image);
            for (g, w) in row.iter().zip(&want) {
                assert!((f64::from(*g) - w).abs() < 1e-4, "engine {g} vs reference {w} (seed {seed}, gain {gain})");
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_batch_split_or_threads() {
    let weights = random_weights(4);
    let input = inputs(7, 4);
    let one = CpuEngine::new(&weights, 1).unwrap();
    let two = CpuEngine::new(&weights, 2).unwrap();
    let three = CpuEngine::new(&weights, 3).unwrap();
    let batched = logits(&one, &input);
    assert_eq!(logits(&two, &input), batched);
    assert_eq!(logits(&three, &input), batched);
    let single: Vec<f32> = input.chunks(INPUT_LEN).flat_map(|image| logits(&one, image)).collect();
    assert_eq!(single, batched, "an image alone and in a batch give the same bits");
    let shared: Vec<f32> = input.chunks(INPUT_LEN).flat_map(|image| logits(&two, image)).collect();
    assert_eq!(shared, batched, "an image whose convolutions are split between threads");
}

/// Every kernel this CPU runs (the portable one always) gives the same bits as the others,
/// alone and in a batch, on one thread and on two, and stays close to the reference: the
/// exact accuracy counts of the bundled model hold whichever kernel a machine picks.
#[test]
fn every_kernel_gives_the_same_bits() {
    let weights = strong_weights(8, 3.0);
    let input = inputs(5, 8);
    let kernels: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.is_available()).collect();
    assert!(kernels.contains(&Kernel::Portable), "the portable kernel runs everywhere");
    let want = logits(&CpuEngine::with_kernel(&weights, 1, Kernel::Portable).unwrap(), &input);
    for (image, row) in input.chunks(INPUT_LEN).zip(want.chunks(NUM_CLASSES)) {
        for (g, w) in row.iter().zip(reference::logits(&weights, image)) {
            assert!((f64::from(*g) - w).abs() < 1e-4, "portable kernel {g} vs reference {w}");
        }
    }
    for &kernel in &kernels {
        for threads in [1, 2] {
            let engine = CpuEngine::with_kernel(&weights, threads, kernel).unwrap();
            assert_eq!(engine.kernel(), kernel);
            assert!(logits(&engine, &input) == want, "{kernel} kernel, {threads} thread(s), a batch");
            let single: Vec<f32> = input.chunks(INPUT_LEN).flat_map(|image| logits(&engine, image)).collect();
            assert!(single == want, "{kernel} kernel, {threads} thread(s), one image at a time");
        }
    }
    println!("kernels compared: {kernels:?}");
}

/// The bundled model on the first 64 records of the in-repo sample: every kernel gives the
/// same logits, bit for bit, so the exact accuracy counts do not depend on the CPU.
#[test]
fn the_bundled_model_gives_the_same_bits_with_every_kernel() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let weights = Weights::load(root.join("models/cifar10.safetensors")).unwrap();
    let records = model_format::cifar::Records::read_file(root.join("data/sample/test_batch.bin")).unwrap();
    let mut input = vec![0f32; 64 * INPUT_LEN];
    for (i, slot) in input.chunks_exact_mut(INPUT_LEN).enumerate() {
        model_format::preprocess::preprocess(records.image(i), slot);
    }
    let want = logits(&CpuEngine::with_kernel(&weights, 2, Kernel::Portable).unwrap(), &input);
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        let got = logits(&CpuEngine::with_kernel(&weights, 2, kernel).unwrap(), &input);
        let differing = got.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
        assert_eq!(differing, 0, "{kernel} kernel: logits that differ from the portable kernel's");
    }
}

#[test]
fn kernel_names_parse_and_unknown_ones_are_errors() {
    for kernel in Kernel::ALL {
        assert_eq!(kernel.name().parse::<Kernel>(), Ok(kernel));
    }
    let err = "avx1024".parse::<Kernel>().unwrap_err();
    assert_eq!(err, "unknown kernel `avx1024`: expected auto, avx512, avx2 or portable");
    assert_eq!(infer::cpu::KERNEL_ENV, "INFER_CPU_KERNEL");
}

#[test]
fn a_workspace_is_reused_across_batch_sizes() {
    let engine = CpuEngine::new(&random_weights(5), 2).unwrap();
    let mut workspace = Workspace::new();
    let input = inputs(6, 5);
    let mut big = vec![0f32; 6 * NUM_CLASSES];
    engine.logits_flat_with(&mut workspace, &input, 6, &mut big).unwrap();
    let bytes = workspace.bytes();
    assert_eq!(bytes, engine.workspace_bytes(6));
    let mut small = vec![0f32; 2 * NUM_CLASSES];
    engine.logits_flat_with(&mut workspace, &input[..2 * INPUT_LEN], 2, &mut small).unwrap();
    assert_eq!(workspace.bytes(), bytes, "a smaller batch fits in the same buffers");
    assert_eq!(small[..], big[..2 * NUM_CLASSES]);
}

#[test]
fn bad_lengths_and_empty_batches_are_errors() {
    let engine = CpuEngine::new(&random_weights(6), 1).unwrap();
    let mut out = vec![0f32; NUM_CLASSES];
    assert!(matches!(engine.logits_flat(&[], 0, &mut []), Err(InferError::EmptyBatch)));
    let err = engine.logits_flat(&vec![0f32; INPUT_LEN - 1], 1, &mut out).unwrap_err();
    assert!(
        matches!(err, InferError::Length { what: "input", expected: INPUT_LEN, found } if found == INPUT_LEN - 1),
        "{err}"
    );
    let err = engine.logits_flat(&vec![0f32; INPUT_LEN], 1, &mut out[..9]).unwrap_err();
    assert_eq!(err.to_string(), "logits has 9 values, expected 10");
    assert_eq!(engine.name(), "cpu");
}

#[test]
fn the_engine_is_shareable_between_threads() {
    let engine = std::sync::Arc::new(CpuEngine::new(&random_weights(7), 1).unwrap());
    let input = inputs(2, 7);
    let want = logits(&engine, &input);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| assert_eq!(logits(&engine, &input), want));
        }
    });
}

/// Tutorial-initialised weights with every weight tensor (not the biases) scaled by `gain`.
/// At the initial scale the logits are ~0.1 and LRN is close to the identity; a gain of 3
/// gives logits of ~15, as a trained network has, so that every layer counts.
fn strong_weights(seed: u64, gain: f32) -> Weights {
    let tensors = random_weights(seed)
        .iter()
        .map(|(spec, t)| {
            let is_weight = spec.name.ends_with(".weight");
            t.iter().map(|&v| if is_weight { v * gain } else { v }).collect()
        })
        .collect();
    Weights::new(tensors, Default::default()).unwrap()
}
