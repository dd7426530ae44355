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
            InferError::Image(why) | InferError::TooLarge(why) => write!(f, "{why}"),
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
                 outside the range of preprocessed images"
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
