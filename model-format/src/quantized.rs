//! The int8 model: the second variant of the architecture, post-training quantized.
//!
//! **What is quantized, and how.** Every convolution and fully connected layer of
//! [`LAYERS`] (the layer list is not repeated here) has
//! - its weights per output channel, symmetric int8: `w ≈ weight_scale[o] · q`, `q ∈ [−127, 127]`
//!   (`I8` tensor under the float weight's name and shape, `F32` `<weight>_scale` of `[out]`);
//! - its bias in float (`F32`, the float bias's name and shape), added after the integer sum
//!   is scaled: biases are 0.4 % of the parameters, and a float bias needs no second scale;
//! - its *input* quantized per tensor, asymmetric u8: `x ≈ input_scale · (q − zero_point)`
//!   (`<layer>.input_scale`, `F32 [1]`, and `<layer>.input_zero_point`, `U8 [1]`). After a
//!   ReLU, pooling or LRN the input is ≥ 0 and the zero point is 0; only the network input
//!   (a standardised image) is signed.
//!
//! A layer computes `y[o] = (Σ q_w · (q_x − zero_point)) · input_scale · weight_scale[o] + bias[o]`
//! with the sum exact in `i32` (at most 2,304 · 255 · 127 < 2³¹), then, in `f32`,
//! [`QuantizedLayer::output`]. ReLU, max pooling and LRN run in `f32` between a layer's output
//! and the next layer's quantized input: max pooling commutes with the monotone quantization
//! anyway, and LRN's divisor `(1 + α Σx²)^0.75` is a float function at heart. The last
//! layer's output (the logits) stays float.
//!
//! The file is safetensors with the float file's metadata (class names, step, …), the
//! architecture id [`ARCHITECTURE_INT8`], and a digest covering every tensor (name, dtype,
//! shape, bytes) and every metadata field, the calibration description included.
//!
//! ```
//! use model_format::quantized::{ActivationQuant, QuantizedWeights};
//! let q = QuantizedWeights::uniform(0.01, ActivationQuant::from_range(-2.0, 2.0));
//! let bytes = q.to_bytes()?;
//! assert_eq!(QuantizedWeights::from_bytes(&bytes)?, q);
//! # Ok::<(), model_format::WeightsError>(())
//! ```

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::arch::{Layer, TensorId, TensorSpec, LAYERS, TENSORS};
use crate::digest::Fnv1a64;
use crate::error::WeightsError;
use crate::tensor_set::{self, Fields, DIGEST_FIELD};
use crate::weights::{metadata_fields, parse_metadata_for, Metadata};

/// Architecture id of the int8 variant, stored in its files' `architecture` field.
pub const ARCHITECTURE_INT8: &str = "cifar10-tutorial-cnn/v1/int8";
/// Separates this digest from the float files' one, and versions its encoding.
const DIGEST_DOMAIN: &[u8] = b"cifar10 int8 model digest v1\0";
/// Largest weight magnitude: symmetric, so `-128` is never produced.
pub const WEIGHT_MAX: i8 = 127;

/// Quantization of one activation tensor: `x ≈ scale · (q − zero_point)`, `q` a `u8`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationQuant {
    pub scale: f32,
    pub zero_point: u8,
}

impl ActivationQuant {
    /// The quantization of values observed in `[min, max]`; the range is widened to hold 0,
    /// so that zero (the convolutions' padding, a ReLU's floor) is represented exactly.
    ///
    /// ```
    /// use model_format::quantized::ActivationQuant;
    /// let q = ActivationQuant::from_range(0.0, 5.1);
    /// assert_eq!((q.scale, q.zero_point), (0.02, 0));
    /// assert_eq!((q.quantize(1.0), q.quantize(-3.0), q.quantize(99.0)), (50, 0, 255));
    /// assert_eq!((q.quantize(0.01), q.quantize(0.03), q.quantize(f32::NAN)), (0, 2, 0)); // halves to even
    /// ```
    pub fn from_range(min: f32, max: f32) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let scale = if max > min { (max - min) / 255.0 } else { 1.0 };
        let zero_point = (-min / scale).round().clamp(0.0, 255.0) as u8;
        ActivationQuant { scale, zero_point }
    }

    /// `clamp(round(x / scale) + zero_point, 0, 255)`, rounding half to even: ONNX's
    /// `QuantizeLinear`. The engine and the reference both call this one function.
    #[inline(always)]
    pub fn quantize(&self, x: f32) -> u8 {
        // Adding and subtracting 1.5 · 2²³ rounds half to even in the default rounding mode, as
        // `round_ties_even` does for |v| < 2²², in two vectorisable additions (no library call
        // on baseline x86-64); larger magnitudes, infinities and NaN end up clamped the same.
        const MAGIC: f32 = 12_582_912.0;
        let q = ((x / self.scale + MAGIC) - MAGIC) + f32::from(self.zero_point);
        // In range the value is a whole number; NaN becomes 0.
        q.clamp(0.0, 255.0) as u8
    }
}

