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
    ActShape, ARCHITECTURE, FLATTEN_ORDER, INPUT_CHANNELS, INPUT_SHAPE, INPUT_SIZE, LAYERS, NUM_CLASSES,
};
use crate::weights::{Weights, WeightsError};
use graph::{batched_value, initializer, int, NodeChain};
use proto::{GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};

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
    let metadata = [
        ("architecture", ARCHITECTURE.to_string()),
        ("class_names", serde_json::to_string(&weights.metadata.class_names).expect("strings serialise")),
        ("weights_digest", weights.digest()),
        ("input", input_contract()),
    ];
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: PRODUCER.into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: doc_string(),
        graph: Some(graph(weights)),
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
    let mut chain = NodeChain::new(INPUT_NAME, INPUT_SHAPE);
    for (i, (name, layer)) in LAYERS.iter().enumerate() {
        // The last layer's output is the graph's `logits`.
        chain.layer(if i + 1 == LAYERS.len() { LOGITS_NAME } else { name }, layer);
    }
    chain.push("Softmax", PROBABILITIES_NAME, vec![int("axis", 1)]);

    let ActShape::Map { c, h, w } = INPUT_SHAPE else { unreachable!("the input is an image") };
    let classes = [NUM_CLASSES];
    GraphProto {
        node: chain.nodes,
        name: "cifar10_tutorial_cnn".into(),
        initializer: weights.iter().map(|(spec, values)| initializer(spec, values)).collect(),
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
