//! Triton's binary tensor data extension: the body is the JSON header followed by raw
//! little-endian tensor bytes; `Inference-Header-Content-Length` gives the header's size
//! and each tensor's `binary_data_size` parameter its share of the rest, in order.

use super::api_error::ApiError;
use super::request_json::Parameters;

/// The request/response header naming the JSON part's length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a body into its JSON header and binary part. Without the header, the whole
/// body is JSON.
pub fn split_body<'a>(body: &'a [u8], header_length: Option<&str>) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(value) = header_length else {
        return Ok((body, &[]));
    };
    let length: usize = value
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Inference-Header-Content-Length '{value}' is not a byte count")))?;
    if length > body.len() {
        return Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length is {length} but the body has only {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

/// The `binary_data_size` parameter of a tensor, if any.
pub fn binary_size(parameters: Option<&Parameters>, tensor: &str) -> Result<Option<usize>, ApiError> {
    match parameters.and_then(|p| p.get("binary_data_size")) {
        None => Ok(None),
        Some(value) => value.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            ApiError::bad_request(format!("input '{tensor}': binary_data_size must be a byte count, got {value}"))
        }),
    }
}

/// Hands out consecutive slices of the binary part, and checks that all of it is used.
pub struct BinaryReader<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> BinaryReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BinaryReader { data, offset: 0 }
    }

    /// The next `size` bytes, for the tensor named `tensor`.
    pub fn take(&mut self, size: usize, tensor: &str) -> Result<&'a [u8], ApiError> {
        let left = self.data.len() - self.offset;
        if size > left {
            return Err(ApiError::bad_request(format!(
                "input '{tensor}': binary_data_size is {size} bytes but only {left} bytes of binary data are left"
            )));
        }
        let slice = &self.data[self.offset..self.offset + size];
        self.offset += size;
        Ok(slice)
    }

    /// Fails if bytes are left over (a size parameter too small or a missing one).
    pub fn finish(self) -> Result<(), ApiError> {
        let left = self.data.len() - self.offset;
        if left == 0 {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!(
                "{left} bytes of binary data follow the JSON header but no input claims them"
            )))
        }
    }
}

/// Little-endian bytes of `f32` values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of `i64` values.
pub fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `f32` values from little-endian bytes (the length is a multiple of 4).
pub fn f32_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_splits_json_from_binary() {
        let body = b"{\"a\":1}\x01\x02";
        let (json, binary) = split_body(body, Some("7")).unwrap();
        assert_eq!(json, b"{\"a\":1}");
        assert_eq!(binary, b"\x01\x02");
        assert_eq!(split_body(body, None).unwrap().0, body);
        assert!(split_body(body, Some("10")).unwrap_err().message.contains("only 9 bytes"));
        assert!(split_body(body, Some("x")).is_err());
    }

    #[test]
    fn reader_hands_out_slices_in_order_and_checks_leftovers() {
        let mut reader = BinaryReader::new(&[1, 2, 3, 4, 5]);
        assert_eq!(reader.take(2, "a").unwrap(), &[1, 2]);
        assert!(reader.take(4, "b").unwrap_err().message.contains("'b'"));
        assert_eq!(reader.take(2, "b").unwrap(), &[3, 4]);
        assert!(reader.finish().unwrap_err().message.contains("1 bytes"));
    }

    #[test]
    fn f32_round_trips_through_bytes() {
        let values = [1.5f32, -0.25, f32::MAX];
        assert_eq!(f32_from_bytes(&f32_bytes(&values)), values);
    }
}
