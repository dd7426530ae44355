//! What the CPU engine's test files share: seeded inputs and a one-call forward pass.

use infer::cpu::CpuEngine;
use infer::Engine;
use model_format::arch::{INPUT_LEN, NUM_CLASSES};

/// Seeded pseudo-random inputs roughly like standardised images (values in [-2, 2)).
pub fn inputs(batch: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..batch * INPUT_LEN)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// The engine's logits for `input`, a whole number of images.
pub fn logits(engine: &CpuEngine, input: &[f32]) -> Vec<f32> {
    let batch = input.len() / INPUT_LEN;
    let mut out = vec![0f32; batch * NUM_CLASSES];
    engine.logits_flat(input, batch, &mut out).unwrap();
    out
}
