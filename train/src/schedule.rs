//! The learning rate: the tutorial's staircase exponential decay, with the decay steps of
//! `cifar10_multi_gpu_train.py` (divided by the number of towers, since every tower reads its
//! own batch and a step covers that many batches).

/// Training examples per epoch (CIFAR-10's training set).
pub const EXAMPLES_PER_EPOCH: u64 = 50_000;

/// `initial · factor^⌊step / decay_steps⌋`.
///
/// ```
/// use train::schedule::LearningRate;
/// let lr = LearningRate::tutorial(128, 1);
/// assert_eq!(lr.decay_steps, 136_718); // int(50000 / 128 · 350)
/// assert_eq!(lr.at(0), 0.1);
/// assert!((lr.at(136_718) - 0.01).abs() < 1e-12);
/// // two towers of 128 each: a step is two batches, so the rate decays after half the steps
/// assert_eq!(LearningRate::tutorial(128, 2).decay_steps, 68_359); // int(50000 / 128 · 350 / 2)
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningRate {
    pub initial: f64,
    pub decay_factor: f64,
    pub decay_steps: u64,
}

impl LearningRate {
    /// Decays by `decay_factor` every `epochs_per_decay` epochs, `batch_size` being the
    /// examples of one tower and `towers` the number of towers, with the multi-GPU tutorial's
    /// rounding: `int(50000 / batch_size · epochs_per_decay / towers)`.
    pub fn new(
        initial: f64,
        decay_factor: f64,
        epochs_per_decay: f64,
        batch_size: usize,
        towers: usize,
    ) -> LearningRate {
        let batches_per_epoch = EXAMPLES_PER_EPOCH as f64 / batch_size as f64;
        let decay_steps = ((batches_per_epoch * epochs_per_decay / towers as f64) as u64).max(1);
        LearningRate { initial, decay_factor, decay_steps }
    }

    /// The tutorial's values: 0.1, ×0.1 every 350 epochs.
    pub fn tutorial(batch_size: usize, towers: usize) -> LearningRate {
        Self::new(0.1, 0.1, 350.0, batch_size, towers)
    }

    /// The rate used at `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        let decays = (step / self.decay_steps).min(i32::MAX as u64) as i32;
        self.initial * self.decay_factor.powi(decays)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staircase_holds_then_drops() {
        let lr = LearningRate::new(0.1, 0.1, 1.0, 50_000, 1); // one step per epoch
        assert_eq!(lr.decay_steps, 1);
        let lr = LearningRate { decay_steps: 10, ..lr };
        assert_eq!(lr.at(9), 0.1);
        assert!((lr.at(10) - 0.01).abs() < 1e-15);
        assert!((lr.at(25) - 0.001).abs() < 1e-15);
    }

    #[test]
    fn towers_divide_the_decay_steps_as_the_multi_gpu_tutorial_does() {
        // int(50000 / 128 · 350 / n) for n = 1..8, as cifar10_multi_gpu_train.py computes it
        let expected = [136_718, 68_359, 45_572, 34_179, 27_343, 22_786, 19_531, 17_089];
        for (n, want) in (1..=8).zip(expected) {
            assert_eq!(LearningRate::tutorial(128, n).decay_steps, want, "{n} towers");
        }
    }
}
