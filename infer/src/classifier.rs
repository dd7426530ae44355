//! [`Classifier`]: an [`Engine`] plus class names, taking images in the layouts apps have
//! (CIFAR records, planar or interleaved 32×32 RGB, preprocessed tensors, PNG/JPEG files)
//! and returning [`Prediction`]s. `Send + Sync`: a server shares one behind an `Arc`.

use std::path::Path;
use std::sync::Arc;

use model_format::arch::{IMAGE_LEN, IMAGE_SIZE, INPUT_CHANNELS, INPUT_LEN, NUM_CLASSES};
use model_format::cifar::RECORD_LEN;
use model_format::preprocess::{preprocess, preprocess_hwc};
use model_format::{Model, Weights};
use ndarray::{Array2, ArrayView4};

use crate::cpu::CpuEngine;
use crate::engine::{check_input, Engine};
use crate::error::InferError;
use crate::prediction::Prediction;

/// Images handed to the engine per call when classifying a long list; bounds memory.
const CHUNK: usize = 256;

/// Classifies images with any [`Engine`].
///
/// ```
/// let bytes = infer::random_weights(5).to_bytes()?; // or include_bytes!("model.safetensors")
/// let classifier = infer::Classifier::from_bytes(&bytes)?;
/// let image = [200u8; 32 * 32 * 3]; // interleaved RGB, 32×32
/// let prediction = &classifier.classify_hwc(&image)?[0];
/// assert_eq!(prediction.label, classifier.class_names()[prediction.class]);
/// assert_eq!(prediction.top_k(3).len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Classifier {
    engine: Arc<dyn Engine>,
    class_names: Arc<[String]>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("engine", &self.engine.name())
            .field("class_names", &self.class_names)
            .finish()
    }
}

impl Classifier {
    /// Wraps an engine (`Box<dyn Engine>` or `Arc<dyn Engine>`) with the model's class names
    /// (ten of them, in label order).
    ///
    /// ```
    /// use infer::{Classifier, Engine, cpu::CpuEngine};
    /// let engine: Box<dyn Engine> = Box::new(CpuEngine::new(&infer::random_weights(1), 2)?);
    /// let names = model_format::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    /// let classifier = Classifier::new(engine, names)?;
    /// assert_eq!(classifier.engine().name(), "cpu");
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn new(engine: impl Into<Arc<dyn Engine>>, class_names: Vec<String>) -> Result<Self, InferError> {
        if class_names.len() != NUM_CLASSES {
            return Err(InferError::Length { what: "class names", expected: NUM_CLASSES, found: class_names.len() });
        }
        Ok(Classifier { engine: engine.into(), class_names: class_names.into() })
    }

    /// The pure-Rust engine on `weights`, using `threads` threads per call.
    pub fn from_weights(weights: &Weights, threads: usize) -> Result<Self, InferError> {
        let engine: Arc<dyn Engine> = Arc::new(CpuEngine::new(weights, threads)?);
        Classifier::new(engine, weights.metadata.class_names.clone())
    }

    /// The pure-Rust engine on a model of either variant (float or int8).
    pub fn from_model(model: &Model, threads: usize) -> Result<Self, InferError> {
        let engine: Arc<dyn Engine> = Arc::new(CpuEngine::for_model(model, threads)?);
        Classifier::new(engine, model.metadata().class_names.clone())
    }

