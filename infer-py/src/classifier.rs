//! `cifar10.Classifier`: a model loaded once, classifying numpy batches.

use std::path::PathBuf;

use model_format::{Metadata, Model, NUM_CLASSES};
use ndarray::{Array1, Array2};
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict};

use crate::arrays;
use crate::errors::{to_py, weights_to_py};

/// What `classify` returns: classes `int64 [N]` and probabilities `float32 [N, 10]`.
type Classified<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray2<f32>>);

/// Largest `threads` accepted: the library's one bound (as in the C library and the CLI).
const MAX_THREADS: usize = infer::error::MAX_THREADS;

/// A CIFAR-10 model, ready to classify.
///
/// `Classifier(model, threads=None)`: `model` is a model file's path (`str` or
/// `os.PathLike`) or its contents (`bytes`); each call uses up to `threads` threads (1 to
/// 256; `None`: one per core). One `Classifier` may be used from several Python threads
/// at once; inference releases the GIL.
#[pyclass(frozen, module = "cifar10")]
pub struct Classifier {
    inner: infer::Classifier,
    metadata: Metadata,
    threads: usize,
}

/// Where the model comes from: its bytes (copied from Python) or a file.
enum Source {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

impl Source {
    fn from_py(model: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = model.cast::<PyBytes>() {
            return Ok(Source::Bytes(bytes.as_bytes().to_vec()));
        }
        if let Ok(bytes) = model.cast::<PyByteArray>() {
            return Ok(Source::Bytes(bytes.to_vec()));
        }
        model.extract::<PathBuf>().map(Source::Path).map_err(|_| {
            let found = model.get_type().to_string();
            PyValueError::new_err(format!("model must be a file path (str or os.PathLike) or bytes, got {found}"))
        })
    }

    /// A model file of either variant, float or int8 (the file says which).
    fn load(&self) -> Result<Model, model_format::WeightsError> {
        match self {
            Source::Bytes(bytes) => Model::from_bytes(bytes),
            Source::Path(path) => Model::load(path),
        }
    }
}

fn threads_or_default(threads: Option<usize>) -> PyResult<usize> {
    match threads {
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS)),
        Some(t) if (1..=MAX_THREADS).contains(&t) => Ok(t),
        Some(t) => Err(PyValueError::new_err(format!("threads is {t}, expected 1 to {MAX_THREADS} or None"))),
    }
}

impl Classifier {
    fn for_model(model: &Model, threads: usize) -> PyResult<Self> {
        let inner = infer::Classifier::from_model(model, threads).map_err(to_py)?;
        Ok(Classifier { inner, metadata: model.metadata().clone(), threads })
    }
}

#[pymethods]
impl Classifier {
    #[new]
    #[pyo3(signature = (model, threads = None))]
    fn new(py: Python<'_>, model: &Bound<'_, PyAny>, threads: Option<usize>) -> PyResult<Self> {
        let threads = threads_or_default(threads)?;
        let source = Source::from_py(model)?;
        let model = py.detach(|| source.load()).map_err(|e| weights_to_py(&e))?;
        Classifier::for_model(&model, threads)
    }

    /// `Classifier.bundled(int8=False, threads=None)`: one of the two models that ship
    /// inside this module (float32, or int8 with `int8=True`), so no file is needed.
    #[staticmethod]
    #[pyo3(signature = (int8 = false, threads = None))]
    fn bundled(py: Python<'_>, int8: bool, threads: Option<usize>) -> PyResult<Self> {
        let bytes = if int8 { cifar10_models::INT8 } else { cifar10_models::FLOAT };
        let threads = threads_or_default(threads)?;
        let model = py.detach(|| Model::from_bytes(bytes)).map_err(|e| weights_to_py(&e))?;
        Classifier::for_model(&model, threads)
    }

    /// `classify(images) -> (classes, probabilities)`: `images` is a `uint8` array
    /// `[N, 32, 32, 3]` (RGB, any strides) or one `[32, 32, 3]` image (then N = 1);
    /// returns the most probable class of each image (`int64 [N]`) and the class
    /// probabilities (`float32 [N, 10]`).
    fn classify<'py>(&self, py: Python<'py>, images: &Bound<'py, PyAny>) -> PyResult<Classified<'py>> {
        let images = arrays::images(images)?;
        let predictions = py.detach(|| self.inner.classify_array(images.view())).map_err(to_py)?;
        let classes: Array1<i64> = predictions.iter().map(|p| p.class as i64).collect();
        let mut probabilities = Array2::<f32>::zeros((predictions.len(), NUM_CLASSES));
        for (row, prediction) in probabilities.outer_iter_mut().zip(&predictions) {
            row.into_slice().expect("a fresh array's rows are contiguous").copy_from_slice(&prediction.probabilities);
        }
        Ok((classes.into_pyarray(py), probabilities.into_pyarray(py)))
    }

    /// `logits(x) -> float32 [N, 10]` for preprocessed inputs `x`, `float32 [N, 3, 24, 24]`
    /// (the central 24x24 crop, channels first, standardised per image).
    fn logits<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let x = arrays::inputs(x)?;
        // The library's checked path: inputs finite and within ±1e6, logits finite.
        let logits = py.detach(|| self.inner.logits(x.view())).map_err(to_py)?;
        Ok(logits.into_pyarray(py))
    }

    /// The ten class names, in label order.
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.inner.class_names().to_vec()
    }

    /// Threads one call may use.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    /// What the model file records about itself: `step`, `precision_at_1`, `ema_decay`,
    /// `weights_kind`, `dataset_fingerprint` (`None` when absent) and `extra` (a dict).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.metadata;
        let dict = PyDict::new(py);
        dict.set_item("class_names", &m.class_names)?;
        dict.set_item("step", m.step)?;
        dict.set_item("precision_at_1", m.precision_at_1)?;
        dict.set_item("ema_decay", m.ema_decay)?;
        dict.set_item("weights_kind", m.weights_kind.map(|kind| kind.as_str()))?;
        dict.set_item("dataset_fingerprint", &m.dataset_fingerprint)?;
        dict.set_item("extra", &m.extra)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let step = self.metadata.step.map_or("unknown".to_string(), |s| s.to_string());
        format!("cifar10.Classifier(step={step}, threads={})", self.threads)
    }
}
