//! The contract every inference backend implements (the pure-Rust engine, ONNX Runtime, …).

use ndarray::{Array2, ArrayView4, ArrayViewMut2};

use crate::error::InferError;
use model_format::arch::{INPUT_CHANNELS, INPUT_SIZE, NUM_CLASSES};

/// The shape one batch of preprocessed inputs has: `[N, 3, 24, 24]`.
pub const INPUT_DIMS: [usize; 3] = [INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE];

/// A way to run the model on preprocessed inputs. Implementations are shared across
/// threads (a server holds one behind an `Arc`).
///
/// The tensor interface is ndarray's: `[N, 3, 24, 24]` in, `[N, 10]` out.
///
/// ```
/// use infer::{Engine, cpu::CpuEngine};
/// use ndarray::Array4;
/// let engine: Box<dyn Engine> = Box::new(CpuEngine::new(&infer::random_weights(0), 1)?);
/// let mut input = Array4::<f32>::zeros((2, 3, 24, 24));
/// let first = input.as_slice_mut().unwrap().chunks_mut(1728).next().unwrap();
/// model_format::preprocess::preprocess(&[90u8; 3072], first);
/// let logits = engine.logits(input.view())?;
/// assert_eq!(logits.dim(), (2, 10));
/// assert!(engine.logits(Array4::zeros((0, 3, 24, 24)).view()).is_err()); // empty batch: an error, no panic
/// # Ok::<(), infer::InferError>(())
/// ```
pub trait Engine: Send + Sync {
    /// Short backend name as the CLI spells it: `"cpu"`, `"onnx"`.
    fn name(&self) -> &'static str;

    /// Computes the logits of `batch` preprocessed inputs held in flat slices.
    ///
    /// `input` holds `batch × 3 × 24 × 24` values (NCHW, see
    /// [`model_format::preprocess`]); `logits` receives `batch × 10` values.
    /// An empty batch or slices of the wrong length give an error, never a panic.
    fn logits_flat(&self, input: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError>;

    /// The logits `[N, 10]` of preprocessed inputs `[N, 3, 24, 24]` (any memory layout;
    /// a standard-layout view is read in place).
    fn logits(&self, input: ArrayView4<f32>) -> Result<Array2<f32>, InferError> {
        let batch = check_input(&input)?;
        let mut out = Array2::zeros((batch, NUM_CLASSES));
        self.logits_into(input, out.view_mut())?;
        Ok(out)
    }

    /// Like [`Engine::logits`], writing into `out` (`[N, 10]`).
    fn logits_into(&self, input: ArrayView4<f32>, mut out: ArrayViewMut2<f32>) -> Result<(), InferError> {
        let batch = check_input(&input)?;
        check_output(&out, batch)?;
        let input = input.as_standard_layout();
        let flat = input.as_slice().expect("a standard-layout array is contiguous");
        match out.as_slice_mut() {
            Some(slice) => self.logits_flat(flat, batch, slice),
            None => {
                let mut logits = vec![0f32; batch * NUM_CLASSES];
                self.logits_flat(flat, batch, &mut logits)?;
                out.iter_mut().zip(logits).for_each(|(o, v)| *o = v);
                Ok(())
            }
        }
    }
}

/// Checks an input batch's shape; returns `N`.
pub(crate) fn check_input(input: &ArrayView4<f32>) -> Result<usize, InferError> {
    let shape = input.shape();
    if shape[1..] != INPUT_DIMS {
        return Err(InferError::Shape { what: "input", expected: "[N, 3, 24, 24]", found: shape.to_vec() });
    }
    if shape[0] == 0 {
        return Err(InferError::EmptyBatch);
    }
    Ok(shape[0])
}

/// Checks that `out` is `[batch, 10]`.
pub(crate) fn check_output(out: &ArrayViewMut2<f32>, batch: usize) -> Result<(), InferError> {
    if out.dim() != (batch, NUM_CLASSES) {
        return Err(InferError::Shape {
            what: "logits",
            expected: "[N, 10] with N the input's batch",
            found: out.shape().to_vec(),
        });
    }
    Ok(())
}
