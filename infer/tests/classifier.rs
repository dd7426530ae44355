//! The `Classifier` API: every input layout gives the same answer for the same image, the
//! outputs are consistent, and bad inputs are errors, not panics.

use std::sync::Arc;

use infer::cpu::CpuEngine;
use infer::{random_weights, Classifier, Engine, InferError};
use model_format::arch::{IMAGE_LEN, IMAGE_SIZE, INPUT_LEN, NUM_CLASSES};
use model_format::cifar::{Records, RECORD_LEN};
use model_format::preprocess::preprocess;
use model_format::{Weights, CLASS_NAMES};

fn sample() -> Records {
    let records = Records::read_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/sample/test_batch.bin")).unwrap();
    records.head(5)
}

fn classifier() -> Classifier {
    Classifier::from_bytes(&random_weights(21).to_bytes().unwrap()).unwrap()
}

fn to_hwc(planar: &[u8]) -> Vec<u8> {
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    (0..plane).flat_map(|i| (0..3).map(move |c| planar[c * plane + i])).collect()
}

#[test]
fn every_input_layout_gives_the_same_prediction() {
    let classifier = classifier();
    let records = sample();
    let planar: Vec<u8> = (0..records.len()).flat_map(|i| records.image(i).to_vec()).collect();
    let hwc: Vec<u8> = (0..records.len()).flat_map(|i| to_hwc(records.image(i))).collect();
    let mut tensors = vec![0f32; records.len() * INPUT_LEN];
    for (i, slot) in tensors.chunks_exact_mut(INPUT_LEN).enumerate() {
        preprocess(records.image(i), slot);
    }
    let from_records = classifier.classify_records(records.as_bytes()).unwrap();
    assert_eq!(from_records.len(), records.len());
    assert_eq!(classifier.classify_planar(&planar).unwrap(), from_records);
    assert_eq!(classifier.classify_hwc(&hwc).unwrap(), from_records);
    let array = ndarray::Array4::from_shape_vec((records.len(), IMAGE_SIZE, IMAGE_SIZE, 3), hwc.clone()).unwrap();
    assert_eq!(classifier.classify_array(array.view()).unwrap(), from_records);
    // A non-standard layout (images stored NCHW, viewed as NHWC) is read correctly too.
    let nchw = ndarray::Array4::from_shape_vec((records.len(), 3, IMAGE_SIZE, IMAGE_SIZE), planar.clone()).unwrap();
    assert_eq!(classifier.classify_array(nchw.view().permuted_axes([0, 2, 3, 1])).unwrap(), from_records);
    assert_eq!(classifier.classify_preprocessed(&tensors).unwrap(), from_records);
}

#[test]
fn predictions_are_consistent() {
    let predictions = classifier().classify_records(sample().as_bytes()).unwrap();
    for p in &predictions {
        let sum: f32 = p.probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
        let best = p.probabilities.iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(p.probabilities[p.class], best);
        assert_eq!(p.label, CLASS_NAMES[p.class]);
        let top = p.top_k(NUM_CLASSES + 5);
        assert_eq!(top.len(), NUM_CLASSES, "top_k is capped at the class count");
        assert_eq!(top[0].class, p.class);
        assert!(top.windows(2).all(|w| w[0].probability >= w[1].probability));
        assert!(p.top_k(0).is_empty());
    }
}

#[test]
fn a_classifier_wraps_any_engine_and_is_shareable() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let weights = random_weights(21);
    let boxed: Box<dyn Engine> = Box::new(CpuEngine::new(&weights, 2).unwrap());
    let names: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    let from_box = Classifier::new(boxed, names.clone()).unwrap();
    let shared: Arc<dyn Engine> = Arc::new(CpuEngine::new(&weights, 1).unwrap());
    let from_arc = Arc::new(Classifier::new(shared, names).unwrap());
    shareable(&from_arc);
    let image = sample().image(0).to_vec();
    let want = from_box.classify_planar(&image).unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert_eq!(from_arc.classify_planar(&image).unwrap(), want));
        }
    });
    let err = Classifier::new(Box::new(CpuEngine::new(&weights, 1).unwrap()) as Box<dyn Engine>, vec!["cat".into()]);
    assert!(matches!(err, Err(InferError::Length { what: "class names", .. })));
}

#[test]
fn class_names_come_from_the_model_file() {
    let mut weights = random_weights(3);
    weights.metadata.class_names = (0..10).map(|i| format!("thing{i}")).collect();
    let weights = Weights::new(weights.iter().map(|(_, t)| t.to_vec()).collect(), weights.metadata.clone()).unwrap();
    let classifier = Classifier::from_weights(&weights, 1).unwrap();
    let p = &classifier.classify_planar(&[9u8; IMAGE_LEN]).unwrap()[0];
    assert_eq!(p.label, format!("thing{}", p.class));
}

