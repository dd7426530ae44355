//! Hostile inputs to the library, the same for every caller: out-of-range input values are
//! refused, overflow inside the network is refused when the model is loaded, a diverged
//! model gets no score, thread counts are bounded and a FIFO is never read as an image.

use infer::cpu::CpuEngine;
use infer::evaluation::evaluate;
use infer::{random_weights, Classifier, Engine, InferError};
use model_format::arch::{INPUT_LEN, NUM_CLASSES};
use model_format::cifar::Records;
use model_format::quantized::{ActivationQuant, QuantizedWeights};
use model_format::{Weights, WeightsError};
use ndarray::Array4;

/// The error of a constructor that must refuse (engines are not `Debug`, so no `expect_err`).
fn refused<T>(result: Result<T, InferError>) -> InferError {
    match result {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

fn classifier() -> Classifier {
    Classifier::from_bytes(&random_weights(4).to_bytes().unwrap()).unwrap()
}

#[test]
fn logits_refuse_nan_infinite_and_huge_inputs_naming_the_value() {
    let classifier = classifier();
    let mut x = Array4::<f32>::zeros((3, 3, 24, 24));
    assert!(classifier.logits(x.view()).is_ok());
    for (bad, words) in [
        (f32::NAN, "NaN, not finite"),
        (f32::INFINITY, "inf, not finite"),
        (-f32::INFINITY, "-inf, not finite"),
        (1e30, "1e30, outside"),
    ] {
        x[[2, 1, 0, 5]] = bad;
        let err = classifier.logits(x.view()).unwrap_err();
        let index = 2 * INPUT_LEN + 24 * 24 + 5;
        assert!(matches!(err, InferError::InputOutOfRange { index: i, .. } if i == index), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("input value {index} (image 2) is {words}")), "{text}");
        let flat = x.as_slice().unwrap();
        let mut out = vec![0f32; 3 * NUM_CLASSES];
        assert!(classifier.logits_flat(flat, 3, &mut out).is_err());
        assert!(classifier.classify_preprocessed(flat).is_err());
    }
    // The edge of the range is accepted.
    x[[2, 1, 0, 5]] = -1e6;
    assert!(classifier.logits(x.view()).is_ok());
}

/// An engine whose logits are infinite, as a diverged model gives.
struct Diverged;

impl Engine for Diverged {
    fn name(&self) -> &'static str {
        "diverged"
    }
    fn logits_flat(&self, _: &[f32], _: usize, logits: &mut [f32]) -> Result<(), InferError> {
        logits.fill(f32::INFINITY);
        Ok(())
    }
}

#[test]
fn eval_of_a_model_with_infinite_logits_is_an_error_not_a_score() {
    let records = Records::from_bytes(vec![1u8; 5 * 3073], "five.bin").unwrap();
    let err = evaluate(&Diverged, &records, 2, |_| {}).unwrap_err();
    assert!(matches!(err, InferError::NonFinite { image: 0, .. }), "{err}");
    assert!(err.to_string().contains("logits for image 0 are not finite"), "{err}");
}

fn with_first_weight(tensor: usize, value: f32) -> Weights {
    let weights = random_weights(7);
    let mut tensors = weights.clone().into_tensors();
    tensors[tensor][0] = value;
    Weights::new(tensors, weights.metadata).unwrap()
}

#[test]
fn a_weight_of_1e30_is_refused_when_the_engine_is_built() {
    for tensor in [0, 2, 4, 6, 8] {
        let err = refused(CpuEngine::new(&with_first_weight(tensor, 1e30), 1));
        assert!(matches!(err, InferError::Weights(WeightsError::Overflow { .. })), "tensor {tensor}: {err}");
        assert!(err.to_string().contains("could overflow"), "{err}");
    }
}

#[test]
fn int8_scales_of_1e30_are_refused_when_the_engine_is_built() {
    let model = QuantizedWeights::uniform(1e30, ActivationQuant { scale: 1e30, zero_point: 0 });
    let err = refused(CpuEngine::new_int8(&model, 1));
    assert!(matches!(err, InferError::Weights(WeightsError::Overflow { layer: "conv1", .. })), "{err}");
}

#[test]
fn thread_counts_above_the_bound_are_refused() {
    let weights = random_weights(1);
    let err = refused(CpuEngine::new(&weights, 3000));
    assert_eq!(err.to_string(), "threads is 3000, expected 1 to 256");
    assert!(CpuEngine::new(&weights, infer::error::MAX_THREADS + 1).is_err());
    assert!(CpuEngine::new(&weights, 2).is_ok());
}

#[test]
fn a_fifo_is_refused_as_an_image_at_once() {
    let dir = std::env::temp_dir().join(format!("infer-hostile-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("cat.png");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (sender, receiver) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = sender.send(infer::image_input::read_hwc(&path).map(|_| ()).map_err(|e| e.to_string()));
    });
    let result = receiver.recv_timeout(std::time::Duration::from_secs(10));
    if result.is_err() {
        // Unblock the reader so the test process can end, then fail.
        let _ = std::fs::write(&fifo, b"x");
    }
    let err = result.expect("reading a FIFO image blocked").unwrap_err();
    assert!(err.contains("is a FIFO, not a regular file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "onnx")]
#[test]
fn onnx_runtime_refuses_the_same_overflowing_models() {
    use infer::onnx::OnnxEngine;
    let err = refused(OnnxEngine::from_weights(&with_first_weight(2, 1e30), 1));
    assert!(matches!(err, InferError::Weights(WeightsError::Overflow { .. })), "{err}");
    let int8 = QuantizedWeights::uniform(1e30, ActivationQuant { scale: 1e30, zero_point: 0 });
    let err = refused(OnnxEngine::from_model(&model_format::Model::Int8(int8), 1));
    assert!(matches!(err, InferError::Weights(WeightsError::Overflow { .. })), "{err}");
    let err = refused(OnnxEngine::from_weights(&random_weights(1), 3000));
    assert_eq!(err.to_string(), "threads is 3000, expected 1 to 256");
}
