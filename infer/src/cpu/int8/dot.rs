//! The int8 engine's one product: dot products of `u8` activation rows with `i8` weight rows,
//! summed in `i32`. Integer sums are exact and associative, so every kernel, tile shape and
//! thread split gives the same bits, as long as nothing saturates:
//!
//! - AVX-512 VNNI: `vpdpbusd` multiplies four `u8 · i8` pairs and adds them to an `i32` lane
//!   without saturation (its saturating twin, `vpdpbusds`, is not used);
//! - AVX2: AVX2's `u8 · i8` instruction, `vpmaddubsw`, saturates its pair sums to `i16`
//!   (255 · 127 · 2 > 32,767), so it is not used: both operands are widened to `i16`
//!   (`vpmovzxbw`, `vpmovsxbw`) and multiplied with `vpmaddwd`, whose pair sums (at most
//!   2 · 255 · 128) are exact in `i32`;
//! - portable: plain `i32` arithmetic.
//!
//! The largest sum, 2,304 · 255 · 128 for local3, is far below `i32::MAX`.

use std::ops::Range;

use super::super::kernel::Kernel;

/// Rows are padded with zeros to a multiple of this many bytes (one AVX-512 register), so the
/// kernels never test for a tail.
pub(crate) const ROW_ALIGN: usize = 64;

/// Which instructions the products use, derived from the engine's [`Kernel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dot {
    /// AVX-512 VNNI (`vpdpbusd`): 4 activation rows × 4 weight rows per tile.
    Vnni,
    /// AVX2, widened to `i16` (`vpmaddwd`): 4 activation rows × 2 weight rows per tile (four
    /// neighbouring pixels, which a convolution stores as one vector).
    Avx2,
    /// Plain Rust: 1 × 4 per tile.
    Portable,
}

impl Dot {
    /// The products for `kernel`: AVX-512 CPUs without VNNI run the AVX2 products (the
    /// results are the same bits either way).
    pub(crate) fn for_kernel(kernel: Kernel) -> Dot {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if std::arch::is_x86_feature_detected!("avx512vnni") => Dot::Vnni,
            Kernel::Avx512 | Kernel::Avx2Fma => Dot::Avx2,
            Kernel::Portable => Dot::Portable,
        }
    }

    /// For every row `i < a_rows` of `a` and every row `j` in `w_rows` of `w` (rows of `stride`
    /// bytes, `stride` a multiple of [`ROW_ALIGN`]), hands over `Σₖ a[i][k] · w[j][k]`: as
    /// `store(i0, j, sums)`, the sums of rows `i0, i0 + 1, …` of `a` with row `j` of `w` (a
    /// tile's height at a time, so that a convolution stores neighbouring pixels together).
    pub(crate) fn products(
        self,
        a: &[u8],
        a_rows: usize,
        w: &[i8],
        w_rows: Range<usize>,
        stride: usize,
        store: impl FnMut(usize, usize, &[i32]),
    ) {
        assert!(stride.is_multiple_of(ROW_ALIGN) && a.len() >= a_rows * stride && w.len() >= w_rows.end * stride);
        if a_rows == 0 || w_rows.is_empty() {
            return;
        }
        match self {
            // SAFETY: `Dot::for_kernel` picks these only when the CPU runs them (the engine's
            // kernel was checked when it was built); the rows were checked above.
            #[cfg(target_arch = "x86_64")]
            Dot::Vnni => unsafe { tiles::<4, 4>(x86::tile_vnni, a, a_rows, w, w_rows, stride, store) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Dot::Avx2 => unsafe { tiles::<4, 2>(x86::tile_avx2, a, a_rows, w, w_rows, stride, store) },
            // SAFETY: the rows were checked above.
            _ => unsafe { tiles::<1, 4>(tile_portable, a, a_rows, w, w_rows, stride, store) },
        }
    }
}

/// A tile of `A` activation rows × `W` weight rows, each `len` bytes long: the sums by weight
/// row, then activation row.
type Tile<const A: usize, const W: usize> = unsafe fn(&[*const u8; A], &[*const i8; W], usize) -> [[i32; A]; W];

/// Runs `tile` over the whole product; at the edges the last row stands in for the missing
/// ones, and their sums are not stored.
///
/// # Safety
/// Every row of `a` (`a_rows`) and of `w` (`w_rows`) holds `stride` bytes, and `tile` runs on
/// this CPU.
unsafe fn tiles<const A: usize, const W: usize>(
    tile: Tile<A, W>,
    a: &[u8],
    a_rows: usize,
    w: &[i8],
    w_rows: Range<usize>,
    stride: usize,
    mut store: impl FnMut(usize, usize, &[i32]),
) {
    for i0 in (0..a_rows).step_by(A) {
        let height = A.min(a_rows - i0);
        let a_ptrs: [*const u8; A] = std::array::from_fn(|t| a[(i0 + t).min(a_rows - 1) * stride..].as_ptr());
        for j0 in w_rows.clone().step_by(W) {
            let w_ptrs: [*const i8; W] = std::array::from_fn(|u| w[(j0 + u).min(w_rows.end - 1) * stride..].as_ptr());
            let sums = tile(&a_ptrs, &w_ptrs, stride);
            for (u, column) in sums.iter().enumerate().take(w_rows.end - j0) {
                store(i0, j0 + u, &column[..height]);
            }
        }
    }
}