/// One quantized convolution or fully connected layer.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLayer {
    /// The float weight's layout (`[out, in·k·k]` flat), one scale per output channel.
    pub weight: Vec<i8>,
    pub weight_scale: Vec<f32>,
    /// Added in float after the scaled integer sum.
    pub bias: Vec<f32>,
    /// How this layer's input is quantized.
    pub input: ActivationQuant,
}

impl QuantizedLayer {
    /// Output channels.
    pub fn out_features(&self) -> usize {
        self.bias.len()
    }

    /// Input values per output (the weight row's length).
    pub fn in_features(&self) -> usize {
        self.weight.len() / self.bias.len()
    }

    /// `Σ weight[o][i]`: the engine subtracts `zero_point · row_sum` from its sum over the
    /// raw `u8` inputs instead of subtracting the zero point from every input.
    pub fn row_sum(&self, o: usize) -> i32 {
        let n = self.in_features();
        self.weight[o * n..][..n].iter().map(|&w| i32::from(w)).sum()
    }

    /// The float output of channel `o` for the exact integer sum `acc` of
    /// `q_w · (q_x − zero_point)`: `acc · (input_scale · weight_scale[o]) + bias[o]`, one
    /// rounding per operation (never fused), so every engine gets these bits.
    #[inline(always)]
    pub fn output(&self, o: usize, acc: i32) -> f32 {
        (acc as f32) * (self.input.scale * self.weight_scale[o]) + self.bias[o]
    }
}

/// The layers that hold weights, in [`LAYERS`] order: `(layer name, weight, bias)`.
pub fn weighted_layers() -> impl Iterator<Item = (&'static str, TensorId, TensorId)> {
    LAYERS.iter().filter_map(|(name, layer)| match *layer {
        Layer::Conv(c) => Some((*name, c.weight, c.bias)),
        Layer::Dense(d) => Some((*name, d.weight, d.bias)),
        _ => None,
    })
}

/// A complete, validated int8 model with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeights {
    /// One per entry of [`weighted_layers`], in order.
    layers: Vec<QuantizedLayer>,
    pub metadata: Metadata,
}

/// One tensor of the file: name, dtype, shape.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
}

/// Every tensor of an int8 file, in file (and digest) order.
fn entries() -> Vec<Entry> {
    let entry = |name: String, dtype, shape: &[usize]| Entry { name, dtype, shape: shape.to_vec() };
    weighted_layers()
        .flat_map(|(layer, weight, bias)| {
            let (w, b): (&TensorSpec, &TensorSpec) = (&TENSORS[weight], &TENSORS[bias]);
            [
                entry(w.name.to_string(), Dtype::I8, w.shape),
                entry(format!("{}_scale", w.name), Dtype::F32, &w.shape[..1]),
                entry(b.name.to_string(), Dtype::F32, b.shape),
                entry(format!("{layer}.input_scale"), Dtype::F32, &[1]),
                entry(format!("{layer}.input_zero_point"), Dtype::U8, &[1]),
            ]
        })
        .collect()
}

impl QuantizedWeights {
    /// Builds the model from one [`QuantizedLayer`] per entry of [`weighted_layers`]; checks
    /// every length, that scales are finite and positive, that biases are finite, and the
    /// class names.
    pub fn new(layers: Vec<QuantizedLayer>, metadata: Metadata) -> Result<Self, WeightsError> {
        let model = QuantizedWeights { layers, metadata };
        model.check()?;
        Ok(model)
    }

