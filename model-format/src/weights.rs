//! The weights file: safetensors, every tensor of [`TENSORS`] as little-endian F32, plus
//! metadata (see [`Metadata`]). Reading validates the whole file and names what is wrong;
//! writing is atomic.
//!
//! ```
//! use model_format::{Metadata, Weights, TENSORS};
//! // A model whose every tensor is filled with 0.01:
//! let tensors = TENSORS.iter().map(|t| vec![0.01f32; t.len()]).collect();
//! let weights = Weights::new(tensors, Metadata::default()).unwrap();
//! let bytes = weights.to_bytes().unwrap();
//! let back = Weights::from_bytes(&bytes).unwrap();
//! assert_eq!(back.tensor(model_format::arch::CONV1_BIAS), weights.tensor(model_format::arch::CONV1_BIAS));
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use crate::arch::{TensorId, ARCHITECTURE, CLASS_NAMES, TENSORS};
use crate::error::bad_field;
pub use crate::error::WeightsError;
use crate::tensor_set::{self, expect_field, field, optional_field, Fields, DIGEST_FIELD};
pub use crate::tensor_set::{MAX_FILE_BYTES, MAX_HEADER_BYTES};

/// Version of this file layout; readers refuse any other. Version 2: the digest covers the
/// metadata as well as the tensors (version 1 files hashed the tensors only).
pub const FORMAT_VERSION: u32 = 2;
/// The `input` field: the network input every weights file of this architecture expects.
pub const INPUT_DESCRIPTION: &str =
    "float32 [N,3,24,24] NCHW: central 24x24 crop of the 32x32 RGB image, per-image standardization";

/// Which weights a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsKind {
    /// The moving average of the trained variables (what the tutorial evaluates and serves);
    /// stored as `"ema"`.
    Averaged,
    /// The trained variables themselves; stored as `"raw"`.
    Raw,
}

impl WeightsKind {
    /// The metadata value: `"ema"` or `"raw"`.
    ///
    /// ```
    /// use model_format::weights::WeightsKind;
    /// assert_eq!(WeightsKind::Averaged.as_str(), "ema");
    /// assert_eq!("raw".parse::<WeightsKind>(), Ok(WeightsKind::Raw));
    /// assert!("average".parse::<WeightsKind>().is_err());
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsKind::Averaged => "ema",
            WeightsKind::Raw => "raw",
        }
    }
}

impl std::str::FromStr for WeightsKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ema" => Ok(WeightsKind::Averaged),
            "raw" => Ok(WeightsKind::Raw),
            other => Err(format!("`{other}` is neither `ema` nor `raw`")),
        }
    }
}

impl std::fmt::Display for WeightsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the file says about itself, beside the tensors. Every field, `extra` included, is
/// covered by the file's digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// Training step the weights come from.
    pub step: Option<u64>,
    /// Decay of the moving average, when these are averaged weights.
    pub ema_decay: Option<f64>,
    /// Moving average or raw variables (field `weights`); `None` when the file does not say.
    pub weights_kind: Option<WeightsKind>,
    /// Fingerprint of the dataset the weights were trained on.
    pub dataset_fingerprint: Option<String>,
    /// Precision@1 on the test set, measured when the file was written.
    pub precision_at_1: Option<f64>,
    /// Any other string fields, kept as they are.
    pub extra: BTreeMap<String, String>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            step: None,
            ema_decay: None,
            weights_kind: None,
            dataset_fingerprint: None,
            precision_at_1: None,
            extra: BTreeMap::new(),
        }
    }
}

/// A complete, validated set of model weights with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    tensors: Vec<Vec<f32>>,
    pub metadata: Metadata,
}

impl Weights {
    /// Builds weights from one flat vector per tensor, in [`TENSORS`] order; checks lengths,
    /// that every value is finite, and that there is one class name per class.
    pub fn new(tensors: Vec<Vec<f32>>, metadata: Metadata) -> Result<Self, WeightsError> {
        tensor_set::check_set("", &tensors)?;
        check_class_names(&metadata.class_names)?;
        Ok(Weights { tensors, metadata })
    }

    /// Builds weights from `(name, values)` pairs in any order, as a trainer exports them.
    pub fn from_named<S: AsRef<str>>(
        named: impl IntoIterator<Item = (S, Vec<f32>)>,
        metadata: Metadata,
    ) -> Result<Self, WeightsError> {
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; TENSORS.len()];
        for (name, data) in named {
            let name = name.as_ref();
            let id = crate::arch::tensor_id(name).ok_or_else(|| WeightsError::UnexpectedTensor(name.to_string()))?;
            slots[id] = Some(data);
        }
        let tensors = slots
            .into_iter()
            .zip(TENSORS.iter())
            .map(|(slot, spec)| slot.ok_or_else(|| WeightsError::MissingTensor(spec.name.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(tensors, metadata)
    }

    /// The values of tensor `id` (see the ids in [`crate::arch`]), flat, in the stated layout.
    pub fn tensor(&self, id: TensorId) -> &[f32] {
        &self.tensors[id]
    }

    /// The values of the tensor called `name`, if the model has one.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        crate::arch::tensor_id(name).map(|id| self.tensor(id))
    }

    /// Every tensor with its spec, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static crate::arch::TensorSpec, &[f32])> {
        TENSORS.iter().zip(self.tensors.iter().map(Vec::as_slice))
    }

