//! The int8 forward pass ([`model_format::quantized`]), compiled from
//! [`model_format::arch::LAYERS`] like the float one: per image, each convolution quantizes its
//! input into a padded `u8` map in channels-last order, copies it into im2col rows (one row per
//! output pixel, zero padded to [`ROW_ALIGN`]; channels last, a window row is one run of
//! bytes) and takes the integer dot products with its packed `i8` weight rows (their taps in
//! the same order: an integer sum does not depend on the order of its terms);
//! pooling and LRN run in `f32` with the float engine's own steps; then the dense layers
//! quantize each example's features and take the same products.
//!
//! A layer's output is [`model_format::quantized::QuantizedLayer::output`] of the exact `i32`
//! sum, so the engine gives the bits of `model_format::reference::int8_logits` (feature `reference`) with every
//! kernel, batch split and thread count.

mod dot;

use model_format::arch::{ActShape, Conv, Layer, INPUT_LEN, INPUT_SHAPE};
use model_format::quantized::{ActivationQuant, QuantizedLayer, QuantizedWeights};

use super::kernel::{relu, Kernel};
use super::lrn::LrnStep;
use super::plan::walk_layers;
use super::pool::PoolStep;
use super::workers::{SharedChunks, Team};
use super::workspace::{Scratch, Sizes};
use crate::error::InferError;
use dot::{Dot, ROW_ALIGN};

/// Multiply-adds below which a single example's dense layer runs on the calling thread alone.
const SHARED_MIN_PRODUCTS: usize = 256 * 1024;

/// A layer's `i8` weight rows, zero padded to `stride` bytes, with what turns a raw sum over
/// `u8` inputs into the layer's float output.
#[derive(Debug, Clone)]
struct Int8Matrix {
    weight: Vec<i8>,
    rows: usize,
    depth: usize,
    stride: usize,
    /// `zero_point · Σ weight[o]`: the raw sum over `q_x` minus this is `Σ q_w · (q_x − zero_point)`.
    correction: Vec<i32>,
    /// `input_scale · weight_scale[o]`, as [`QuantizedLayer::output`] computes it.
    multiplier: Vec<f32>,
    bias: Vec<f32>,
    input: ActivationQuant,
    relu: bool,
}

impl Int8Matrix {
    fn new(q: &QuantizedLayer) -> Self {
        let (rows, depth) = (q.out_features(), q.in_features());
        let stride = depth.next_multiple_of(ROW_ALIGN);
        let mut weight = vec![0i8; rows * stride];
        for (dst, src) in weight.chunks_exact_mut(stride).zip(q.weight.chunks_exact(depth)) {
            dst[..depth].copy_from_slice(src);
        }
        Int8Matrix {
            weight,
            rows,
            depth,
            stride,
            correction: (0..rows).map(|o| i32::from(q.input.zero_point) * q.row_sum(o)).collect(),
            multiplier: q.weight_scale.iter().map(|&s| q.input.scale * s).collect(),
            bias: q.bias.clone(),
            input: q.input,
            relu: false,
        }
    }

    /// The output of row `o` for the raw sum `raw`, ReLU applied if fused.
    #[inline(always)]
    fn output(&self, o: usize, raw: i32) -> f32 {
        let y = ((raw - self.correction[o]) as f32) * self.multiplier[o] + self.bias[o];
        if self.relu {
            relu(y)
        } else {
            y
        }
    }

    /// [`Int8Matrix::output`] of row `o` for each raw sum of `raw`, into `out`; four at a
    /// time as one vector (the same operations, lane by lane), inlined into the product loop.
    #[inline(always)]
    fn outputs(&self, o: usize, raw: &[i32], out: &mut [f32]) {
        match (<&[i32; 4]>::try_from(raw), <&mut [f32; 4]>::try_from(&mut *out)) {
            (Ok(raw), Ok(out)) => {
                let (correction, multiplier, bias) = (self.correction[o], self.multiplier[o], self.bias[o]);
                let y: [f32; 4] = std::array::from_fn(|t| ((raw[t] - correction) as f32) * multiplier + bias);
                *out = if self.relu { y.map(relu) } else { y };
            }
            _ => self.outputs_slow(o, raw, out),
        }
    }

    /// [`Int8Matrix::outputs`] for a partial tile, out of line (rare).
    #[cold]
    #[inline(never)]
    fn outputs_slow(&self, o: usize, raw: &[i32], out: &mut [f32]) {
        out.iter_mut().zip(raw).for_each(|(y, &r)| *y = self.output(o, r))
    }

