//! Local response normalisation across channels, TensorFlow's convention:
//! `y[c] = x[c] / (bias + alpha · Σ x[c']²)^beta` over the clipped window `c ± depth_radius`.

use model_format::arch::Lrn;

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

    /// Floats of scratch needed: one plane of window sums.
    pub(crate) fn scratch_len(&self) -> usize {
        self.plane
    }

    /// Normalises one `[c, h·w]` map into `out`; `sums` is scratch.
    #[inline(always)] // compiled for the kernel's instruction set (`MapStep::run`)
    pub(crate) fn run(&self, input: &[f32], out: &mut [f32], sums: &mut [f32]) {
        let (p, r) = (self.plane, self.lrn.depth_radius);
        let sums = &mut sums[..p];
        for c in 0..self.channels {
            sums.fill(0.0);
            // Summing whole planes keeps the inner loop contiguous (it vectorises).
            for other in c.saturating_sub(r)..(c + r + 1).min(self.channels) {
                for (s, &x) in sums.iter_mut().zip(&input[other * p..][..p]) {
                    *s += x * x;
                }
            }
            let src = &input[c * p..][..p];
            let dst = &mut out[c * p..][..p];
            for ((d, &x), &s) in dst.iter_mut().zip(src).zip(sums.iter()) {
                *d = x * self.inverse_power(self.lrn.bias + self.lrn.alpha * s);
            }
        }
    }

    /// `t^-beta`; the tutorial's beta = 0.75 is `1 / (√t · ⁴√t)`, much cheaper than `powf`.
    #[inline]
    fn inverse_power(&self, t: f32) -> f32 {
        if self.lrn.beta == 0.75 {
            let root = t.sqrt();
            1.0 / (root * root.sqrt())
        } else {
            t.powf(-self.lrn.beta)
        }
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
        let mut sums = [0f32; 1];
        LrnStep::new(LRN, channels, 1).run(&input, &mut out, &mut sums);
        for c in 0..channels {
            let window = c.saturating_sub(4)..(c + 5).min(channels);
            let sum: f64 = input[window].iter().map(|&x| f64::from(x).powi(2)).sum();
            let want = f64::from(input[c]) / (1.0 + f64::from(LRN.alpha) * sum).powf(0.75);
            assert!((f64::from(out[c]) - want).abs() < 1e-5 * want.abs().max(1.0), "channel {c}: {} vs {want}", out[c]);
        }
    }
}
