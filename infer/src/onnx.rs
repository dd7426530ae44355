//! The ONNX Runtime backend (feature `onnx`): runs the model exported by
//! [`model_format::onnx`] in ONNX Runtime, as an [`Engine`] named `"onnx"`.
//!
//! ONNX Runtime is a shared library loaded at run time from `ORT_DYLIB_PATH`
//! (`scripts/setup.sh` installs `.venv/libonnxruntime.so`, version 1.31, and
//! `.cargo/config.toml` points the variable at it for cargo commands). When the variable
//! is unset the system's `libonnxruntime.so` is tried. A missing library, one that is not
//! ONNX Runtime or one older than 1.31 gives an [`InferError::Backend`] saying so.
//!
//! ```
//! use infer::{onnx::OnnxEngine, Engine};
//! let engine = OnnxEngine::from_weights(&infer::random_weights(0), 1)?;
//! let input = vec![0.5f32; 2 * model_format::arch::INPUT_LEN]; // two preprocessed images
//! let mut logits = [0f32; 2 * 10];
//! engine.logits_flat(&input, 2, &mut logits)?;
//! assert_eq!(logits[..10], logits[10..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use model_format::arch::{INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE, NUM_CLASSES};
use model_format::onnx::LOGITS_NAME;
use model_format::{Model, Weights};
use ndarray::ArrayView4;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::engine::Engine;
use crate::error::InferError;

/// The ONNX Runtime version this backend is built for (ort's `api-31`); older libraries
/// are refused.
pub const ONNX_RUNTIME_VERSION: &str = "1.31";

/// ONNX Runtime allows one environment per process, ever (a second fails even after the
/// first is dropped), so it is built once and shared; a failure is kept too, so every
/// caller gets the same explanation.
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The model running in ONNX Runtime on the CPU.
#[derive(Debug)]
pub struct OnnxEngine {
    // `Session::run` takes `&mut self` (ONNX Runtime's allocators are not thread-safe), so
    // concurrent callers take turns; each run is itself multithreaded.
    session: Mutex<Session>,
    input: String,
    output: String,
    /// The batch size a foreign model with a fixed batch dimension accepts.
    fixed_batch: Option<usize>,
    /// Where the model came from, for error messages.
    origin: String,
}

impl OnnxEngine {
    /// Exports `weights` to ONNX in memory and loads the result. `threads` is the number of
    /// threads ONNX Runtime uses inside each operator; 0 lets it choose (one per core).
    pub fn from_weights(weights: &Weights, threads: usize) -> Result<Self, InferError> {
        // The same refusal as the pure-Rust engine's: no layer may overflow on an accepted input.
        model_format::bounds::check_float(weights, crate::error::MAX_INPUT_MAGNITUDE)?;
        Self::from_bytes(&model_format::onnx::to_bytes(weights), threads, "the exported model")
    }

    /// Exports a model of either variant to ONNX in memory and loads the result: the float
    /// graph, or the int8 model's QDQ graph ([`model_format::onnx::quantized_to_bytes`]).
    pub fn from_model(model: &Model, threads: usize) -> Result<Self, InferError> {
        match model {
            Model::Float(weights) => Self::from_weights(weights, threads),
            Model::Int8(quantized) => {
                model_format::bounds::check_int8(quantized, crate::error::MAX_INPUT_MAGNITUDE)?;
                Self::from_bytes(&model_format::onnx::quantized_to_bytes(quantized), threads, "the exported int8 model")
            }
        }
    }

    /// Loads an ONNX file written by `cifar10 export-onnx` (or any model with the same
    /// interface: one float input `[N, 3, 24, 24]` and a float `[N, 10]` output called
    /// `logits`, or a single output of that shape).
    pub fn from_file(path: impl AsRef<Path>, threads: usize) -> Result<Self, InferError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| InferError::Backend(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes, threads, &path.display().to_string())
    }

    /// Loads ONNX model bytes; `origin` names them in error messages.
    pub fn from_bytes(bytes: &[u8], threads: usize, origin: &str) -> Result<Self, InferError> {
        if threads > 0 {
            crate::error::check_threads("threads", threads)?;
        }
        let environment = environment()?;
        let fail = |e: String| InferError::Backend(format!("{origin}: ONNX Runtime cannot load the model: {e}"));
        let mut builder = Session::builder(environment)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| fail(e.to_string()))?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(|e| fail(e.to_string()))?;
        }
        let session = builder.commit_from_memory(bytes).map_err(|e| fail(e.to_string()))?;
        let (input, fixed_batch) = find_input(&session).map_err(|why| foreign(origin, &why))?;
        let output = find_output(&session).map_err(|why| foreign(origin, &why))?;
        Ok(OnnxEngine { session: Mutex::new(session), input, output, fixed_batch, origin: origin.to_string() })
    }

    fn run(&self, input: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError> {
        let fail = |e: ort::Error| InferError::Backend(format!("{}: ONNX Runtime: {e}", self.origin));
        let view = ArrayView4::from_shape((batch, INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE), input)
            .expect("the caller checked the input length");
        let tensor = TensorRef::from_array_view(view).map_err(fail)?;
        // A panic inside a previous run cannot leave the session half-updated from our side.
        let mut session = self.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session.run(ort::inputs![self.input.as_str() => tensor]).map_err(fail)?;
        let value = outputs.get(&self.output).ok_or_else(|| {
            InferError::Backend(format!("{}: no output `{}` after the run", self.origin, self.output))
        })?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(fail)?;
        if **shape != [batch as i64, NUM_CLASSES as i64] {
            return Err(InferError::Backend(format!(
                "{}: output `{}` has shape {shape}, expected [{batch}, {NUM_CLASSES}]",
                self.origin, self.output
            )));
        }
        logits.copy_from_slice(data);
        Ok(())
    }
}