/// # Safety
/// Each pointer addresses `len` readable bytes.
unsafe fn tile_portable(a: &[*const u8; 1], w: &[*const i8; 4], len: usize) -> [[i32; 1]; 4] {
    let a = std::slice::from_raw_parts(a[0], len);
    let mut sums = [[0i32; 1]; 4];
    for ([sum], &row) in sums.iter_mut().zip(w) {
        let row = std::slice::from_raw_parts(row, len);
        *sum = a.iter().zip(row).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
    }
    sums
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// Each pointer addresses `len` readable bytes, `len` a multiple of 64; the CPU has
    /// AVX-512 VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_vnni(a: &[*const u8; 4], w: &[*const i8; 4], len: usize) -> [[i32; 4]; 4] {
        let mut acc = [[_mm512_setzero_si512(); 4]; 4];
        let mut k = 0;
        while k < len {
            let mut wv = [_mm512_setzero_si512(); 4];
            for u in 0..4 {
                wv[u] = _mm512_loadu_si512(w[u].add(k) as *const __m512i);
            }
            for t in 0..4 {
                let av = _mm512_loadu_si512(a[t].add(k) as *const __m512i);
                for u in 0..4 {
                    acc[t][u] = _mm512_dpbusd_epi32(acc[t][u], av, wv[u]);
                }
            }
            k += 64;
        }
        let mut sums = [[0i32; 4]; 4];
        for (u, column) in sums.iter_mut().enumerate() {
            let total = sum4(acc[0][u], acc[1][u], acc[2][u], acc[3][u]);
            _mm_storeu_si128(column.as_mut_ptr() as *mut __m128i, total);
        }
        sums
    }

    /// The lane sums of `a`, `b`, `c` and `d`, in that order: 4 sums for about the cost of
    /// one `_mm512_reduce_add_epi32` (integer additions, so the order does not matter).
    #[inline(always)]
    unsafe fn sum4(a: __m512i, b: __m512i, c: __m512i, d: __m512i) -> __m128i {
        // In each 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3], and the same for c, d.
        let ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
        let cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
        // In each 128-bit lane: that lane's part of the sums of a, b, c, d.
        let abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
        let half = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64::<1>(abcd));
        _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256::<1>(half))
    }

    /// # Safety
    /// Each pointer addresses `len` readable bytes, `len` a multiple of 16; the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(a: &[*const u8; 4], w: &[*const i8; 2], len: usize) -> [[i32; 4]; 2] {
        let mut acc = [[_mm256_setzero_si256(); 2]; 4];
        let mut k = 0;
        while k < len {
            let mut wv = [_mm256_setzero_si256(); 2];
            for u in 0..2 {
                wv[u] = _mm256_cvtepi8_epi16(_mm_loadu_si128(w[u].add(k) as *const __m128i));
            }
            for t in 0..4 {
                let av = _mm256_cvtepu8_epi16(_mm_loadu_si128(a[t].add(k) as *const __m128i));
                for u in 0..2 {
                    acc[t][u] = _mm256_add_epi32(acc[t][u], _mm256_madd_epi16(av, wv[u]));
                }
            }
            k += 16;
        }
        let mut sums = [[0i32; 4]; 2];
        for t in 0..4 {
            for u in 0..2 {
                let mut lanes = [0i32; 8];
                _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc[t][u]);
                sums[u][t] = lanes.iter().sum();
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extreme operands (255 · −128 and 255 · 127 everywhere), where `vpmaddubsw` would
    /// saturate, and odd row counts that exercise the tile edges.
    #[test]
    fn every_kernel_gives_the_exact_sums_at_the_extremes() {
        let stride = 2 * ROW_ALIGN;
        let (a_rows, w_rows) = (5, 7);
        let a: Vec<u8> = (0..a_rows * stride).map(|i| if i % 3 == 0 { 255 } else { (i * 37 % 256) as u8 }).collect();
        let w: Vec<i8> = (0..w_rows * stride).map(|i| [127i8, -128, -127, 5][i % 4]).collect();
        let want: Vec<i32> = (0..a_rows * w_rows)
            .map(|n| {
                let (i, j) = (n / w_rows, n % w_rows);
                (0..stride).map(|k| i32::from(a[i * stride + k]) * i32::from(w[j * stride + k])).sum()
            })
            .collect();
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let dot = Dot::for_kernel(kernel);
            let mut got = vec![i32::MIN; a_rows * w_rows];
            dot.products(&a, a_rows, &w, 0..w_rows, stride, |i0, j, sums| {
                sums.iter().enumerate().for_each(|(t, &s)| got[(i0 + t) * w_rows + j] = s)
            });
            assert_eq!(got, want, "{dot:?}");
            let mut part = vec![i32::MIN; a_rows * 3];
            dot.products(&a, a_rows, &w, 2..5, stride, |i0, j, sums| {
                sums.iter().enumerate().for_each(|(t, &s)| part[(i0 + t) * 3 + j - 2] = s)
            });
            let expected: Vec<i32> = (0..a_rows).flat_map(|i| want[i * w_rows + 2..i * w_rows + 5].to_vec()).collect();
            assert_eq!(part, expected, "{dot:?} on rows 2..5");
        }
    }
}
