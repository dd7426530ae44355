//! Backend selection, in one place: `--backend cpu|onnx` → a boxed [`Engine`].

use std::path::Path;

use infer::cpu::CpuEngine;
use infer::{Classifier, Engine, InferError};
use model_format::Weights;

/// Backend names `--backend` accepts.
pub const BACKENDS: &str = "cpu|onnx";

/// Default thread count: the machine's cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The engine called `backend` on `weights`.
pub fn engine_for(backend: &str, weights: &Weights, threads: usize) -> Result<Box<dyn Engine>, InferError> {
    match backend {
        // `ndarray` is the backend's name before 0.2, still accepted.
        "cpu" | "ndarray" => Ok(Box::new(CpuEngine::new(weights, threads)?)),
        "onnx" => onnx_engine(weights, threads),
        other => Err(InferError::Backend(format!("unknown backend `{other}` (expected {BACKENDS})"))),
    }
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
