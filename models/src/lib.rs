//! The two models this project ships, built into the program that depends on this crate, so
//! that an installed command, a Python wheel or a container image works with no file beside
//! it. The bytes are the files in `models/` exactly; load them with
//! `model_format::Model::from_bytes`, which checks them like any file (digest and all).
//!
//! ```
//! let model = model_format::Model::from_bytes(cifar10_models::FLOAT)?;
//! assert_eq!(model.variant(), "float32");
//! # Ok::<(), model_format::WeightsError>(())
//! ```
#![forbid(unsafe_code)]

/// `cifar10.safetensors`: the float32 model (4.3 MB).
pub const FLOAT: &[u8] = include_bytes!("../cifar10.safetensors");

/// `cifar10-int8.safetensors`: the int8 model (1.1 MB).
pub const INT8: &[u8] = include_bytes!("../cifar10-int8.safetensors");

#[cfg(test)]
mod tests {
    /// The built-in bytes load as the variants they claim, with the digests the manifest
    /// records for the shipped files.
    #[test]
    fn the_built_in_models_are_the_shipped_files() {
        let manifest: String =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/cifar10.manifest.json")).unwrap();
        for (bytes, variant) in [(super::FLOAT, "float32"), (super::INT8, "int8")] {
            let model = model_format::Model::from_bytes(bytes).unwrap();
            assert_eq!(model.variant(), variant);
            assert!(manifest.contains(&format!("\"weights_digest\": \"{}\"", model.digest())), "{variant}");
        }
    }
}
