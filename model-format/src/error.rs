//! [`WeightsError`]: everything that can be wrong with a weights file or a checkpoint (any
//! file of the [`crate::tensor_set`] codec); each error names the file, tensor or field at fault.

use std::fmt;
use std::path::PathBuf;

use crate::arch::ARCHITECTURE;
use crate::tensor_set::{DIGEST_FIELD, MAX_HEADER_BYTES};

/// Everything that can be wrong with a weights file or a checkpoint; each names the tensor
/// or field at fault, and errors about a file on disk name the file.
#[derive(Debug)]
pub enum WeightsError {
    /// The file could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An error inside the named file.
    InFile {
        path: PathBuf,
        source: Box<WeightsError>,
    },
    /// The path is a folder, a device, a FIFO or a socket, not a regular file: reading it
    /// could block or never end (`/dev/zero`).
    NotRegularFile {
        path: PathBuf,
        kind: &'static str,
    },
    /// The file is larger than [`MAX_FILE_BYTES`](crate::tensor_set::MAX_FILE_BYTES); refused
    /// before reading it.
    FileTooLarge {
        path: PathBuf,
        size: u64,
        cap: u64,
    },
    /// The bytes end before the header or the data they announce.
    Truncated(String),
    /// Bytes follow the last tensor's data.
    TrailingBytes {
        extra: u64,
    },
    /// The header length field exceeds [`MAX_HEADER_BYTES`].
    HeaderTooLarge {
        length: u64,
    },
    /// The header is not valid safetensors JSON.
    MalformedHeader(String),
    MissingTensor(String),
    UnexpectedTensor(String),
    WrongShape {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    WrongDtype {
        tensor: String,
        found: String,
        expected: &'static str,
    },
    /// A value outside its valid range (a quantization scale that is not positive).
    InvalidValue {
        tensor: String,
        index: usize,
        problem: String,
    },
    NonFinite {
        tensor: String,
        index: usize,
        value: f32,
    },
    /// A layer's output could overflow `f32` for an accepted input (see [`crate::bounds`]):
    /// a weight or a scale is far too large.
    Overflow {
        layer: &'static str,
        bound: f64,
    },
    /// A metadata field is missing or holds a bad value.
    Metadata {
        field: &'static str,
        problem: String,
    },
    /// The stored digest does not match the file's tensors and metadata: something was
    /// changed after the file was written (a tensor value, or a field such as `class_names`).
    DigestMismatch {
        stored: String,
        computed: String,
    },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use WeightsError::*;
        match self {
            Io { path, source } => write!(f, "{}: {source}", path.display()),
            InFile { path, source } => write!(f, "{}: {source}", path.display()),
            NotRegularFile { path, kind } => {
                write!(f, "{}: is {kind}, not a regular file; a model or checkpoint must be a file", path.display())
            }
            FileTooLarge { path, size, cap } => write!(
                f,
                "{}: is {size} bytes, more than the {cap}-byte limit for a model or checkpoint (not a weights file?)",
                path.display()
            ),
            Truncated(what) => write!(f, "truncated weights file: {what}"),
            TrailingBytes { extra } => {
                write!(f, "{extra} trailing bytes after the tensor data (corrupt, or two files joined together)")
            }
            HeaderTooLarge { length } => {
                write!(f, "header length {length} bytes exceeds the {MAX_HEADER_BYTES}-byte limit (corrupt or not a weights file)")
            }
            MalformedHeader(why) => write!(f, "malformed safetensors header: {why}"),
            MissingTensor(name) => write!(f, "tensor `{name}` is missing"),
            UnexpectedTensor(name) => write!(f, "unexpected tensor `{name}` (not part of {ARCHITECTURE})"),
            WrongShape { tensor, expected, found } => {
                write!(f, "tensor `{tensor}` has shape {found:?}, expected {expected:?}")
            }
            WrongDtype { tensor, found, expected } => {
                write!(f, "tensor `{tensor}` has dtype {found}, expected {expected}")
            }
            InvalidValue { tensor, index, problem } => write!(f, "tensor `{tensor}`, element {index}: {problem}"),
            NonFinite { tensor, index, value } => {
                write!(f, "tensor `{tensor}` holds a non-finite value ({value}) at element {index}")
            }
            Overflow { layer, bound } => write!(
                f,
                "layer `{layer}` could overflow: its values can reach {bound:.1e} for accepted inputs, beyond \
                 f32's range (a weight or scale is far too large, or their product is); refusing the model"
            ),
            Metadata { field, problem } => write!(f, "metadata field `{field}`: {problem}"),
            DigestMismatch { stored, computed } => write!(
                f,
                "metadata field `{DIGEST_FIELD}` is {stored} but the tensors and metadata hash to {computed}: \
                 the file was changed after it was written (a tensor, or a field such as class_names)"
            ),
        }
    }
}

impl std::error::Error for WeightsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WeightsError::Io { source, .. } => Some(source),
            WeightsError::InFile { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Shorthand for [`WeightsError::Metadata`].
pub(crate) fn bad_field(field: &'static str, problem: impl Into<String>) -> WeightsError {
    WeightsError::Metadata { field, problem: problem.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_the_file_the_size_and_the_cap() {
        let err = WeightsError::FileTooLarge { path: "big.safetensors".into(), size: 100, cap: 10 };
        assert_eq!(
            err.to_string(),
            "big.safetensors: is 100 bytes, more than the 10-byte limit for a model or checkpoint (not a weights file?)"
        );
        let err = WeightsError::NotRegularFile { path: "/dev/zero".into(), kind: "a character device" };
        assert!(err.to_string().starts_with("/dev/zero: is a character device, not a regular file"), "{err}");
    }
}
