//! The Python module `cifar10`: the pure-Rust engine behind a numpy interface.
//!
//! ```python
//! import numpy as np, cifar10
//! model = cifar10.Classifier("models/cifar10.safetensors", threads=2)
//! images = np.zeros((4, 32, 32, 3), dtype=np.uint8)  # N x 32 x 32 x RGB
//! classes, probabilities = model.classify(images)
//! print([model.class_names[c] for c in classes], probabilities.max(axis=1))
//! ```
//!
//! Inference runs with the GIL released (on a private copy of the input), so Python
//! threads sharing one `Classifier` run in parallel. Built by maturin (`pyproject.toml`);
//! tested by `tests/test_cifar10.py` (pytest).

mod arrays;
mod classifier;
mod errors;

use pyo3::prelude::*;

/// Classify 32x32 RGB images with the CIFAR-10 tutorial model (numpy arrays in and out).
#[pymodule]
mod cifar10 {
    use super::*;

    #[pymodule_export]
    use crate::classifier::Classifier;

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add("__version__", env!("CARGO_PKG_VERSION"))?;
        module.add("NUM_CLASSES", model_format::NUM_CLASSES)?;
        Ok(())
    }
}
