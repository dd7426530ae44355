//! Precision@1 and the confusion matrix of an [`Engine`] over labelled CIFAR-10 records, and
//! what a CI pipeline checks with them: a class-balanced quick subset ([`balanced_subset`]),
//! a paired comparison with a baseline ([`compare`]) and gates ([`Gates`]).

mod compare;
mod gate;

pub use compare::{compare, mcnemar_exact_p, Comparison};
pub use gate::{GateResult, Gates};

use model_format::arch::{INPUT_LEN, NUM_CLASSES};
use model_format::cifar::{Records, RECORD_LEN};
use model_format::preprocess::preprocess;

use crate::engine::Engine;
use crate::error::InferError;
use crate::prediction::argmax;

/// The outcome of one evaluation: each image's label and predicted class, and their counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// `confusion[true][predicted]`: how many images of class `true` got `predicted`.
    pub confusion: [[usize; NUM_CLASSES]; NUM_CLASSES],
    /// Each image's label, in record order.
    pub labels: Vec<u8>,
    /// Each image's top class, in record order.
    pub predictions: Vec<u8>,
}

impl Evaluation {
    /// Builds the counts from labels and predictions (classes 0–9, equal lengths).
    pub fn from_predictions(labels: Vec<u8>, predictions: Vec<u8>) -> Result<Self, InferError> {
        if labels.len() != predictions.len() {
            return Err(InferError::Length { what: "predictions", expected: labels.len(), found: predictions.len() });
        }
        let mut confusion = [[0usize; NUM_CLASSES]; NUM_CLASSES];
        for (&label, &predicted) in labels.iter().zip(&predictions) {
            let row = confusion.get_mut(label as usize).ok_or(InferError::ClassOutOfRange(label))?;
            *row.get_mut(predicted as usize).ok_or(InferError::ClassOutOfRange(predicted))? += 1;
        }
        Ok(Evaluation { confusion, labels, predictions })
    }

    /// Images whose top class is their label.
    pub fn correct(&self) -> usize {
        (0..NUM_CLASSES).map(|c| self.confusion[c][c]).sum()
    }

    /// Images evaluated.
    pub fn total(&self) -> usize {
        self.labels.len()
    }

    /// `correct / total` (0 when empty).
    pub fn precision_at_1(&self) -> f64 {
        accuracy(self.correct(), self.total())
    }

    /// `(correct, total)` of the images labelled `class`.
    pub fn class_counts(&self, class: usize) -> (usize, usize) {
        (self.confusion[class][class], self.confusion[class].iter().sum())
    }
}

/// `correct / total`, 0 when there is nothing to count: one rule for every report.
///
/// ```
/// assert_eq!(infer::evaluation::accuracy(3, 4), 0.75);
/// assert_eq!(infer::evaluation::accuracy(0, 0), 0.0);
/// ```
pub fn accuracy(correct: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        correct as f64 / total as f64
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
    let mut predictions = Vec::with_capacity(records.len());
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
        predictions.extend(logits[..n * NUM_CLASSES].chunks_exact(NUM_CLASSES).map(|row| argmax(row) as u8));
        start += n;
        progress(start);
    }
    let labels = (0..records.len()).map(|i| records.label(i)).collect();
    Evaluation::from_predictions(labels, predictions)
}

