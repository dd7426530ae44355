//! Seeded weights drawn with the tutorial's initialisation, for tests, benchmarks and demos
//! that have no trained model. The same seed gives the same bits on every machine.

use model_format::arch::{Init, TENSORS};
use model_format::{init, Metadata, Weights};

/// Standard deviation of the seeded nudge added to constant-initialised biases.
const NUDGE_STD: f32 = 0.01;
/// The nudges draw from streams of their own, above the tensors' (see [`init::truncated_normal`]).
const NUDGE_STREAMS: u64 = 1 << 32;

/// Weights following each tensor's [`Init`] ([`init::initial_tensors`]: truncated normal or
/// constant), from `seed`.
///
/// Constant-initialised biases are nudged by a small seeded amount so that every tensor
/// matters in a comparison between engines.
///
/// ```
/// let a = infer::random_weights(3);
/// assert_eq!(a, infer::random_weights(3));
/// assert_ne!(a, infer::random_weights(4));
/// ```
pub fn random_weights(seed: u64) -> Weights {
    let mut tensors = init::initial_tensors(seed);
    for (id, (spec, values)) in TENSORS.iter().zip(&mut tensors).enumerate() {
        if let Init::Constant(_) = spec.init {
            let nudges = init::truncated_normal(seed, NUDGE_STREAMS + id as u64, values.len(), NUDGE_STD);
            values.iter_mut().zip(nudges).for_each(|(v, nudge)| *v += nudge);
        }
    }
    Weights::new(tensors, Metadata::default()).expect("generated tensors have the declared shapes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_shared_initializer_and_biases_are_nudged() {
        let weights = random_weights(2);
        let initial = init::initial_tensors(2);
        for ((spec, values), initial) in weights.iter().zip(&initial) {
            match spec.init {
                Init::TruncatedNormal { .. } => assert_eq!(values, initial.as_slice(), "{}", spec.name),
                Init::Constant(c) => {
                    assert!(values.iter().all(|v| (v - c).abs() <= 2.0 * NUDGE_STD), "{}", spec.name);
                    assert!(values.iter().any(|&v| v != c), "{} was not nudged", spec.name);
                }
            }
        }
    }
}