    /// Bytes of weights and per-row values.
    fn bytes(&self) -> usize {
        self.weight.len() + 4 * (self.correction.len() + self.multiplier.len() + self.bias.len())
    }
}

/// A convolution: quantize into the padded map, im2col, products.
#[derive(Debug, Clone)]
struct Int8Conv {
    matrix: Int8Matrix,
    channels: usize,
    kernel: usize,
    pad: usize,
    height: usize,
    width: usize,
}

impl Int8Conv {
    fn new(conv: &Conv, q: &QuantizedLayer, height: usize, width: usize) -> Self {
        assert_eq!(2 * conv.pad + 1, conv.kernel(), "a stride-1 convolution padded to keep its map size");
        let mut matrix = Int8Matrix::new(q);
        let (channels, k) = (conv.in_channels(), conv.kernel());
        // The weights' OIHW taps `(c, ky, kx)` reordered to the im2col rows' `(ky, kx, c)`.
        for row in matrix.weight.chunks_exact_mut(matrix.stride) {
            let oihw = row[..matrix.depth].to_vec();
            for (tap, &v) in oihw.iter().enumerate() {
                let (c, ky, kx) = (tap / (k * k), tap / k % k, tap % k);
                row[(ky * k + kx) * channels + c] = v;
            }
        }
        Int8Conv { matrix, channels, kernel: k, pad: conv.pad, height, width }
    }

    fn padded_len(&self) -> usize {
        self.channels * (self.height + 2 * self.pad) * (self.width + 2 * self.pad)
    }

    /// Bytes of scratch: the padded quantized map and the im2col rows.
    fn scratch_len(&self) -> usize {
        self.padded_len() + self.height * self.width * self.matrix.stride
    }

    /// Convolves one `[in, h, w]` map into `out` (`[out, h, w]`); with a team, the output
    /// channels are shared out (four at a time, a tile's worth).
    fn run(&self, input: &[f32], out: &mut [f32], bytes: &mut [u8], team: &Team, dot: Dot) {
        let (padded, col) = bytes[..self.scratch_len()].split_at_mut(self.padded_len());
        self.quantize_padded(input, padded);
        self.im2col(padded, col);
        let plane = self.height * self.width;
        let m = &self.matrix;
        let per_part = m.rows.div_ceil(team.size()).next_multiple_of(4);
        let chunks = SharedChunks::new(&mut out[..m.rows * plane], per_part * plane);
        let col = &*col;
        team.run(chunks.count(), &|i| {
            // SAFETY: each part index runs once, so each chunk is borrowed once.
            let part = unsafe { chunks.get(i) };
            let first = i * per_part;
            let rows = first..first + part.len() / plane;
            dot.products(col, plane, &m.weight, rows, m.stride, |p, o, raw| {
                m.outputs(o, raw, &mut part[(o - first) * plane + p..][..raw.len()])
            });
        });
    }

    /// The `[in, h, w]` input quantized into the middle of an `[h + 2·pad, w + 2·pad, in]` map
    /// (channels last) whose border is the zero point (a real 0).
    fn quantize_padded(&self, input: &[f32], padded: &mut [u8]) {
        let (h, w, pad, channels) = (self.height, self.width, self.pad, self.channels);
        let padded_w = w + 2 * pad;
        let q = self.matrix.input;
        padded.fill(q.zero_point);
        for (c, source) in input.chunks_exact(h * w).take(channels).enumerate() {
            for (y, src) in source.chunks_exact(w).enumerate() {
                let row = &mut padded[((y + pad) * padded_w + pad) * channels + c..];
                for (x, &v) in src.iter().enumerate() {
                    row[x * channels] = q.quantize(v);
                }
            }
        }
    }

    /// One row per output pixel: its window, tap `(ky, kx, c)` at `(ky·k + kx)·in + c` (each
    /// window row one run of `k·in` bytes of the channels-last map), then zeros up to the stride.
    fn im2col(&self, padded: &[u8], col: &mut [u8]) {
        // The tutorial's runs with a constant length: `copy_from_slice` of a runtime length
        // calls memmove (15% of an int8 eval in perf for 5-byte runs).
        match self.kernel * self.channels {
            15 => self.im2col_with(15, padded, col),
            320 => self.im2col_with(320, padded, col),
            run => self.im2col_with(run, padded, col),
        }
    }

