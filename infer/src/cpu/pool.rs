//! Max pooling with TensorFlow's SAME padding: windows that overhang the image only look at
//! the cells inside it, so a padded cell never wins (it acts as −∞, not 0).

use model_format::arch::MaxPool;

use super::kernel::Kernel;
use super::workers::{ChannelStep, Channels, SharedChunks, Team};

#[derive(Debug, Clone)]
pub(crate) struct PoolStep {
    pool: MaxPool,
    channels: usize,
    height: usize,
    width: usize,
}

impl PoolStep {
    pub(crate) fn new(pool: MaxPool, channels: usize, height: usize, width: usize) -> Self {
        assert!(width <= MAX_IN, "pooling input width {width} exceeds {MAX_IN}");
        PoolStep { pool, channels, height, width }
    }

    /// Pools one `[c, h, w]` map into `out` (`[c, out_h, out_w]`), the channels shared out
    /// between the team.
    pub(crate) fn run(&self, input: &[f32], out: &mut [f32], team: &Team, kernel: Kernel) {
        let plane = self.pool.out_size(self.height) * self.pool.out_size(self.width);
        let per_part = self.channels.div_ceil(team.size());
        let out = SharedChunks::new(&mut out[..self.channels * plane], per_part * plane);
        team.run_parts(out.count(), kernel, &Channels { step: self, input, out, per_part });
    }

    /// Channels `first..` of the output, as many as `out` holds: per output row, the max
    /// down the window's input rows (whole rows at a time, so it vectorises), then the max
    /// across each window of that row.
    #[inline(always)]
    fn channels(&self, input: &[f32], first: usize, out: &mut [f32]) {
        let (h, w) = (self.height, self.width);
        let (oh, ow) = (self.pool.out_size(h), self.pool.out_size(w));
        let (top, _) = self.pool.padding(h);
        let (left, _) = self.pool.padding(w);
        let row_windows = window_ranges(self.pool, top, h, oh);
        let col_windows = window_ranges(self.pool, left, w, ow);
        let mut row = [0f32; MAX_IN];
        let column_max = &mut row[..w];
        for (src, dst) in input[first * h * w..].chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            for (&(y0, y1), dst_row) in row_windows.iter().zip(dst.chunks_exact_mut(ow)) {
                let lines = &src[y0 * w..y1 * w];
                // Each value written fresh from its inputs: an in-place `m = max(m, v)` becomes
                // a masked store, whose reload next row stalls.
                match lines.len() / w {
                    1 => column_max.copy_from_slice(lines),
                    2 => {
                        let (a, b) = lines.split_at(w);
                        column_max.iter_mut().zip(a).zip(b).for_each(|((m, &a), &b)| *m = max(a, b));
                    }
                    _ => {
                        let (a, rest) = lines.split_at(w);
                        let (b, rest) = rest.split_at(w);
                        let (c, rest) = rest.split_at(w);
                        for (((m, &a), &b), &c) in column_max.iter_mut().zip(a).zip(b).zip(c) {
                            *m = max(max(a, b), c);
                        }
                        for line in rest.chunks_exact(w) {
                            column_max.iter_mut().zip(line).for_each(|(m, &v)| *m = max(*m, v));
                        }
                    }
                }
                for (&(x0, x1), d) in col_windows.iter().zip(dst_row.iter_mut()) {
                    *d = column_max[x0 + 1..x1].iter().fold(column_max[x0], |m, &v| max(m, v));
                }
            }
        }
    }
}

impl ChannelStep for PoolStep {
    #[inline(always)]
    fn channels(&self, input: &[f32], first: usize, out: &mut [f32]) {
        PoolStep::channels(self, input, first, out)
    }
}

/// `b` when it is larger, else `a`: what `MAXPS(b, a)` computes, so the loops vectorise.
/// Windows are never empty, so without NaNs this is the window's maximum (in the model the
/// inputs come out of a ReLU, or an LRN of one; a NaN gives the same bits on every machine).
#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
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
/// Largest input width: one row of it is kept on the stack.
const MAX_IN: usize = 2 * MAX_OUT + 8;

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
        PoolStep::new(POOL, 1, 4, 4).run(&input, &mut out, &Team::alone(), Kernel::Portable);
        // Windows cover rows/cols [0,3) and [2,4): the max is the top-left-most value.
        assert_eq!(out, [-1.0, -3.0, -9.0, -11.0]);
    }
}