    /// A model whose every weight is `scale · 1` and bias 0, every input quantized by
    /// `input` (for examples and tests).
    pub fn uniform(scale: f32, input: ActivationQuant) -> Self {
        let layers = weighted_layers()
            .map(|(_, weight, bias)| QuantizedLayer {
                weight: vec![1; TENSORS[weight].len()],
                weight_scale: vec![scale; TENSORS[bias].len()],
                bias: vec![0.0; TENSORS[bias].len()],
                input,
            })
            .collect();
        QuantizedWeights::new(layers, Metadata::default()).expect("uniform layers have the declared shapes")
    }

    /// The quantized layer whose float weight tensor is `weight` (see [`crate::arch`]).
    pub fn layer(&self, weight: TensorId) -> Option<&QuantizedLayer> {
        weighted_layers().position(|(_, w, _)| w == weight).map(|i| &self.layers[i])
    }

    /// Every layer, in [`weighted_layers`] order.
    pub fn layers(&self) -> &[QuantizedLayer] {
        &self.layers
    }

    /// Bytes the tensors take in the file.
    pub fn tensor_bytes(&self) -> usize {
        self.tensor_data().iter().map(Vec::len).sum()
    }

    /// The digest stored in the file's `weights_digest` field: every tensor's name, dtype,
    /// shape and bytes, and every metadata field.
    pub fn digest(&self) -> String {
        digest(&self.tensor_data(), &self.metadata_fields())
    }

    /// Serialises to safetensors bytes with the metadata and the digest.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        self.check()?;
        let data = self.tensor_data();
        let metadata = self.metadata_fields();
        let mut fields: std::collections::HashMap<String, String> = metadata.clone().into_iter().collect();
        fields.insert(DIGEST_FIELD.into(), digest(&data, &metadata));
        let views = entries()
            .into_iter()
            .zip(&data)
            .map(|(e, bytes)| {
                let view = TensorView::new(e.dtype, e.shape, bytes)
                    .map_err(|err| WeightsError::MalformedHeader(err.to_string()))?;
                Ok((e.name, view))
            })
            .collect::<Result<Vec<_>, WeightsError>>()?;
        let bytes = safetensors::tensor::serialize(views, Some(fields))
            .map_err(|e| WeightsError::MalformedHeader(e.to_string()))?;
        Ok(canonical_header(bytes))
    }

    /// Writes the file atomically (see [`crate::atomic`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        crate::atomic::write_file(path, &bytes).map_err(|source| WeightsError::Io { path: path.into(), source })
    }

    /// Reads and validates an int8 model file (same limits as [`crate::Weights::load`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        tensor_set::parse_file(path.as_ref(), Self::from_bytes)
    }

    /// Parses and validates an int8 model held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WeightsError> {
        tensor_set::check_header_bounds(bytes)?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| tensor_set::map_safetensors_error(e, bytes))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| tensor_set::map_safetensors_error(e, bytes))?;
        let mut fields: Fields = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let metadata = parse_metadata_for(&fields, ARCHITECTURE_INT8)?;
        let expected = entries();
        let mut names = file.names();
        names.sort();
        if let Some(name) = names.iter().find(|n| !expected.iter().any(|e| e.name == **n)) {
            return Err(WeightsError::UnexpectedTensor(name.to_string()));
        }
        let data = expected.iter().map(|e| read_entry(&file, e)).collect::<Result<Vec<_>, _>>()?;
        let stored = fields.remove(DIGEST_FIELD).ok_or_else(|| crate::error::bad_field(DIGEST_FIELD, "missing"))?;
        let computed = digest(&data, &fields);
        if stored != computed {
            return Err(WeightsError::DigestMismatch { stored, computed });
        }
        let model = QuantizedWeights { layers: layers_from(&data), metadata };
        model.check()?;
        Ok(model)
    }

    /// Every tensor's little-endian bytes, in [`entries`] order.
    fn tensor_data(&self) -> Vec<Vec<u8>> {
        let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    l.weight.iter().map(|&w| w as u8).collect(),
                    floats(&l.weight_scale),
                    floats(&l.bias),
                    floats(&[l.input.scale]),
                    vec![l.input.zero_point],
                ]
            })
            .collect()
    }

    fn metadata_fields(&self) -> Fields {
        metadata_fields(&self.metadata, ARCHITECTURE_INT8)
    }

    fn check(&self) -> Result<(), WeightsError> {
        let specs: Vec<_> = weighted_layers().collect();
        if self.layers.len() != specs.len() {
            let missing = specs.get(self.layers.len()).map_or("(none)", |s| TENSORS[s.1].name);
            return Err(WeightsError::MissingTensor(missing.to_string()));
        }
        for ((layer, weight, bias), l) in specs.into_iter().zip(&self.layers) {
            let (w, b) = (&TENSORS[weight], &TENSORS[bias]);
            let shape_error = |tensor: String, expected: &[usize], found: usize| WeightsError::WrongShape {
                tensor,
                expected: expected.to_vec(),
                found: vec![found],
            };
            if l.weight.len() != w.len() {
                return Err(shape_error(w.name.into(), w.shape, l.weight.len()));
            }
            if l.weight_scale.len() != w.shape[0] {
                return Err(shape_error(format!("{}_scale", w.name), &w.shape[..1], l.weight_scale.len()));
            }
            if l.bias.len() != b.len() {
                return Err(shape_error(b.name.into(), b.shape, l.bias.len()));
            }
            tensor_set::check_finite(b.name, &l.bias)?;
            check_scales(&format!("{}_scale", w.name), &l.weight_scale)?;
            check_scales(&format!("{layer}.input_scale"), &[l.input.scale])?;
        }
        if self.metadata.class_names.len() != crate::CLASS_NAMES.len() {
            return Err(crate::error::bad_field(
                "class_names",
                format!("{} names, expected {}", self.metadata.class_names.len(), crate::CLASS_NAMES.len()),
            ));
        }
        Ok(())
    }
}

