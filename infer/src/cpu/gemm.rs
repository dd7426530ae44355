//! The convolutions' matrix product, `C = act(bias + A·B)`, with both operands packed so
//! that a register-blocked micro-kernel (an `mr × nr` tile of C held in registers) reads
//! them contiguously. A (the weights) is packed once, when the engine is built; B (the
//! im2col matrix) is written straight into its packed layout by the caller, in a buffer of
//! the engine's workspace. So a product allocates nothing.
//!
//! Every value of C is one chain of fused multiply-adds over `k` in increasing order,
//! starting from its bias, whichever kernel, tile, k-block or thread computes it: results do
//! not depend on the kernel nor on how the rows are shared out between threads.

use super::kernel::{self, Kernel};

/// Largest `mr · nr` of any micro-kernel (the AVX-512 one): the size of an edge tile.
const MAX_TILE: usize = 8 * 48;

/// `c[r][t] = act(init[r][t] + Σ_p a[p·mr + r] · b[p·nr + t])` for one `mr × nr` tile, where
/// `init` is the bias of row `r` when `bias` is not null, else the tile's current values,
/// and `act` is a ReLU when asked for.
///
/// # Safety
/// `a` holds `depth · mr` floats, `b` holds `depth · nr`, `bias` is null or holds `mr`, and
/// `c` is valid for `mr` rows of `nr` floats at a stride of `ldc`.
type TileFn = unsafe fn(usize, *const f32, *const f32, *mut f32, usize, *const f32, bool);

/// A micro-kernel and the packed layouts it reads.
#[derive(Clone, Copy)]
pub(crate) struct Micro {
    /// Rows of a tile (and of a packed A panel).
    pub(crate) mr: usize,
    /// Columns of a tile (and of a packed B panel).
    pub(crate) nr: usize,
    /// Depth of one pass over a B panel: `kc × nr` floats stay in L1 while every A panel
    /// streams past them.
    kc: usize,
    run: TileFn,
    kernel: Kernel,
}

impl std::fmt::Debug for Micro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}x{}", self.kernel, self.mr, self.nr)
    }
}

impl Micro {
    /// The micro-kernel of `kernel`, which the CPU must support (see [`Kernel::is_available`]).
    pub(crate) fn new(kernel: Kernel) -> Self {
        assert!(kernel.is_available(), "the {kernel} kernel runs on this CPU");
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => Micro { mr: 8, nr: 48, kc: 128, run: tile_avx512, kernel },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => Micro { mr: 6, nr: 16, kc: 256, run: tile_avx2_fma, kernel },
            _ => Micro { mr: 6, nr: 16, kc: 256, run: tile_portable, kernel },
        }
    }
}

/// A row-major `rows × depth` matrix with one bias per row, packed in panels of `mr` rows:
/// panel `i` holds, for each `p` in `0..depth`, the `mr` values `a[i·mr + r][p]` (zero past
/// the last row).
#[derive(Debug, Clone)]
pub(crate) struct PackedA {
    data: Vec<f32>,
    bias: Vec<f32>,
    rows: usize,
    depth: usize,
    mr: usize,
}

