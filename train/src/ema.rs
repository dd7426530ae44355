//! Exponential moving average of the weights, as TensorFlow's `ExponentialMovingAverage`
//! with `num_updates`: `shadow −= (1 − d)·(shadow − w)` with
//! `d = min(decay, (1 + step) / (10 + step))`, so early averages follow the weights closely.

use tch::Tensor;

use crate::error::TrainError;
use crate::flat;

/// The tutorial's decay.
pub const MOVING_AVERAGE_DECAY: f64 = 0.9999;

/// Shadow copies of a set of variables, in one buffer laid out like the variables' own
/// ([`crate::flat`]), so that an update is one kernel.
pub struct MovingAverage {
    pub decay: f64,
    flat: Tensor,
    /// Views of `flat`, shaped like the variables.
    shadow: Vec<Tensor>,
}

impl MovingAverage {
    /// Starts the averages at the variables' current values (as TensorFlow does).
    pub fn new(variables: &[Tensor], decay: f64) -> Result<MovingAverage, TrainError> {
        let (flat, shadow) = flat::copy_of(variables)?;
        Ok(MovingAverage { decay, flat, shadow })
    }

    /// Restores averages saved earlier (same order, shapes and layouts as the variables).
    pub fn from_tensors(shadow: Vec<Tensor>, decay: f64) -> Result<MovingAverage, TrainError> {
        Self::new(&shadow, decay)
    }

    /// The decay of an update made when `num_updates` training steps are done.
    pub fn decay_at(&self, num_updates: u64) -> f64 {
        let n = num_updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Moves every shadow towards its variable; `variables` is the variables' buffer (laid
    /// out as the ones this average started from, e.g. [`crate::Net::flat`]), and
    /// `num_updates` the number of training steps done, this one included (TensorFlow's
    /// `global_step` after the increment).
    pub fn update(&mut self, variables: &Tensor, num_updates: u64) -> Result<(), TrainError> {
        let keep = self.decay_at(num_updates);
        // `shadow + (1 − d)·(w − shadow)` is `lerp(shadow, w, 1 − d)`: one fused in-place
        // kernel over the whole buffer instead of three with two temporaries per tensor.
        tch::no_grad(|| {
            let _ = self.flat.f_lerp_(variables, 1.0 - keep)?;
            Ok(())
        })
    }

    /// The averages' buffer (what [`MovingAverage::shadow`] views): a data-parallel run
    /// broadcasts it from rank 0 at the start.
    pub fn flat(&self) -> &Tensor {
        &self.flat
    }

    /// The averaged values.
    pub fn shadow(&self) -> &[Tensor] {
        &self.shadow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_the_configured_decay() {
        let ema = MovingAverage::new(&[Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu))], 0.9999).unwrap();
        assert_eq!(ema.decay_at(0), 0.1);
        assert_eq!(ema.decay_at(90), 0.91);
        assert_eq!(ema.decay_at(1_000_000), 0.9999);
    }

    #[test]
    fn update_moves_the_shadow_by_one_minus_decay() {
        let start = Tensor::from_slice(&[0f32, 10.0]);
        let mut ema = MovingAverage::new(&[start.shallow_clone()], 0.5).unwrap();
        let now = Tensor::from_slice(&[4f32, 2.0]);
        ema.update(&now, 1_000).unwrap(); // decay 0.5
        assert_eq!(Vec::<f32>::try_from(&ema.shadow()[0]).unwrap(), [2.0, 6.0]);
        // the shadow is a copy: the variable it started from is unchanged
        assert_eq!(Vec::<f32>::try_from(&start).unwrap(), [0.0, 10.0]);
    }
}