/// A class-balanced subset for a quick check: the first `n / 10` images of each class, kept
/// in file order. The same records give the same subset on every machine. `n` must be a
/// positive multiple of 10 that each class has enough images for.
///
/// ```
/// use model_format::cifar::Records;
/// let bytes: Vec<u8> = (0..40u8).flat_map(|i| std::iter::once(i % 10).chain([0; 3072])).collect();
/// let records = Records::from_bytes(bytes, "forty.bin")?;
/// let subset = infer::evaluation::balanced_subset(&records, 20)?;
/// assert_eq!(subset.len(), 20);
/// assert_eq!((0..20).map(|i| subset.label(i)).filter(|&l| l == 3).count(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn balanced_subset(records: &Records, n: usize) -> Result<Records, InferError> {
    if n == 0 || !n.is_multiple_of(NUM_CLASSES) {
        return Err(InferError::Subset(format!("{n} is not a positive multiple of {NUM_CLASSES}")));
    }
    let per_class = n / NUM_CLASSES;
    let mut taken = [0usize; NUM_CLASSES];
    let mut bytes = Vec::with_capacity(n * RECORD_LEN);
    for i in 0..records.len() {
        let class = records.label(i) as usize;
        if taken[class] < per_class {
            taken[class] += 1;
            bytes.extend_from_slice(records.record(i));
        }
    }
    if let Some(class) = taken.iter().position(|&t| t < per_class) {
        return Err(InferError::Subset(format!(
            "{n} images need {per_class} of each class; class {class} has only {}",
            taken[class]
        )));
    }
    Records::from_bytes(bytes, "subset").map_err(InferError::Data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(labels: &[u8]) -> Records {
        let bytes = labels.iter().flat_map(|&l| std::iter::once(l).chain(std::iter::repeat_n(l, RECORD_LEN - 1)));
        Records::from_bytes(bytes.collect(), "test").unwrap()
    }

    #[test]
    fn the_subset_takes_the_first_of_each_class_in_file_order() {
        let labels: Vec<u8> = (0..60usize).map(|i| (i * 7 % 10) as u8).collect();
        let all = records(&labels);
        let subset = balanced_subset(&all, 30).unwrap();
        let mut expected = Vec::new();
        let mut taken = [0; 10];
        for (i, &l) in labels.iter().enumerate() {
            if taken[l as usize] < 3 {
                taken[l as usize] += 1;
                expected.extend_from_slice(all.record(i));
            }
        }
        assert_eq!(subset.as_bytes(), expected.as_slice());
        assert_eq!(balanced_subset(&all, 30).unwrap().as_bytes(), subset.as_bytes(), "deterministic");
    }

    #[test]
    fn impossible_subsets_are_refused_naming_the_reason() {
        let all = records(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 8]);
        assert!(balanced_subset(&all, 15).unwrap_err().to_string().contains("multiple of 10"));
        assert!(balanced_subset(&all, 0).is_err());
        assert!(balanced_subset(&all, 10).unwrap_err().to_string().contains("class 9 has only 0"));
    }

    /// An engine whose logits turn NaN from the `from`-th image on.
    struct Diverging {
        from: usize,
        seen: std::sync::atomic::AtomicUsize,
    }

    impl Engine for Diverging {
        fn name(&self) -> &'static str {
            "diverging"
        }

        fn logits_flat(&self, _input: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError> {
            let seen = self.seen.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
            for (i, row) in logits.chunks_exact_mut(NUM_CLASSES).enumerate().take(batch) {
                row.fill(if seen + i >= self.from { f32::NAN } else { 1.0 });
            }
            Ok(())
        }
    }

    #[test]
    fn non_finite_logits_are_an_error_naming_the_record_not_a_score() {
        let engine = Diverging { from: 21, seen: 0.into() };
        let err = evaluate(&engine, &records(&[3; 40]), 16, |_| {}).unwrap_err();
        assert!(matches!(err, InferError::NonFinite { image: 21, .. }), "{err}");
    }

    #[test]
    fn counts_come_from_the_predictions() {
        let result = Evaluation::from_predictions(vec![0, 0, 1, 9], vec![0, 1, 1, 0]).unwrap();
        assert_eq!((result.correct(), result.total()), (2, 4));
        assert_eq!(result.confusion[0][1], 1);
        assert_eq!(result.class_counts(9), (0, 1));
        assert!(Evaluation::from_predictions(vec![0], vec![10]).is_err());
        assert!(Evaluation::from_predictions(vec![0, 1], vec![0]).is_err());
    }
}
