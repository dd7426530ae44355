//! The learning rate: the tutorial's staircase exponential decay.

/// Training examples per epoch (CIFAR-10's training set).
pub const EXAMPLES_PER_EPOCH: u64 = 50_000;

/// `initial · factor^⌊step / decay_steps⌋`.
///
/// ```
/// use train::schedule::LearningRate;
/// let lr = LearningRate::tutorial(128);
/// assert_eq!(lr.decay_steps, 136_718); // int(50000 / 128 · 350)
/// assert_eq!(lr.at(0), 0.1);
/// assert!((lr.at(136_718) - 0.01).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningRate {
    pub initial: f64,
    pub decay_factor: f64,
    pub decay_steps: u64,
}

impl LearningRate {
    /// Decays by `decay_factor` every `epochs_per_decay` epochs of `batch_size` batches,
    /// with the tutorial's rounding: `int(50000 / batch_size · epochs_per_decay)`.
    pub fn new(initial: f64, decay_factor: f64, epochs_per_decay: f64, batch_size: usize) -> LearningRate {
        let batches_per_epoch = EXAMPLES_PER_EPOCH as f64 / batch_size as f64;
        let decay_steps = ((batches_per_epoch * epochs_per_decay) as u64).max(1);
        LearningRate { initial, decay_factor, decay_steps }
    }

    /// The tutorial's values: 0.1, ×0.1 every 350 epochs.
    pub fn tutorial(batch_size: usize) -> LearningRate {
        Self::new(0.1, 0.1, 350.0, batch_size)
    }

    /// The rate used at `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        self.initial * self.decay_factor.powi((step / self.decay_steps) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staircase_holds_then_drops() {
        let lr = LearningRate::new(0.1, 0.1, 1.0, 50_000); // one step per epoch
        assert_eq!(lr.decay_steps, 1);
        let lr = LearningRate { decay_steps: 10, ..lr };
        assert_eq!(lr.at(9), 0.1);
        assert!((lr.at(10) - 0.01).abs() < 1e-15);
        assert!((lr.at(25) - 0.001).abs() < 1e-15);
    }
}
