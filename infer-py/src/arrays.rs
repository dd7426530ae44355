//! numpy arrays in: checked for dtype and rank, then copied into a standard-layout array
//! that Rust owns. The copy (cheap next to inference) is what lets inference run without
//! the GIL: Python code may write to its own array meanwhile without racing with us, and
//! any strides (transposed, sliced, non-contiguous) are accepted.

use ndarray::{Array4, Axis, Ix4};
use numpy::{Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTypeMethods;

/// `[N, 32, 32, 3]` (or one `[32, 32, 3]` image) `uint8` images; the library checks the
/// trailing dimensions and `N > 0`.
pub(crate) fn images(obj: &Bound<'_, PyAny>) -> PyResult<Array4<u8>> {
    const EXPECTED: &str = "a uint8 numpy array of shape [N, 32, 32, 3] or [32, 32, 3]";
    let array = typed::<u8>(obj, "images", EXPECTED)?;
    let view = array.as_array();
    let view = match view.ndim() {
        3 => view.insert_axis(Axis(0)),
        4 => view,
        _ => return Err(rank_error("images", EXPECTED, view.shape())),
    };
    let view = view.into_dimensionality::<Ix4>().expect("rank checked above");
    Ok(view.as_standard_layout().into_owned())
}

/// `[N, 3, 24, 24]` `float32` preprocessed inputs.
pub(crate) fn inputs(obj: &Bound<'_, PyAny>) -> PyResult<Array4<f32>> {
    const EXPECTED: &str = "a float32 numpy array of shape [N, 3, 24, 24]";
    let array = typed::<f32>(obj, "x", EXPECTED)?;
    let view = array.as_array();
    let view = view.into_dimensionality::<Ix4>().map_err(|_| rank_error("x", EXPECTED, array.shape()))?;
    Ok(view.as_standard_layout().into_owned())
}

/// `obj` as a numpy array of `T` borrowed for reading, or a `ValueError` saying what it
/// is instead.
fn typed<'py, T: Element>(obj: &Bound<'py, PyAny>, what: &str, expected: &str) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    if let Ok(array) = obj.cast::<PyArrayDyn<T>>() {
        return array.try_readonly().map_err(|e| PyValueError::new_err(format!("{what}: {e}")));
    }
    let found = match obj.cast::<PyUntypedArray>() {
        Ok(array) => format!("a {} array", array.dtype()),
        Err(_) => format!("a {}", obj.get_type().name()?),
    };
    Err(PyValueError::new_err(format!("{what} must be {expected}, got {found}")))
}

fn rank_error(what: &str, expected: &str, shape: &[usize]) -> PyErr {
    PyValueError::new_err(format!("{what} must be {expected}, got shape {shape:?}"))
}
