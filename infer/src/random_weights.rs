//! Seeded weights drawn with the tutorial's initialisation, for tests, benchmarks and demos
//! that have no trained model. The same seed gives the same bits on every machine.

use model_format::arch::{Init, TENSORS};
use model_format::{Metadata, Weights};

/// Weights following each tensor's [`Init`] (truncated normal or constant), from `seed`.
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
    let mut rng = SplitMix64(seed ^ 0x5DEE_CE66_D1CE_4E5B);
    let tensors = TENSORS
        .iter()
        .map(|spec| {
            (0..spec.len())
                .map(|_| match spec.init {
                    Init::TruncatedNormal { std } => std * rng.truncated_normal(),
                    Init::Constant(value) => value + 0.01 * rng.truncated_normal(),
                })
                .collect()
        })
        .collect();
    Weights::new(tensors, Metadata::default()).expect("generated tensors have the declared shapes")
}

/// Sebastiano Vigna's SplitMix64: tiny, seedable, good enough for initialisation.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal resampled beyond two deviations (Box–Muller).
    fn truncated_normal(&mut self) -> f32 {
        loop {
            let z = (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
            if z.abs() <= 2.0 {
                return z as f32;
            }
        }
    }
}
