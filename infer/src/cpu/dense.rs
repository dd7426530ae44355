//! Fully connected layers, `Y[n, out] = X[n, in] · Wᵀ + b` with `W` stored `[out, in]`, read
//! in place (a packing sgemm would repack 3.5 MB for local3 on every call). The product is
//! register-blocked like a GEMM: a tile of examples × outputs is computed together, so each
//! weight row loaded serves several examples and each example row several outputs.
//!
//! Each value is one dot product with `LANES` partial sums of fused multiply-adds, combined
//! in a fixed tree, then added to the bias: the same bits whatever the tile, batch size,
//! thread count or kernel.

use model_format::arch::Dense;

use super::kernel::{self, Kernel};
use super::workers::{SharedChunks, Team};

/// Output rows handled together: their weights (48 × 9 KB for local3) stay in L2 while
/// every example of the chunk streams past them.
const OUTPUT_BLOCK: usize = 48;

/// Multiply-adds below which a single example's layer runs on the calling thread alone.
const SHARED_MIN_PRODUCTS: usize = 256 * 1024;

/// Lanes of independent partial sums of one dot product: two AVX-512 registers, four AVX
/// ones, so the adds pipeline.
const LANES: usize = 32;

#[derive(Debug, Clone)]
pub(crate) struct DenseStep {
    weight: Vec<f32>,
    bias: Vec<f32>,
    pub(crate) in_features: usize,
    pub(crate) out_features: usize,
    pub(crate) relu: bool,
    kernel: Kernel,
}

impl DenseStep {
    pub(crate) fn new(dense: &Dense, weight: &[f32], bias: &[f32], kernel: Kernel) -> Self {
        DenseStep {
            weight: weight.to_vec(),
            bias: bias.to_vec(),
            in_features: dense.in_features(),
            out_features: dense.out_features(),
            relu: false,
            kernel,
        }
    }

    /// Floats of weights and biases.
    pub(crate) fn weight_floats(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    /// Applies the layer to `rows` inputs of `input` (`rows × in`) into `out` (`rows × out`).
    /// A single example shares its outputs between the team's threads.
    pub(crate) fn run(&self, input: &[f32], rows: usize, out: &mut [f32], team: &Team) {
        let (k, n) = (self.in_features, self.out_features);
        let input = &input[..rows * k];
        let out = &mut out[..rows * n];
        // Only a layer big enough (local3) repays waking the helpers.
        if rows > 1 || team.size() == 1 || k * n < SHARED_MIN_PRODUCTS {
            self.outputs(input, out, 0..n);
            return;
        }
        let share = n.div_ceil(team.size()).next_multiple_of(4);
        let chunks = SharedChunks::new(out, share);
        team.run(chunks.count(), &|i| {
            // SAFETY: each part index runs once, so each chunk is borrowed once.
            let part = unsafe { chunks.get(i) };
            self.outputs(input, part, i * share..i * share + part.len());
        });
    }

    /// Outputs `range` of every example: `out` holds `range.len()` values per example.
    fn outputs(&self, input: &[f32], out: &mut [f32], range: std::ops::Range<usize>) {
        let task =
            Tile { weight: &self.weight, k: self.in_features, input, out, width: range.len(), first: range.start };
        match self.kernel {
            // SAFETY: the engine only picks kernels the CPU runs (`Kernel::is_available`).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { products_avx512(task) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe { products_avx2_fma(task) },
            _ => products_portable(task),
        }
        let (bias, relu) = (&self.bias[range], self.relu);
        for row in out.chunks_exact_mut(bias.len()) {
            for (y, &b) in row.iter_mut().zip(bias) {
                let v = b + *y;
                *y = if relu { kernel::relu(v) } else { v };
            }
        }
    }
}

/// One call's dot products: `out[e][o - first] = Σ weight[o]·input[e]` for the outputs
/// `first..first + width`, before bias and activation.
struct Tile<'a> {
    weight: &'a [f32],
    k: usize,
    input: &'a [f32],
    out: &'a mut [f32],
    width: usize,
    first: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn products_avx512(task: Tile) {
    products::<simd::Avx512, 4, 3, 2>(task)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn products_avx2_fma(task: Tile) {
    products::<simd::Avx2, 3, 1, 4>(task)
}

/// All of a [`Tile`]'s dot products, `E` examples × `O` outputs at a time (the rest in
/// smaller tiles), output block by output block; `R` registers of `V` make `LANES` floats.
#[inline(always)]
unsafe fn products<V: Simd, const E: usize, const O: usize, const R: usize>(task: Tile) {
    let Tile { weight, k, input, out, width, first } = task;
    let rows = input.len() / k;
    for block in (0..width).step_by(OUTPUT_BLOCK) {
        let block_end = (block + OUTPUT_BLOCK).min(width);
        let mut e = 0;
        while e < rows {
            let examples = if rows - e >= E { E } else { 1 };
            let mut o = block;
            while o < block_end {
                let outputs = if block_end - o >= O { O } else { 1 };
                let w = |j: usize| &weight[(first + o + j) * k..][..k];
                let x = |i: usize| &input[(e + i) * k..][..k];
                let mut put = |i: usize, j: usize, v: f32| out[(e + i) * width + o + j] = v;
                match (examples == E, outputs == O) {
                    (true, true) => dot_tile::<V, E, O, R>(std::array::from_fn(x), std::array::from_fn(w), &mut put),
                    (true, false) => dot_tile::<V, E, 1, R>(std::array::from_fn(x), [w(0)], &mut put),
                    (false, true) => dot_tile::<V, 1, O, R>([x(0)], std::array::from_fn(w), &mut put),
                    (false, false) => dot_tile::<V, 1, 1, R>([x(0)], [w(0)], &mut put),
                }
                o += outputs;
            }
            e += examples;
        }
    }
}

/// `put(i, j, Σ x[i]·w[j])` for each pair, each sum in `LANES` partial sums: lane `l` takes
/// the terms `p ≡ l (mod LANES)` of the whole stretches, then the tail's terms in lanes
/// `0..`, and the lanes are added in halves (`l += l + width/2` down to one).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indices into several arrays at once
unsafe fn dot_tile<V: Simd, const E: usize, const O: usize, const R: usize>(
    x: [&[f32]; E],
    w: [&[f32]; O],
    put: &mut impl FnMut(usize, usize, f32),
) {
    debug_assert_eq!(R * V::WIDTH, LANES);
    let k = x[0].len();
    let body = k - k % LANES;
    let mut acc = [[[V::zero(); R]; O]; E];
    for p in (0..body).step_by(LANES) {
        for r in 0..R {
            let ws: [V; O] = std::array::from_fn(|j| V::load(w[j].as_ptr().add(p + r * V::WIDTH)));
            for i in 0..E {
                let xv = V::load(x[i].as_ptr().add(p + r * V::WIDTH));
                for j in 0..O {
                    acc[i][j][r] = V::mul_add(xv, ws[j], acc[i][j][r]);
                }
            }
        }
    }
    for i in 0..E {
        for j in 0..O {
            let mut lanes = [0f32; LANES];
            for r in 0..R {
                acc[i][j][r].store(lanes.as_mut_ptr().add(r * V::WIDTH));
            }
            for (l, p) in (body..k).enumerate() {
                lanes[l] = x[i][p].mul_add(w[j][p], lanes[l]);
            }
            put(i, j, reduce(lanes));
        }
    }
}

/// The lanes added in halves: `l += l + width/2` for `width` = 32, 16, …, 2.
#[inline(always)]
fn reduce(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0]
}

/// The portable dot products: the same sums with [`f32::mul_add`], one pair at a time.
fn products_portable(task: Tile) {
    let Tile { weight, k, input, out, width, first } = task;
    let body = k - k % LANES;
    for (x, y) in input.chunks_exact(k).zip(out.chunks_exact_mut(width)) {
        for (o, y) in y.iter_mut().enumerate() {
            let w = &weight[(first + o) * k..][..k];
            let mut lanes = [0f32; LANES];
            for (p, (&a, &b)) in x.iter().zip(w).enumerate() {
                let lane = if p < body { p % LANES } else { p - body };
                lanes[lane] = a.mul_add(b, lanes[lane]);
            }
            *y = reduce(lanes);
        }
    }
}

/// A SIMD register of `WIDTH` floats, for the x86-64 dot products.
trait Simd: Copy {
    const WIDTH: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// `a · b + c`, rounded once.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    unsafe fn store(self, p: *mut f32);
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl super::Simd for Avx512 {
        const WIDTH: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
    }

    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256);

