//! Precision@1 and the confusion matrix of an [`Engine`] over labelled CIFAR-10 records.

use model_format::arch::{INPUT_LEN, NUM_CLASSES};
use model_format::cifar::Records;
use model_format::preprocess::preprocess;

use crate::engine::Engine;
use crate::error::InferError;
use crate::prediction::argmax;

/// Counts from one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// `confusion[true][predicted]`: how many images of class `true` got `predicted`.
    pub confusion: [[usize; NUM_CLASSES]; NUM_CLASSES],
}

impl Evaluation {
    /// Images whose top class is their label.
    pub fn correct(&self) -> usize {
        (0..NUM_CLASSES).map(|c| self.confusion[c][c]).sum()
    }

    /// Images evaluated.
    pub fn total(&self) -> usize {
        self.confusion.iter().flatten().sum()
    }

    /// `correct / total` (0 when empty).
    pub fn precision_at_1(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    /// `(correct, total)` of the images labelled `class`.
    pub fn class_counts(&self, class: usize) -> (usize, usize) {
        (self.confusion[class][class], self.confusion[class].iter().sum())
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Runs `engine` over every record in batches of `batch_size`, calling `progress` with the
/// number of images done after each batch. Logits that are not finite are an
/// [`InferError::NonFinite`] naming the record, as everywhere else.
///
/// ```
/// let engine = infer::cpu::CpuEngine::new(&infer::random_weights(0), 1)?;
/// let records = model_format::cifar::Records::from_bytes(vec![3u8; 2 * 3073], "two.bin")?;
/// let result = infer::evaluation::evaluate(&engine, &records, 16, |_| {})?;
/// assert_eq!(result.total(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn evaluate(
    engine: &dyn Engine,
    records: &Records,
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Evaluation, InferError> {
    if records.is_empty() || batch_size == 0 {
        return Err(InferError::EmptyBatch);
    }
    let batch_size = batch_size.min(records.len());
    let mut input = vec![0f32; batch_size * INPUT_LEN];
    let mut logits = vec![0f32; batch_size * NUM_CLASSES];
    let mut confusion = [[0usize; NUM_CLASSES]; NUM_CLASSES];
    let mut start = 0;
    while start < records.len() {
        let n = batch_size.min(records.len() - start);
        for (i, slot) in input[..n * INPUT_LEN].chunks_exact_mut(INPUT_LEN).enumerate() {
            preprocess(records.image(start + i), slot);
        }
        engine.logits_flat(&input[..n * INPUT_LEN], n, &mut logits[..n * NUM_CLASSES])?;
        // A diverged model is an error naming the image, never a score: argmax over
        // infinities or NaNs would count arbitrary classes as answers.
        InferError::check_finite_logits(&logits[..n * NUM_CLASSES]).map_err(|e| e.for_image_after(start))?;
        for (i, row) in logits[..n * NUM_CLASSES].chunks_exact(NUM_CLASSES).enumerate() {
            confusion[records.label(start + i) as usize][argmax(row)] += 1;
        }
        start += n;
        progress(start);
    }
    Ok(Evaluation { confusion })
}
