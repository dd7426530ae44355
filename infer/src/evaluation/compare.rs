//! Two evaluations of the same images side by side: which images flipped, per-class counts
//! before and after, and whether the change is more than noise (McNemar's exact test on the
//! flips: only the images the two disagree on about being right carry information).

use model_format::arch::NUM_CLASSES;

use super::Evaluation;
use crate::error::InferError;

/// `candidate` against `baseline`, on the same images in the same order.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Images the baseline got right and the candidate wrong.
    pub right_to_wrong: usize,
    /// Images the baseline got wrong and the candidate right.
    pub wrong_to_right: usize,
    /// Indices of the images whose predicted class differs (right or wrong).
    pub disagreements: Vec<usize>,
    /// Two-sided exact McNemar p-value of the flips ([`mcnemar_exact_p`]).
    pub p_value: f64,
    /// `(baseline correct, candidate correct, images)` for each class.
    pub per_class: [(usize, usize, usize); NUM_CLASSES],
}

impl Comparison {
    /// Candidate precision@1 minus baseline precision@1.
    pub fn precision_change(&self) -> f64 {
        let images: usize = self.per_class.iter().map(|c| c.2).sum();
        if images == 0 {
            return 0.0;
        }
        (self.wrong_to_right as f64 - self.right_to_wrong as f64) / images as f64
    }
}

/// Compares two evaluations of the same images (same labels, same order).
///
/// ```
/// use infer::evaluation::{compare, Evaluation};
/// let old = Evaluation::from_predictions(vec![0, 1, 2, 3], vec![0, 1, 2, 0])?;
/// let new = Evaluation::from_predictions(vec![0, 1, 2, 3], vec![0, 1, 0, 3])?;
/// let change = compare(&old, &new)?;
/// assert_eq!((change.right_to_wrong, change.wrong_to_right), (1, 1));
/// assert_eq!(change.disagreements, [2, 3]);
/// assert_eq!(change.p_value, 1.0);
/// # Ok::<(), infer::InferError>(())
/// ```
pub fn compare(baseline: &Evaluation, candidate: &Evaluation) -> Result<Comparison, InferError> {
    if baseline.labels != candidate.labels {
        return Err(InferError::DifferentImages { baseline: baseline.labels.len(), candidate: candidate.labels.len() });
    }
    let mut comparison = Comparison {
        right_to_wrong: 0,
        wrong_to_right: 0,
        disagreements: Vec::new(),
        p_value: 1.0,
        per_class: [(0, 0, 0); NUM_CLASSES],
    };
    let images = baseline.labels.iter().zip(&baseline.predictions).zip(&candidate.predictions);
    for (i, ((&label, &old), &new)) in images.enumerate() {
        let (old_right, new_right) = (old == label, new == label);
        let class = &mut comparison.per_class[label as usize];
        class.0 += usize::from(old_right);
        class.1 += usize::from(new_right);
        class.2 += 1;
        comparison.right_to_wrong += usize::from(old_right && !new_right);
        comparison.wrong_to_right += usize::from(!old_right && new_right);
        if old != new {
            comparison.disagreements.push(i);
        }
    }
    comparison.p_value = mcnemar_exact_p(comparison.right_to_wrong, comparison.wrong_to_right);
    Ok(comparison)
}

/// Two-sided exact McNemar test: under "no change", each of the `b + c` discordant images is
/// equally likely to have flipped either way, so the smaller count is Binomial(b + c, ½);
/// the p-value is twice its lower tail, at most 1. Summed in log space, so it stays exact to
/// f64 rounding for any count (½ⁿ underflows past n = 1,074).
///
/// ```
/// use infer::evaluation::mcnemar_exact_p;
/// assert_eq!(mcnemar_exact_p(0, 0), 1.0);
/// assert!((mcnemar_exact_p(0, 5) - 0.0625).abs() < 1e-12); // 2 · ½⁵
/// ```
pub fn mcnemar_exact_p(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // ln P(X = i) for X ~ Binomial(n, ½), from ln P(X = 0) = −n ln 2 by the ratio (n − i)/(i + 1).
    let mut log_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut terms = Vec::with_capacity(k + 1);
    for i in 0..=k {
        terms.push(log_pmf);
        log_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binomial tail by exact integer arithmetic, for small n.
    fn exact_tail(b: usize, c: usize) -> f64 {
        let n = b + c;
        let mut choose = 1u128;
        let mut sum = 0u128;
        for i in 0..=b.min(c) {
            sum += choose;
            choose = choose * (n - i) as u128 / (i + 1) as u128;
        }
        (2.0 * sum as f64 / 2f64.powi(n as i32)).min(1.0)
    }

    #[test]
    fn the_log_space_sum_matches_exact_arithmetic() {
        for (b, c) in [(0, 1), (1, 1), (3, 9), (10, 30), (25, 25), (40, 80), (0, 100)] {
            let (ours, exact) = (mcnemar_exact_p(b, c), exact_tail(b, c));
            assert!((ours - exact).abs() <= 1e-12 * exact.max(1e-300), "{b},{c}: {ours} vs {exact}");
            assert_eq!(mcnemar_exact_p(b, c), mcnemar_exact_p(c, b));
        }
    }

    #[test]
    fn large_counts_neither_underflow_nor_exceed_one() {
        let p = mcnemar_exact_p(2000, 2100);
        assert!(p > 0.0 && p < 1.0, "{p}");
        assert_eq!(mcnemar_exact_p(3000, 3000), 1.0);
        assert!(mcnemar_exact_p(0, 5000) == 0.0 || mcnemar_exact_p(0, 5000) < 1e-300);
    }
}
