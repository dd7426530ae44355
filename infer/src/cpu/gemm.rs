//! The convolutions' matrix product, `C = act(bias + A·B)`, with both operands packed so
//! that a register-blocked micro-kernel (an `MR × NR` tile of C held in registers) reads
//! them contiguously. A (the weights) is packed once, when the engine is built; B (the
//! im2col matrix) is written straight into its packed layout by the caller, in a buffer of
//! the engine's workspace. So a product allocates nothing — `matrixmultiply::sgemm`, which
//! the engine used before, allocates and frees a packing buffer inside every call.
//!
//! Every value of C is one chain of multiply-adds over `k` in increasing order, starting
//! from its bias, whichever tile, k-block or thread computes it: results do not depend on
//! how the rows are shared out between threads.

/// Rows of a micro-tile (and of a packed A panel).
pub(crate) const MR: usize = 6;
/// Columns of a micro-tile (and of a packed B panel): three AVX registers per row, so the
/// tile is 12 accumulators, leaving registers for the B loads and the A broadcast.
pub(crate) const NR: usize = 16;
/// Depth of one pass over a B panel: `KC × NR` floats (24 KB) stay in L1 while every A
/// panel streams past them.
const KC: usize = 256;

/// A row-major `rows × depth` matrix with one bias per row, packed in panels of `MR` rows:
/// panel `i` holds, for each `p` in `0..depth`, the `MR` values `a[i·MR + r][p]` (zero past
/// the last row).
#[derive(Debug, Clone)]
pub(crate) struct PackedA {
    data: Vec<f32>,
    bias: Vec<f32>,
    rows: usize,
    depth: usize,
}

impl PackedA {
    pub(crate) fn new(a: &[f32], bias: &[f32], rows: usize, depth: usize) -> Self {
        assert!(depth > 0 && a.len() == rows * depth && bias.len() == rows, "a is rows × depth, one bias per row");
        let panels = rows.div_ceil(MR);
        let mut data = vec![0f32; panels * MR * depth];
        for (row, values) in a.chunks_exact(depth).enumerate() {
            let panel = &mut data[row / MR * MR * depth..][..MR * depth];
            for (p, &v) in values.iter().enumerate() {
                panel[p * MR + row % MR] = v;
            }
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(panels * MR, 0.0);
        PackedA { data, bias: padded_bias, rows, depth }
    }

    /// Rows of the matrix.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Floats held: the packed matrix and the padded biases.
    pub(crate) fn floats(&self) -> usize {
        self.data.len() + self.bias.len()
    }

    /// Panels of `MR` rows.
    pub(crate) fn panels(&self) -> usize {
        self.rows.div_ceil(MR)
    }

    fn panel(&self, panel: usize, k0: usize, kc: usize) -> &[f32] {
        &self.data[(panel * self.depth + k0) * MR..][..kc * MR]
    }

    fn bias(&self, panel: usize) -> &[f32; MR] {
        self.bias[panel * MR..][..MR].try_into().expect("MR values")
    }
}

/// Floats of a packed `depth × cols` B: panels of `NR` columns, panel `j` holding for each
/// `p` the `NR` values `b[p][j·NR + t]` (zero past the last column), so that `b[p][col]`
/// sits at `(col / NR · depth + p) · NR + col % NR`.
pub(crate) fn packed_b_len(depth: usize, cols: usize) -> usize {
    depth * cols.div_ceil(NR) * NR
}

/// `c[r][t] = act(init[r][t] + Σ_p a[p·MR + r] · b[p·NR + t])` for one `MR × NR` tile, where
/// `init` is the bias of row `r` when one is given, else the tile's current values, and
/// `act` is a ReLU when asked for.
///
/// # Safety
/// `a` holds `depth · MR` floats, `b` holds `depth · NR`, and `c` is valid for `MR` rows of
/// `NR` floats at a stride of `ldc`.
type KernelFn = unsafe fn(usize, *const f32, *const f32, *mut f32, usize, Option<&[f32; MR]>, bool);

/// The micro-kernel this CPU runs best, chosen once when the engine is built.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    run: KernelFn,
    name: &'static str,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kernel {
    /// AVX2+FMA where the CPU has them, else the portable one.
    pub(crate) fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Kernel { run: kernel_avx2_fma, name: "avx2+fma 6x16" };
        }
        Kernel::portable()
    }

    /// Plain Rust the compiler vectorises for whatever the target has.
    pub(crate) fn portable() -> Self {
        Kernel { run: kernel_portable, name: "portable 6x16" }
    }
}

