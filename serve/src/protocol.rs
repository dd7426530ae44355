//! The KServe v2 / Open Inference Protocol JSON types, and the model's tensors as the
//! protocol names them.
//!
//! Inputs (exactly one per request; `-1` is the batch dimension):
//! - `image`: `UINT8 [-1, 32, 32, 3]`, raw RGB images, rows of interleaved pixels (HWC);
//! - `input`: `FP32 [-1, 3, 24, 24]`, already preprocessed (crop + standardisation).
//!
//! Outputs: `logits` and `probabilities` (`FP32 [-1, 10]`) and `label` (`INT64 [-1]`).
//! With Triton's `classification: k` parameter, `logits` or `probabilities` come back as
//! `BYTES [N, k]` strings `"value:index:label"`, largest first.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::request_json::{Bounded, FirstOf, Parameters, TensorValues};

use model_format::arch::{IMAGE_SIZE, INPUT_CHANNELS, INPUT_SIZE, NUM_CLASSES};

/// Name of the raw-image input.
pub const IMAGE_INPUT: &str = "image";
/// Name of the preprocessed input.
pub const PREPROCESSED_INPUT: &str = "input";
/// Output: the logits.
pub const LOGITS_OUTPUT: &str = "logits";
/// Output: the softmax of the logits.
pub const PROBABILITIES_OUTPUT: &str = "probabilities";
/// Output: the index of the largest logit.
pub const LABEL_OUTPUT: &str = "label";
/// Every output, in the order they are returned when none are requested.
pub const OUTPUTS: [&str; 3] = [LOGITS_OUTPUT, PROBABILITIES_OUTPUT, LABEL_OUTPUT];
/// The one model version served.
pub const MODEL_VERSION: &str = "1";

/// A tensor's element type, as the protocol spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Uint8,
    Fp32,
    Int64,
}

impl Datatype {
    /// The protocol's name (`"UINT8"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Datatype::Uint8 => "UINT8",
            Datatype::Fp32 => "FP32",
            Datatype::Int64 => "INT64",
        }
    }

    /// Bytes per element in the binary tensor data extension.
    pub fn size(self) -> usize {
        match self {
            Datatype::Uint8 => 1,
            Datatype::Fp32 => 4,
            Datatype::Int64 => 8,
        }
    }
}

/// An input the model accepts: its name, type and shape without the batch dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    pub name: &'static str,
    pub datatype: Datatype,
    pub dims: [usize; 3],
}

/// The two inputs of the model.
pub const INPUT_SPECS: [InputSpec; 2] = [
    InputSpec { name: IMAGE_INPUT, datatype: Datatype::Uint8, dims: [IMAGE_SIZE, IMAGE_SIZE, INPUT_CHANNELS] },
    InputSpec { name: PREPROCESSED_INPUT, datatype: Datatype::Fp32, dims: [INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE] },
];

/// Datatype and shape without the batch dimension of an output.
pub fn output_spec(name: &str) -> Option<(Datatype, &'static [usize])> {
    const CLASS_DIMS: [usize; 1] = [NUM_CLASSES];
    match name {
        LOGITS_OUTPUT | PROBABILITIES_OUTPUT => Some((Datatype::Fp32, &CLASS_DIMS)),
        LABEL_OUTPUT => Some((Datatype::Int64, &[])),
        _ => None,
    }
}

/// Most outputs a request may name (there are three; repeats are allowed).
pub const MAX_REQUESTED_OUTPUTS: usize = 16;
/// Most dimensions a shape may have in a request (the inputs have four).
pub const MAX_SHAPE_DIMS: usize = 8;
/// Largest magnitude accepted in an FP32 input: the library's one rule (see
/// [`infer::error::MAX_INPUT_MAGNITUDE`]).
pub const MAX_INPUT_MAGNITUDE: f32 = infer::error::MAX_INPUT_MAGNITUDE;

/// `POST /v2/models/{name}/infer` body (the JSON part when binary data follows). Its
/// parts are parsed with bounded memory (see [`super::request_json`]).
#[derive(Debug, Clone, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Parameters>,
    /// The first input, and how many there are (the model takes exactly one).
    pub inputs: FirstOf<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Bounded<RequestOutput, MAX_REQUESTED_OUTPUTS>>,
}

/// One input tensor of a request.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Bounded<i64, MAX_SHAPE_DIMS>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Parameters>,
    /// Row-major values, flat or nested; absent when sent as binary data.
    #[serde(default)]
    pub data: Option<TensorValues>,
}

/// One requested output.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Parameters>,
}

/// The inference response (the JSON part when binary data follows).
#[derive(Debug, Clone, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of a response.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseOutput {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<TensorData>,
}

/// Output values in JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TensorData {
    Fp32(Vec<f32>),
    Int64(Vec<i64>),
    /// BYTES elements (classification strings).
    Bytes(Vec<String>),
}

/// A tensor's name, datatype and shape in metadata (`-1`: any batch size).
#[derive(Debug, Clone, Serialize)]
pub struct TensorMetadata {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

impl ModelMetadata {
    /// The metadata of the model served as `name` by the engine `backend`.
    pub fn new(name: &str, backend: &str) -> Self {
        let batched = |dims: &[usize]| std::iter::once(-1).chain(dims.iter().map(|&d| d as i64)).collect();
        ModelMetadata {
            name: name.to_string(),
            versions: vec![MODEL_VERSION.to_string()],
            platform: format!("cifar10-{backend}"),
            inputs: INPUT_SPECS
                .iter()
                .map(|s| TensorMetadata { name: s.name, datatype: s.datatype.name(), shape: batched(&s.dims) })
                .collect(),
            outputs: OUTPUTS
                .iter()
                .map(|&name| {
                    let (datatype, dims) = output_spec(name).expect("every output has a spec");
                    TensorMetadata { name, datatype: datatype.name(), shape: batched(dims) }
                })
                .collect(),
        }
    }
}
