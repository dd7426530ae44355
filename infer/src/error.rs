//! Errors of the inference crate.

use std::fmt;

use model_format::arch::NUM_CLASSES;
use model_format::cifar::DataError;
use model_format::WeightsError;

/// Everything that can go wrong while loading a model or classifying inputs.
#[derive(Debug)]
pub enum InferError {
    /// The model file failed validation.
    Weights(WeightsError),
    /// The dataset could not be read.
    Data(DataError),
    /// A batch of zero inputs.
    EmptyBatch,
    /// An input or output array of the wrong shape.
    Shape { what: &'static str, expected: &'static str, found: Vec<usize> },
    /// An input or output slice of the wrong length.
    Length { what: &'static str, expected: usize, found: usize },
    /// An image that could not be decoded or has the wrong size.
    Image(String),
    /// An input larger than a stated limit (e.g. an image canvas over
    /// [`crate::image_input::MAX_IMAGE_PIXELS`]).
    TooLarge(String),
    /// The backend itself failed (e.g. ONNX Runtime missing or refusing the model).
    Backend(String),
    /// The engine's logits for an image are not finite: the model overflowed on an input
    /// far outside what preprocessing gives (see [`InferError::check_finite_logits`]).
    NonFinite { image: usize, value: f32 },
    /// A label or predicted class outside 0–9.
    ClassOutOfRange(u8),
    /// Two evaluations compared were not of the same images (count or order).
    DifferentImages { baseline: usize, candidate: usize },
    /// A subset that the records cannot give (see [`crate::evaluation::balanced_subset`]).
    Subset(String),
    /// A preprocessed input value that is NaN, infinite or beyond ±[`MAX_INPUT_MAGNITUDE`]
    /// (see [`InferError::check_input_values`]): `index` counts from the batch's first value.
    InputOutOfRange { index: usize, value: f32 },
    /// A thread count outside `1..=`[`MAX_THREADS`] (see [`check_threads`]).
    Threads(String),
}

/// Largest magnitude accepted in a preprocessed (float) input. Preprocessed images lie
/// within ±42 (the standardisation of 1,728 values cannot go further); far larger values
/// make the engines overflow, each in its own way, so every caller of the library (Rust,
/// Python, C, the server) refuses them alike.
pub const MAX_INPUT_MAGNITUDE: f32 = 1e6;

/// Most threads one engine may use, and the most a server may start for its engines in
/// all (`--workers × --threads`): the one bound of the CLI, the server, Python and C.
/// Far more threads than cores only adds switching, and each holds a stack.
pub const MAX_THREADS: usize = 256;

/// Checks a thread count against `1..=`[`MAX_THREADS`]; `what` names it in the error
/// (`--threads`, `threads`, …).
///
/// ```
/// assert!(infer::error::check_threads("--threads", 8).is_ok());
/// let err = infer::error::check_threads("--threads", 3000).unwrap_err();
/// assert_eq!(err.to_string(), "--threads is 3000, expected 1 to 256");
/// ```
pub fn check_threads(what: &str, threads: usize) -> Result<usize, InferError> {
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(threads)
    } else {
        Err(InferError::Threads(format!("{what} is {threads}, expected 1 to {MAX_THREADS}")))
    }
}

impl InferError {
    /// The one rule for every backend: logits (rows of `NUM_CLASSES`) that are not all
    /// finite are an error naming the first image at fault, never `NaN`s passed on as
    /// predictions (the engines overflow differently, so they would disagree).
    ///
    /// ```
    /// use infer::InferError;
    /// let mut logits = vec![0.5f32; 20];
    /// assert!(InferError::check_finite_logits(&logits).is_ok());
    /// logits[13] = f32::NAN;
    /// let err = InferError::check_finite_logits(&logits).unwrap_err();
    /// assert!(matches!(err, InferError::NonFinite { image: 1, .. }), "{err}");
    /// ```
    pub fn check_finite_logits(logits: &[f32]) -> Result<(), InferError> {
        match logits.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(InferError::NonFinite { image: i / NUM_CLASSES, value: logits[i] }),
            None => Ok(()),
        }
    }
}

