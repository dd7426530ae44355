//! Fully connected layers, `Y[n, out] = X[n, in] · Wᵀ + b` with `W` stored `[out, in]`, as
//! one dot product per (example, output). A general sgemm would repack the whole weight
//! matrix (3.5 MB for local3) on every call, which dominates at small batches; dot products
//! read it once, in place. Each value is summed in the same order whatever the batch size
//! or thread count, so an image gets the same bits alone or in a batch.

use model_format::arch::Dense;

/// Output rows handled together: their weights (16 × 9 KB for local3) stay in L2 while
/// every example of the chunk streams past them.
const OUTPUT_BLOCK: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct DenseStep {
    weight: Vec<f32>,
    bias: Vec<f32>,
    pub(crate) in_features: usize,
    pub(crate) out_features: usize,
    pub(crate) relu: bool,
    dot: DotFn,
}

type DotFn = fn(&[f32], &[f32]) -> f32;

impl DenseStep {
    pub(crate) fn new(dense: &Dense, weight: &[f32], bias: &[f32]) -> Self {
        DenseStep {
            weight: weight.to_vec(),
            bias: bias.to_vec(),
            in_features: dense.in_features(),
            out_features: dense.out_features(),
            relu: false,
            dot: best_dot(),
        }
    }

    /// Floats of weights and biases.
    pub(crate) fn weight_floats(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    /// Applies the layer to `rows` inputs of `input` (`rows × in`) into `out` (`rows × out`).
    pub(crate) fn run(&self, input: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n) = (self.in_features, self.out_features);
        let input = &input[..rows * k];
        let out = &mut out[..rows * n];
        for first in (0..n).step_by(OUTPUT_BLOCK) {
            let block = first..(first + OUTPUT_BLOCK).min(n);
            for (x, y) in input.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
                for o in block.clone() {
                    let v = self.bias[o] + (self.dot)(&self.weight[o * k..][..k], x);
                    y[o] = if self.relu { v.max(0.0) } else { v };
                }
            }
        }
    }
}

/// The fastest dot product this CPU runs (chosen once, when the engine is built).
fn best_dot() -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return |a, b| {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { dot_avx2_fma(a, b) }
        };
    }
    dot_portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_with(a, b, f32::mul_add)
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_with(a, b, |x, y, acc| acc + x * y)
}

/// Lanes of independent partial sums: four AVX registers' worth, so the adds pipeline.
const LANES: usize = 32;

/// `Σ a[i]·b[i]` with `LANES` partial sums combined in a fixed order; `mul_add(x, y, acc)`
/// is `acc + x·y`, fused or not.
#[inline(always)]
fn dot_with(a: &[f32], b: &[f32], mul_add: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (a_body, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_body, b_tail) = b.split_at(a_body.len());
    for (x, y) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for j in 0..LANES {
            acc[j] = mul_add(x[j], y[j], acc[j]);
        }
    }
    for (j, (&x, &y)) in a_tail.iter().zip(b_tail).enumerate() {
        acc[j] = mul_add(x, y, acc[j]);
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            acc[j] += acc[j + width];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_products_match_a_plain_sum() {
        for len in [1, 31, 32, 33, 100, 2304] {
            let a: Vec<f32> = (0..len).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let b: Vec<f32> = (0..len).map(|i| ((i * 5) % 11) as f32 * 0.25).collect();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
            assert_eq!(f64::from(best_dot()(&a, &b)), want, "length {len}");
            assert_eq!(f64::from(dot_portable(&a, &b)), want, "length {len}");
        }
    }
}
