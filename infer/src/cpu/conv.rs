//! Convolution, stride 1, zero padding: im2col written straight into the packed layout of
//! [`gemm`]'s B operand, then one product with the OIHW kernel (a `[out, in·k·k]` matrix,
//! packed when the engine is built) that adds the bias and applies the ReLU as it stores.

use model_format::arch::Conv;

use super::gemm::{self, Micro, PackedA};
use super::kernel::{Kernel, Part};
use super::workers::{SharedChunks, Team};

/// A convolution layer with its weights and the input geometry it was planned for.
#[derive(Debug, Clone)]
pub(crate) struct ConvStep {
    weight: PackedA,
    in_channels: usize,
    pad: usize,
    height: usize,
    width: usize,
    /// For each im2col row (kernel tap `(c, ky, kx)`), where that tap's view starts in the
    /// zero-padded input: im2col value `(tap, pixel)` is `padded[taps[tap] + start(pixel)]`,
    /// where `start(pixel)` is the top-left corner of the pixel's window. No border tests.
    taps: Vec<usize>,
    /// For each panel of `nr` output pixels, its runs of pixels on one output row, as
    /// `(position in the panel, start of the first pixel's window, length)`: along a run,
    /// both go up by one per pixel, so a run is one contiguous copy.
    runs: Vec<Vec<(usize, usize, usize)>>,
    pub(crate) relu: bool,
    micro: Micro,
}

impl ConvStep {
    pub(crate) fn new(conv: &Conv, weight: &[f32], bias: &[f32], height: usize, width: usize, micro: Micro) -> Self {
        let nr = micro.nr;
        let (k, channels) = (conv.kernel(), conv.in_channels());
        // The output keeps the input's size: the window offsets below rely on it.
        assert_eq!(2 * conv.pad + 1, k, "a stride-1 convolution padded to keep its map size");
        let (padded_h, padded_w) = (height + 2 * conv.pad, width + 2 * conv.pad);
        let taps =
            (0..channels * k * k).map(|tap| (tap / (k * k) * padded_h + tap / k % k) * padded_w + tap % k).collect();
        let runs = (0..height * width)
            .step_by(nr)
            .map(|first| {
                let end = (first + nr).min(height * width);
                let mut runs = Vec::new();
                let mut pixel = first;
                while pixel < end {
                    let (y, x) = (pixel / width, pixel % width);
                    let run_end = end.min(pixel + width - x);
                    runs.push((pixel - first, y * padded_w + x, run_end - pixel));
                    pixel = run_end;
                }
                runs
            })
            .collect();
        ConvStep {
            weight: PackedA::new(weight, bias, conv.out_channels(), channels * k * k, micro.mr),
            in_channels: channels,
            pad: conv.pad,
            height,
            width,
            taps,
            runs,
            relu: false,
            micro,
        }
    }

    /// Floats of the packed weights and biases.
    pub(crate) fn weight_floats(&self) -> usize {
        self.weight.floats()
    }

    /// Floats of the zero-padded input, plus `COPY` of slack: [`Self::im2col`] copies whole
    /// blocks of `COPY` floats, reading (and writing) past the end of a shorter run.
    fn padded_len(&self) -> usize {
        self.in_channels * (self.height + 2 * self.pad) * (self.width + 2 * self.pad) + COPY
    }

    /// Floats of the packed im2col matrix, plus `COPY` of slack as above.
    fn col_len(&self) -> usize {
        gemm::packed_b_len(self.taps.len(), self.height * self.width, self.micro.nr) + COPY
    }

    /// Floats of scratch one image needs: the padded input and the packed im2col matrix.
    pub(crate) fn scratch_len(&self) -> usize {
        self.padded_len() + self.col_len()
    }

