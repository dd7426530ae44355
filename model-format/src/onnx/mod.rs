//! ONNX export of the model (feature `onnx`): a standard ONNX file (IR version
//! [`IR_VERSION`], default-domain opset [`OPSET_VERSION`]) that any ONNX runtime can load.
//!
//! The graph is [`crate::arch::LAYERS`] and a Softmax:
//!
//! - input [`INPUT_NAME`]: `float32 [N, 3, 24, 24]`, NCHW, **already preprocessed**
//!   ([`crate::preprocess`]: central crop and per-image standardisation; the graph does not
//!   standardise);
//! - outputs [`LOGITS_NAME`] and [`PROBABILITIES_NAME`]: `float32 [N, 10]`;
//! - `N` (the symbolic dimension [`BATCH_DIM`]) is any batch size.
//!
//! The same contract is written into the file's doc string, and the class names, the
//! architecture id and the weights digest into its metadata properties.
//!
//! ```
//! use model_format::{onnx, Metadata, Weights, TENSORS};
//! let tensors = TENSORS.iter().map(|t| vec![0.01f32; t.len()]).collect();
//! let weights = Weights::new(tensors, Metadata::default()).unwrap();
//! let bytes = onnx::to_bytes(&weights);
//! let model = onnx::decode(&bytes).unwrap();
//! assert_eq!(model.opset_import[0].version, onnx::OPSET_VERSION);
//! assert_eq!(model.graph.unwrap().output[0].name, onnx::LOGITS_NAME);
//! ```

mod graph;
pub mod proto;

use std::path::Path;

use prost::Message;

use crate::arch::{
    ActShape, ARCHITECTURE, FLATTEN_ORDER, INPUT_CHANNELS, INPUT_SHAPE, INPUT_SIZE, LAYERS, NUM_CLASSES, TENSORS,
};
use crate::model::Model;
use crate::quantized::{weighted_layers, QuantizedWeights, ARCHITECTURE_INT8};
use crate::weights::{Weights, WeightsError};
use graph::{batched_value, detached_node, initializer, int, raw_initializer, NodeChain};
use proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, DATA_TYPE_FLOAT,
    DATA_TYPE_INT8, DATA_TYPE_UINT8,
};

/// ONNX IR version of the file (IR 8 is the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;
/// Version of the default (`ai.onnx`) operator set the graph uses. 17 is old enough for
/// every maintained runtime and has every operator the model needs in its current form.
pub const OPSET_VERSION: i64 = 17;
/// Name of the graph input.
pub const INPUT_NAME: &str = "input";
/// Name of the logits output.
pub const LOGITS_NAME: &str = "logits";
/// Name of the probabilities output (softmax of the logits over the classes).
pub const PROBABILITIES_NAME: &str = "probabilities";
/// Symbolic name of the batch dimension.
pub const BATCH_DIM: &str = "N";
/// `producer_name` written into the file.
pub const PRODUCER: &str = "cifar10 model-format";

/// The model as an ONNX `ModelProto`.
pub fn model(weights: &Weights) -> ModelProto {
    let graph = graph(weights);
    model_proto(graph, ARCHITECTURE, &weights.metadata.class_names, weights.digest())
}

/// The int8 model as a QDQ graph: each convolution and dense layer reads its input through
/// `QuantizeLinear` → `DequantizeLinear` (per tensor, `uint8`, the model's scale and zero
/// point) and its weights through a per-channel `DequantizeLinear` (axis 0) of the `int8`
/// values; biases, ReLU, pooling, LRN and the softmax are float, as in the int8 engine.
/// Runtimes fuse the pattern into their integer kernels (`QLinearConv`, …) or run it as
/// float; either way each layer sees the int8 model's values.
///
/// ```
/// use model_format::quantized::{ActivationQuant, QuantizedWeights};
/// let q = QuantizedWeights::uniform(0.01, ActivationQuant::from_range(-1.0, 1.0));
/// let model = model_format::onnx::decode(&model_format::onnx::quantized_to_bytes(&q)).unwrap();
/// let graph = model.graph.unwrap();
/// assert_eq!(graph.node.iter().filter(|n| n.op_type == "QuantizeLinear").count(), 5);
/// assert_eq!(graph.output[0].name, model_format::onnx::LOGITS_NAME);
/// ```
pub fn quantized_model(model: &QuantizedWeights) -> ModelProto {
    model_proto(quantized_graph(model), ARCHITECTURE_INT8, &model.metadata.class_names, model.digest())
}

/// The int8 model's QDQ graph as ONNX file bytes.
pub fn quantized_to_bytes(model: &QuantizedWeights) -> Vec<u8> {
    encode(&quantized_model(model))
}

/// Writes a model of either variant as an ONNX file, atomically.
pub fn save_model(model: &Model, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = match model {
        Model::Float(weights) => to_bytes(weights),
        Model::Int8(quantized) => quantized_to_bytes(quantized),
    };
    crate::atomic::write_file(path, &bytes).map_err(|source| WeightsError::Io { path: path.into(), source })
}

fn model_proto(graph: GraphProto, architecture: &str, class_names: &[String], digest: String) -> ModelProto {
    let metadata = [
        ("architecture", architecture.to_string()),
        ("class_names", serde_json::to_string(class_names).expect("strings serialise")),
        ("weights_digest", digest),
        ("input", input_contract()),
    ];
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: PRODUCER.into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: doc_string(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET_VERSION }],
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key: key.into(), value })
            .collect(),
    }
}

