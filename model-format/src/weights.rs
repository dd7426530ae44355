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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};

use crate::arch::{TensorId, ARCHITECTURE, CLASS_NAMES, TENSORS};
use crate::digest::Fnv1a64;

/// Version of this file layout; readers refuse any other.
pub const FORMAT_VERSION: u32 = 1;
/// Largest JSON header accepted. Ours is about 2 KB; the cap stops a corrupt length field
/// from making us allocate gigabytes.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// What the file says about itself, beside the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// Training step the weights come from.
    pub step: Option<u64>,
    /// Decay of the moving average, when these are averaged weights.
    pub ema_decay: Option<f64>,
    /// `"ema"` (moving average) or `"raw"` (the trained variables themselves).
    pub weights_kind: Option<String>,
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

/// Everything that can be wrong with a weights file; each names the tensor or field at fault.
#[derive(Debug)]
pub enum WeightsError {
    /// The file could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An error inside the named file.
    InFile {
        path: PathBuf,
        source: Box<WeightsError>,
    },
    /// The bytes end before the header or the data they announce.
    Truncated(String),
    /// The header length field exceeds [`MAX_HEADER_BYTES`].
    HeaderTooLarge {
        length: u64,
    },
    /// The header is not valid safetensors JSON.
    MalformedHeader(String),
    MissingTensor(&'static str),
    UnexpectedTensor(String),
    WrongShape {
        tensor: &'static str,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    WrongDtype {
        tensor: &'static str,
        found: String,
    },
    NonFinite {
        tensor: &'static str,
        index: usize,
        value: f32,
    },
    /// A metadata field is missing or holds a bad value.
    Metadata {
        field: &'static str,
        problem: String,
    },
    /// The stored digest does not match the tensors: metadata and weights do not belong together.
    DigestMismatch {
        stored: String,
        computed: String,
    },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use WeightsError::*;
        match self {
            Io { path, source } => write!(f, "{}: {source}", path.display()),
            InFile { path, source } => write!(f, "{}: {source}", path.display()),
            Truncated(what) => write!(f, "truncated weights file: {what}"),
            HeaderTooLarge { length } => {
                write!(f, "header length {length} bytes exceeds the {MAX_HEADER_BYTES}-byte limit (corrupt or not a weights file)")
            }
            MalformedHeader(why) => write!(f, "malformed safetensors header: {why}"),
            MissingTensor(name) => write!(f, "tensor `{name}` is missing"),
            UnexpectedTensor(name) => write!(f, "unexpected tensor `{name}` (not part of {ARCHITECTURE})"),
            WrongShape { tensor, expected, found } => {
                write!(f, "tensor `{tensor}` has shape {found:?}, expected {expected:?}")
            }
            WrongDtype { tensor, found } => write!(f, "tensor `{tensor}` has dtype {found}, expected F32"),
            NonFinite { tensor, index, value } => {
                write!(f, "tensor `{tensor}` holds a non-finite value ({value}) at element {index}")
            }
            Metadata { field, problem } => write!(f, "metadata field `{field}`: {problem}"),
            DigestMismatch { stored, computed } => write!(
                f,
                "metadata field `weights_digest` is {stored} but the tensors hash to {computed}: metadata and weights do not belong together"
            ),
        }
    }
}