/// The same bytes with the JSON header's keys sorted: safetensors writes the metadata from a
/// `HashMap`, whose order changes from run to run, and the same model must give the same
/// bytes. The sorted header has the same length (same keys and values), padded with spaces to
/// the original length as safetensors pads it, so the data offsets are unchanged.
pub(crate) fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let length = u64::from_le_bytes(bytes[..8].try_into().expect("an 8-byte length prefix")) as usize;
    let header = &bytes[8..8 + length];
    let value: serde_json::Value = serde_json::from_slice(header).expect("safetensors wrote valid JSON");
    // serde_json's maps are sorted by key (no `preserve_order` feature).
    let mut sorted = serde_json::to_vec(&value).expect("JSON serialises");
    assert!(sorted.len() <= length, "a sorted header is no longer than the original");
    sorted.resize(length, b' ');
    bytes[8..8 + length].copy_from_slice(&sorted);
    bytes
}

/// A scale must be finite and positive (a zero scale would divide by zero when quantizing).
fn check_scales(tensor: &str, scales: &[f32]) -> Result<(), WeightsError> {
    match scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        Some(index) => Err(WeightsError::InvalidValue {
            tensor: tensor.into(),
            index,
            problem: format!("scale {} is not a finite positive number", scales[index]),
        }),
        None => Ok(()),
    }
}

fn read_entry(file: &SafeTensors<'_>, e: &Entry) -> Result<Vec<u8>, WeightsError> {
    let view = file.tensor(&e.name).map_err(|_| WeightsError::MissingTensor(e.name.clone()))?;
    if view.dtype() != e.dtype {
        let expected = match e.dtype {
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            _ => "F32",
        };
        return Err(WeightsError::WrongDtype {
            tensor: e.name.clone(),
            found: format!("{:?}", view.dtype()),
            expected,
        });
    }
    if view.shape() != e.shape {
        return Err(WeightsError::WrongShape {
            tensor: e.name.clone(),
            expected: e.shape.clone(),
            found: view.shape().to_vec(),
        });
    }
    Ok(view.data().to_vec())
}

/// The layers from the tensors' bytes ([`entries`] order: five per layer).
fn layers_from(data: &[Vec<u8>]) -> Vec<QuantizedLayer> {
    let floats = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    data.chunks_exact(5)
        .map(|t| {
            let scale: Vec<f32> = floats(&t[3]);
            QuantizedLayer {
                weight: t[0].iter().map(|&b| b as i8).collect(),
                weight_scale: floats(&t[1]),
                bias: floats(&t[2]),
                input: ActivationQuant { scale: scale[0], zero_point: t[4][0] },
            }
        })
        .collect()
}

