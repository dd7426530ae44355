//! A load-time proof that no activation of the network can overflow `f32`: a worst-case
//! bound on every layer's output, for any input within a given magnitude.
//!
//! An overflow inside the network does not always reach the logits: an infinite square in
//! LRN's denominator turns its output into 0, and the model then answers with confidence
//! from what is left. Checking every activation at run time would cost a pass over each
//! layer's output on every call; this check costs one pass over the weights, once, and
//! covers every input the engines accept.
//!
//! The bound follows [`LAYERS`]: a convolution or dense layer's output is at most
//! `max_o (Σ_i |w[o][i]|·B + |b[o]|)` for inputs within ±`B`; ReLU and max pooling keep
//! `B`; LRN needs its window's sum of squares (`window · B²`) finite and divides by at least
//! `bias^beta`. For int8 layers the input is quantized (|dequantized| ≤ 255 · input scale),
//! the weight is `q · scale`, and the engine's `input scale × weight scale` product must
//! itself be a finite `f32`. Trained models stay many orders of magnitude inside the limit
//! (the bundled one: about 1e13 for inputs of ±1e6).

use crate::arch::{Layer, LAYERS};
use crate::error::WeightsError;
use crate::quantized::QuantizedWeights;
use crate::{Model, Weights};

/// The largest bound accepted: `f32::MAX` with room for the rounding of long sums.
pub const LIMIT: f64 = f32::MAX as f64 / 1024.0;

/// Checks that every activation of `model` stays below [`LIMIT`] for every input whose
/// values lie within ±`input_bound`; the error names the first layer that could overflow.
///
/// ```
/// use model_format::{bounds, init, Metadata, Model, Weights};
/// let mut tensors = init::initial_tensors(0);
/// let weights = Weights::new(tensors.clone(), Metadata::default()).unwrap();
/// bounds::check_float(&weights, 1e6).unwrap();
/// tensors[0][0] = 1e30; // one conv1 weight: 1e36 for inputs of 1e6
/// let big = Weights::new(tensors, Metadata::default()).unwrap();
/// let err = bounds::check(&Model::Float(big), 1e6).unwrap_err();
/// assert!(matches!(err, model_format::WeightsError::Overflow { layer: "conv1", .. }), "{err}");
/// ```
pub fn check(model: &Model, input_bound: f32) -> Result<(), WeightsError> {
    match model {
        Model::Float(weights) => check_float(weights, input_bound),
        Model::Int8(quantized) => check_int8(quantized, input_bound),
    }
}

/// [`check`] for a float model.
pub fn check_float(weights: &Weights, input_bound: f32) -> Result<(), WeightsError> {
    walk(Net::Float(weights), input_bound).map(|_| ())
}

/// [`check`] for an int8 model.
pub fn check_int8(model: &QuantizedWeights, input_bound: f32) -> Result<(), WeightsError> {
    walk(Net::Int8(model), input_bound).map(|_| ())
}

#[derive(Clone, Copy)]
enum Net<'a> {
    Float(&'a Weights),
    Int8(&'a QuantizedWeights),
}

/// The largest magnitude any layer's output (the logits included) can reach for inputs
/// within ±`input_bound`, or the error of [`check`].
pub fn worst_case(model: &Model, input_bound: f32) -> Result<f64, WeightsError> {
    match model {
        Model::Float(weights) => walk(Net::Float(weights), input_bound),
        Model::Int8(quantized) => walk(Net::Int8(quantized), input_bound),
    }
}

fn walk(model: Net, input_bound: f32) -> Result<f64, WeightsError> {
    let mut largest = 0.0f64;
    let mut bound = f64::from(input_bound);
    for (name, layer) in LAYERS {
        bound = match layer {
            Layer::Conv(c) => weighted(model, name, c.weight, c.bias, bound)?,
            Layer::Dense(d) => weighted(model, name, d.weight, d.bias, bound)?,
            Layer::Relu | Layer::MaxPool(_) | Layer::Flatten => bound,
            Layer::Lrn(lrn) => {
                let squares = lrn.window() as f64 * bound * bound;
                if !within_limit(squares) {
                    return Err(overflow(name, squares));
                }
                bound / f64::from(lrn.bias).powf(f64::from(lrn.beta))
            }
        };
        if !within_limit(bound) {
            return Err(overflow(name, bound));
        }
        largest = largest.max(bound);
    }
    Ok(largest)
}

/// The output bound of a weighted layer for inputs within ±`bound`.
fn weighted(model: Net, name: &'static str, weight: usize, bias: usize, bound: f64) -> Result<f64, WeightsError> {
    match model {
        Net::Float(w) => Ok(float_layer(w, weight, bias, bound)),
        Net::Int8(q) => int8_layer(q, name, weight),
    }
}

fn float_layer(weights: &Weights, weight: usize, bias: usize, bound: f64) -> f64 {
    let b = weights.tensor(bias);
    let rows = weights.tensor(weight).chunks_exact(weights.tensor(weight).len() / b.len());
    rows.zip(b)
        .map(|(row, b)| row.iter().map(|w| f64::from(w.abs())).sum::<f64>() * bound + f64::from(b.abs()))
        .fold(0.0, f64::max)
}

/// An int8 layer's output bound: its input is re-quantized, so the previous bound does not
/// carry over; `|q_x − zero_point| ≤ 255`.
fn int8_layer(model: &QuantizedWeights, name: &'static str, weight: usize) -> Result<f64, WeightsError> {
    let layer = model.layer(weight).expect("every weighted layer of LAYERS is quantized");
    let n = layer.in_features();
    let mut bound = 0.0f64;
    for (o, (&scale, &b)) in layer.weight_scale.iter().zip(&layer.bias).enumerate() {
        // The engine multiplies the integer sum by this f32 product: it must be finite.
        let product = layer.input.scale * scale;
        if !product.is_finite() {
            return Err(overflow(name, f64::from(layer.input.scale) * f64::from(scale)));
        }
        let row: i64 = layer.weight[o * n..][..n].iter().map(|&w| i64::from(w).abs()).sum();
        bound = bound.max(255.0 * row as f64 * f64::from(product) + f64::from(b.abs()));
    }
    Ok(bound)
}

/// Finite and at most [`LIMIT`] (NaN, from an infinite weight sum, is not).
fn within_limit(bound: f64) -> bool {
    bound.is_finite() && bound <= LIMIT
}

fn overflow(layer: &'static str, bound: f64) -> WeightsError {
    WeightsError::Overflow { layer, bound }
}
