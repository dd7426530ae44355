//! [`Model`]: a model file of either variant, float or int8, told apart by the file's own
//! `architecture` field. Everything that opens a model (the CLI, the server, the library,
//! the C and Python bindings) goes through [`Model::load`] or [`Model::from_bytes`].
//!
//! ```
//! use model_format::quantized::{ActivationQuant, QuantizedWeights};
//! use model_format::{Model, Metadata, Weights, TENSORS};
//! let float = Weights::new(TENSORS.iter().map(|t| vec![0.01; t.len()]).collect(), Metadata::default())?;
//! let int8 = QuantizedWeights::uniform(0.01, ActivationQuant::from_range(0.0, 1.0));
//! assert_eq!(Model::from_bytes(&float.to_bytes()?)?.variant(), "float32");
//! assert_eq!(Model::from_bytes(&int8.to_bytes()?)?.variant(), "int8");
//! # Ok::<(), model_format::WeightsError>(())
//! ```

use std::path::Path;

use safetensors::tensor::SafeTensors;

use crate::error::WeightsError;
use crate::quantized::{QuantizedWeights, ARCHITECTURE_INT8};
use crate::tensor_set;
use crate::weights::{Metadata, Weights};

/// A validated model of either variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// The float32 model ([`crate::arch::ARCHITECTURE`]).
    Float(Weights),
    /// The int8 model ([`ARCHITECTURE_INT8`]).
    Int8(QuantizedWeights),
}

impl Model {
    /// Reads and validates a model file of either variant (the same checks and limits as
    /// [`Weights::load`]; errors name the file).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        tensor_set::parse_file(path.as_ref(), Model::from_bytes)
    }

    /// Parses and validates a model of either variant held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WeightsError> {
        tensor_set::check_header_bounds(bytes)?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| tensor_set::map_safetensors_error(e, bytes))?;
        let architecture = header.metadata().as_ref().and_then(|m| m.get("architecture"));
        if architecture.map(String::as_str) == Some(ARCHITECTURE_INT8) {
            return QuantizedWeights::from_bytes(bytes).map(Model::Int8);
        }
        // Anything else is read as the float variant, whose reader names a wrong architecture.
        Weights::from_bytes(bytes).map(Model::Float)
    }

    /// `"float32"` or `"int8"`.
    pub fn variant(&self) -> &'static str {
        match self {
            Model::Float(_) => "float32",
            Model::Int8(_) => "int8",
        }
    }

    /// The file's metadata (class names, training step, …).
    pub fn metadata(&self) -> &Metadata {
        match self {
            Model::Float(w) => &w.metadata,
            Model::Int8(q) => &q.metadata,
        }
    }

    /// The digest the file stores.
    pub fn digest(&self) -> String {
        match self {
            Model::Float(w) => w.digest(),
            Model::Int8(q) => q.digest(),
        }
    }
}

impl From<Weights> for Model {
    fn from(weights: Weights) -> Self {
        Model::Float(weights)
    }
}

impl From<QuantizedWeights> for Model {
    fn from(weights: QuantizedWeights) -> Self {
        Model::Int8(weights)
    }
}
