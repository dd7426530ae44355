//! From a v2 inference request to engine inputs, and from logits back to a v2 response.

use serde_json::{Map, Value};

use model_format::arch::{IMAGE_LEN, INPUT_LEN, NUM_CLASSES};
use model_format::preprocess::preprocess_hwc;

use super::api_error::ApiError;
use super::binary::{binary_size, f32_bytes, f32_from_bytes, i64_bytes, split_body, BinaryReader};
use super::protocol::{
    output_spec, Datatype, InferRequest, InferResponse, InputSpec, RequestInput, RequestOutput, ResponseOutput,
    TensorData, INPUT_SPECS, LABEL_OUTPUT, LOGITS_OUTPUT, MODEL_VERSION, OUTPUTS, PROBABILITIES_OUTPUT,
};
use super::request_json::{with_value_cap, Param, Parameters, TensorValues};
use infer::prediction::{argmax, ranked, softmax};
use infer::InferError;

/// A request ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The request's `id`, echoed in the response.
    pub id: Option<String>,
    /// Preprocessed inputs, `images × INPUT_LEN` values.
    pub inputs: Vec<f32>,
    pub images: usize,
    /// The outputs to return.
    pub outputs: Vec<OutputRequest>,
}

/// One output to return, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputRequest {
    pub name: &'static str,
    /// Sent as binary data after the JSON header.
    pub binary: bool,
    /// Top-k classification strings instead of the values (Triton's extension).
    pub classification: Option<usize>,
}

/// Parses and validates an inference request body (JSON, or JSON + binary tensors when
/// `header_length` is given). Every error names the input, field or limit at fault.
///
/// Memory: the parsed request holds at most `max_batch × 3,072` tensor values as `f32`s
/// (further ones are only counted) and little else; nothing else a client sends is
/// stored beyond a few bytes.
pub fn decode_request(body: &[u8], header_length: Option<&str>, max_batch: usize) -> Result<Decoded, ApiError> {
    let (json, binary) = split_body(body, header_length)?;
    // No input needs more values than a full batch of the larger kind.
    let cap = max_batch.saturating_mul(IMAGE_LEN.max(INPUT_LEN));
    let request: InferRequest = with_value_cap(cap, || serde_json::from_slice(json))
        .map_err(|e| ApiError::bad_request(format!("malformed inference request JSON: {e}")))?;
    let (Some(input), 1) = (request.inputs.first, request.inputs.count) else {
        return Err(ApiError::bad_request(format!(
            "expected exactly one input ('image' UINT8 [-1,32,32,3] or 'input' FP32 [-1,3,24,24]), got {}",
            request.inputs.count
        )));
    };
    let spec = input_spec(&input)?;
    let images = batch_size(&input, spec, max_batch)?;
    let count = images * spec.dims.iter().product::<usize>();
    let mut reader = BinaryReader::new(binary);
    let inputs = match (binary_size(input.parameters.as_ref(), &input.name)?, input.data) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "input '{}' has both JSON data and binary_data_size; send one",
                input.name
            )))
        }
        (Some(size), None) => {
            let expected = count * spec.datatype.size();
            if size != expected {
                return Err(ApiError::bad_request(format!(
                    "input '{}': binary_data_size is {size} bytes, shape {:?} of {} needs {expected}",
                    input.name,
                    input.shape.0,
                    spec.datatype.name()
                )));
            }
            from_binary(spec, reader.take(size, &input.name)?, images)?
        }
        (None, Some(data)) => from_json(spec, data, count, images)?,
        (None, None) => {
            return Err(ApiError::bad_request(format!("input '{}' has neither data nor binary_data_size", input.name)))
        }
    };
    reader.finish()?;
    let outputs = requested_outputs(request.outputs.as_ref().map(|o| o.0.as_slice()), request.parameters.as_ref())?;
    Ok(Decoded { id: request.id, inputs, images, outputs })
}

