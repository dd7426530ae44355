use super::proto::{tensor_shape_proto::dimension::Value as Dim, type_proto, AttributeProto, NodeProto};
use super::*;
use crate::arch::{LRN, POOL, TENSORS};
use crate::Metadata;

fn weights() -> Weights {
    let tensors = TENSORS
        .iter()
        .enumerate()
        .map(|(t, spec)| (0..spec.len()).map(|i| ((i * 13 + t * 5) % 97) as f32 / 970.0 - 0.05).collect())
        .collect();
    Weights::new(tensors, Metadata::default()).unwrap()
}

fn exported() -> ModelProto {
    decode(&to_bytes(&weights())).unwrap()
}

fn node<'a>(model: &'a ModelProto, name: &str) -> &'a NodeProto {
    model.graph.as_ref().unwrap().node.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> &'a AttributeProto {
    node.attribute.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("{} has no {name}", node.name))
}

#[test]
fn nodes_follow_the_layers_then_logits_and_softmax() {
    let model = exported();
    let graph = model.graph.as_ref().unwrap();
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        [
            "Conv", "Relu", "MaxPool", "LRN", "Conv", "Relu", "LRN", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm",
            "Relu", "Gemm", "Softmax"
        ]
    );
    // Each node reads the previous node's output.
    assert_eq!(graph.node[0].input[0], INPUT_NAME);
    for pair in graph.node.windows(2) {
        assert_eq!(pair[1].input[0], pair[0].output[0]);
    }
    assert_eq!(graph.node[graph.node.len() - 2].output, [LOGITS_NAME]);
    assert_eq!(graph.node.last().unwrap().output, [PROBABILITIES_NAME]);
}

#[test]
fn max_pool_pads_reproduce_same_with_the_odd_pad_at_the_end() {
    let model = exported();
    // 24 → 12 and 12 → 6 with a 3×3 window, stride 2: one padded row and column at the end.
    for name in ["pool1", "pool2"] {
        let pool = node(&model, name);
        assert_eq!(attr(pool, "pads").ints, [0, 0, 1, 1], "{name}");
        assert_eq!(attr(pool, "kernel_shape").ints, [POOL.size as i64; 2]);
        assert_eq!(attr(pool, "strides").ints, [POOL.stride as i64; 2]);
    }
}

#[test]
fn lrn_uses_the_onnx_alpha_convention() {
    let model = exported();
    let lrn = node(&model, "norm1");
    assert_eq!(attr(lrn, "size").i, 9);
    // The tutorial's alpha is 0.001 / 9; ONNX divides by the window (9) itself.
    assert!((attr(lrn, "alpha").f - 0.001).abs() < 1e-9, "{}", attr(lrn, "alpha").f);
    assert_eq!(attr(lrn, "beta").f, LRN.beta);
    assert_eq!(attr(lrn, "bias").f, LRN.bias);
}

#[test]
fn dense_layers_transpose_the_stored_weights_and_flatten_keeps_chw() {
    let model = exported();
    for name in ["local3", "local4", LOGITS_NAME] {
        assert_eq!(attr(node(&model, name), "transB").i, 1, "{name}");
    }
    assert_eq!(attr(node(&model, "flatten"), "axis").i, 1);
    assert_eq!(attr(node(&model, PROBABILITIES_NAME), "axis").i, 1);
    let conv = node(&model, "conv1");
    assert_eq!(attr(conv, "pads").ints, [2, 2, 2, 2]);
    assert_eq!(conv.input, ["input", "conv1.weight", "conv1.bias"]);
}

#[test]
fn initializers_hold_every_tensor_bit_for_bit() {
    let w = weights();
    let model = exported();
    let graph = model.graph.unwrap();
    assert_eq!(graph.initializer.len(), TENSORS.len());
    for (init, (spec, values)) in graph.initializer.iter().zip(w.iter()) {
        assert_eq!(init.name, spec.name);
        assert_eq!(init.dims, spec.shape.iter().map(|&d| d as i64).collect::<Vec<_>>());
        let back: Vec<f32> = init.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(back, values, "{}", spec.name);
    }
}

#[test]
fn input_and_outputs_have_a_symbolic_batch_and_the_contract_is_documented() {
    let model = exported();
    let graph = model.graph.as_ref().unwrap();
    let dims = |v: &proto::ValueInfoProto| -> Vec<Dim> {
        let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().unwrap().value.clone() else { panic!() };
        t.shape.unwrap().dim.into_iter().map(|d| d.value.unwrap()).collect()
    };
    assert_eq!(graph.input[0].name, INPUT_NAME);
    assert_eq!(
        dims(&graph.input[0]),
        [Dim::DimParam("N".into()), Dim::DimValue(3), Dim::DimValue(24), Dim::DimValue(24)]
    );
    let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, [LOGITS_NAME, PROBABILITIES_NAME]);
    for output in &graph.output {
        assert_eq!(dims(output), [Dim::DimParam("N".into()), Dim::DimValue(10)]);
    }
    assert!(model.doc_string.contains("float32 [N,3,24,24]"), "{}", model.doc_string);
    assert!(model.doc_string.contains("does NOT include the standardization"), "{}", model.doc_string);
    assert_eq!((model.ir_version, model.opset_import[0].version), (IR_VERSION, OPSET_VERSION));
}

#[test]
fn metadata_carries_class_names_and_digest() {
    let w = weights();
    let model = exported();
    let get = |key: &str| model.metadata_props.iter().find(|p| p.key == key).map(|p| p.value.clone());
    assert_eq!(get("weights_digest"), Some(w.digest()));
    assert_eq!(get("architecture").as_deref(), Some(ARCHITECTURE));
    let names: Vec<String> = serde_json::from_str(&get("class_names").unwrap()).unwrap();
    assert_eq!(names, w.metadata.class_names);
}

#[test]
fn save_writes_the_same_bytes_and_names_a_bad_path() {
    let dir = std::env::temp_dir().join(format!("onnx-export-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.onnx");
    save(&weights(), &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), to_bytes(&weights()));
    let bad = dir.join("no-such-dir").join("m.onnx");
    let err = save(&weights(), &bad).unwrap_err().to_string();
    assert!(err.contains("no-such-dir"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
