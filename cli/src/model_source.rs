//! Where `--model` points: a weights file, or one of the two models built into the binary
//! (`bundled`, the default, and `bundled:int8`), so that an installed `cifar10` works from
//! any folder with no file beside it.

use std::path::{Path, PathBuf};

use model_format::{Model, WeightsError};

/// What `--model` (and `eval --baseline`) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    File(PathBuf),
    /// The float model built into the binary (`bundled` or `bundled:float`).
    BundledFloat,
    /// The int8 model built into the binary (`bundled:int8`).
    BundledInt8,
}

/// Parses `--model`: `bundled` (or `bundled:float`), `bundled:int8`, or a file path.
pub fn parse(text: &str) -> Result<ModelSource, String> {
    Ok(match text {
        "bundled" | "bundled:float" => ModelSource::BundledFloat,
        "bundled:int8" => ModelSource::BundledInt8,
        other if other.starts_with("bundled:") => {
            return Err(format!("{other:?}: the bundled models are `bundled` (float32) and `bundled:int8`"))
        }
        "" => return Err("an empty path: give a weights file, `bundled` or `bundled:int8`".into()),
        path => ModelSource::File(PathBuf::from(path)),
    })
}

impl ModelSource {
    /// Reads and validates the model (a bundled one is checked like a file: digest and all).
    pub fn load(&self) -> Result<Model, WeightsError> {
        match self {
            ModelSource::File(path) => Model::load(path),
            ModelSource::BundledFloat => Model::from_bytes(cifar10_models::FLOAT),
            ModelSource::BundledInt8 => Model::from_bytes(cifar10_models::INT8),
        }
    }

    /// The file it is read from: an input no output may replace. None for a bundled model.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ModelSource::File(path) => Some(path),
            ModelSource::BundledFloat | ModelSource::BundledInt8 => None,
        }
    }

    /// For results and logs: the path as given, or which bundled model with its digest (so a
    /// result names the exact weights even though no file holds them).
    pub fn describe(&self) -> String {
        let (name, kind) = match self {
            ModelSource::File(path) => return path.display().to_string(),
            ModelSource::BundledFloat => ("cifar10.safetensors", "float32"),
            ModelSource::BundledInt8 => ("cifar10-int8.safetensors", "int8"),
        };
        let digest = self.load().map_or_else(|e| format!("unreadable: {e}"), |model| model.digest());
        format!("bundled {name} ({kind}, built into this binary; digest {digest})")
    }

    /// A short name for titles, reports and the model card: the file name, never its folder.
    pub fn file_name(&self) -> String {
        match self {
            ModelSource::File(path) => {
                path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
            }
            ModelSource::BundledFloat => "cifar10.safetensors (bundled)".into(),
            ModelSource::BundledInt8 => "cifar10-int8.safetensors (bundled)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_their_sources() {
        assert_eq!(parse("bundled"), Ok(ModelSource::BundledFloat));
        assert_eq!(parse("bundled:float"), Ok(ModelSource::BundledFloat));
        assert_eq!(parse("bundled:int8"), Ok(ModelSource::BundledInt8));
        assert_eq!(parse("m/bundled"), Ok(ModelSource::File("m/bundled".into())));
        assert!(parse("bundled:int4").unwrap_err().contains("bundled:int8"));
        assert!(parse("").is_err());
    }
}