impl InferError {
    /// The one input rule for every caller: preprocessed values must be finite and within
    /// ±[`MAX_INPUT_MAGNITUDE`]. The error names the first value at fault (see
    /// [`first_out_of_range`]).
    ///
    /// ```
    /// use infer::InferError;
    /// assert!(InferError::check_input_values(&[0.5, -41.0]).is_ok());
    /// let err = InferError::check_input_values(&[0.5, f32::NAN]).unwrap_err();
    /// assert!(matches!(err, InferError::InputOutOfRange { index: 1, .. }), "{err}");
    /// assert!(InferError::check_input_values(&[1e30]).is_err());
    /// ```
    pub fn check_input_values(values: &[f32]) -> Result<(), InferError> {
        // Cheap next to the model: one comparison per value, where the model does ~20,000
        // multiply-adds per value.
        match first_out_of_range(values) {
            Some((index, value)) => Err(InferError::InputOutOfRange { index, value }),
            None => Ok(()),
        }
    }
}

impl InferError {
    /// The same error for a batch that starts `images` images later (the image numbers of
    /// [`InferError::NonFinite`] and [`InferError::InputOutOfRange`] count from the first
    /// image of the whole call, not of the chunk that failed).
    pub fn for_image_after(self, images: usize) -> InferError {
        match self {
            InferError::NonFinite { image, value } => InferError::NonFinite { image: image + images, value },
            InferError::InputOutOfRange { index, value } => {
                InferError::InputOutOfRange { index: index + images * model_format::arch::INPUT_LEN, value }
            }
            e => e,
        }
    }
}

/// The index and value of the first input value that is NaN, infinite or beyond
/// ±[`MAX_INPUT_MAGNITUDE`], if any.
pub fn first_out_of_range(values: &[f32]) -> Option<(usize, f32)> {
    let i = values.iter().position(|v| v.is_nan() || v.abs() > MAX_INPUT_MAGNITUDE)?;
    Some((i, values[i]))
}

/// Why `value` is refused, in words: "NaN, not finite" or "1e30, outside …".
pub fn out_of_range_reason(value: f32) -> String {
    if value.is_finite() {
        format!("{value:e}, outside the accepted range -{MAX_INPUT_MAGNITUDE:e}..={MAX_INPUT_MAGNITUDE:e}")
    } else {
        format!("{value}, not finite")
    }
}

impl fmt::Display for InferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InferError::Weights(e) => write!(f, "{e}"),
            InferError::Data(e) => write!(f, "{e}"),
            InferError::EmptyBatch => write!(f, "empty batch: give at least one input"),
            InferError::Length { what, expected, found } => {
                write!(f, "{what} has {found} values, expected {expected}")
            }
            InferError::Shape { what, expected, found } => write!(f, "{what} has shape {found:?}, expected {expected}"),
            InferError::Image(why) | InferError::TooLarge(why) | InferError::Threads(why) => write!(f, "{why}"),
            InferError::Backend(why) => write!(f, "{why}"),
            InferError::ClassOutOfRange(class) => write!(f, "class {class} is outside 0-{}", NUM_CLASSES - 1),
            InferError::DifferentImages { baseline, candidate } => write!(
                f,
                "the two evaluations are not of the same images ({baseline} and {candidate} images, or in another order)"
            ),
            InferError::Subset(why) => write!(f, "{why}"),
            InferError::NonFinite { image, value } => write!(
                f,
                "the model's logits for image {image} are not finite ({value}): it overflowed on an input far \
                 outside the range of preprocessed images, or its weights overflow"
            ),
            InferError::InputOutOfRange { index, value } => write!(
                f,
                "input value {index} (image {}) is {} (preprocessed images lie within ±42)",
                index / model_format::arch::INPUT_LEN,
                out_of_range_reason(*value)
            ),
        }
    }
}

impl std::error::Error for InferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InferError::Weights(e) => Some(e),
            InferError::Data(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WeightsError> for InferError {
    fn from(e: WeightsError) -> Self {
        InferError::Weights(e)
    }
}

impl From<DataError> for InferError {
    fn from(e: DataError) -> Self {
        InferError::Data(e)
    }
}