    #[inline(always)]
    fn im2col_with(&self, run: usize, padded: &[u8], col: &mut [u8]) {
        let (k, w) = (self.kernel, self.width);
        let padded_w = w + 2 * self.pad;
        for (pixel, row) in col.chunks_exact_mut(self.matrix.stride).enumerate() {
            let (y, x) = (pixel / w, pixel % w);
            for ky in 0..k {
                let src = &padded[((y + ky) * padded_w + x) * self.channels..][..run];
                row[ky * run..][..run].copy_from_slice(src);
            }
            row[self.matrix.depth..].fill(0);
        }
    }
}

/// A fully connected layer on a chunk of examples.
#[derive(Debug, Clone)]
struct Int8Dense {
    matrix: Int8Matrix,
}

impl Int8Dense {
    /// Applies the layer to `rows` examples of `input` (`rows × in` floats) into `out`
    /// (`rows × out`), quantizing into `qrows`. A single example shares its outputs between
    /// the team's threads.
    fn run(&self, input: &[f32], rows: usize, qrows: &mut [u8], out: &mut [f32], team: &Team, dot: Dot) {
        let m = &self.matrix;
        let qrows = &mut qrows[..rows * m.stride];
        for (dst, src) in qrows.chunks_exact_mut(m.stride).zip(input.chunks_exact(m.depth)) {
            dst[..m.depth].iter_mut().zip(src).for_each(|(d, &x)| *d = m.input.quantize(x));
            dst[m.depth..].fill(0);
        }
        let qrows = &*qrows;
        let out = &mut out[..rows * m.rows];
        if rows > 1 || team.size() == 1 || m.depth * m.rows < SHARED_MIN_PRODUCTS {
            dot.products(qrows, rows, &m.weight, 0..m.rows, m.stride, |r0, o, raw| {
                raw.iter().enumerate().for_each(|(t, &raw)| out[(r0 + t) * m.rows + o] = m.output(o, raw))
            });
            return;
        }
        let share = m.rows.div_ceil(team.size()).next_multiple_of(4);
        let chunks = SharedChunks::new(out, share);
        team.run(chunks.count(), &|i| {
            // SAFETY: each part index runs once, so each chunk is borrowed once.
            let part = unsafe { chunks.get(i) };
            let first = i * share;
            dot.products(qrows, 1, &m.weight, first..first + part.len(), m.stride, |_, o, raw| {
                part[o - first] = m.output(o, raw[0])
            });
        });
    }
}

/// One step on a single image's map.
#[derive(Debug, Clone)]
enum MapStep {
    Conv(Int8Conv),
    Pool(PoolStep),
    Lrn(LrnStep),
    Relu,
}

/// The compiled int8 network.
#[derive(Debug, Clone)]
pub(crate) struct Int8Plan {
    map_steps: Vec<MapStep>,
    dense_steps: Vec<Int8Dense>,
    sizes: Sizes,
    pub(crate) kernel: Kernel,
    dot: Dot,
}

impl Int8Plan {
    pub(crate) fn build(model: &QuantizedWeights, kernel: Kernel) -> Result<Self, InferError> {
        let kernel = kernel.check_available()?;
        let mut plan = Int8Plan {
            map_steps: Vec::new(),
            dense_steps: Vec::new(),
            sizes: Sizes { map_len: INPUT_SHAPE.len(), ..Sizes::default() },
            kernel,
            dot: Dot::for_kernel(kernel),
        };
        let map_len = walk_layers(|name, layer, shape, flattened| plan.add(name, layer, shape, model, flattened))?;
        plan.sizes.map_len = plan.sizes.map_len.max(map_len);
        let widest = plan.dense_steps.iter().map(|d| d.matrix.rows).max().unwrap_or(0);
        plan.sizes.dense_len = widest.max(plan.sizes.flat_len);
        plan.sizes.qrow_len = plan.dense_steps.iter().map(|d| d.matrix.stride).max().unwrap_or(0);
        Ok(plan)
    }