fn input_spec(input: &RequestInput) -> Result<&'static InputSpec, ApiError> {
    let spec = INPUT_SPECS.iter().find(|s| s.name == input.name).ok_or_else(|| {
        ApiError::bad_request(format!("unknown input '{}': the model takes 'image' or 'input'", input.name))
    })?;
    if input.datatype != spec.datatype.name() {
        return Err(ApiError::bad_request(format!(
            "input '{}' must be {}, got datatype {}",
            spec.name,
            spec.datatype.name(),
            input.datatype
        )));
    }
    Ok(spec)
}

/// Checks the shape `[N, dims…]` and returns N.
fn batch_size(input: &RequestInput, spec: &InputSpec, max_batch: usize) -> Result<usize, ApiError> {
    let wanted = || format!("[N, {}, {}, {}]", spec.dims[0], spec.dims[1], spec.dims[2]);
    let shape = &input.shape.0;
    let shape_ok = shape.len() == 4 && shape[0] >= 1 && shape[1..].iter().zip(spec.dims).all(|(&s, d)| s == d as i64);
    if !shape_ok {
        return Err(ApiError::bad_request(format!(
            "input '{}' has shape {shape:?}, expected {} with N >= 1",
            spec.name,
            wanted()
        )));
    }
    let images = shape[0] as u64;
    if images > max_batch as u64 {
        return Err(ApiError::bad_request(format!(
            "input '{}' holds {images} images, more than the maximum batch of {max_batch}",
            spec.name
        )));
    }
    Ok(images as usize)
}

fn from_binary(spec: &InputSpec, bytes: &[u8], images: usize) -> Result<Vec<f32>, ApiError> {
    match spec.datatype {
        Datatype::Uint8 => Ok(preprocess_images(bytes, images)),
        _ => checked_range(spec, f32_from_bytes(bytes)),
    }
}

fn from_json(spec: &InputSpec, data: TensorValues, count: usize, images: usize) -> Result<Vec<f32>, ApiError> {
    let found = data.count;
    if found != count {
        return Err(ApiError::bad_request(format!(
            "input '{}' has {found} data values, its shape needs {count}",
            spec.name
        )));
    }
    match spec.datatype {
        Datatype::Uint8 => {
            if let Some((i, v)) = data.first_non_byte {
                return Err(ApiError::bad_request(format!(
                    "input '{}' value {i} is {v}, not an integer in 0..=255",
                    spec.name
                )));
            }
            // Every value is an integer in 0..=255, exact in f32.
            let bytes: Vec<u8> = data.values.iter().map(|&v| v as u8).collect();
            Ok(preprocess_images(&bytes, images))
        }
        _ => {
            if let Some((i, v)) = data.first_non_number {
                return Err(ApiError::bad_request(format!("input '{}' value {i} is {v}, not a number", spec.name)));
            }
            checked_range(spec, data.values)
        }
    }
}

/// FP32 inputs must be finite and within ±[`infer::error::MAX_INPUT_MAGNITUDE`]: the
/// library's rule.
fn checked_range(spec: &InputSpec, values: Vec<f32>) -> Result<Vec<f32>, ApiError> {
    let Some((i, value)) = infer::error::first_out_of_range(&values) else {
        return Ok(values);
    };
    let why = infer::error::out_of_range_reason(value);
    Err(ApiError::bad_request(format!("input '{}' value {i} is {why} (preprocessed images lie within ±42)", spec.name)))
}

/// The engine's logits for one request, refused when any is not finite (the library's
/// rule): an engine that overflows answers 500 naming the image, never `null`s with 200.
pub fn checked_logits(logits: Vec<f32>) -> Result<Vec<f32>, ApiError> {
    InferError::check_finite_logits(&logits).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(logits)
}

/// Raw HWC images → the evaluation preprocessing, as the library does it.
pub fn preprocess_images(hwc: &[u8], images: usize) -> Vec<f32> {
    let mut inputs = vec![0f32; images * INPUT_LEN];
    for (image, input) in hwc.chunks_exact(IMAGE_LEN).zip(inputs.chunks_exact_mut(INPUT_LEN)) {
        preprocess_hwc(image, input);
    }
    inputs
}

