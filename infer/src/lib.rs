//! CPU inference for the CIFAR-10 tutorial model: the embeddable engine and nothing else (no
//! HTTP, CLI or TLS crate can reach it through any feature). Its tensor API is ndarray's.
//!
//! - [`Engine`]: the contract every backend implements: preprocessed `[N, 3, 24, 24]` in,
//!   logits `[N, 10]` out;
//! - [`cpu::CpuEngine`]: the pure-Rust engine (with `default-features = false` the crate
//!   depends on `model-format` and `ndarray` only);
//! - [`Classifier`]: images in, [`Prediction`]s out, for apps and servers;
//! - [`image_input`] (feature `image`): PNG/JPEG decoding;
//! - `onnx` (feature `onnx`): the ONNX Runtime backend.
//!
//! ```
//! // A model from a file would be `Classifier::from_path("model.safetensors")`.
//! let classifier = infer::Classifier::from_bytes(&infer::random_weights(0).to_bytes()?)?;
//! let record = [0u8; 3073]; // label byte + planar 32×32 RGB
//! let prediction = &classifier.classify_records(&record)?[0];
//! println!("{} ({:.1}%)", prediction.label, 100.0 * prediction.probabilities[prediction.class]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod classifier;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod evaluation;
#[cfg(feature = "image")]
pub mod image_input;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod prediction;
mod random_weights;

pub use classifier::Classifier;
pub use engine::Engine;
pub use error::InferError;
pub use prediction::{Prediction, Ranked};
pub use random_weights::random_weights;
