//! What a classification returns: the class, its label, the probabilities and the logits.

use std::sync::Arc;

use model_format::NUM_CLASSES;

/// The model's verdict on one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index of the most probable class (0–9).
    pub class: usize,
    /// Name of that class.
    pub label: String,
    /// Softmax of the logits, in class order; sums to 1.
    pub probabilities: [f32; NUM_CLASSES],
    /// The network's raw output, in class order.
    pub logits: [f32; NUM_CLASSES],
    class_names: Arc<[String]>,
}

/// One entry of [`Prediction::top_k`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub class: usize,
    pub label: String,
    pub probability: f32,
}

impl Prediction {
    /// Builds a prediction from logits; ties go to the lower class index.
    pub fn from_logits(logits: [f32; NUM_CLASSES], class_names: Arc<[String]>) -> Self {
        let probabilities = softmax(&logits);
        let class = argmax(&logits);
        Prediction { class, label: class_names[class].clone(), probabilities, logits, class_names }
    }

    /// The `k` most probable classes, most probable first (`k` is capped at 10).
    ///
    /// ```
    /// use std::sync::Arc;
    /// let names: Arc<[String]> = model_format::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    /// let mut logits = [0.0f32; 10];
    /// logits[3] = 2.0;
    /// logits[5] = 1.0;
    /// let p = infer::Prediction::from_logits(logits, names);
    /// let top = p.top_k(2);
    /// assert_eq!((top[0].label.as_str(), top[1].label.as_str()), ("cat", "dog"));
    /// ```
    pub fn top_k(&self, k: usize) -> Vec<Ranked> {
        ranked(&self.probabilities)
            .into_iter()
            .take(k)
            .map(|class| Ranked {
                class,
                label: self.class_names[class].clone(),
                probability: self.probabilities[class],
            })
            .collect()
    }
}

/// Class indices from the largest value to the smallest; equal values keep class order.
pub fn ranked(values: &[f32; NUM_CLASSES]) -> [usize; NUM_CLASSES] {
    let mut order: [usize; NUM_CLASSES] = std::array::from_fn(|i| i);
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order
}

/// Index of the largest value; the first one on ties.
pub fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// Numerically stable softmax (max subtracted, sums in `f64`).
pub fn softmax(logits: &[f32; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps = logits.map(|v| (f64::from(v) - f64::from(max)).exp());
    let sum: f64 = exps.iter().sum();
    exps.map(|e| (e / sum) as f32)
}
