//! The tutorial's initialisation, seeded and bit-identical on every machine: each tensor as
//! its [`Init`] says, truncated normals redrawn beyond two standard deviations (TensorFlow's
//! `truncated_normal`), constants exact.
//!
//! Every draw uses only IEEE-754 addition, multiplication, division and square root, which
//! are exactly rounded everywhere; the one logarithm is computed here rather than by the
//! platform's maths library, whose last bits differ between systems. Each tensor draws from
//! its own stream of the seed (stream = its index in [`TENSORS`]), so a tensor's values do
//! not depend on the others' sizes.
//!
//! ```
//! use model_format::{arch, init};
//! let values = init::initial_tensors(1);
//! assert_eq!(values, init::initial_tensors(1));
//! assert!(values[arch::CONV2_BIAS].iter().all(|&b| b == 0.1));
//! assert!(values[arch::CONV1_WEIGHT].iter().all(|w| w.abs() <= 2.0 * 5e-2));
//! ```

use crate::arch::{Init, TENSORS};

/// The tutorial's initial values for `seed`: one flat vector per tensor, [`TENSORS`] order.
pub fn initial_tensors(seed: u64) -> Vec<Vec<f32>> {
    TENSORS
        .iter()
        .enumerate()
        .map(|(id, spec)| match spec.init {
            Init::Constant(value) => vec![value; spec.len()],
            Init::TruncatedNormal { std } => truncated_normal(seed, id as u64, spec.len(), std),
        })
        .collect()
}

/// `len` draws from stream `stream` of `seed` of a normal with mean 0 and standard deviation
/// `std`, each redrawn while it lies beyond `2·std`. Streams `0..TENSORS.len()` are the
/// tensors' own; use others for other purposes (e.g. test noise).
///
/// ```
/// let a = model_format::init::truncated_normal(3, 100, 5, 0.5);
/// assert_eq!(a, model_format::init::truncated_normal(3, 100, 5, 0.5));
/// assert_ne!(a, model_format::init::truncated_normal(3, 101, 5, 0.5));
/// assert!(a.iter().all(|v| v.abs() <= 1.0));
/// ```
pub fn truncated_normal(seed: u64, stream: u64, len: usize, std: f32) -> Vec<f32> {
    let mut rng = SplitMix64::stream(seed, stream);
    // |z| <= 2 and rounding is monotonic, so |value| <= 2·std holds in f32 as well.
    (0..len).map(|_| (rng.truncated_standard_normal() * f64::from(std)) as f32).collect()
}

