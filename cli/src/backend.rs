//! Backend selection, in one place: `--backend cpu|onnx` → a boxed [`Engine`], for a model
//! of either variant (float or int8, read from the file itself: [`Model`]).

use infer::cpu::CpuEngine;
use infer::{Classifier, Engine, InferError};
use model_format::Model;

use crate::model_source::ModelSource;

/// Backend names `--backend` accepts.
pub const BACKENDS: &str = "cpu|onnx";

/// Default thread count: the machine's cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The engine called `backend` on `model`.
pub fn engine_for(backend: &str, model: &Model, threads: usize) -> Result<Box<dyn Engine>, InferError> {
    match backend {
        // `ndarray` is the backend's name before 0.2, still accepted.
        "cpu" | "ndarray" => Ok(Box::new(CpuEngine::for_model(model, threads)?)),
        "onnx" => onnx_engine(model, threads),
        other => Err(InferError::Backend(format!("unknown backend `{other}` (expected {BACKENDS})"))),
    }
}

/// Loads the model and wraps the chosen engine with the model's class names.
pub fn open_classifier(backend: &str, source: &ModelSource, threads: usize) -> Result<Classifier, InferError> {
    let model = source.load()?;
    Classifier::new(engine_for(backend, &model, threads)?, model.metadata().class_names.clone())
}

#[cfg(feature = "onnx")]
fn onnx_engine(model: &Model, threads: usize) -> Result<Box<dyn Engine>, InferError> {
    Ok(Box::new(infer::onnx::OnnxEngine::from_model(model, threads)?))
}

#[cfg(not(feature = "onnx"))]
fn onnx_engine(_model: &Model, _threads: usize) -> Result<Box<dyn Engine>, InferError> {
    Err(InferError::Backend("the onnx backend is not built: rebuild with `--features onnx`".into()))
}