    /// Every tensor's values, [`TENSORS`] order (e.g. to start a trainer from them).
    pub fn into_tensors(self) -> Vec<Vec<f32>> {
        self.tensors
    }

    /// The digest stored in the file's `weights_digest` field: it covers the tensor values
    /// and every metadata field (see [`crate::tensor_set`]), so a file in which a class name,
    /// the architecture or any value was changed after writing fails to load. It guards
    /// against accidents, not against an adversary.
    pub fn digest(&self) -> String {
        tensor_set::digest(&[("", &self.tensors)], &self.metadata_fields())
    }

    /// Serialises to safetensors bytes with the metadata and the digest.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        tensor_set::encode(&[("", &self.tensors)], &self.metadata_fields())
    }

    /// Writes the file atomically: a crash leaves the old file or the new one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        tensor_set::save(path.as_ref(), &[("", &self.tensors)], &self.metadata_fields())
    }

    /// Reads and validates a weights file. Refuses, before reading it, a path that is not a
    /// regular file (`/dev/zero`, a FIFO) or a file over [`MAX_FILE_BYTES`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let (mut sets, metadata) = tensor_set::load(path.as_ref(), &[""], parse_metadata)?;
        Ok(Weights { tensors: sets.remove(0), metadata })
    }

    /// Parses and validates weights from bytes in memory (e.g. `include_bytes!`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WeightsError> {
        let (mut sets, metadata) = tensor_set::decode(bytes, &[""], parse_metadata)?;
        Ok(Weights { tensors: sets.remove(0), metadata })
    }

    /// The metadata as stored, without the digest.
    fn metadata_fields(&self) -> Fields {
        metadata_fields(&self.metadata, ARCHITECTURE)
    }
}

/// The metadata fields of a model file of `architecture` (the float or the int8 variant),
/// without the digest.
pub(crate) fn metadata_fields(m: &Metadata, architecture: &str) -> Fields {
    let mut map = m.extra.clone();
    map.insert("format_version".into(), FORMAT_VERSION.to_string());
    map.insert("architecture".into(), architecture.into());
    map.insert("class_names".into(), serde_json::to_string(&m.class_names).expect("strings serialise"));
    map.insert("input".into(), INPUT_DESCRIPTION.into());
    let optional = [
        ("step", m.step.map(|v| v.to_string())),
        ("ema_decay", m.ema_decay.map(|v| v.to_string())),
        ("weights", m.weights_kind.map(|k| k.as_str().to_string())),
        ("dataset_fingerprint", m.dataset_fingerprint.clone()),
        ("precision_at_1", m.precision_at_1.map(|v| v.to_string())),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            map.insert(key.into(), value);
        }
    }
    map
}

/// Keys this module writes and reads itself; everything else goes to `Metadata::extra`.
const KNOWN_KEYS: [&str; 10] = [
    "format_version",
    "architecture",
    "class_names",
    DIGEST_FIELD,
    "input",
    "step",
    "ema_decay",
    "weights",
    "dataset_fingerprint",
    "precision_at_1",
];

fn parse_metadata(fields: &Fields) -> Result<Metadata, WeightsError> {
    if fields.get("architecture").map(String::as_str) == Some(crate::quantized::ARCHITECTURE_INT8) {
        return Err(bad_field(
            "architecture",
            format!(
                "`{}` is the int8 model, not the float one; open it with `model_format::Model::load`",
                crate::quantized::ARCHITECTURE_INT8
            ),
        ));
    }
    parse_metadata_for(fields, ARCHITECTURE)
}