/// Rows `first_panel·MR ..` of `C = bias + A·B`, then a ReLU when `relu`, for as many rows
/// as `c` holds: `c` is row-major with `cols` columns and `b` is a packed `depth × cols`
/// matrix.
pub(crate) fn multiply(
    kernel: Kernel,
    a: &PackedA,
    first_panel: usize,
    b: &[f32],
    cols: usize,
    c: &mut [f32],
    relu: bool,
) {
    let depth = a.depth;
    let rows = c.len() / cols;
    assert!(first_panel * MR + rows <= a.rows && c.len() == rows * cols, "c is a block of A's rows");
    assert!(b.len() >= packed_b_len(depth, cols), "b is a packed depth × cols matrix");
    for k0 in (0..depth).step_by(KC) {
        let kc = KC.min(depth - k0);
        let (first, last) = (k0 == 0, k0 + kc == depth);
        for j in 0..cols.div_ceil(NR) {
            let b_panel = &b[(j * depth + k0) * NR..][..kc * NR];
            let width = NR.min(cols - j * NR);
            for i in 0..rows.div_ceil(MR) {
                let a_panel = a.panel(first_panel + i, k0, kc);
                let bias = first.then(|| a.bias(first_panel + i));
                let height = MR.min(rows - i * MR);
                let corner = &mut c[i * MR * cols + j * NR..];
                if height == MR && width == NR {
                    // SAFETY: the panels hold kc·MR and kc·NR floats; the tile's last row ends
                    // at (MR−1)·cols + NR ≤ len, since the tile lies inside c.
                    unsafe {
                        (kernel.run)(
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
                    edge_tile(kernel, kc, a_panel, b_panel, corner, cols, (height, width), bias, relu && last);
                }
            }
        }
    }
}

/// A tile cut by the edge of C: computed in a full-size tile on the stack (by the same
/// kernel, so with the same bits), then the part inside C copied out.
#[allow(clippy::too_many_arguments)]
fn edge_tile(
    kernel: Kernel,
    kc: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    corner: &mut [f32],
    ldc: usize,
    (height, width): (usize, usize),
    bias: Option<&[f32; MR]>,
    relu: bool,
) {
    let mut tile = [0f32; MR * NR];
    let rows = |r: usize| r * ldc..r * ldc + width;
    if bias.is_none() {
        for r in 0..height {
            tile[r * NR..][..width].copy_from_slice(&corner[rows(r)]);
        }
    }
    // SAFETY: the panels hold kc·MR and kc·NR floats; `tile` is MR rows of NR floats.
    unsafe { (kernel.run)(kc, a_panel.as_ptr(), b_panel.as_ptr(), tile.as_mut_ptr(), NR, bias, relu) };
    for r in 0..height {
        corner[rows(r)].copy_from_slice(&tile[r * NR..][..width]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2_fma(
    depth: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    bias: Option<&[f32; MR]>,
    relu: bool,
) {
    use std::arch::x86_64::*;
    // Twelve named accumulators: written as arrays, the compiler shuffled them between
    // registers and the stack inside the loop.
    let row = |r: usize| c.add(r * ldc);
    let start = |r: usize, v: usize| match bias {
        Some(bias) => _mm256_set1_ps(bias[r]),
        None => _mm256_loadu_ps(row(r).add(v * 8)),
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

unsafe fn kernel_portable(
    depth: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    bias: Option<&[f32; MR]>,
    relu: bool,
) {
    let a = std::slice::from_raw_parts(a, depth * MR);
    let b = std::slice::from_raw_parts(b, depth * NR);
    let mut acc = [[0f32; NR]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        match bias {
            Some(bias) => row.fill(bias[r]),
            None => row.copy_from_slice(std::slice::from_raw_parts(c.add(r * ldc), NR)),
        }
    }
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &x) in acc.iter_mut().zip(ap) {
            for (v, &y) in row.iter_mut().zip(bp) {
                *v += x * y;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let out = std::slice::from_raw_parts_mut(c.add(r * ldc), NR);
        for (o, &v) in out.iter_mut().zip(row) {
            *o = if relu { v.max(0.0) } else { v };
        }
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

    fn pack_b(b: &[f32], depth: usize, cols: usize) -> Vec<f32> {
        let mut packed = vec![f32::NAN; packed_b_len(depth, cols)];
        for j in 0..cols.div_ceil(NR) {
            packed[j * depth * NR..][..depth * NR].fill(0.0);
        }
        for p in 0..depth {
            for col in 0..cols {
                packed[(col / NR * depth + p) * NR + col % NR] = b[p * cols + col];
            }
        }
        packed
    }

    /// Sizes with ragged edges in every direction and a depth spanning several k-blocks.
    const SHAPES: [(usize, usize, usize); 4] = [(64, 75, 576), (5, 2 * KC + 3, 30), (1, 1, 1), (9, 300, 47)];

    #[test]
    fn products_match_matrixmultiply() {
        for kernel in [Kernel::best(), Kernel::portable()] {
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
                multiply(kernel, &PackedA::new(&a, &bias, m, k), 0, &pack_b(&b, k, n), n, &mut got, true);
                assert_eq!(got, want, "{kernel:?}, {m}×{k}·{k}×{n}");
            }
        }
    }

    #[test]
    fn a_block_of_rows_gives_the_same_bits_as_the_whole_product() {
        let (m, k, n) = (13, 700, 50);
        let a: Vec<f32> = (0..m * k).map(|i| ((i as f32) * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i as f32) * 0.11).cos()).collect();
        let bias = vec![0.25f32; m];
        let (packed_a, packed_b) = (PackedA::new(&a, &bias, m, k), pack_b(&b, k, n));
        let kernel = Kernel::best();
        let mut whole = vec![0f32; m * n];
        multiply(kernel, &packed_a, 0, &packed_b, n, &mut whole, false);
        let mut blocks = vec![0f32; m * n];
        let (top, bottom) = blocks.split_at_mut(2 * MR * n);
        multiply(kernel, &packed_a, 0, &packed_b, n, top, false);
        multiply(kernel, &packed_a, 2, &packed_b, n, bottom, false);
        assert_eq!(blocks, whole);
        let reference = (0..m).flat_map(|r| {
            let (a, b) = (&a, &b);
            (0..n)
                .map(move |col| 0.25 + (0..k).map(|p| f64::from(a[r * k + p]) * f64::from(b[p * n + col])).sum::<f64>())
        });
        for (got, want) in whole.iter().zip(reference) {
            assert!((f64::from(*got) - want).abs() < 1e-3, "{got} vs {want}");
        }
    }
}