/// The outputs to send: the request's list, or all of them; `binary_data` per output,
/// else the request's `binary_data_output`; Triton's `classification` parameter.
fn requested_outputs(
    outputs: Option<&[RequestOutput]>,
    parameters: Option<&Parameters>,
) -> Result<Vec<OutputRequest>, ApiError> {
    let default_binary = flag(parameters, "binary_data_output", "request")?.unwrap_or(false);
    let Some(outputs) = outputs else {
        return Ok(OUTPUTS
            .iter()
            .map(|&name| OutputRequest { name, binary: default_binary, classification: None })
            .collect());
    };
    outputs
        .iter()
        .map(|output| {
            let name = OUTPUTS.iter().copied().find(|&n| n == output.name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown output '{}': the model gives 'logits', 'probabilities' and 'label'",
                    output.name
                ))
            })?;
            let parameters = output.parameters.as_ref();
            let binary = flag(parameters, "binary_data", name)?.unwrap_or(default_binary);
            let classification = classification(parameters, name)?;
            Ok(OutputRequest { name, binary, classification })
        })
        .collect()
}

/// Triton's classification extension: `k` in 1..=10 turns the output into the top-k
/// `"value:index:label"` strings of each row; 0 or absent leaves it alone.
fn classification(parameters: Option<&Parameters>, name: &'static str) -> Result<Option<usize>, ApiError> {
    let Some(value) = parameters.and_then(|p| p.get("classification")) else {
        return Ok(None);
    };
    match value.as_u64() {
        Some(0) => Ok(None),
        Some(k) if k as usize <= NUM_CLASSES && name != LABEL_OUTPUT => Ok(Some(k as usize)),
        _ if name == LABEL_OUTPUT => {
            Err(ApiError::bad_request("output 'label': classification applies to 'logits' or 'probabilities'"))
        }
        _ => Err(ApiError::bad_request(format!(
            "output '{name}': classification must be a class count in 0..={NUM_CLASSES}, got {value}"
        ))),
    }
}

fn flag(parameters: Option<&Parameters>, key: &str, owner: &str) -> Result<Option<bool>, ApiError> {
    match parameters.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Param::Bool(b)) => Ok(Some(*b)),
        Some(other) => {
            Err(ApiError::bad_request(format!("{owner}: parameter {key} must be true or false, got {other}")))
        }
    }
}

/// Softmax of each row of `NUM_CLASSES` logits (the library's, so that served and
/// library probabilities agree to the bit).
pub fn probabilities(logits: &[f32]) -> Vec<f32> {
    logits.chunks_exact(NUM_CLASSES).flat_map(|row| softmax(row.try_into().expect("a row of logits"))).collect()
}

/// Index of the largest logit of each row (the first on ties).
pub fn labels(logits: &[f32]) -> Vec<i64> {
    logits.chunks_exact(NUM_CLASSES).map(|row| argmax(row) as i64).collect()
}

