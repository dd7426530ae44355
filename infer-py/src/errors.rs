//! Library errors as Python exceptions: an unreadable model file is an `OSError`
//! (`FileNotFoundError` when it is missing), every other bad input a `ValueError`; the
//! message is the library's.

use std::error::Error;

use infer::InferError;
use model_format::WeightsError;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

pub(crate) fn to_py(e: InferError) -> PyErr {
    match &e {
        InferError::Weights(w) => weights_to_py(w),
        InferError::Backend(_) => PyRuntimeError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

pub(crate) fn weights_to_py(e: &WeightsError) -> PyErr {
    if not_a_file(e) {
        return PyOSError::new_err(e.to_string());
    }
    match io_error(e) {
        Some(io) if io.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(e.to_string()),
        Some(_) => PyOSError::new_err(e.to_string()),
        None => PyValueError::new_err(e.to_string()),
    }
}

/// Whether the path names a folder, device or FIFO rather than a file (an `OSError`, as
/// Python's own `open` would raise).
fn not_a_file(e: &WeightsError) -> bool {
    match e {
        WeightsError::NotRegularFile { .. } => true,
        WeightsError::InFile { source, .. } => not_a_file(source),
        _ => false,
    }
}

/// The I/O error behind a weights error, if reading the file is what failed.
fn io_error(e: &WeightsError) -> Option<&std::io::Error> {
    match e {
        WeightsError::Io { source, .. } => Some(source),
        WeightsError::InFile { source, .. } => io_error(source),
        _ => e.source().and_then(|s| s.downcast_ref()),
    }
}
