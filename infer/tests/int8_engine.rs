//! The int8 engine against the naive integer forward pass (`model_format::reference::int8_logits`):
//! every kernel this CPU runs (the portable one forced on every machine), every thread count
//! and batch split gives exactly its bits, since the products are exact `i32` sums and the
//! float steps around them are the same operations in the same order.

use infer::cpu::{CpuEngine, Kernel};
use infer::{random_weights, Classifier};
use model_format::arch::{INPUT_LEN, NUM_CLASSES};
use model_format::quantize::quantize;
use model_format::{reference, Model, QuantizedWeights, Weights};

mod support;
use support::{inputs, logits};

/// Random weights scaled up (`gain`) so that every layer's activations are far from zero,
/// quantized with ranges calibrated on other random inputs.
fn int8_model(seed: u64, gain: f32) -> QuantizedWeights {
    let tensors = random_weights(seed)
        .iter()
        .map(|(spec, t)| t.iter().map(|&v| if spec.name.ends_with(".weight") { v * gain } else { v }).collect())
        .collect();
    let weights = Weights::new(tensors, Default::default()).unwrap();
    quantize(&weights, &inputs(4, seed + 100), "4 random inputs").unwrap()
}

#[test]
fn every_kernel_thread_count_and_split_gives_the_integer_reference_bits() {
    let kernels: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.is_available()).collect();
    assert!(kernels.contains(&Kernel::Portable), "the portable kernel runs everywhere");
    for (seed, gain) in [(1, 1.0), (2, 3.0)] {
        let model = int8_model(seed, gain);
        let input = inputs(5, seed);
        let want: Vec<f32> = input.chunks(INPUT_LEN).flat_map(|image| reference::int8_logits(&model, image)).collect();
        assert!(want.iter().any(|&v| v != want[0]), "logits that differ (seed {seed})");
        for &kernel in &kernels {
            for threads in [1, 2, 3] {
                let engine = CpuEngine::int8_with_kernel(&model, threads, kernel).unwrap();
                assert_eq!((engine.kernel(), engine.is_int8()), (kernel, true));
                let what = format!("{kernel} kernel, {threads} thread(s), seed {seed}");
                assert!(logits(&engine, &input) == want, "{what}: a batch of 5");
                let single: Vec<f32> = input.chunks(INPUT_LEN).flat_map(|image| logits(&engine, image)).collect();
                assert!(single == want, "{what}: one image at a time");
            }
        }
    }
}

/// The committed int8 model on the first images of the in-repo sample: every kernel and
/// thread count gives the integer reference's bits, so its exact counts hold on any machine.
#[test]
fn the_bundled_int8_model_gives_the_reference_bits_with_every_kernel() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = QuantizedWeights::load(root.join("models/cifar10-int8.safetensors")).unwrap();
    let records = model_format::cifar::Records::read_file(root.join("data/sample/test_batch.bin")).unwrap();
    let mut input = vec![0f32; 12 * INPUT_LEN];
    for (i, image) in input.chunks_exact_mut(INPUT_LEN).enumerate() {
        model_format::preprocess::preprocess(records.image(i), image);
    }
    let want: Vec<f32> = input.chunks(INPUT_LEN).flat_map(|image| reference::int8_logits(&model, image)).collect();
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        for threads in [1, 2] {
            let engine = CpuEngine::int8_with_kernel(&model, threads, kernel).unwrap();
            assert!(logits(&engine, &input) == want, "{kernel} kernel, {threads} thread(s)");
            assert!(logits(&engine, &input[..INPUT_LEN]) == want[..NUM_CLASSES], "{kernel}, {threads}, one image");
        }
    }
}

#[test]
fn the_int8_engine_follows_the_float_one_closely() {
    let weights = random_weights(5);
    let int8 = quantize(&weights, &inputs(8, 50), "8 random inputs").unwrap();
    let input = inputs(6, 5);
    let float = logits(&CpuEngine::new(&weights, 1).unwrap(), &input);
    let quantized = logits(&CpuEngine::new_int8(&int8, 1).unwrap(), &input);
    let spread = float.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (f, q) in float.iter().zip(&quantized) {
        assert!((f - q).abs() <= 0.1 * spread, "int8 {q} vs float {f} (largest logit {spread})");
    }
}

#[test]
fn a_model_of_either_variant_opens_through_one_function() {
    let int8 = int8_model(3, 1.0);
    let bytes = int8.to_bytes().unwrap();
    let classifier = Classifier::from_bytes(&bytes).unwrap();
    let engine = CpuEngine::for_model(&Model::from_bytes(&bytes).unwrap(), 1).unwrap();
    assert!(engine.is_int8());
    assert!(engine.weight_bytes() < model_format::PARAM_COUNT + 64 * 1024, "{} bytes", engine.weight_bytes());
    let input = inputs(2, 3);
    let predictions = classifier.classify_preprocessed(&input).unwrap();
    let want = logits(&engine, &input);
    assert_eq!(predictions[1].logits.to_vec(), want[NUM_CLASSES..].to_vec());
    assert_eq!(classifier.engine().name(), "cpu");
}