/// Reads and checks the metadata of a model file of `architecture` (float or int8).
pub(crate) fn parse_metadata_for(fields: &Fields, architecture: &str) -> Result<Metadata, WeightsError> {
    let version: String = field(fields, "format_version")?;
    if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
        let hint =
            if version == "1" { ": version 1 files predate the metadata digest; export the model again" } else { "" };
        return Err(bad_field(
            "format_version",
            format!("`{version}` is not supported (this reader knows {FORMAT_VERSION}){hint}"),
        ));
    }
    expect_field(fields, "architecture", architecture)?;
    expect_field(fields, "input", INPUT_DESCRIPTION)?;
    let class_names: Vec<String> = serde_json::from_str(&field::<String>(fields, "class_names")?)
        .map_err(|e| bad_field("class_names", format!("not a JSON list of strings: {e}")))?;
    check_class_names(&class_names)?;
    let precision_at_1 = optional_field::<f64>(fields, "precision_at_1")?;
    if let Some(p) = precision_at_1 {
        if !(0.0..=1.0).contains(&p) {
            return Err(bad_field("precision_at_1", format!("{p} is outside [0, 1]")));
        }
    }
    let weights_kind = fields
        .get("weights")
        .map(|kind| kind.parse::<WeightsKind>().map_err(|e| bad_field("weights", e)))
        .transpose()?;
    Ok(Metadata {
        class_names,
        step: optional_field(fields, "step")?,
        ema_decay: optional_field(fields, "ema_decay")?,
        weights_kind,
        dataset_fingerprint: fields.get("dataset_fingerprint").cloned(),
        precision_at_1,
        extra: fields
            .iter()
            .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

fn check_class_names(names: &[String]) -> Result<(), WeightsError> {
    if names.len() != CLASS_NAMES.len() {
        return Err(bad_field("class_names", format!("{} names, expected {}", names.len(), CLASS_NAMES.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{CONV2_WEIGHT, LOCAL3_WEIGHT};

    fn sample() -> Weights {
        let tensors = TENSORS
            .iter()
            .enumerate()
            .map(|(t, spec)| (0..spec.len()).map(|i| ((i * 31 + t * 7) % 101) as f32 / 1000.0 - 0.05).collect())
            .collect();
        let metadata = Metadata {
            step: Some(1234),
            ema_decay: Some(0.9999),
            weights_kind: Some(WeightsKind::Averaged),
            dataset_fingerprint: Some("sha256:abc".into()),
            precision_at_1: Some(0.8125),
            ..Metadata::default()
        };
        Weights::new(tensors, metadata).unwrap()
    }

    #[test]
    fn round_trip_keeps_values_and_metadata() {
        let w = sample();
        let back = Weights::from_bytes(&w.to_bytes().unwrap()).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn unknown_metadata_survives_a_round_trip() {
        let mut w = sample();
        w.metadata.extra.insert("trained_by".into(), "cifar10-train".into());
        let back = Weights::from_bytes(&w.to_bytes().unwrap()).unwrap();
        assert_eq!(back.metadata.extra.get("trained_by").map(String::as_str), Some("cifar10-train"));
    }

    #[test]
    fn save_and_load_from_a_path() {
        let dir = std::env::temp_dir().join(format!("weights-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        sample().save(&path).unwrap();
        assert_eq!(Weights::load(&path).unwrap(), sample());
        let missing = Weights::load(dir.join("nope.safetensors")).unwrap_err().to_string();
        assert!(missing.contains("nope.safetensors"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_finite_values_are_refused_with_the_tensor_name() {
        let mut tensors: Vec<Vec<f32>> = TENSORS.iter().map(|t| vec![0.0; t.len()]).collect();
        tensors[LOCAL3_WEIGHT][17] = f32::NAN;
        let err = Weights::new(tensors, Metadata::default()).unwrap_err();
        assert!(
            matches!(&err, WeightsError::NonFinite { tensor, index: 17, .. } if tensor == "local3.weight"),
            "{err}"
        );
    }

    #[test]
    fn a_foreign_tensor_or_a_missing_one_is_named() {
        let w = sample();
        let mut named: Vec<(String, Vec<f32>)> =
            w.iter().map(|(spec, data)| (spec.name.to_string(), data.to_vec())).collect();
        named.push(("conv3.weight".into(), vec![0.0]));
        let err = Weights::from_named(named.clone(), Metadata::default()).unwrap_err();
        assert_eq!(err.to_string(), "unexpected tensor `conv3.weight` (not part of cifar10-tutorial-cnn/v1)");
        named.pop();
        named.remove(CONV2_WEIGHT);
        let err = Weights::from_named(named, Metadata::default()).unwrap_err();
        assert_eq!(err.to_string(), "tensor `conv2.weight` is missing");
    }

    #[test]
    fn grafted_metadata_is_caught_by_the_digest() {
        let a = sample();
        let mut b = a.clone();
        b.tensors[0][0] += 0.5;
        // Re-serialise b's tensors under a's header digest by splicing the bytes.
        let bytes_a = a.to_bytes().unwrap();
        let bytes_b = b.to_bytes().unwrap();
        let header_len = 8 + u64::from_le_bytes(bytes_a[..8].try_into().unwrap()) as usize;
        let mut spliced = bytes_a[..header_len].to_vec();
        spliced.extend_from_slice(&bytes_b[header_len..]);
        let err = Weights::from_bytes(&spliced).unwrap_err();
        assert!(matches!(err, WeightsError::DigestMismatch { .. }), "{err}");
    }
}
