//! Seeded random streams. Every random choice of the trainer's input pipeline (epoch order,
//! image distortions) draws from a stream keyed by `(seed, purpose, index)`, so that what a
//! step sees depends only on the seed and the step number: not on thread timing, on how many
//! input workers run, or on whether the run was resumed from a checkpoint.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; each purpose gets streams disjoint from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// The order of the training examples in one epoch (index: the epoch).
    EpochOrder = 2,
    /// The distortions of one training batch (index: the step).
    Distortion = 3,
}

/// The stream for `(seed, purpose, index)`.
///
/// ```
/// use rand::Rng;
/// use train::seeding::{stream, Purpose};
/// let a: u64 = stream(7, Purpose::Distortion, 3).gen();
/// let b: u64 = stream(7, Purpose::Distortion, 3).gen();
/// assert_eq!(a, b);
/// assert_ne!(a, stream(7, Purpose::Distortion, 4).gen::<u64>());
/// ```
pub fn stream(seed: u64, purpose: Purpose, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}