/// The model as ONNX file bytes.
pub fn to_bytes(weights: &Weights) -> Vec<u8> {
    encode(&model(weights))
}

/// Serialises any `ModelProto` (e.g. one built or edited by hand) to ONNX file bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Writes the ONNX file atomically: a crash leaves the old file or the new one.
pub fn save(weights: &Weights, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let path = path.as_ref();
    crate::atomic::write_file(path, &to_bytes(weights)).map_err(|source| WeightsError::Io { path: path.into(), source })
}

/// Parses ONNX bytes into the messages this module knows (fields it does not declare are
/// skipped). Useful to inspect an exported file; it does not check that the graph is ours.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, prost::DecodeError> {
    ModelProto::decode(bytes)
}

/// The input contract, one line: what the graph expects in [`INPUT_NAME`].
pub fn input_contract() -> String {
    format!(
        "float32 [{BATCH_DIM},{INPUT_CHANNELS},{INPUT_SIZE},{INPUT_SIZE}] NCHW, already preprocessed: \
         the central {INPUT_SIZE}x{INPUT_SIZE} crop of the 32x32 RGB image (0-255 values), then per-image \
         standardization (x - mean) / max(stddev, 1/sqrt({})) over the crop's own values; \
         the graph does NOT include the standardization",
        INPUT_SHAPE.len()
    )
}

fn doc_string() -> String {
    format!(
        "CIFAR-10 tutorial CNN ({ARCHITECTURE}). Input `{INPUT_NAME}`: {}. Outputs: `{LOGITS_NAME}` float32 \
         [{BATCH_DIM},{NUM_CLASSES}] and `{PROBABILITIES_NAME}` float32 [{BATCH_DIM},{NUM_CLASSES}] (softmax of \
         the logits), classes in the order of the `class_names` metadata property. The batch size {BATCH_DIM} is free.",
        input_contract()
    )
}

fn graph(weights: &Weights) -> GraphProto {
    let chain = chain(|_, _| {});
    let initializers = weights.iter().map(|(spec, values)| initializer(spec, values)).collect();
    graph_proto(chain.nodes, initializers)
}

/// The layers of [`LAYERS`] and the softmax, `before` called ahead of each layer (to insert
/// nodes in front of it).
fn chain(mut before: impl FnMut(&mut NodeChain, &str)) -> NodeChain {
    let mut chain = NodeChain::new(INPUT_NAME, INPUT_SHAPE);
    for (i, (name, layer)) in LAYERS.iter().enumerate() {
        before(&mut chain, name);
        // The last layer's output is the graph's `logits`.
        chain.layer(if i + 1 == LAYERS.len() { LOGITS_NAME } else { name }, layer);
    }
    chain.push("Softmax", PROBABILITIES_NAME, vec![int("axis", 1)]);
    chain
}

fn quantized_graph(model: &QuantizedWeights) -> GraphProto {
    let mut initializers = Vec::new();
    let mut weight_nodes = Vec::new();
    for ((layer, weight, bias), q) in weighted_layers().zip(model.layers()) {
        let (w, b) = (&TENSORS[weight], &TENSORS[bias]);
        let names = [format!("{}_quantized", w.name), format!("{}_scale", w.name), format!("{}_zero_point", w.name)];
        let out = [w.shape[0]];
        initializers.extend([
            raw_initializer(&names[0], DATA_TYPE_INT8, w.shape, q.weight.iter().map(|&v| v as u8).collect()),
            raw_initializer(&names[1], DATA_TYPE_FLOAT, &out, floats(&q.weight_scale)),
            raw_initializer(&names[2], DATA_TYPE_INT8, &out, vec![0; out[0]]),
            raw_initializer(b.name, DATA_TYPE_FLOAT, b.shape, floats(&q.bias)),
            raw_initializer(&format!("{layer}.input_scale"), DATA_TYPE_FLOAT, &[], floats(&[q.input.scale])),
            raw_initializer(&format!("{layer}.input_zero_point"), DATA_TYPE_UINT8, &[], vec![q.input.zero_point]),
        ]);
        let inputs = [names[0].as_str(), names[1].as_str(), names[2].as_str()];
        weight_nodes.push(detached_node("DequantizeLinear", &inputs, w.name, vec![int("axis", 0)]));
    }
    let chain = chain(|chain, name| {
        if weighted_layers().any(|(layer, _, _)| layer == name) {
            chain.quantize_dequantize(name, &format!("{name}.input_scale"), &format!("{name}.input_zero_point"));
        }
    });
    weight_nodes.extend(chain.nodes);
    graph_proto(weight_nodes, initializers)
}

fn floats(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn graph_proto(node: Vec<NodeProto>, initializer: Vec<TensorProto>) -> GraphProto {
    let ActShape::Map { c, h, w } = INPUT_SHAPE else { unreachable!("the input is an image") };
    let classes = [NUM_CLASSES];
    GraphProto {
        node,
        name: "cifar10_tutorial_cnn".into(),
        initializer,
        doc_string: format!("Flatten order between pool2 and local3: {FLATTEN_ORDER}."),
        input: vec![batched_value(INPUT_NAME, BATCH_DIM, &[c, h, w], input_contract())],
        output: vec![
            batched_value(LOGITS_NAME, BATCH_DIM, &classes, "unnormalised class scores".into()),
            batched_value(PROBABILITIES_NAME, BATCH_DIM, &classes, "softmax of the logits".into()),
        ],
    }
}

#[cfg(test)]
mod tests;