    fn add(
        &mut self,
        name: &str,
        layer: &Layer,
        shape: ActShape,
        model: &QuantizedWeights,
        flattened: &mut bool,
    ) -> Result<(), InferError> {
        let unsupported =
            || InferError::Backend(format!("layer `{name}` ({layer:?}) cannot follow a {shape:?} activation"));
        let quantized = |weight| {
            model.layer(weight).ok_or_else(|| InferError::Backend(format!("layer `{name}` has no int8 weights")))
        };
        match (*layer, shape, *flattened) {
            (Layer::Conv(conv), ActShape::Map { h, w, .. }, false) => {
                let step = Int8Conv::new(&conv, quantized(conv.weight)?, h, w);
                self.sizes.byte_len = self.sizes.byte_len.max(step.scratch_len());
                self.map_steps.push(MapStep::Conv(step));
            }
            (Layer::MaxPool(pool), ActShape::Map { c, h, w }, false) => {
                self.map_steps.push(MapStep::Pool(PoolStep::new(pool, c, h, w)))
            }
            (Layer::Lrn(lrn), ActShape::Map { c, h, w }, false) => {
                self.map_steps.push(MapStep::Lrn(LrnStep::new(lrn, c, h * w)))
            }
            (Layer::Relu, _, false) => match self.map_steps.last_mut() {
                Some(MapStep::Conv(conv)) if !conv.matrix.relu => conv.matrix.relu = true,
                _ => self.map_steps.push(MapStep::Relu),
            },
            (Layer::Flatten, _, false) => {
                *flattened = true;
                self.sizes.flat_len = shape.len();
            }
            (Layer::Dense(dense), ActShape::Flat(n), true) if n == dense.in_features() => {
                self.dense_steps.push(Int8Dense { matrix: Int8Matrix::new(quantized(dense.weight)?) });
            }
            (Layer::Relu, _, true) => match self.dense_steps.last_mut() {
                Some(dense) if !dense.matrix.relu => dense.matrix.relu = true,
                _ => return Err(unsupported()),
            },
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    pub(crate) fn sizes(&self) -> &Sizes {
        &self.sizes
    }

    /// Bytes of weights the steps hold.
    pub(crate) fn weight_bytes(&self) -> usize {
        let convs = self.map_steps.iter().map(|s| if let MapStep::Conv(c) = s { c.matrix.bytes() } else { 0 });
        convs.chain(self.dense_steps.iter().map(|d| d.matrix.bytes())).sum()
    }

    /// Width of the network output (the logits).
    pub(crate) fn out_len(&self) -> usize {
        self.dense_steps.last().map_or(self.sizes.flat_len, |d| d.matrix.rows)
    }

    /// The whole forward pass for one chunk of the batch on the current thread, helped by the
    /// rest of the team inside each layer.
    pub(crate) fn run_chunk(&self, scratch: &mut Scratch, input: &[f32], logits: &mut [f32], team: &Team) {
        let rows = input.len() / INPUT_LEN;
        let Scratch { ping, pong, rows_a, rows_b, bytes, qrows, .. } = scratch;
        for (image, flat) in input.chunks_exact(INPUT_LEN).zip(rows_a.chunks_exact_mut(self.sizes.flat_len)) {
            self.map_steps(image, ping, pong, bytes, flat, team);
        }
        let (mut current, mut next) = (rows_a, rows_b);
        for step in &self.dense_steps {
            step.run(current, rows, qrows, next, team, self.dot);
            std::mem::swap(&mut current, &mut next);
        }
        logits.copy_from_slice(&current[..logits.len()]);
    }

    /// The per-image steps of one image; the flattened result goes to `flat`.
    fn map_steps(
        &self,
        image: &[f32],
        ping: &mut [f32],
        pong: &mut [f32],
        bytes: &mut [u8],
        flat: &mut [f32],
        team: &Team,
    ) {
        let Some((first, rest)) = self.map_steps.split_first() else {
            flat.copy_from_slice(&image[..flat.len()]);
            return;
        };
        self.map_step(first, image, ping, bytes, team);
        let (mut current, mut next) = (ping, pong);
        for step in rest {
            self.map_step(step, current, next, bytes, team);
            std::mem::swap(&mut current, &mut next);
        }
        flat.copy_from_slice(&current[..flat.len()]);
    }

    fn map_step(&self, step: &MapStep, input: &[f32], out: &mut [f32], bytes: &mut [u8], team: &Team) {
        match step {
            MapStep::Conv(conv) => conv.run(input, out, bytes, team, self.dot),
            MapStep::Pool(pool) => pool.run(input, out, team, self.kernel),
            MapStep::Lrn(lrn) => lrn.run(input, out, team, self.kernel),
            MapStep::Relu => out.iter_mut().zip(input).for_each(|(o, &x)| *o = relu(x)),
        }
    }
}
