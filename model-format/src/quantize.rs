//! Post-training static quantization of a float model into the int8 variant
//! ([`crate::quantized`]), feature `reference`.
//!
//! - **Weights**: per output channel, symmetric: `scale = max |w| / 127`, `q = round(w / scale)`.
//! - **Activations**: the input of each convolution and dense layer, per tensor, asymmetric
//!   u8 over the range `[min, max]` those inputs take on the calibration images in the float
//!   reference forward pass ([`crate::reference::forward`]); the range always holds 0.
//!
//! The calibration images should come from the training set (never the test set), with the
//! evaluation preprocessing. The result depends only on the weights and the images: the
//! ranges are minima and maxima, which no split of the work across threads can change, so the
//! same input gives the same bytes.
//!
//! ```
//! use model_format::{arch::INPUT_LEN, quantize, Metadata, Weights, TENSORS};
//! let weights = Weights::new(TENSORS.iter().map(|t| vec![0.01; t.len()]).collect(), Metadata::default())?;
//! let images = vec![0.5f32; 2 * INPUT_LEN];
//! let int8 = quantize::quantize(&weights, &images, "two flat images")?;
//! assert_eq!(int8.metadata.extra["calibration"], "two flat images");
//! # Ok::<(), model_format::WeightsError>(())
//! ```

use crate::arch::{INPUT_LEN, LAYERS, TENSORS};
use crate::cifar::{DataError, Dataset, Records, TRAIN_FILES};
use crate::error::WeightsError;
use crate::preprocess::preprocess;
use crate::quantized::{weighted_layers, ActivationQuant, QuantizedLayer, QuantizedWeights, WEIGHT_MAX};
use crate::reference;
use crate::weights::Weights;

/// Default number of calibration images: the first 1,000 of `data_batch_1.bin`.
pub const DEFAULT_CALIBRATION_IMAGES: usize = 1000;

/// The first `count` images of the training files (`data_batch_1.bin`, then `_2`, …) with
/// the evaluation preprocessing, and a description of them for [`CALIBRATION_FIELD`].
/// Never the test set. `count` must be between 1 and the 50,000 training images.
pub fn calibration_images(dataset: &Dataset, count: usize) -> Result<(Vec<f32>, String), CalibrationError> {
    let limit = TRAIN_FILES.len() * 10_000;
    if count == 0 || count > limit {
        return Err(CalibrationError::Count { count, limit });
    }
    let mut images = Vec::with_capacity(count * INPUT_LEN);
    let mut files = Vec::new();
    for name in TRAIN_FILES {
        let records = Records::read_file(dataset.dir.join(name)).map_err(CalibrationError::Data)?;
        let take = records.len().min(count - images.len() / INPUT_LEN);
        for i in 0..take {
            let start = images.len();
            images.resize(start + INPUT_LEN, 0.0);
            preprocess(records.image(i), &mut images[start..]);
        }
        files.push(format!("{take} of {name} ({})", records.head(take).fingerprint()));
        if images.len() == count * INPUT_LEN {
            break;
        }
    }
    if images.len() < count * INPUT_LEN {
        return Err(CalibrationError::Count { count, limit: images.len() / INPUT_LEN });
    }
    let description = format!(
        "min/max of each layer input over the first {count} training images (evaluation preprocessing): {}",
        files.join(", ")
    );
    Ok((images, description))
}

/// Why calibration images could not be had.
#[derive(Debug)]
pub enum CalibrationError {
    /// `--calibration-images` out of range.
    Count { count: usize, limit: usize },
    /// A training file is missing or corrupt.
    Data(DataError),
}

impl std::fmt::Display for CalibrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalibrationError::Count { count, limit } => {
                write!(f, "--calibration-images {count}: expected 1 to {limit} (images of the training batches)")
            }
            CalibrationError::Data(e) => write!(f, "calibration images: {e}"),
        }
    }
}

impl std::error::Error for CalibrationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CalibrationError::Data(e) => Some(e),
            CalibrationError::Count { .. } => None,
        }
    }
}

/// The metadata field describing the calibration (which images, how the ranges were taken).
pub const CALIBRATION_FIELD: &str = "calibration";