/// A response body and, when it carries binary tensors, the JSON header's length.
pub struct Encoded {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// Builds the response for `logits` of `decoded.images` inputs; `class_names` label
/// classification strings.
pub fn encode_response(model_name: &str, decoded: &Decoded, logits: &[f32], class_names: &[String]) -> Encoded {
    let mut binary = Vec::new();
    let outputs = decoded
        .outputs
        .iter()
        .map(|request| {
            let (datatype, dims, data) = output_data(request, decoded.images, logits, class_names);
            let shape = std::iter::once(decoded.images).chain(dims).collect();
            let name = request.name.to_string();
            if !request.binary {
                return ResponseOutput { name, datatype, shape, parameters: None, data: Some(data) };
            }
            let bytes = match &data {
                TensorData::Fp32(v) => f32_bytes(v),
                TensorData::Int64(v) => i64_bytes(v),
                TensorData::Bytes(v) => string_bytes(v),
            };
            let mut parameters = Map::new();
            parameters.insert("binary_data_size".into(), Value::from(bytes.len()));
            binary.extend_from_slice(&bytes);
            ResponseOutput { name, datatype, shape, parameters: Some(parameters), data: None }
        })
        .collect();
    let response = InferResponse {
        model_name: model_name.to_string(),
        model_version: MODEL_VERSION.to_string(),
        id: decoded.id.clone(),
        outputs,
    };
    let mut body = serde_json::to_vec(&response).expect("responses serialise");
    let header_length = decoded.outputs.iter().any(|o| o.binary).then_some(body.len());
    body.extend_from_slice(&binary);
    Encoded { body, header_length }
}

/// An output's datatype name, shape without the batch dimension, and values.
fn output_data(
    request: &OutputRequest,
    images: usize,
    logits: &[f32],
    class_names: &[String],
) -> (&'static str, Vec<usize>, TensorData) {
    let (datatype, dims) = output_spec(request.name).expect("requested outputs are known");
    let values = match request.name {
        LOGITS_OUTPUT => logits.to_vec(),
        PROBABILITIES_OUTPUT => probabilities(logits),
        _ => return (datatype.name(), dims.to_vec(), TensorData::Int64(labels(logits))),
    };
    debug_assert_eq!(values.len(), images * NUM_CLASSES);
    match request.classification {
        None => (datatype.name(), dims.to_vec(), TensorData::Fp32(values)),
        Some(k) => {
            let rows = values.chunks_exact(NUM_CLASSES);
            let strings = rows.flat_map(|row| top_k_strings(row, k, class_names)).collect();
            ("BYTES", vec![k], TensorData::Bytes(strings))
        }
    }
}

/// The `k` largest values of a row as Triton writes them: `"value:index:label"`.
fn top_k_strings(row: &[f32], k: usize, class_names: &[String]) -> Vec<String> {
    let row: &[f32; NUM_CLASSES] = row.try_into().expect("a row of NUM_CLASSES values");
    ranked(row)
        .into_iter()
        .take(k)
        .map(|i| match class_names.get(i) {
            Some(label) => format!("{}:{i}:{label}", row[i]),
            None => format!("{}:{i}", row[i]),
        })
        .collect()
}

/// BYTES elements in binary form: each a little-endian u32 length, then its bytes.
fn string_bytes(strings: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_request(input: &str) -> Vec<u8> {
        format!("{{\"inputs\":[{input}]}}").into_bytes()
    }

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let flat = json_request(&format!(
            "{{\"name\":\"input\",\"shape\":[1,3,24,24],\"datatype\":\"FP32\",\"data\":{:?}}}",
            vec![0.5f32; INPUT_LEN]
        ));
        let rows: Vec<Vec<f32>> = vec![vec![0.5; 24]; 72];
        let nested = json_request(&format!(
            "{{\"name\":\"input\",\"shape\":[1,3,24,24],\"datatype\":\"FP32\",\"data\":{rows:?}}}"
        ));
        let a = decode_request(&flat, None, 4).unwrap();
        let b = decode_request(&nested, None, 4).unwrap();
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.images, 1);
        assert_eq!(a.outputs.len(), 3);
    }

    #[test]
    fn wrong_length_names_the_counts() {
        let body = json_request("{\"name\":\"image\",\"shape\":[1,32,32,3],\"datatype\":\"UINT8\",\"data\":[1,2,3]}");
        let err = decode_request(&body, None, 4).unwrap_err();
        assert!(err.message.contains("has 3 data values") && err.message.contains("3072"), "{}", err.message);
    }

    #[test]
    fn uint8_values_out_of_range_are_refused() {
        let mut data = vec![0u32; IMAGE_LEN];
        data[5] = 256;
        let body = json_request(&format!(
            "{{\"name\":\"image\",\"shape\":[1,32,32,3],\"datatype\":\"UINT8\",\"data\":{data:?}}}"
        ));
        let err = decode_request(&body, None, 4).unwrap_err();
        assert!(err.message.contains("value 5 is 256"), "{}", err.message);
    }

    #[test]
    fn probabilities_sum_to_one_and_labels_take_the_max() {
        let logits: Vec<f32> = (0..20).map(|i| ((i * 7) % 10) as f32).collect();
        let p = probabilities(&logits);
        for row in p.chunks(NUM_CLASSES) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // Row 0 is 0,7,4,1,8,5,2,9,6,3: the max (9) is at index 7.
        assert_eq!(labels(&logits), vec![7, 7]);
    }
}
