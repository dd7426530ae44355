//! The contract shared by every crate of the CIFAR-10 tutorial model:
//!
//! - [`arch`]: the model's tensors, layers and hyperparameters, written once;
//! - [`preprocess`]: the evaluation input (central crop, per-image standardisation);
//! - [`weights`]: the safetensors weights file, validated, with metadata;
//! - [`tensor_set`]: the codec behind weights files and training checkpoints (named tensor
//!   sets, metadata, digest, bounded reads), with [`WeightsError`] naming what is wrong;
//! - [`init`]: the tutorial's seeded initialisation, bit-identical on every machine;
//! - [`cifar`]: the CIFAR-10 binary record reader;
//! - `reference` (feature `reference`): the naive f64 forward pass every backend is tested against;
//! - [`atomic`]: safe outputs: crash-safe replacement of regular files only, no output
//!   over an input, stale temporary files removed;
//! - [`digest`]: the hash behind the weights digest and the dataset fingerprint;
//! - [`quantized`]: the int8 variant of the model file, and [`Model`], a file of either variant;
//! - `quantize` (feature `reference`): post-training quantization of a float model.
//!
//! ```
//! assert_eq!(model_format::arch::PARAM_COUNT, 1_068_298);
//! ```

pub mod arch;
pub mod atomic;
pub mod bounds;
pub mod cifar;
pub mod digest;
mod error;
pub mod init;
pub mod model;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod preprocess;
#[cfg(feature = "reference")]
pub mod quantize;
pub mod quantized;
#[cfg(feature = "reference")]
pub mod reference;
pub mod tensor_set;
pub mod weights;

pub use arch::{CLASS_NAMES, LAYERS, NUM_CLASSES, PARAM_COUNT, TENSORS};
pub use error::WeightsError;
pub use model::Model;
pub use quantized::QuantizedWeights;
pub use weights::{Metadata, Weights, WeightsKind};