impl PackedA {
    pub(crate) fn new(a: &[f32], bias: &[f32], rows: usize, depth: usize, mr: usize) -> Self {
        assert!(depth > 0 && a.len() == rows * depth && bias.len() == rows, "a is rows × depth, one bias per row");
        let panels = rows.div_ceil(mr);
        let mut data = vec![0f32; panels * mr * depth];
        for (row, values) in a.chunks_exact(depth).enumerate() {
            let panel = &mut data[row / mr * mr * depth..][..mr * depth];
            for (p, &v) in values.iter().enumerate() {
                panel[p * mr + row % mr] = v;
            }
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(panels * mr, 0.0);
        PackedA { data, bias: padded_bias, rows, depth, mr }
    }

    /// Rows of the matrix.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Floats held: the packed matrix and the padded biases.
    pub(crate) fn floats(&self) -> usize {
        self.data.len() + self.bias.len()
    }

    /// Panels of `mr` rows.
    pub(crate) fn panels(&self) -> usize {
        self.rows.div_ceil(self.mr)
    }

    /// Rows per panel.
    pub(crate) fn mr(&self) -> usize {
        self.mr
    }

    fn panel(&self, panel: usize, k0: usize, kc: usize) -> &[f32] {
        &self.data[(panel * self.depth + k0) * self.mr..][..kc * self.mr]
    }

    fn bias(&self, panel: usize) -> &[f32] {
        &self.bias[panel * self.mr..][..self.mr]
    }
}

/// Floats of a packed `depth × cols` B: panels of `nr` columns, panel `j` holding for each
/// `p` the `nr` values `b[p][j·nr + t]` (zero past the last column), so that `b[p][col]`
/// sits at `(col / nr · depth + p) · nr + col % nr`.
pub(crate) fn packed_b_len(depth: usize, cols: usize, nr: usize) -> usize {
    depth * cols.div_ceil(nr) * nr
}

/// Rows `first_panel·mr ..` of `C = bias + A·B`, then a ReLU when `relu`, for as many rows
/// as `c` holds: `c` is row-major with `cols` columns and `b` is a packed `depth × cols`
/// matrix.
pub(crate) fn multiply(
    micro: Micro,
    a: &PackedA,
    first_panel: usize,
    b: &[f32],
    cols: usize,
    c: &mut [f32],
    relu: bool,
) {
    let (depth, mr, nr) = (a.depth, micro.mr, micro.nr);
    let rows = c.len() / cols;
    assert_eq!(a.mr, mr, "A is packed for this micro-kernel");
    assert!(first_panel * mr + rows <= a.rows && c.len() == rows * cols, "c is a block of A's rows");
    assert!(b.len() >= packed_b_len(depth, cols, nr), "b is a packed depth × cols matrix");
    for k0 in (0..depth).step_by(micro.kc) {
        let kc = micro.kc.min(depth - k0);
        let (first, last) = (k0 == 0, k0 + kc == depth);
        for j in 0..cols.div_ceil(nr) {
            let b_panel = &b[(j * depth + k0) * nr..][..kc * nr];
            let width = nr.min(cols - j * nr);
            for i in 0..rows.div_ceil(mr) {
                let a_panel = a.panel(first_panel + i, k0, kc);
                let bias = if first { a.bias(first_panel + i).as_ptr() } else { std::ptr::null() };
                let height = mr.min(rows - i * mr);
                let corner = &mut c[i * mr * cols + j * nr..];
                if height == mr && width == nr {
                    // SAFETY: the panels hold kc·mr and kc·nr floats, the bias mr; the tile's
                    // last row ends at (mr−1)·cols + nr ≤ len, since the tile lies inside c.
                    unsafe {
                        (micro.run)(
                            kc,
                            a_panel.as_ptr(),
                            b_panel.as_ptr(),
                            corner.as_mut_ptr(),
                            cols,
                            bias,
                            relu && last,
                        )
                    };
                } else {
                    edge_tile(micro, kc, [a_panel, b_panel], corner, cols, (height, width), bias, relu && last);
                }
            }
        }
    }
}

/// A tile cut by the edge of C: computed in a full-size tile on the stack (by the same
/// kernel, so with the same bits), then the part inside C copied out.
#[allow(clippy::too_many_arguments)]
fn edge_tile(
    micro: Micro,
    kc: usize,
    [a_panel, b_panel]: [&[f32]; 2],
    corner: &mut [f32],
    ldc: usize,
    (height, width): (usize, usize),
    bias: *const f32,
    relu: bool,
) {
    let nr = micro.nr;
    let mut tile = [0f32; MAX_TILE];
    let rows = |r: usize| r * ldc..r * ldc + width;
    if bias.is_null() {
        for r in 0..height {
            tile[r * nr..][..width].copy_from_slice(&corner[rows(r)]);
        }
    }
    // SAFETY: the panels hold kc·mr and kc·nr floats; `tile` holds mr rows of nr floats.
    unsafe { (micro.run)(kc, a_panel.as_ptr(), b_panel.as_ptr(), tile.as_mut_ptr(), nr, bias, relu) };
    for r in 0..height {
        corner[rows(r)].copy_from_slice(&tile[r * nr..][..width]);
    }
}

/// The AVX-512 tile: 8 rows × 3 registers of 16 columns, 24 accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(
    depth: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    relu: bool,
) {
    use std::arch::x86_64::*;
    const MR: usize = 8;
    const NR: usize = 48;
    let row = |r: usize| c.add(r * ldc);
    let mut acc = [[_mm512_setzero_ps(); 3]; MR];
    for (r, lanes) in acc.iter_mut().enumerate() {
        for (v, lane) in lanes.iter_mut().enumerate() {
            *lane = if bias.is_null() { _mm512_loadu_ps(row(r).add(16 * v)) } else { _mm512_set1_ps(*bias.add(r)) };
        }
    }
    let (mut a, mut b) = (a, b);
    for _ in 0..depth {
        let bv = [_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)), _mm512_loadu_ps(b.add(32))];
        for (r, lanes) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*a.add(r));
            for (lane, &y) in lanes.iter_mut().zip(&bv) {
                *lane = _mm512_fmadd_ps(x, y, *lane);
            }
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let zero = _mm512_setzero_ps();
    for (r, lanes) in acc.iter().enumerate() {
        for (v, &lane) in lanes.iter().enumerate() {
            _mm512_storeu_ps(row(r).add(16 * v), if relu { _mm512_max_ps(lane, zero) } else { lane });
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2_fma(
    depth: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    relu: bool,
) {
    use std::arch::x86_64::*;
    const MR: usize = 6;
    const NR: usize = 16;
    // Twelve named accumulators: written as arrays, the compiler shuffled them between
    // registers and the stack inside the loop.
    let row = |r: usize| c.add(r * ldc);
    let start = |r: usize, v: usize| {
        if bias.is_null() {
            _mm256_loadu_ps(row(r).add(v * 8))
        } else {
            _mm256_set1_ps(*bias.add(r))
        }
    };
    let (mut c00, mut c01) = (start(0, 0), start(0, 1));
    let (mut c10, mut c11) = (start(1, 0), start(1, 1));
    let (mut c20, mut c21) = (start(2, 0), start(2, 1));
    let (mut c30, mut c31) = (start(3, 0), start(3, 1));
    let (mut c40, mut c41) = (start(4, 0), start(4, 1));
    let (mut c50, mut c51) = (start(5, 0), start(5, 1));
    let (mut a, mut b) = (a, b);
    for _ in 0..depth {
        let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
        let x = _mm256_broadcast_ss(&*a);
        c00 = _mm256_fmadd_ps(x, b0, c00);
        c01 = _mm256_fmadd_ps(x, b1, c01);
        let x = _mm256_broadcast_ss(&*a.add(1));
        c10 = _mm256_fmadd_ps(x, b0, c10);
        c11 = _mm256_fmadd_ps(x, b1, c11);
        let x = _mm256_broadcast_ss(&*a.add(2));
        c20 = _mm256_fmadd_ps(x, b0, c20);
        c21 = _mm256_fmadd_ps(x, b1, c21);
        let x = _mm256_broadcast_ss(&*a.add(3));
        c30 = _mm256_fmadd_ps(x, b0, c30);
        c31 = _mm256_fmadd_ps(x, b1, c31);
        let x = _mm256_broadcast_ss(&*a.add(4));
        c40 = _mm256_fmadd_ps(x, b0, c40);
        c41 = _mm256_fmadd_ps(x, b1, c41);
        let x = _mm256_broadcast_ss(&*a.add(5));
        c50 = _mm256_fmadd_ps(x, b0, c50);
        c51 = _mm256_fmadd_ps(x, b1, c51);
        a = a.add(MR);
        b = b.add(NR);
    }
    let zero = _mm256_setzero_ps();
    let finish = |v: __m256| if relu { _mm256_max_ps(v, zero) } else { v };
    for (r, [v0, v1]) in
        [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]].into_iter().enumerate()
    {
        _mm256_storeu_ps(row(r), finish(v0));
        _mm256_storeu_ps(row(r).add(8), finish(v1));
    }
}

/// The same chains of fused multiply-adds in plain Rust: [`f32::mul_add`] rounds once, as
/// the FMA instructions do (in software where the CPU lacks them).
unsafe fn tile_portable(
    depth: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    relu: bool,
) {
    const MR: usize = 6;
    const NR: usize = 16;
    let a = std::slice::from_raw_parts(a, depth * MR);
    let b = std::slice::from_raw_parts(b, depth * NR);
    let mut acc = [[0f32; NR]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        if bias.is_null() {
            row.copy_from_slice(std::slice::from_raw_parts(c.add(r * ldc), NR));
        } else {
            row.fill(*bias.add(r));
        }
    }
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &x) in acc.iter_mut().zip(ap) {
            for (v, &y) in row.iter_mut().zip(bp) {
                *v = x.mul_add(y, *v);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let out = std::slice::from_raw_parts_mut(c.add(r * ldc), NR);
        for (o, &v) in out.iter_mut().zip(row) {
            *o = if relu { kernel::relu(v) } else { v };
        }
    }
}

/// The convolutions' matrix product on its own, `C = relu(bias + A·B)` with A packed once
/// and B already in its packed layout, for `benches/engines.rs` to set beside
/// `matrixmultiply::sgemm`. Not part of the engine's API.
#[doc(hidden)]
pub struct ProductBench {
    micro: Micro,
    a: PackedA,
    b: Vec<f32>,
    c: Vec<f32>,
    cols: usize,
}

impl ProductBench {
    /// An `m × k` by `k × n` product with the given kernel (which this CPU must run).
    pub fn new(kernel: Kernel, m: usize, k: usize, n: usize) -> Result<Self, crate::InferError> {
        let micro = Micro::new(kernel.check_available()?);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        let a = PackedA::new(&a, &vec![0.1; m], m, k, micro.mr);
        let b = (0..packed_b_len(k, n, micro.nr)).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        Ok(ProductBench { micro, a, b, c: vec![0.0; m * n], cols: n })
    }

    /// Computes the product once.
    pub fn run(&mut self) {
        multiply(self.micro, &self.a, 0, &self.b, self.cols, &mut self.c, true);
    }

    /// Floating-point operations of one product (a multiply and an add per term).
    pub fn flops(&self) -> usize {
        2 * self.a.rows * self.a.depth * self.cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers and halves: every product and partial sum is exact in f32, so any
    /// summation order gives the exact answer.
    fn matrix(rows: usize, cols: usize, seed: usize) -> Vec<f32> {
        (0..rows * cols).map(|i| ((i * 7 + seed * 13) % 11) as f32 * 0.5 - 2.5).collect()
    }

    fn pack_b(b: &[f32], depth: usize, cols: usize, nr: usize) -> Vec<f32> {
        let mut packed = vec![0f32; packed_b_len(depth, cols, nr)];
        for p in 0..depth {
            for col in 0..cols {
                packed[(col / nr * depth + p) * nr + col % nr] = b[p * cols + col];
            }
        }
        packed
    }

    fn micros() -> Vec<Micro> {
        Kernel::ALL.into_iter().filter(|k| k.is_available()).map(Micro::new).collect()
    }

    /// Sizes with ragged edges in every direction and a depth spanning several k-blocks.
    const SHAPES: [(usize, usize, usize); 4] = [(64, 75, 576), (5, 2 * 256 + 3, 30), (1, 1, 1), (9, 300, 47)];

    #[test]
    fn products_match_matrixmultiply() {
        for micro in micros() {
            for (m, k, n) in SHAPES {
                let (a, b, bias) = (matrix(m, k, 1), matrix(k, n, 2), matrix(1, m, 3));
                let mut want = vec![0f32; m * n];
                // SAFETY: a is m×k, b k×n and want m×n, row-major.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        want.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
                for (row, &bias) in want.chunks_exact_mut(n).zip(&bias) {
                    row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
                }
                let mut got = vec![f32::NAN; m * n];
                let packed_a = PackedA::new(&a, &bias, m, k, micro.mr);
                multiply(micro, &packed_a, 0, &pack_b(&b, k, n, micro.nr), n, &mut got, true);
                assert_eq!(got, want, "{micro:?}, {m}×{k}·{k}×{n}");
            }
        }
    }

    /// Rounding-sensitive values: every kernel, and any block of rows, gives the bits of one
    /// chain of fused multiply-adds per value (the definition, written with `f32::mul_add`).
    #[test]
    fn every_kernel_and_row_block_gives_the_bits_of_one_fma_chain() {
        let (m, k, n) = (19, 700, 101);
        let a: Vec<f32> = (0..m * k).map(|i| ((i as f32) * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i as f32) * 0.11).cos()).collect();
        let bias: Vec<f32> = (0..m).map(|i| 0.25 - i as f32 * 0.01).collect();
        let want: Vec<f32> = (0..m * n)
            .map(|i| (0..k).fold(bias[i / n], |acc, p| a[i / n * k + p].mul_add(b[p * n + i % n], acc)))
            .collect();
        for micro in micros() {
            let (packed_a, packed_b) = (PackedA::new(&a, &bias, m, k, micro.mr), pack_b(&b, k, n, micro.nr));
            let mut whole = vec![0f32; m * n];
            multiply(micro, &packed_a, 0, &packed_b, n, &mut whole, false);
            assert!(whole == want, "{micro:?}: one product");
            let mut blocks = vec![0f32; m * n];
            let (top, bottom) = blocks.split_at_mut(micro.mr * n);
            multiply(micro, &packed_a, 0, &packed_b, n, top, false);
            multiply(micro, &packed_a, 1, &packed_b, n, bottom, false);
            assert!(blocks == want, "{micro:?}: two blocks of rows");
        }
    }
}