    /// Convolves one `[in, h, w]` image into `out` (`[out, h, w]`), using `scratch`. With a
    /// team of several threads (a batch smaller than the thread count), the im2col rows, then
    /// the output channels (in whole panels), are shared out between them; each value is
    /// computed the same way either way.
    pub(crate) fn run(&self, input: &[f32], out: &mut [f32], scratch: &mut [f32], team: &Team, kernel: Kernel) {
        let plane = self.height * self.width;
        let (padded, col) = scratch[..self.scratch_len()].split_at_mut(self.padded_len());
        let pad = Pad { step: self, input, padded: SharedChunks::new(padded, usize::MAX) };
        kernel.run_part(&pad, 0);
        let depth = self.taps.len();
        let taps_per_part = depth.div_ceil(team.size());
        let parts = depth.div_ceil(taps_per_part);
        let im2col = Im2col { step: self, padded: &*padded, col: ColPtr(col.as_mut_ptr()), taps_per_part, parts };
        team.run_parts(parts, kernel, &im2col);
        let col = &*col;
        let out = &mut out[..self.weight.rows() * plane];
        let panels_per_part = self.weight.panels().div_ceil(team.size());
        let chunks = SharedChunks::new(out, panels_per_part * self.weight.mr() * plane);
        team.run(chunks.count(), &|i| {
            // SAFETY: each part index runs once, so each chunk is borrowed once.
            let part = unsafe { chunks.get(i) };
            gemm::multiply(self.micro, &self.weight, i * panels_per_part, col, plane, part, self.relu)
        });
    }

    /// Copies the `[in, h, w]` input into the middle of a zeroed `[in, h + 2·pad, w + 2·pad]`.
    #[inline(always)]
    fn pad_input(&self, input: &[f32], padded: &mut [f32]) {
        let (h, w, pad) = (self.height, self.width, self.pad);
        let padded_w = w + 2 * pad;
        padded.fill(0.0); // the border and the slack
        for (channel, source) in padded.chunks_exact_mut((h + 2 * pad) * padded_w).zip(input.chunks_exact(h * w)) {
            for (row, line) in channel[pad * padded_w..].chunks_exact_mut(padded_w).zip(source.chunks_exact(w)) {
                row[pad..pad + w].copy_from_slice(line);
            }
        }
    }

    /// Writes the im2col rows (kernel taps) `taps` of every panel into the packed matrix at
    /// `col` (tap-major, in panels of `nr` output pixels). Each run is copied in whole
    /// blocks of `COPY` floats: what lands past the run's end is overwritten by the next run
    /// or the next row, or falls in the slack, and the columns past the last pixel are
    /// zeroed. When another part writes the next row (`exact_last`), the last row of the
    /// range is copied exactly instead.
    ///
    /// # Safety
    /// `col` holds [`Self::col_len`] floats, and no other thread writes these rows meanwhile.
    #[inline(always)]
    unsafe fn im2col(&self, padded: &[f32], col: *mut f32, taps: std::ops::Range<usize>, exact_last: bool) {
        let (depth, pixels, nr) = (self.taps.len(), self.height * self.width, self.micro.nr);
        for (j, runs) in self.runs.iter().enumerate() {
            let used = nr.min(pixels - j * nr);
            for p in taps.clone() {
                let (tap, row) = (self.taps[p], col.add((j * depth + p) * nr));
                let exact = exact_last && p + 1 == taps.end;
                for &(at, source, len) in runs {
                    let from = &padded[tap + source..][..len.next_multiple_of(COPY)];
                    if exact {
                        std::ptr::copy_nonoverlapping(from.as_ptr(), row.add(at), len);
                        continue;
                    }
                    for (b, block) in from.chunks_exact(COPY).enumerate() {
                        // A constant length: a few vector moves, not a memcpy call.
                        std::ptr::copy_nonoverlapping(block.as_ptr(), row.add(at + b * COPY), COPY);
                    }
                }
                std::ptr::write_bytes(row.add(used), 0, nr - used);
            }
        }
    }
}

/// Floats per copy in [`ConvStep::im2col`]: 64 bytes.
const COPY: usize = 16;

/// The zero-padded input of a convolution: done by the calling thread alone (it is small).
struct Pad<'a> {
    step: &'a ConvStep,
    input: &'a [f32],
    padded: SharedChunks<'a, f32>,
}

impl Part for Pad<'_> {
    #[inline(always)]
    fn run(&self, i: usize) {
        // SAFETY: there is one part, run once.
        self.step.pad_input(self.input, unsafe { self.padded.get(i) });
    }
}

