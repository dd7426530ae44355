//! Convolution, stride 1, zero padding: im2col into a scratch matrix, one sgemm with the
//! OIHW kernel (already a `[out, in·k·k]` matrix), then bias and an optional ReLU in one pass.

use model_format::arch::Conv;

/// A convolution layer with its weights and the input geometry it was planned for.
#[derive(Debug, Clone)]
pub(crate) struct ConvStep {
    weight: Vec<f32>,
    bias: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    pad: usize,
    height: usize,
    width: usize,
    pub(crate) relu: bool,
}

impl ConvStep {
    pub(crate) fn new(conv: &Conv, weight: &[f32], bias: &[f32], height: usize, width: usize) -> Self {
        ConvStep {
            weight: weight.to_vec(),
            bias: bias.to_vec(),
            in_channels: conv.in_channels(),
            out_channels: conv.out_channels(),
            kernel: conv.kernel(),
            pad: conv.pad,
            height,
            width,
            relu: false,
        }
    }

    /// Rows of the im2col matrix: `in_channels · kernel²`.
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// Floats of im2col scratch one image needs.
    pub(crate) fn scratch_len(&self) -> usize {
        self.patch_len() * self.height * self.width
    }

    /// Convolves one `[in, h, w]` image into `out` (`[out, h, w]`), using `col` as scratch.
    /// With `threads > 1` the output channels are shared out between scoped threads (for
    /// batches smaller than the thread count); each value is computed the same way either way.
    pub(crate) fn run(&self, input: &[f32], out: &mut [f32], col: &mut [f32], threads: usize) {
        let plane = self.height * self.width;
        let col = &mut col[..self.scratch_len()];
        self.im2col(input, col);
        let col = &*col;
        let out = &mut out[..self.out_channels * plane];
        let rows_per_thread = self.out_channels.div_ceil(threads.max(1));
        if rows_per_thread >= self.out_channels {
            self.multiply(0, col, out);
            return;
        }
        std::thread::scope(|scope| {
            let mut parts = out.chunks_mut(rows_per_thread * plane).enumerate();
            let (_, first) = parts.next().expect("at least one output channel");
            for (i, part) in parts {
                scope.spawn(move || self.multiply(i * rows_per_thread, col, part));
            }
            self.multiply(0, col, first);
        });
    }

    /// Output channels `first..` (as many as `out` holds) = weights · `col`, then bias/ReLU.
    fn multiply(&self, first: usize, col: &[f32], out: &mut [f32]) {
        let (k, n) = (self.patch_len(), self.height * self.width);
        let m = out.len() / n;
        let weight = &self.weight[first * k..][..m * k];
        let bias = &self.bias[first..][..m];
        // SAFETY: `weight` is m×k, `col` k×n and `out` m×n, row-major with the strides given.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                weight.as_ptr(),
                k as isize,
                1,
                col.as_ptr(),
                n as isize,
                1,
                0.0,
                out.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        for (row, &b) in out.chunks_exact_mut(n).zip(bias) {
            add_bias(row, b, self.relu);
        }
    }

    /// Row `(c·k + ky)·k + kx` of `col` holds, for every output pixel, the input pixel that
    /// kernel tap sees (zero where it falls in the padding).
    fn im2col(&self, input: &[f32], col: &mut [f32]) {
        let (h, w, k, pad) = (self.height, self.width, self.kernel, self.pad);
        let mut rows = col.chunks_exact_mut(h * w);
        for c in 0..self.in_channels {
            let channel = &input[c * h * w..][..h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = rows.next().expect("col holds in·k·k rows");
                    // Output columns whose tap lands inside the image: ix = ox + kx − pad ∈ [0, w).
                    let x_lo = pad.saturating_sub(kx).min(w);
                    let x_hi = (w + pad).saturating_sub(kx).min(w).max(x_lo);
                    for (oy, dst) in row.chunks_exact_mut(w).enumerate() {
                        let iy = oy + ky;
                        if iy < pad || iy - pad >= h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &channel[(iy - pad) * w..][..w];
                        dst[..x_lo].fill(0.0);
                        dst[x_hi..].fill(0.0);
                        dst[x_lo..x_hi].copy_from_slice(&src[x_lo + kx - pad..x_hi + kx - pad]);
                    }
                }
            }
        }
    }
}

/// Adds `bias` to every value, then clamps at zero when `relu`.
pub(crate) fn add_bias(values: &mut [f32], bias: f32, relu: bool) {
    if relu {
        values.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
    } else {
        values.iter_mut().for_each(|v| *v += bias);
    }
}
