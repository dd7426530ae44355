//! Translation of [`crate::arch::LAYERS`] into ONNX nodes. Every shape and hyperparameter
//! is read from `arch`; this module only knows how each layer kind is spelled in ONNX.

use super::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, AttributeType, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    DATA_TYPE_FLOAT,
};
use crate::arch::{output_shape, ActShape, Conv, Dense, Layer, Lrn, MaxPool, TensorSpec};

/// Appends nodes to a graph under construction, tracking the running activation's name
/// and shape so that each layer reads the previous one's output.
pub(super) struct NodeChain {
    pub nodes: Vec<NodeProto>,
    current: String,
    shape: ActShape,
}

impl NodeChain {
    pub fn new(input: &str, shape: ActShape) -> Self {
        NodeChain { nodes: Vec::new(), current: input.to_string(), shape }
    }

    /// Adds the ONNX node for `layer`, whose output is called `output`.
    pub fn layer(&mut self, output: &str, layer: &Layer) {
        let node = match layer {
            Layer::Conv(conv) => self.conv(output, conv),
            Layer::Relu => self.node("Relu", output, &[], vec![]),
            Layer::MaxPool(pool) => self.max_pool(output, pool),
            Layer::Lrn(lrn) => self.lrn(output, lrn),
            // ONNX's Flatten(axis=1) of NCHW keeps each example's values in CHW order,
            // which is the order `arch::FLATTEN_ORDER` states for local3's weights.
            Layer::Flatten => self.node("Flatten", output, &[], vec![int("axis", 1)]),
            Layer::Dense(dense) => self.dense(output, dense),
        };
        self.nodes.push(node);
        self.shape = output_shape(layer, self.shape);
        self.current = output.to_string();
    }

    /// Quantizes and dequantizes the running activation (`QuantizeLinear` then
    /// `DequantizeLinear`, per tensor, with the scalar initializers `scale` and `zero_point`),
    /// so that the next layer sees the values the int8 model's layer `layer` sees.
    pub fn quantize_dequantize(&mut self, layer: &str, scale: &str, zero_point: &str) {
        let (quantized, dequantized) = (format!("{layer}.input_quantized"), format!("{layer}.input_dequantized"));
        let q = self.node("QuantizeLinear", &quantized, &[scale, zero_point], vec![]);
        self.nodes.push(q);
        self.current = quantized;
        let dq = self.node("DequantizeLinear", &dequantized, &[scale, zero_point], vec![]);
        self.nodes.push(dq);
        self.current = dequantized;
    }

    /// Adds a node that is no `arch::Layer` (the closing Softmax) and keeps the shape.
    pub fn push(&mut self, op_type: &str, output: &str, attributes: Vec<AttributeProto>) {
        let node = self.node(op_type, output, &[], attributes);
        self.nodes.push(node);
        self.current = output.to_string();
    }

    fn conv(&self, output: &str, conv: &Conv) -> NodeProto {
        let k = conv.kernel() as i64;
        let p = conv.pad as i64;
        let params = [crate::arch::TENSORS[conv.weight].name, crate::arch::TENSORS[conv.bias].name];
        self.node(
            "Conv",
            output,
            &params,
            vec![ints("kernel_shape", &[k, k]), ints("strides", &[1, 1]), ints("pads", &[p, p, p, p])],
        )
    }

    fn max_pool(&self, output: &str, pool: &MaxPool) -> NodeProto {
        let ActShape::Map { h, w, .. } = self.shape else { unreachable!("arch::LAYERS pools only feature maps") };
        let (top, bottom) = pool.padding(h);
        let (left, right) = pool.padding(w);
        let size = pool.size as i64;
        let stride = pool.stride as i64;
        // ONNX pads are [h_begin, w_begin, h_end, w_end]; MaxPool ignores padded cells,
        // matching TensorFlow's SAME where padding never wins the max.
        let pads = [top, left, bottom, right].map(|p| p as i64);
        self.node(
            "MaxPool",
            output,
            &[],
            vec![ints("kernel_shape", &[size, size]), ints("strides", &[stride, stride]), ints("pads", &pads)],
        )
    }

    fn lrn(&self, output: &str, lrn: &Lrn) -> NodeProto {
        let size = lrn.window();
        // ONNX divides alpha by `size` where TensorFlow does not.
        let alpha = lrn.alpha * size as f32;
        self.node(
            "LRN",
            output,
            &[],
            vec![int("size", size as i64), float("alpha", alpha), float("beta", lrn.beta), float("bias", lrn.bias)],
        )
    }

    fn dense(&self, output: &str, dense: &Dense) -> NodeProto {
        let params = [crate::arch::TENSORS[dense.weight].name, crate::arch::TENSORS[dense.bias].name];
        // Weights are stored [out, in], hence transB.
        self.node("Gemm", output, &params, vec![int("transB", 1)])
    }

    fn node(&self, op_type: &str, output: &str, params: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
        let mut input = vec![self.current.clone()];
        input.extend(params.iter().map(|p| p.to_string()));
        NodeProto {
            input,
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op_type.to_string(),
            attribute,
            domain: String::new(),
        }
    }
}

pub(super) fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: value, r#type: AttributeType::Int as i32, ..Default::default() }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: AttributeType::Ints as i32,
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: value, r#type: AttributeType::Float as i32, ..Default::default() }
}

/// A float initializer holding a model tensor.
pub(super) fn initializer(spec: &TensorSpec, values: &[f32]) -> TensorProto {
    TensorProto {
        dims: spec.shape.iter().map(|&d| d as i64).collect(),
        data_type: DATA_TYPE_FLOAT,
        name: spec.name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// An initializer of any ONNX data type from its little-endian bytes.
pub(super) fn raw_initializer(name: &str, data_type: i32, dims: &[usize], raw_data: Vec<u8>) -> TensorProto {
    TensorProto { dims: dims.iter().map(|&d| d as i64).collect(), data_type, name: name.to_string(), raw_data }
}

/// A node outside the running chain (a weight's `DequantizeLinear`).
pub(super) fn detached_node(op_type: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        op_type: op_type.to_string(),
        attribute,
        domain: String::new(),
    }
}

/// A float tensor graph input or output whose first dimension is the symbolic `batch`.
pub(super) fn batched_value(name: &str, batch: &str, dims: &[usize], doc: String) -> ValueInfoProto {
    let mut dim = vec![Dimension { value: Some(dimension::Value::DimParam(batch.to_string())) }];
    dim.extend(dims.iter().map(|&d| Dimension { value: Some(dimension::Value::DimValue(d as i64)) }));
    let tensor = type_proto::Tensor { elem_type: DATA_TYPE_FLOAT, shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)) }),
        doc_string: doc,
    }
}
