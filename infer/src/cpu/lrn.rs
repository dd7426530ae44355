//! Local response normalisation across channels, TensorFlow's convention:
//! `y[c] = x[c] / (bias + alpha · Σ x[c']²)^beta` over the clipped window `c ± depth_radius`.

use model_format::arch::Lrn;

use super::kernel::Kernel;
use super::workers::{ChannelStep, Channels, SharedChunks, Team};

/// Pixels whose window sums are kept on the stack at once.
const BLOCK: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct LrnStep {
    lrn: Lrn,
    channels: usize,
    plane: usize,
}

impl LrnStep {
    pub(crate) fn new(lrn: Lrn, channels: usize, plane: usize) -> Self {
        LrnStep { lrn, channels, plane }
    }

    /// Normalises one `[c, h·w]` map into `out`, the channels shared out between the team.
    pub(crate) fn run(&self, input: &[f32], out: &mut [f32], team: &Team, kernel: Kernel) {
        let per_part = self.channels.div_ceil(team.size());
        let out = SharedChunks::new(&mut out[..self.channels * self.plane], per_part * self.plane);
        team.run_parts(out.count(), kernel, &Channels { step: self, input, out, per_part });
    }

    /// Channels `first..` of the output, as many as `out` holds. Each sum adds the squares in
    /// channel order from 0, whatever the split.
    #[inline(always)]
    fn channels(&self, input: &[f32], first: usize, out: &mut [f32]) {
        let (p, r) = (self.plane, self.lrn.depth_radius);
        for (c, dst) in (first..).zip(out.chunks_exact_mut(p)) {
            let window = c.saturating_sub(r)..(c + r + 1).min(self.channels);
            for start in (0..p).step_by(BLOCK) {
                let len = BLOCK.min(p - start);
                let mut sums = [0f32; BLOCK];
                for other in window.clone() {
                    for (s, &x) in sums[..len].iter_mut().zip(&input[other * p + start..][..len]) {
                        *s += x * x;
                    }
                }
                let src = &input[c * p + start..][..len];
                for ((d, &x), &s) in dst[start..start + len].iter_mut().zip(src).zip(&sums[..len]) {
                    *d = x * self.lrn.inverse_power(self.lrn.bias + self.lrn.alpha * s);
                }
            }
        }
    }
}

impl ChannelStep for LrnStep {
    #[inline(always)]
    fn channels(&self, input: &[f32], first: usize, out: &mut [f32]) {
        LrnStep::channels(self, input, first, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::arch::LRN;

    #[test]
    fn matches_tensorflows_formula_with_clipped_windows() {
        let channels = 12;
        // Large enough values that the divisor is far from 1 (up to ~3).
        let input: Vec<f32> = (0..channels).map(|c| (c as f32 - 5.5) * 10.0).collect();
        let mut out = vec![0f32; channels];
        LrnStep::new(LRN, channels, 1).run(&input, &mut out, &Team::alone(), Kernel::Portable);
        for c in 0..channels {
            let window = c.saturating_sub(4)..(c + 5).min(channels);
            let sum: f64 = input[window].iter().map(|&x| f64::from(x).powi(2)).sum();
            let want = f64::from(input[c]) / (1.0 + f64::from(LRN.alpha) * sum).powf(0.75);
            assert!((f64::from(out[c]) - want).abs() < 1e-5 * want.abs().max(1.0), "channel {c}: {} vs {want}", out[c]);
        }
    }
}