/// Sebastiano Vigna's SplitMix64: tiny, seedable, the same sequence on every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A generator for `stream` of `seed`: both go through the output mix, so nearby seeds
    /// and streams start far apart.
    fn stream(seed: u64, stream: u64) -> Self {
        SplitMix64(mix(seed ^ mix(stream.wrapping_add(Self::GAMMA))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        mix(self.0)
    }

    /// Uniform on [-1, 1) in steps of 2⁻⁵² (exact in f64).
    fn symmetric_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * f64::powi(2.0, -52) - 1.0
    }

    /// A standard normal draw (Marsaglia's polar method), redrawn while beyond two deviations.
    fn truncated_standard_normal(&mut self) -> f64 {
        loop {
            let (u, v) = (self.symmetric_unit(), self.symmetric_unit());
            let s = u * u + v * v;
            if s == 0.0 || s >= 1.0 {
                continue;
            }
            let z = u * (-2.0 * ln(s) / s).sqrt();
            if z.abs() <= 2.0 {
                return z;
            }
        }
    }
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Natural logarithm of a positive normal `x`, from exactly rounded arithmetic only (see the
/// module docs): `x = m·2^e` with `m` in [√½, √2), `ln m = 2·atanh t` with `t = (m−1)/(m+1)`,
/// `|t| < 0.172`, whose series `t + t³/3 + t⁵/5 + …` is below 1e-19 after 12 terms.
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let (m, e) =
        if mantissa > std::f64::consts::SQRT_2 { (mantissa / 2.0, exponent + 1) } else { (mantissa, exponent) };
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let mut power = t;
    let mut sum = 0.0;
    for k in 0..12 {
        sum += power / f64::from(2 * k + 1);
        power *= t2;
    }
    2.0 * sum + f64::from(e) * std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{CONV1_WEIGHT, LOCAL3_WEIGHT};

    #[test]
    fn the_same_seed_gives_the_same_bits_and_others_differ() {
        let a = initial_tensors(5);
        assert_eq!(a, initial_tensors(5));
        assert_ne!(a[CONV1_WEIGHT], initial_tensors(6)[CONV1_WEIGHT]);
        // Tensors have streams of their own: the first values of two tensors differ.
        assert_ne!(a[CONV1_WEIGHT][..8], a[LOCAL3_WEIGHT][..8]);
    }

    #[test]
    fn the_bits_are_those_of_every_other_machine() {
        // Pinned when the initializer was written: a change of algorithm, stream layout
        // or floating-point behaviour on some machine shows up here.
        let first: Vec<u32> = initial_tensors(1)[CONV1_WEIGHT][..4].iter().map(|v| v.to_bits()).collect();
        assert_eq!(first, PINNED_SEED_1_CONV1, "{:?}", initial_tensors(1)[CONV1_WEIGHT][..4].to_vec());
        let mut hash = crate::digest::Fnv1a64::default();
        for v in initial_tensors(1).iter().flatten() {
            hash.update(&v.to_le_bytes());
        }
        assert_eq!(hash.finish(), PINNED_SEED_1_ALL_TENSORS);
    }

    const PINNED_SEED_1_CONV1: [u32; 4] = [1008609953, 3171865124, 3167934822, 983470648];
    const PINNED_SEED_1_ALL_TENSORS: &str = "fnv1a64:8959bb1c2fb0a859";

    #[test]
    fn constants_are_exact_and_normals_are_truncated_at_two_deviations() {
        for (spec, data) in TENSORS.iter().zip(initial_tensors(9)) {
            match spec.init {
                Init::Constant(c) => assert!(data.iter().all(|&v| v == c), "{}", spec.name),
                Init::TruncatedNormal { std } => {
                    assert!(data.iter().all(|v| v.abs() <= 2.0 * std), "{} exceeds 2σ", spec.name)
                }
            }
        }
    }

    #[test]
    fn the_standard_deviation_is_that_of_a_normal_truncated_at_two() {
        // Var of N(0,1) truncated to [-2, 2]: 1 − 4φ(2)/(Φ(2) − Φ(−2)) = 0.77374, sd 0.87962.
        let std = 0.04;
        let data = &initial_tensors(3)[LOCAL3_WEIGHT];
        let n = data.len() as f64;
        let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let sd = (data.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.002 * std, "mean {mean}");
        assert!((sd / std - 0.87962).abs() < 0.003, "sd {} σ", sd / std);
        // The tails are there: 2σ is approached, not cut short.
        assert!(data.iter().any(|v| v.abs() > 1.99 * std as f32));
    }

    #[test]
    fn the_logarithm_matches_the_platform_s_to_a_few_ulps() {
        let mut rng = SplitMix64::stream(0, 0);
        for _ in 0..10_000 {
            let x = (rng.symmetric_unit() + 1.0) / 2.0 + 1e-300;
            let (ours, platform) = (ln(x), x.ln());
            assert!(
                (ours - platform).abs() <= 4.0 * f64::EPSILON * platform.abs().max(1.0),
                "ln({x}): {ours} vs {platform}"
            );
        }
        assert_eq!(ln(1.0), 0.0);
        assert!((ln(std::f64::consts::E) - 1.0).abs() < 4.0 * f64::EPSILON);
    }
}