/// FNV-1a 64 over the metadata (as [`tensor_set::digest`] hashes it), then every tensor's
/// name, dtype, shape and bytes, length-prefixed.
fn digest(data: &[Vec<u8>], metadata: &Fields) -> String {
    let mut hash = Fnv1a64::default();
    hash.update(DIGEST_DOMAIN);
    tensor_set::hash_fields(&mut hash, metadata);
    for (e, bytes) in entries().iter().zip(data) {
        tensor_set::update_with_length(&mut hash, e.name.as_bytes());
        tensor_set::update_with_length(&mut hash, format!("{:?}", e.dtype).as_bytes());
        let shape: Vec<u8> = e.shape.iter().flat_map(|&d| (d as u64).to_le_bytes()).collect();
        tensor_set::update_with_length(&mut hash, &shape);
        tensor_set::update_with_length(&mut hash, bytes);
    }
    hash.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{CONV2_WEIGHT, LOCAL3_WEIGHT};

    fn sample() -> QuantizedWeights {
        let mut q = QuantizedWeights::uniform(0.02, ActivationQuant { scale: 0.05, zero_point: 3 });
        for (i, l) in q.layers.iter_mut().enumerate() {
            l.weight.iter_mut().enumerate().for_each(|(j, w)| *w = ((j * 7 + i) % 255) as i8);
            l.bias.iter_mut().enumerate().for_each(|(j, b)| *b = j as f32 * 0.01);
        }
        q.metadata.step = Some(42);
        q
    }

    #[test]
    fn quantize_rounds_half_to_even_and_clamps_like_round_ties_even() {
        let q = ActivationQuant { scale: 0.5, zero_point: 7 };
        let values =
            (-4000..4000).map(|i| i as f32 * 0.0625).chain([1e9, -1e9, f32::INFINITY, f32::NEG_INFINITY, 1e30]);
        for x in values {
            let want = ((x / q.scale).round_ties_even() + 7.0).clamp(0.0, 255.0) as u8;
            assert_eq!(q.quantize(x), want, "{x}");
        }
    }

    #[test]
    fn the_same_model_gives_the_same_bytes() {
        let bytes = sample().to_bytes().unwrap();
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&bytes[8..header]).unwrap();
        // Keys in order: the metadata first (`__metadata__` sorts before the tensor names).
        assert!(text.starts_with("{\"__metadata__\":{\"architecture\":"), "{text}");
        for _ in 0..3 {
            assert_eq!(sample().to_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn round_trip_keeps_every_value_and_field() {
        let q = sample();
        assert_eq!(QuantizedWeights::from_bytes(&q.to_bytes().unwrap()).unwrap(), q);
        assert!(q.tensor_bytes() < crate::PARAM_COUNT + 8 * 1024);
    }

    #[test]
    fn a_changed_byte_or_field_fails_the_digest() {
        let q = sample();
        let bytes = q.to_bytes().unwrap();
        let mut changed = bytes.clone();
        *changed.last_mut().unwrap() ^= 1;
        let err = QuantizedWeights::from_bytes(&changed).unwrap_err();
        assert!(matches!(err, WeightsError::DigestMismatch { .. }), "{err}");
        let mut other = q.clone();
        other.metadata.extra.insert("calibration".into(), "something else".into());
        assert_ne!(other.digest(), q.digest());
        let mut zp = q.clone();
        zp.layers[1].input.zero_point = 4;
        assert_ne!(zp.digest(), q.digest());
    }

    #[test]
    fn a_bad_scale_or_length_is_named() {
        let mut q = sample();
        q.layers[2].weight_scale[5] = 0.0;
        let err = QuantizedWeights::new(q.layers.clone(), q.metadata.clone()).unwrap_err();
        assert_eq!(err.to_string(), "tensor `local3.weight_scale`, element 5: scale 0 is not a finite positive number");
        let mut q = sample();
        q.layers[1].weight.pop();
        let err = QuantizedWeights::new(q.layers, q.metadata).unwrap_err();
        assert!(err.to_string().starts_with("tensor `conv2.weight` has shape"), "{err}");
        assert!(sample().layer(CONV2_WEIGHT).is_some() && sample().layer(LOCAL3_WEIGHT + 1).is_none());
    }

    #[test]
    fn the_float_reader_names_the_int8_variant() {
        let bytes = sample().to_bytes().unwrap();
        let err = crate::Weights::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("is the int8 model"), "{err}");
        let float = crate::Weights::new(TENSORS.iter().map(|t| vec![0.0; t.len()]).collect(), Metadata::default());
        let err = QuantizedWeights::from_bytes(&float.unwrap().to_bytes().unwrap()).unwrap_err().to_string();
        assert!(err.contains("architecture"), "{err}");
    }
}