    /// Loads and validates a model file of either variant (float or int8, see [`Model`]),
    /// then builds the pure-Rust engine (one thread).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, InferError> {
        Classifier::from_model(&Model::load(path)?, 1)
    }

    /// Like [`Classifier::from_path`] for a model held in memory (e.g. `include_bytes!`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InferError> {
        Classifier::from_model(&Model::from_bytes(bytes)?, 1)
    }

    /// The engine doing the work.
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// Class names in label order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Classifies preprocessed inputs: `n × 3 × 24 × 24` floats (see
    /// [`model_format::preprocess`]), `n ≥ 1`, with the checks of [`Classifier::logits_flat`].
    pub fn classify_preprocessed(&self, inputs: &[f32]) -> Result<Vec<Prediction>, InferError> {
        let n = count(inputs.len(), INPUT_LEN, "preprocessed input")?;
        let mut logits = vec![0f32; n * NUM_CLASSES];
        self.logits_flat(inputs, n, &mut logits)?;
        Ok(logits.chunks_exact(NUM_CLASSES).map(|row| self.prediction(row)).collect())
    }

    /// The logits `[N, 10]` of preprocessed inputs `[N, 3, 24, 24]` (any memory layout),
    /// with the checks of [`Classifier::logits_flat`].
    ///
    /// ```
    /// let classifier = infer::Classifier::from_bytes(&infer::random_weights(5).to_bytes()?)?;
    /// let mut x = ndarray::Array4::<f32>::zeros((2, 3, 24, 24));
    /// assert_eq!(classifier.logits(x.view())?.dim(), (2, 10));
    /// x[[1, 0, 3, 4]] = f32::INFINITY;
    /// let err = classifier.logits(x.view()).unwrap_err();
    /// assert!(matches!(err, infer::InferError::InputOutOfRange { .. }), "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn logits(&self, input: ArrayView4<f32>) -> Result<Array2<f32>, InferError> {
        let batch = check_input(&input)?;
        let input = input.as_standard_layout();
        let mut out = Array2::zeros((batch, NUM_CLASSES));
        let flat = input.as_slice().expect("a standard-layout array is contiguous");
        self.logits_flat(flat, batch, out.as_slice_mut().expect("a fresh array is contiguous"))?;
        Ok(out)
    }

    /// The logits of `batch` preprocessed inputs held in flat slices (`batch × 1,728` in,
    /// `batch × 10` out), the one checked path of every caller (Rust, Python, C, the
    /// server's engine workers aside, which check the same way):
    ///
    /// - every input value must be finite and within ±[`crate::error::MAX_INPUT_MAGNITUDE`]
    ///   ([`InferError::InputOutOfRange`] names the first one that is not);
    /// - logits that are not all finite (the model overflowed) are an
    ///   [`InferError::NonFinite`] naming the image, on every backend.
    ///
    /// The engine runs at most 256 images per call, which bounds its scratch memory.
    pub fn logits_flat(&self, inputs: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError> {
        if batch == 0 {
            return Err(InferError::EmptyBatch);
        }
        for (what, len, per) in [("input", inputs.len(), INPUT_LEN), ("logits", logits.len(), NUM_CLASSES)] {
            if batch.checked_mul(per) != Some(len) {
                return Err(InferError::Length { what, expected: batch.saturating_mul(per), found: len });
            }
        }
        InferError::check_input_values(inputs)?;
        for (c, (inputs, logits)) in
            inputs.chunks(CHUNK * INPUT_LEN).zip(logits.chunks_mut(CHUNK * NUM_CLASSES)).enumerate()
        {
            self.engine.logits_flat(inputs, inputs.len() / INPUT_LEN, logits)?;
            // One rule for every backend: non-finite logits are an error, never a prediction.
            InferError::check_finite_logits(logits).map_err(|e| e.for_image_after(c * CHUNK))?;
        }
        Ok(())
    }

    /// Classifies planar 32×32 RGB images (1,024 R, then G, then B bytes each, as in a
    /// CIFAR-10 record), `n × 3,072` bytes.
    pub fn classify_planar(&self, images: &[u8]) -> Result<Vec<Prediction>, InferError> {
        self.classify_images(images, IMAGE_LEN, 0, "planar RGB images", preprocess)
    }

    /// Classifies interleaved (HWC) 32×32 RGB images, `n × 3,072` bytes, as decoders give them.
    pub fn classify_hwc(&self, images: &[u8]) -> Result<Vec<Prediction>, InferError> {
        self.classify_images(images, IMAGE_LEN, 0, "interleaved RGB images", preprocess_hwc)
    }

    /// Classifies interleaved (HWC) 32×32 RGB images held in an ndarray `[N, 32, 32, 3]` (any
    /// memory layout), as image libraries and numpy hand them over.
    ///
    /// ```
    /// let classifier = infer::Classifier::from_bytes(&infer::random_weights(5).to_bytes()?)?;
    /// let images = ndarray::Array4::<u8>::from_elem((2, 32, 32, 3), 128);
    /// assert_eq!(classifier.classify_array(images.view())?.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn classify_array(&self, images: ArrayView4<u8>) -> Result<Vec<Prediction>, InferError> {
        if images.shape()[1..] != [IMAGE_SIZE, IMAGE_SIZE, INPUT_CHANNELS] {
            return Err(InferError::Shape {
                what: "images",
                expected: "[N, 32, 32, 3]",
                found: images.shape().to_vec(),
            });
        }
        let images = images.as_standard_layout();
        self.classify_hwc(images.as_slice().expect("a standard-layout array is contiguous"))
    }

    /// Classifies CIFAR-10 binary records (a label byte, then the planar image; 3,073 bytes
    /// each), such as the bytes of a `.bin` file or [`model_format::cifar::Records::as_bytes`].
    /// The stored labels are ignored.
    pub fn classify_records(&self, records: &[u8]) -> Result<Vec<Prediction>, InferError> {
        self.classify_images(records, RECORD_LEN, 1, "CIFAR-10 records", preprocess)
    }

    /// Classifies a PNG or JPEG held in memory (resized to 32×32, then the usual crop).
    #[cfg(feature = "image")]
    pub fn classify_image(&self, bytes: &[u8], name: &str) -> Result<Prediction, InferError> {
        let hwc = crate::image_input::decode_hwc(bytes, name)?;
        Ok(self.classify_hwc(&hwc)?.remove(0))
    }

    /// Classifies a PNG or JPEG file.
    #[cfg(feature = "image")]
    pub fn classify_image_file(&self, path: impl AsRef<Path>) -> Result<Prediction, InferError> {
        let hwc = crate::image_input::read_hwc(path.as_ref())?;
        Ok(self.classify_hwc(&hwc)?.remove(0))
    }

    /// Splits `bytes` into items of `item_len`, preprocesses the image at `skip` within each
    /// with `prepare`, and classifies them chunk by chunk.
    fn classify_images(
        &self,
        bytes: &[u8],
        item_len: usize,
        skip: usize,
        what: &'static str,
        mut prepare: impl FnMut(&[u8], &mut [f32]),
    ) -> Result<Vec<Prediction>, InferError> {
        let n = count(bytes.len(), item_len, what)?;
        let mut predictions = Vec::with_capacity(n);
        let mut inputs = vec![0f32; CHUNK.min(n) * INPUT_LEN];
        for chunk in bytes.chunks(CHUNK * item_len) {
            let batch = chunk.len() / item_len;
            let inputs = &mut inputs[..batch * INPUT_LEN];
            for (item, input) in chunk.chunks_exact(item_len).zip(inputs.chunks_exact_mut(INPUT_LEN)) {
                prepare(&item[skip..], input);
            }
            let done = predictions.len();
            predictions.extend(self.classify_preprocessed(inputs).map_err(|e| e.for_image_after(done))?);
        }
        Ok(predictions)
    }

    fn prediction(&self, logits: &[f32]) -> Prediction {
        let mut row = [0f32; NUM_CLASSES];
        row.copy_from_slice(logits);
        Prediction::from_logits(row, self.class_names.clone())
    }
}

/// How many `item_len`-sized items `len` holds; an error if none or not a whole number.
fn count(len: usize, item_len: usize, what: &'static str) -> Result<usize, InferError> {
    if len == 0 {
        return Err(InferError::EmptyBatch);
    }
    if !len.is_multiple_of(item_len) {
        return Err(InferError::Length { what, expected: len.div_ceil(item_len) * item_len, found: len });
    }
    Ok(len / item_len)
}