impl Engine for OnnxEngine {
    fn name(&self) -> &'static str {
        "onnx"
    }

    fn logits_flat(&self, input: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError> {
        if batch == 0 {
            return Err(InferError::EmptyBatch);
        }
        check_len("input", batch * INPUT_LEN, input.len())?;
        check_len("logits", batch * NUM_CLASSES, logits.len())?;
        if let Some(fixed) = self.fixed_batch.filter(|&fixed| fixed != batch) {
            return Err(InferError::Backend(format!(
                "{}: the model only accepts batches of {fixed}, got {batch}",
                self.origin
            )));
        }
        self.run(input, batch, logits)
    }
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), InferError> {
    if expected == found {
        Ok(())
    } else {
        Err(InferError::Length { what, expected, found })
    }
}

fn foreign(origin: &str, why: &str) -> InferError {
    InferError::Backend(format!(
        "{origin}: not a CIFAR-10 tutorial model: {why} (expected one float32 input [N, {INPUT_CHANNELS}, \
         {INPUT_SIZE}, {INPUT_SIZE}] and a float32 output `{LOGITS_NAME}` [N, {NUM_CLASSES}], as \
         `cifar10 export-onnx` writes)"
    ))
}

/// The model's single input, checked against the contract, and its fixed batch size if
/// it has one.
fn find_input(session: &Session) -> Result<(String, Option<usize>), String> {
    let [input] = session.inputs() else {
        return Err(format!("it has {} inputs", session.inputs().len()));
    };
    let dims = float_dims(input.dtype()).ok_or_else(|| format!("input `{}` is not a float32 tensor", input.name()))?;
    let expected = [INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE].map(|d| d as i64);
    if dims.len() != 4 || dims[1..] != expected {
        return Err(format!("input `{}` has shape {dims:?}", input.name()));
    }
    Ok((input.name().to_string(), fixed(dims[0])))
}

/// The logits output: the one called `logits`, or else the only output.
fn find_output(session: &Session) -> Result<String, String> {
    let outputs = session.outputs();
    let output = match outputs.iter().find(|o| o.name() == LOGITS_NAME) {
        Some(output) => output,
        None if outputs.len() == 1 => &outputs[0],
        None => return Err(format!("no output is called `{LOGITS_NAME}`")),
    };
    let dims =
        float_dims(output.dtype()).ok_or_else(|| format!("output `{}` is not a float32 tensor", output.name()))?;
    if dims.len() != 2 || dims[1] != NUM_CLASSES as i64 {
        return Err(format!("output `{}` has shape {dims:?}", output.name()));
    }
    Ok(output.name().to_string())
}

/// The dimensions of a float32 tensor type (−1 for a symbolic one).
fn float_dims(ty: &ValueType) -> Option<Vec<i64>> {
    match ty {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => Some(shape.to_vec()),
        _ => None,
    }
}

fn fixed(dim: i64) -> Option<usize> {
    usize::try_from(dim).ok().filter(|&d| d > 0)
}

fn environment() -> Result<&'static Environment, InferError> {
    ENVIRONMENT.get_or_init(load_environment).as_ref().map_err(|why| InferError::Backend(why.clone()))
}

fn load_environment() -> Result<Environment, String> {
    let (path, hint) = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if !path.is_empty() => (PathBuf::from(path), "ORT_DYLIB_PATH must name"),
        _ => (
            PathBuf::from("libonnxruntime.so"),
            "ORT_DYLIB_PATH is not set, so the system library was tried; set it to",
        ),
    };
    let builder = ort::init_from(&path).map_err(|e| {
        format!(
            "cannot load ONNX Runtime {ONNX_RUNTIME_VERSION}: {}. {hint} libonnxruntime.so from onnxruntime \
             {ONNX_RUNTIME_VERSION} (scripts/setup.sh installs .venv/libonnxruntime.so)",
            describe(&e)
        )
    })?;
    builder.with_name("cifar10").build().map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
}

/// The load error with the system's reason, which ort's message leaves in `source()`.
fn describe(e: &ort::LoadDynamicError) -> String {
    match e {
        ort::LoadDynamicError::Dlopen { error, .. } => match std::error::Error::source(error) {
            Some(reason) => format!("{e} ({reason})"),
            None => e.to_string(),
        },
        _ => e.to_string(),
    }
}