/// The packed im2col matrix, shared by the parts that write its rows.
struct ColPtr(*mut f32);

// SAFETY: the parts write disjoint rows (`ConvStep::im2col`'s contract).
unsafe impl Sync for ColPtr {}

/// A range of im2col rows (kernel taps) of every panel: one part of [`ConvStep::run`].
struct Im2col<'a> {
    step: &'a ConvStep,
    padded: &'a [f32],
    col: ColPtr,
    taps_per_part: usize,
    parts: usize,
}

impl Part for Im2col<'_> {
    #[inline(always)]
    fn run(&self, i: usize) {
        let taps = i * self.taps_per_part..((i + 1) * self.taps_per_part).min(self.step.taps.len());
        // SAFETY: `col` is the step's packed matrix (`col_len` floats, see `run`), and each
        // part index runs once, on its own taps.
        unsafe { self.step.im2col(self.padded, self.col.0, taps, self.parts > 1) };
    }
}

#[cfg(test)]
mod tests {
    use model_format::arch::{Layer, LAYERS, TENSORS};

    use super::super::workers::Workers;
    use super::*;

    fn value(i: usize, scale: f32) -> f32 {
        ((i * 37 % 101) as f32 / 50.0 - 1.0) * scale
    }

    /// The model's convolutions on maps whose rows are not a multiple of `nr` (so panels
    /// hold pieces of several rows, and the last panel is partial) against the definition,
    /// with the same bits for every kernel and thread count.
    #[test]
    fn ragged_geometries_match_the_definition_for_any_kernel_and_thread_count() {
        let teams = [Workers::new(2).unwrap(), Workers::new(3).unwrap()];
        let convs = LAYERS.iter().filter_map(|(_, layer)| match layer {
            Layer::Conv(conv) => Some(*conv),
            _ => None,
        });
        for (conv, (h, w)) in convs.flat_map(|conv| [(conv, (7, 5)), (conv, (3, 10)), (conv, (1, 1))]) {
            let (c_in, c_out, k, pad) = (conv.in_channels(), conv.out_channels(), conv.kernel(), conv.pad);
            let weight: Vec<f32> = (0..TENSORS[conv.weight].len()).map(|i| value(i, 0.2)).collect();
            let bias: Vec<f32> = (0..c_out).map(|i| value(i + 3, 0.1)).collect();
            let input: Vec<f32> = (0..c_in * h * w).map(|i| value(i + 7, 1.0)).collect();
            let mut step = ConvStep::new(&conv, &weight, &bias, h, w, Micro::new(Kernel::Portable));
            step.relu = true;
            let mut scratch = vec![f32::NAN; step.scratch_len()];
            let mut want = vec![0f32; c_out * h * w];
            step.run(&input, &mut want, &mut scratch, &Team::alone(), Kernel::Portable);
            for o in 0..c_out {
                for y in 0..h {
                    for x in 0..w {
                        let mut sum = f64::from(bias[o]);
                        for (c, ky, kx) in (0..c_in * k * k).map(|t| (t / (k * k), t / k % k, t % k)) {
                            let (iy, ix) = ((y + ky).wrapping_sub(pad), (x + kx).wrapping_sub(pad));
                            if iy < h && ix < w {
                                sum += f64::from(weight[((o * c_in + c) * k + ky) * k + kx])
                                    * f64::from(input[(c * h + iy) * w + ix]);
                            }
                        }
                        let got = f64::from(want[(o * h + y) * w + x]);
                        assert!((got - sum.max(0.0)).abs() < 1e-4, "{h}×{w}, channel {o}, ({y}, {x}): {got} vs {sum}");
                    }
                }
            }
            for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
                let mut step = ConvStep::new(&conv, &weight, &bias, h, w, Micro::new(kernel));
                step.relu = true;
                let mut scratch = vec![f32::NAN; step.scratch_len()];
                for workers in &teams {
                    let team = workers.team();
                    let mut got = vec![0f32; c_out * h * w];
                    step.run(&input, &mut got, &mut scratch, &team, kernel);
                    assert!(got == want, "{h}×{w}, {kernel} kernel on {} threads", team.size());
                }
            }
        }
    }
}