impl std::error::Error for WeightsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WeightsError::Io { source, .. } => Some(source),
            WeightsError::InFile { source, .. } => Some(source.as_ref()),
            _ => None,
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
    /// Builds weights from one flat vector per tensor, in [`TENSORS`] order; checks lengths
    /// and that every value is finite.
    pub fn new(tensors: Vec<Vec<f32>>, metadata: Metadata) -> Result<Self, WeightsError> {
        if tensors.len() != TENSORS.len() {
            let missing = TENSORS.get(tensors.len()).map(|t| t.name).unwrap_or("?");
            return Err(if tensors.len() < TENSORS.len() {
                WeightsError::MissingTensor(missing)
            } else {
                WeightsError::UnexpectedTensor(format!("#{}", TENSORS.len()))
            });
        }
        for (spec, data) in TENSORS.iter().zip(&tensors) {
            if data.len() != spec.len() {
                return Err(WeightsError::WrongShape {
                    tensor: spec.name,
                    expected: spec.shape.to_vec(),
                    found: vec![data.len()],
                });
            }
            check_finite(spec.name, data)?;
        }
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
            .map(|(slot, spec)| slot.ok_or(WeightsError::MissingTensor(spec.name)))
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

    /// Digest of the tensor values (FNV-1a 64 over their little-endian bytes in file order),
    /// stored in the metadata so that a file whose metadata was grafted onto other weights
    /// is caught. It guards against mistakes, not against an adversary.
    pub fn digest(&self) -> String {
        let mut hash = Fnv1a64::default();
        for data in &self.tensors {
            for v in data {
                hash.update(&v.to_le_bytes());
            }
        }
        hash.finish()
    }

    /// Serialises to safetensors bytes with the metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        let raw: Vec<Vec<u8>> = self.tensors.iter().map(|t| t.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let views = TENSORS
            .iter()
            .zip(&raw)
            .map(|(spec, bytes)| {
                TensorView::new(Dtype::F32, spec.shape.to_vec(), bytes)
                    .map(|view| (spec.name, view))
                    .map_err(|e| WeightsError::MalformedHeader(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::tensor::serialize(views, Some(self.metadata_map()))
            .map_err(|e| WeightsError::MalformedHeader(e.to_string()))
    }

    /// Writes the file atomically: a crash leaves the old file or the new one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        crate::atomic::write_file(path, &bytes).map_err(|source| WeightsError::Io { path: path.into(), source })
    }

    /// Reads and validates a weights file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.into(), source })?;
        Self::from_bytes(&bytes).map_err(|e| WeightsError::InFile { path: path.into(), source: Box::new(e) })
    }

    /// Parses and validates weights from bytes in memory (e.g. `include_bytes!`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WeightsError> {
        check_header_bounds(bytes)?;
        let file = SafeTensors::deserialize(bytes).map_err(map_safetensors_error)?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(map_safetensors_error)?;
        for name in file.names() {
            if crate::arch::tensor_id(name).is_none() {
                return Err(WeightsError::UnexpectedTensor(name.to_string()));
            }
        }
        let mut tensors = Vec::with_capacity(TENSORS.len());
        for spec in &TENSORS {
            let view = file.tensor(spec.name).map_err(|_| WeightsError::MissingTensor(spec.name))?;
            if view.dtype() != Dtype::F32 {
                return Err(WeightsError::WrongDtype { tensor: spec.name, found: format!("{:?}", view.dtype()) });
            }
            if view.shape() != spec.shape {
                return Err(WeightsError::WrongShape {
                    tensor: spec.name,
                    expected: spec.shape.to_vec(),
                    found: view.shape().to_vec(),
                });
            }
            let data: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            check_finite(spec.name, &data)?;
            tensors.push(data);
        }
        let empty = HashMap::new();
        let fields = header.metadata().as_ref().unwrap_or(&empty);
        let metadata = parse_metadata(fields)?;
        let weights = Weights::new(tensors, metadata)?;
        let stored = required(fields, "weights_digest")?;
        let computed = weights.digest();
        if *stored != computed {
            return Err(WeightsError::DigestMismatch { stored: stored.clone(), computed });
        }
        Ok(weights)
    }

    fn metadata_map(&self) -> HashMap<String, String> {
        let m = &self.metadata;
        let mut map: HashMap<String, String> = m.extra.clone().into_iter().collect();
        map.insert("format_version".into(), FORMAT_VERSION.to_string());
        map.insert("architecture".into(), ARCHITECTURE.into());
        map.insert("class_names".into(), serde_json::to_string(&m.class_names).expect("strings serialise"));
        map.insert("weights_digest".into(), self.digest());
        map.insert(
            "input".into(),
            "float32 [N,3,24,24] NCHW: central 24x24 crop of the 32x32 RGB image, per-image standardization".into(),
        );
        let optional = [
            ("step", m.step.map(|v| v.to_string())),
            ("ema_decay", m.ema_decay.map(|v| v.to_string())),
            ("weights", m.weights_kind.clone()),
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
}

/// Keys this module writes and reads itself; everything else goes to `Metadata::extra`.
const KNOWN_KEYS: [&str; 10] = [
    "format_version",
    "architecture",
    "class_names",
    "weights_digest",
    "input",
    "step",
    "ema_decay",
    "weights",
    "dataset_fingerprint",
    "precision_at_1",
];

fn parse_metadata(fields: &HashMap<String, String>) -> Result<Metadata, WeightsError> {
    let version = required(fields, "format_version")?;
    if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
        return Err(bad_field(
            "format_version",
            format!("`{version}` is not supported (this reader knows {FORMAT_VERSION})"),
        ));
    }
    let arch = required(fields, "architecture")?;
    if arch != ARCHITECTURE {
        return Err(bad_field("architecture", format!("`{arch}` is not {ARCHITECTURE}")));
    }
    let class_names: Vec<String> = serde_json::from_str(required(fields, "class_names")?)
        .map_err(|e| bad_field("class_names", format!("not a JSON list of strings: {e}")))?;
    let precision_at_1 = optional_number::<f64>(fields, "precision_at_1")?;
    if let Some(p) = precision_at_1 {
        if !(0.0..=1.0).contains(&p) {
            return Err(bad_field("precision_at_1", format!("{p} is outside [0, 1]")));
        }
    }
    let weights_kind = fields.get("weights").cloned();
    if let Some(kind) = &weights_kind {
        if kind != "ema" && kind != "raw" {
            return Err(bad_field("weights", format!("`{kind}` is neither `ema` nor `raw`")));
        }
    }
    Ok(Metadata {
        class_names,
        step: optional_number(fields, "step")?,
        ema_decay: optional_number(fields, "ema_decay")?,
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

fn required<'a>(fields: &'a HashMap<String, String>, field: &'static str) -> Result<&'a String, WeightsError> {
    fields.get(field).ok_or_else(|| bad_field(field, "missing".into()))
}

fn optional_number<T: std::str::FromStr>(
    fields: &HashMap<String, String>,
    field: &'static str,
) -> Result<Option<T>, WeightsError> {
    fields
        .get(field)
        .map(|v| v.parse::<T>().map_err(|_| bad_field(field, format!("`{v}` is not a valid number"))))
        .transpose()
}

fn bad_field(field: &'static str, problem: String) -> WeightsError {
    WeightsError::Metadata { field, problem }
}

fn check_class_names(names: &[String]) -> Result<(), WeightsError> {
    if names.len() != CLASS_NAMES.len() {
        return Err(bad_field("class_names", format!("{} names, expected {}", names.len(), CLASS_NAMES.len())));
    }
    Ok(())
}

fn check_finite(tensor: &'static str, data: &[f32]) -> Result<(), WeightsError> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(WeightsError::NonFinite { tensor, index, value: data[index] }),
        None => Ok(()),
    }
}

/// Checks the 8-byte length prefix against the file size before the parser allocates.
fn check_header_bounds(bytes: &[u8]) -> Result<(), WeightsError> {
    let Some(prefix) = bytes.get(..8) else {
        return Err(WeightsError::Truncated(format!(
            "{} bytes; a safetensors file starts with an 8-byte header length",
            bytes.len()
        )));
    };
    let length = u64::from_le_bytes(prefix.try_into().expect("8 bytes"));
    if length > MAX_HEADER_BYTES {
        return Err(WeightsError::HeaderTooLarge { length });
    }
    if 8 + length > bytes.len() as u64 {
        return Err(WeightsError::Truncated(format!(
            "the header announces {length} bytes but only {} follow",
            bytes.len() - 8
        )));
    }
    Ok(())
}

fn map_safetensors_error(e: SafeTensorError) -> WeightsError {
    match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            WeightsError::Truncated("the tensor data is shorter than the header announces".into())
        }
        SafeTensorError::HeaderTooLarge => WeightsError::HeaderTooLarge { length: u64::MAX },
        other => WeightsError::MalformedHeader(other.to_string()),
    }
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
            weights_kind: Some("ema".into()),
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
        assert!(matches!(err, WeightsError::NonFinite { tensor: "local3.weight", index: 17, .. }), "{err}");
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
