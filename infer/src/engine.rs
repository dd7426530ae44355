//! The contract every inference backend implements (the pure-Rust engine, ONNX Runtime, …).

use crate::error::InferError;

/// A way to run the model on preprocessed inputs. Implementations are shared across
/// threads (a server holds one behind an `Arc`).
///
/// ```
/// use infer::{Engine, ndarray_engine::NdarrayEngine};
/// use model_format::{arch::INPUT_LEN, NUM_CLASSES};
/// let engine: Box<dyn Engine> = Box::new(NdarrayEngine::new(&infer::random_weights(0), 1)?);
/// let mut input = vec![0f32; 2 * INPUT_LEN];
/// model_format::preprocess::preprocess(&[90u8; 3072], &mut input[..INPUT_LEN]);
/// let mut logits = vec![0f32; 2 * NUM_CLASSES];
/// engine.logits(&input, 2, &mut logits)?;
/// assert!(engine.logits(&input, 0, &mut logits).is_err()); // empty batch: an error, no panic
/// # Ok::<(), infer::InferError>(())
/// ```
pub trait Engine: Send + Sync {
    /// Short backend name as the CLI spells it: `"ndarray"`, `"onnx"`.
    fn name(&self) -> &'static str;

    /// Computes the logits of `batch` preprocessed inputs.
    ///
    /// `input` holds `batch × 3 × 24 × 24` values (NCHW, see
    /// [`model_format::preprocess`]); `logits` receives `batch × 10` values.
    /// An empty batch or slices of the wrong length give an error, never a panic.
    fn logits(&self, input: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError>;
}