#[test]
fn wrong_sizes_and_empty_inputs_are_errors() {
    let classifier = classifier();
    assert!(matches!(classifier.classify_hwc(&[]), Err(InferError::EmptyBatch)));
    let err = classifier.classify_hwc(&[0u8; IMAGE_LEN + 1]).unwrap_err();
    assert_eq!(err.to_string(), "interleaved RGB images has 3073 values, expected 6144");
    assert!(classifier.classify_records(&[0u8; RECORD_LEN - 1]).is_err());
    assert!(classifier.classify_planar(&[0u8; 100]).is_err());
    assert!(classifier.classify_preprocessed(&[0f32; INPUT_LEN + 3]).is_err());
}

#[test]
fn invalid_model_files_are_refused_with_the_reason() {
    let bytes = random_weights(1).to_bytes().unwrap();
    let err = Classifier::from_bytes(&bytes[..bytes.len() - 8]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(Classifier::from_bytes(b"hello").is_err());
    let err = Classifier::from_path("/nonexistent/model.safetensors").unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/model.safetensors: "), "{err}");
}

#[cfg(feature = "image")]
mod images {
    use super::*;
    use std::io::Cursor;

    fn encode(image: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn a_32x32_png_classifies_exactly_like_its_pixels() {
        let classifier = classifier();
        let hwc = to_hwc(sample().image(2));
        let png = encode(&image::RgbImage::from_raw(32, 32, hwc.clone()).unwrap(), image::ImageFormat::Png);
        assert_eq!(classifier.classify_image(&png, "x.png").unwrap(), classifier.classify_hwc(&hwc).unwrap()[0]);
    }

    #[test]
    fn other_sizes_and_jpeg_are_resized_to_32x32() {
        let big = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
        let jpeg = encode(&big, image::ImageFormat::Jpeg);
        assert_eq!(infer::image_input::decode_hwc(&jpeg, "big.jpg").unwrap().len(), IMAGE_LEN);
        let p = classifier().classify_image(&jpeg, "big.jpg").unwrap();
        assert!(p.class < NUM_CLASSES);
    }

    #[test]
    fn non_images_are_errors_naming_the_input() {
        let classifier = classifier();
        let err = classifier.classify_image(b"GIF89a....", "anim.gif").unwrap_err();
        assert!(err.to_string().starts_with("anim.gif: "), "{err}");
        let mut png = encode(&image::RgbImage::new(8, 8), image::ImageFormat::Png);
        png.truncate(png.len() / 2);
        let err = classifier.classify_image(&png, "cut.png").unwrap_err();
        assert!(err.to_string().starts_with("cut.png: cannot decode"), "{err}");
    }
}

#[test]
fn arrays_of_the_wrong_shape_are_errors() {
    let classifier = classifier();
    let err = classifier.classify_array(ndarray::Array4::<u8>::zeros((1, 32, 32, 4)).view()).unwrap_err();
    assert_eq!(err.to_string(), "images has shape [1, 32, 32, 4], expected [N, 32, 32, 3]");
    assert!(matches!(
        classifier.classify_array(ndarray::Array4::<u8>::zeros((0, 32, 32, 3)).view()),
        Err(InferError::EmptyBatch)
    ));
    let engine = CpuEngine::new(&random_weights(3), 1).unwrap();
    let err = engine.logits(ndarray::Array4::<f32>::zeros((2, 3, 24, 23)).view()).unwrap_err();
    assert!(matches!(err, InferError::Shape { what: "input", .. }), "{err}");
}

/// An engine whose logits are NaN for every input whose first value is negative, as an
/// overflowing backend would give.
struct Overflowing;

impl Engine for Overflowing {
    fn name(&self) -> &'static str {
        "overflowing"
    }
    fn logits_flat(&self, input: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError> {
        for (image, row) in input.chunks(INPUT_LEN).zip(logits.chunks_mut(NUM_CLASSES)).take(batch) {
            row.fill(if image[0] < 0.0 { f32::NAN } else { 1.0 });
        }
        Ok(())
    }
}

#[test]
fn non_finite_logits_are_an_error_not_a_prediction() {
    let names = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    let classifier = Classifier::new(Box::new(Overflowing) as Box<dyn Engine>, names).unwrap();
    let mut inputs = vec![0.5f32; 300 * INPUT_LEN];
    inputs[290 * INPUT_LEN] = -1.0; // in the second chunk of 256 images
    let err = classifier.classify_preprocessed(&inputs).unwrap_err();
    assert!(matches!(err, InferError::NonFinite { image: 290, .. }), "{err}");
    assert!(classifier.classify_preprocessed(&inputs[..INPUT_LEN]).is_ok());
}
