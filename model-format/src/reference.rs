//! The reference forward pass (feature `reference`): naive loops in `f64`, written straight
//! from [`LAYERS`], one image at a time. It is slow on purpose and fast enough for tests; every
//! backend (the CPU engine, tch, ONNX Runtime) is tested against it.
//!
//! ```
//! use model_format::{arch::INPUT_LEN, reference, Metadata, Weights, TENSORS};
//! let weights = Weights::new(TENSORS.iter().map(|t| vec![0.01; t.len()]).collect(), Metadata::default())?;
//! let logits = reference::logits(&weights, &[0.5; INPUT_LEN]);
//! assert_eq!(logits.len(), 10);
//! # Ok::<(), model_format::WeightsError>(())
//! ```

use crate::arch::{
    output_shape, ActShape, Conv, Dense, Layer, Lrn, MaxPool, INPUT_LEN, INPUT_SHAPE, LAYERS, NUM_CLASSES,
};
use crate::quantized::{QuantizedLayer, QuantizedWeights};
use crate::weights::Weights;

/// The logits of one preprocessed image (`INPUT_LEN` values, CHW; see [`crate::preprocess`]).
///
/// Panics if `image` does not hold `INPUT_LEN` values: this is a test oracle, not an API
/// for untrusted input.
pub fn logits(weights: &Weights, image: &[f32]) -> [f64; NUM_CLASSES] {
    forward(weights, image, |_, _| {})
}

/// Like [`logits`], showing `observe` the input of every layer (its index in [`LAYERS`]
/// and the values) before the layer runs: the quantizer calibrates on these.
pub fn forward(weights: &Weights, image: &[f32], mut observe: impl FnMut(usize, &[f64])) -> [f64; NUM_CLASSES] {
    assert_eq!(image.len(), INPUT_LEN, "reference::logits takes one preprocessed image");
    let mut x: Vec<f64> = image.iter().map(|&v| f64::from(v)).collect();
    let mut shape = INPUT_SHAPE;
    for (index, (_, layer)) in LAYERS.iter().enumerate() {
        observe(index, &x);
        x = match (*layer, shape) {
            (Layer::Conv(conv), ActShape::Map { c, h, w }) => convolution(weights, &conv, &x, c, h, w),
            (Layer::Relu, _) => x.iter().map(|v| v.max(0.0)).collect(),
            (Layer::MaxPool(pool), ActShape::Map { c, h, w }) => max_pool(&pool, &x, c, h, w),
            (Layer::Lrn(lrn), ActShape::Map { c, h, w }) => local_response_norm(&lrn, &x, c, h * w),
            (Layer::Flatten, _) => x, // activations are already stored in CHW order
            (Layer::Dense(dense), _) => fully_connected(weights, &dense, &x),
            (layer, shape) => unreachable!("arch::LAYERS never applies {layer:?} to {shape:?}"),
        };
        shape = output_shape(layer, shape);
    }
    x.try_into().expect("the last layer gives NUM_CLASSES values")
}

/// The logits of every image of `images` (`n × INPUT_LEN` values), `n × NUM_CLASSES` flat.
pub fn logits_batch(weights: &Weights, images: &[f32]) -> Vec<f64> {
    images.chunks_exact(INPUT_LEN).flat_map(|image| logits(weights, image)).collect()
}

