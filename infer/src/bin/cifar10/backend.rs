//! Backend selection, in one place: `--backend ndarray|onnx` → a boxed [`Engine`].

use std::path::Path;

use infer::ndarray_engine::NdarrayEngine;
use infer::{Classifier, Engine, InferError};
use model_format::Weights;

/// Backend names `--backend` accepts.
pub const BACKENDS: &str = "ndarray|onnx";

/// Default thread count: the machine's cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Pins matrixmultiply's internal pool to one thread unless the user chose otherwise, so that
/// `--threads` alone decides how many threads the engine uses. Called first thing in `main`,
/// before any other thread exists.
pub fn single_threaded_sgemm() {
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        std::env::set_var("MATMUL_NUM_THREADS", "1");
    }
}

/// The engine called `backend` on `weights`.
pub fn engine_for(backend: &str, weights: &Weights, threads: usize) -> Result<Box<dyn Engine>, InferError> {
    match backend {
        "ndarray" => Ok(Box::new(NdarrayEngine::new(weights, threads)?)),
        "onnx" => onnx_engine(weights, threads),
        other => Err(InferError::Backend(format!("unknown backend `{other}` (expected {BACKENDS})"))),
    }
}

/// Loads the model file and opens the engine called `backend` on it.
#[allow(dead_code)] // part of the backend API other subcommands use
pub fn open_engine(backend: &str, model: &Path, threads: usize) -> Result<Box<dyn Engine>, InferError> {
    engine_for(backend, &Weights::load(model)?, threads)
}

/// Loads the model file and wraps the chosen engine with the model's class names.
pub fn open_classifier(backend: &str, model: &Path, threads: usize) -> Result<Classifier, InferError> {
    let weights = Weights::load(model)?;
    Classifier::new(engine_for(backend, &weights, threads)?, weights.metadata.class_names.clone())
}

#[cfg(feature = "onnx")]
fn onnx_engine(weights: &Weights, threads: usize) -> Result<Box<dyn Engine>, InferError> {
    Ok(Box::new(infer::onnx::OnnxEngine::from_weights(weights, threads)?))
}

#[cfg(not(feature = "onnx"))]
fn onnx_engine(_weights: &Weights, _threads: usize) -> Result<Box<dyn Engine>, InferError> {
    Err(InferError::Backend("the onnx backend is not built: rebuild with `--features onnx`".into()))
}
