//! The contract shared by every crate of the CIFAR-10 tutorial model:
//!
//! - [`arch`]: the model's tensors, layers and hyperparameters, written once;
//! - [`preprocess`]: the evaluation input (central crop, per-image standardisation);
//! - [`weights`]: the safetensors weights file, validated, with metadata;
//! - [`cifar`]: the CIFAR-10 binary record reader;
//! - `reference` (feature `reference`): the naive f64 forward pass every backend is tested against;
//! - [`atomic`]: crash-safe file replacement;
//! - [`digest`]: the hash behind the weights digest and the dataset fingerprint.
//!
//! ```
//! assert_eq!(model_format::arch::PARAM_COUNT, 1_068_298);
//! ```

pub mod arch;
pub mod atomic;
pub mod cifar;
pub mod digest;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod preprocess;
#[cfg(feature = "reference")]
pub mod reference;
pub mod weights;

pub use arch::{CLASS_NAMES, LAYERS, NUM_CLASSES, PARAM_COUNT, TENSORS};
pub use weights::{Metadata, Weights, WeightsError};