    impl super::Simd for Avx2 {
        const WIDTH: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel, tile shape and thread share gives the bits of the definition: one dot
    /// product in `LANES` partial sums, written plainly.
    #[test]
    fn every_kernel_gives_the_bits_of_the_lane_sums() {
        let (rows, k, n) = (7, 2304 + 5, 115); // k · n over SHARED_MIN_PRODUCTS: shared out
        let weight: Vec<f32> = (0..n * k).map(|i| ((i as f32) * 0.37).sin()).collect();
        let bias: Vec<f32> = (0..n).map(|i| 0.1 - i as f32 * 0.01).collect();
        let input: Vec<f32> = (0..rows * k).map(|i| ((i as f32) * 0.11).cos()).collect();
        let want: Vec<f32> = (0..rows * n)
            .map(|i| {
                let (x, w) = (&input[i / n * k..][..k], &weight[i % n * k..][..k]);
                let mut lanes = [0f32; LANES];
                for (p, (&a, &b)) in x.iter().zip(w).enumerate() {
                    let lane = if p < k - k % LANES { p % LANES } else { p - (k - k % LANES) };
                    lanes[lane] = a.mul_add(b, lanes[lane]);
                }
                let mut width = LANES;
                while width > 1 {
                    width /= 2;
                    (0..width).for_each(|l| lanes[l] += lanes[l + width]);
                }
                bias[i % n] + lanes[0]
            })
            .collect();
        let workers = super::super::workers::Workers::new(2).unwrap();
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let step = DenseStep {
                weight: weight.clone(),
                bias: bias.clone(),
                in_features: k,
                out_features: n,
                relu: false,
                kernel,
            };
            let mut got = vec![0f32; rows * n];
            step.run(&input, rows, &mut got, &Team::alone());
            assert!(got == want, "{kernel}: a batch");
            for row in 0..rows {
                let mut one = vec![0f32; n];
                step.run(&input[row * k..][..k], 1, &mut one, &workers.team());
                assert!(one[..] == want[row * n..][..n], "{kernel}: example {row} alone on two threads");
            }
        }
    }
}
