//! Max pooling with TensorFlow's SAME padding: windows that overhang the image only look at
//! the cells inside it, so a padded cell never wins (it acts as −∞, not 0).

use model_format::arch::MaxPool;

#[derive(Debug, Clone)]
pub(crate) struct PoolStep {
    pool: MaxPool,
    channels: usize,
    height: usize,
    width: usize,
}

impl PoolStep {
    pub(crate) fn new(pool: MaxPool, channels: usize, height: usize, width: usize) -> Self {
        PoolStep { pool, channels, height, width }
    }

    /// Pools one `[c, h, w]` map into `out` (`[c, out_h, out_w]`).
    pub(crate) fn run(&self, input: &[f32], out: &mut [f32]) {
        let (h, w) = (self.height, self.width);
        let (oh, ow) = (self.pool.out_size(h), self.pool.out_size(w));
        let (top, _) = self.pool.padding(h);
        let (left, _) = self.pool.padding(w);
        let rows = window_ranges(self.pool, top, h, oh);
        let cols = window_ranges(self.pool, left, w, ow);
        for c in 0..self.channels {
            let src = &input[c * h * w..][..h * w];
            let dst = &mut out[c * oh * ow..][..oh * ow];
            for (oy, &(y0, y1)) in rows.iter().enumerate() {
                for (ox, &(x0, x1)) in cols.iter().enumerate() {
                    let mut best = f32::NEG_INFINITY;
                    for y in y0..y1 {
                        for &v in &src[y * w + x0..y * w + x1] {
                            best = best.max(v);
                        }
                    }
                    dst[oy * ow + ox] = best;
                }
            }
        }
    }
}

/// For each output index, the input range `[start, end)` its window covers inside the image.
/// At most a dozen entries: a small fixed array keeps the hot path free of allocation.
fn window_ranges(pool: MaxPool, pad_begin: usize, n: usize, out: usize) -> WindowRanges {
    let mut ranges = WindowRanges { items: [(0, 0); MAX_OUT], len: out };
    assert!(out <= MAX_OUT, "pooling output side {out} exceeds {MAX_OUT}");
    for (o, range) in ranges.items[..out].iter_mut().enumerate() {
        let start = (o * pool.stride).saturating_sub(pad_begin);
        let end = (o * pool.stride + pool.size).saturating_sub(pad_begin).min(n);
        *range = (start, end);
    }
    ranges
}

/// Largest pooled side the engine supports (the model pools 24 → 12 → 6).
const MAX_OUT: usize = 64;

struct WindowRanges {
    items: [(usize, usize); MAX_OUT],
    len: usize,
}

impl std::ops::Deref for WindowRanges {
    type Target = [(usize, usize)];
    fn deref(&self) -> &Self::Target {
        &self.items[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::arch::POOL;

    #[test]
    fn padded_cells_never_win_and_windows_follow_same_padding() {
        // 4×4 of negative values: SAME 3×3/2 pads one cell at the end of each axis; a pool
        // that let the padding (0) win would output zeros on the last row and column.
        let input: Vec<f32> = (0..16).map(|i| -1.0 - i as f32).collect();
        let mut out = [0f32; 4];
        PoolStep::new(POOL, 1, 4, 4).run(&input, &mut out);
        // Windows cover rows/cols [0,3) and [2,4): the max is the top-left-most value.
        assert_eq!(out, [-1.0, -3.0, -9.0, -11.0]);
    }
}