/// Stride-1 convolution with `pad` zeros on every side, plus bias.
fn convolution(weights: &Weights, conv: &Conv, x: &[f64], c: usize, h: usize, w: usize) -> Vec<f64> {
    let (kernel, bias) = (weights.tensor(conv.weight), weights.tensor(conv.bias));
    let (k, pad) = (conv.kernel(), conv.pad as isize);
    let mut out = vec![0f64; conv.out_channels() * h * w];
    for o in 0..conv.out_channels() {
        for y in 0..h {
            for xx in 0..w {
                let mut acc = f64::from(bias[o]);
                for i in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (y as isize + ky as isize - pad, xx as isize + kx as isize - pad);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                acc += f64::from(kernel[((o * c + i) * k + ky) * k + kx])
                                    * x[(i * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                }
                out[(o * h + y) * w + xx] = acc;
            }
        }
    }
    out
}

/// Max pooling with TensorFlow's SAME padding: padded cells never win.
fn max_pool(pool: &MaxPool, x: &[f64], c: usize, h: usize, w: usize) -> Vec<f64> {
    let (oh, ow) = (pool.out_size(h), pool.out_size(w));
    let (top, left) = (pool.padding(h).0 as isize, pool.padding(w).0 as isize);
    let mut out = vec![f64::NEG_INFINITY; c * oh * ow];
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                for dy in 0..pool.size as isize {
                    for dx in 0..pool.size as isize {
                        let (iy, ix) =
                            ((oy * pool.stride) as isize + dy - top, (ox * pool.stride) as isize + dx - left);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            let cell = &mut out[(ch * oh + oy) * ow + ox];
                            *cell = cell.max(x[(ch * h + iy as usize) * w + ix as usize]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// TensorFlow's LRN across channels: `x / (bias + alpha · Σ x²)^beta`.
fn local_response_norm(lrn: &Lrn, x: &[f64], c: usize, plane: usize) -> Vec<f64> {
    let mut out = vec![0f64; x.len()];
    for ch in 0..c {
        let (lo, hi) = (ch.saturating_sub(lrn.depth_radius), (ch + lrn.depth_radius).min(c - 1));
        for p in 0..plane {
            let sum: f64 = (lo..=hi).map(|j| x[j * plane + p].powi(2)).sum();
            let scale = (f64::from(lrn.bias) + f64::from(lrn.alpha) * sum).powf(f64::from(lrn.beta));
            out[ch * plane + p] = x[ch * plane + p] / scale;
        }
    }
    out
}

/// `y = W·x + b` with `W` stored `[out, in]`.
fn fully_connected(weights: &Weights, dense: &Dense, x: &[f64]) -> Vec<f64> {
    let (matrix, bias, n) = (weights.tensor(dense.weight), weights.tensor(dense.bias), dense.in_features());
    (0..dense.out_features())
        .map(|o| f64::from(bias[o]) + (0..n).map(|i| f64::from(matrix[o * n + i]) * x[i]).sum::<f64>())
        .collect()
}

/// The logits of one preprocessed image under the int8 model: the naive integer forward
/// pass every int8 engine is compared with bit for bit. Each convolution and dense layer
/// quantizes its input ([`crate::quantized::ActivationQuant::quantize`]), sums `q_w · (q_x − zero_point)` in
/// `i32` (padding is a real zero: `q_x = zero_point`), and scales the sum with
/// [`QuantizedLayer::output`]; ReLU, max pooling and LRN run in `f32`, LRN in exactly the
/// engine's order of operations ([`Lrn::inverse_power`]).
///
/// ```
/// use model_format::quantized::{ActivationQuant, QuantizedWeights};
/// use model_format::{arch::INPUT_LEN, reference};
/// let q = QuantizedWeights::uniform(0.001, ActivationQuant::from_range(-1.0, 1.0));
/// let logits = reference::int8_logits(&q, &[0.5; INPUT_LEN]);
/// assert!(logits.iter().all(|&v| v == logits[0] && v > 0.0));
/// ```
pub fn int8_logits(model: &QuantizedWeights, image: &[f32]) -> [f32; NUM_CLASSES] {
    assert_eq!(image.len(), INPUT_LEN, "reference::int8_logits takes one preprocessed image");
    let mut x = image.to_vec();
    let mut shape = INPUT_SHAPE;
    for (_, layer) in LAYERS.iter() {
        x = match (*layer, shape) {
            (Layer::Conv(conv), ActShape::Map { c, h, w }) => {
                let q = model.layer(conv.weight).expect("every convolution is quantized");
                int8_convolution(q, &conv, &x, c, h, w)
            }
            (Layer::Dense(dense), _) => {
                let q = model.layer(dense.weight).expect("every dense layer is quantized");
                int8_fully_connected(q, &x)
            }
            (Layer::Relu, _) => x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect(),
            (Layer::MaxPool(pool), ActShape::Map { c, h, w }) => {
                let wide: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                // Max of f32 values widened and narrowed back: exact.
                max_pool(&pool, &wide, c, h, w).into_iter().map(|v| v as f32).collect()
            }
            (Layer::Lrn(lrn), ActShape::Map { c, h, w }) => f32_local_response_norm(&lrn, &x, c, h * w),
            (Layer::Flatten, _) => x,
            (layer, shape) => unreachable!("arch::LAYERS never applies {layer:?} to {shape:?}"),
        };
        shape = output_shape(layer, shape);
    }
    x.try_into().expect("the last layer gives NUM_CLASSES values")
}

/// `q_w · (q_x − zero_point)` summed in `i32`, stride 1, padding `pad` real zeros.
fn int8_convolution(q: &QuantizedLayer, conv: &Conv, x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let input: Vec<i32> = x.iter().map(|&v| i32::from(q.input.quantize(v)) - i32::from(q.input.zero_point)).collect();
    let (k, pad) = (conv.kernel(), conv.pad as isize);
    let mut out = vec![0f32; conv.out_channels() * h * w];
    for o in 0..conv.out_channels() {
        for y in 0..h {
            for xx in 0..w {
                let mut acc = 0i32;
                for i in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (y as isize + ky as isize - pad, xx as isize + kx as isize - pad);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                acc += i32::from(q.weight[((o * c + i) * k + ky) * k + kx])
                                    * input[(i * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                }
                out[(o * h + y) * w + xx] = q.output(o, acc);
            }
        }
    }
    out
}

/// `y[o] = output(o, Σ q_w · (q_x − zero_point))`.
fn int8_fully_connected(q: &QuantizedLayer, x: &[f32]) -> Vec<f32> {
    let input: Vec<i32> = x.iter().map(|&v| i32::from(q.input.quantize(v)) - i32::from(q.input.zero_point)).collect();
    let n = q.in_features();
    (0..q.out_features())
        .map(|o| q.output(o, q.weight[o * n..][..n].iter().zip(&input).map(|(&w, &v)| i32::from(w) * v).sum()))
        .collect()
}

/// LRN in `f32` as the engine computes it: the window's squares summed in channel order
/// from 0.0, then `x · inverse_power(bias + alpha · sum)`.
fn f32_local_response_norm(lrn: &Lrn, x: &[f32], c: usize, plane: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for ch in 0..c {
        let (lo, hi) = (ch.saturating_sub(lrn.depth_radius), (ch + lrn.depth_radius).min(c - 1));
        for p in 0..plane {
            let mut sum = 0f32;
            for j in lo..=hi {
                sum += x[j * plane + p] * x[j * plane + p];
            }
            out[ch * plane + p] = x[ch * plane + p] * lrn.inverse_power(lrn.bias + lrn.alpha * sum);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{LRN, TENSORS};
    use crate::Metadata;

    #[test]
    fn lrn_divides_by_the_window_sum() {
        // Two channels, one pixel: each sees both (radius 4), sum of squares 3² + 4² = 25.
        let out = local_response_norm(&LRN, &[3.0, 4.0], 2, 1);
        let scale = (1.0 + f64::from(LRN.alpha) * 25.0).powf(0.75);
        assert_eq!(out, vec![3.0 / scale, 4.0 / scale]);
    }

    #[test]
    fn same_pooling_ignores_the_padding() {
        // A 2×2 map of negatives, pooled 3×3/2: one output, the largest value, not a padded 0.
        let pool = MaxPool { size: 3, stride: 2 };
        assert_eq!(max_pool(&pool, &[-4.0, -3.0, -2.0, -1.0], 1, 2, 2), vec![-1.0]);
    }

    #[test]
    fn constant_weights_give_equal_logits() {
        let weights =
            Weights::new(TENSORS.iter().map(|t| vec![0.001; t.len()]).collect(), Metadata::default()).unwrap();
        let logits = logits(&weights, &[1.0; INPUT_LEN]);
        assert!(logits.iter().all(|&v| (v - logits[0]).abs() < 1e-12 && v > 0.0), "{logits:?}");
    }
}