/// Quantizes `weights`, calibrating the activations on `images` (`n × INPUT_LEN` preprocessed
/// values, `n ≥ 1`). The float file's metadata is kept; `calibration` (which images) is
/// stored in the [`CALIBRATION_FIELD`] field. Uses every core for the calibration.
pub fn quantize(weights: &Weights, images: &[f32], calibration: &str) -> Result<QuantizedWeights, WeightsError> {
    if images.is_empty() || !images.len().is_multiple_of(INPUT_LEN) {
        return Err(crate::error::bad_field(
            CALIBRATION_FIELD,
            format!("{} values is not a whole number (at least 1) of {INPUT_LEN}-value images", images.len()),
        ));
    }
    let ranges = calibrate(weights, images);
    let layers = weighted_layers()
        .zip(ranges)
        .map(|((_, weight, bias), (min, max))| {
            let (weight, weight_scale) = quantize_rows(weights.tensor(weight), TENSORS[bias].len());
            QuantizedLayer {
                weight,
                weight_scale,
                bias: weights.tensor(bias).to_vec(),
                input: ActivationQuant::from_range(min, max),
            }
        })
        .collect();
    let mut metadata = weights.metadata.clone();
    metadata.precision_at_1 = None; // measured on the float model; the int8 one differs
    metadata.extra.insert(CALIBRATION_FIELD.into(), calibration.into());
    QuantizedWeights::new(layers, metadata)
}

/// Symmetric per-row quantization of a `[rows, n]` matrix: the int8 values and each row's scale.
/// An all-zero row gets scale 1 (any positive scale represents it exactly).
fn quantize_rows(matrix: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let n = matrix.len() / rows;
    let mut values = Vec::with_capacity(matrix.len());
    let mut scales = Vec::with_capacity(rows);
    for row in matrix.chunks_exact(n) {
        let peak = row.iter().fold(0f32, |m, &w| m.max(w.abs()));
        let scale = if peak > 0.0 { peak / f32::from(WEIGHT_MAX) } else { 1.0 };
        let max = f32::from(WEIGHT_MAX);
        values.extend(row.iter().map(|&w| (w / scale).round().clamp(-max, max) as i8));
        scales.push(scale);
    }
    (values, scales)
}

/// `(min, max)` of the input of every weighted layer, in [`weighted_layers`] order, over all
/// `images`, shared out between the machine's cores.
fn calibrate(weights: &Weights, images: &[f32]) -> Vec<(f32, f32)> {
    let watched: Vec<usize> = LAYERS
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| weighted_layers().any(|(n, _, _)| n == *name))
        .map(|(i, _)| i)
        .collect();
    let count = images.len() / INPUT_LEN;
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(count);
    let per_thread = count.div_ceil(threads);
    let partial: Vec<Vec<(f64, f64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = images
            .chunks(per_thread * INPUT_LEN)
            .map(|chunk| scope.spawn(|| ranges_of(weights, chunk, &watched)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("calibration thread")).collect()
    });
    (0..watched.len())
        .map(|i| {
            let (min, max) = partial
                .iter()
                .map(|p| p[i])
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (a, b)| (lo.min(a), hi.max(b)));
            (min as f32, max as f32)
        })
        .collect()
}

/// The ranges of the inputs of the layers `watched` (indices into [`LAYERS`]) over `images`.
fn ranges_of(weights: &Weights, images: &[f32], watched: &[usize]) -> Vec<(f64, f64)> {
    let mut ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); watched.len()];
    for image in images.chunks_exact(INPUT_LEN) {
        reference::forward(weights, image, |layer, values| {
            if let Some(slot) = watched.iter().position(|&w| w == layer) {
                let (lo, hi) = &mut ranges[slot];
                for &v in values {
                    *lo = lo.min(v);
                    *hi = hi.max(v);
                }
            }
        });
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_scaled_by_their_peak() {
        let (q, s) = quantize_rows(&[0.5, -1.0, 0.25, 0.0, 0.0, 0.0], 2);
        assert_eq!(q, vec![64, -127, 32, 0, 0, 0]);
        assert_eq!(s, vec![1.0 / 127.0, 1.0]);
    }

    #[test]
    fn an_empty_or_ragged_calibration_set_is_refused() {
        let w = Weights::new(TENSORS.iter().map(|t| vec![0.01; t.len()]).collect(), Default::default()).unwrap();
        let err = quantize(&w, &[0.0; 10], "x").unwrap_err().to_string();
        assert!(err.contains("calibration") && err.contains("1728"), "{err}");
    }
}
