//! The one codec for files of model tensors: one or more complete sets of the model's
//! tensors ([`TENSORS`], little-endian F32), each under a name prefix (`""` for a weights
//! file, `"raw/"` and `"ema/"` for a training checkpoint), plus string metadata, in
//! safetensors. Reading validates everything and names what is wrong: the header length,
//! every missing, extra, misshapen, wrongly typed or non-finite tensor, and the digest.
//!
//! **The digest** ([`DIGEST_FIELD`]) covers every tensor value, every tensor's name and
//! shape, and every metadata field (class names, architecture, format version, input
//! description, weights kind, step, …): a file in which any byte of those was changed fails
//! to load. It is FNV-1a 64 ([`crate::digest`]): it catches accidents (a flipped bit, a
//! NaN, a hand-edited header, metadata grafted onto other weights), not an adversary, who
//! could simply write a new digest; no unkeyed digest stored in the file itself could stop one.
//!
//! ```
//! use std::collections::BTreeMap;
//! use model_format::tensor_set::{self, field};
//! use model_format::TENSORS;
//!
//! let raw: Vec<Vec<f32>> = TENSORS.iter().map(|t| vec![0.5; t.len()]).collect();
//! let ema: Vec<Vec<f32>> = TENSORS.iter().map(|t| vec![0.25; t.len()]).collect();
//! let metadata = BTreeMap::from([("step".to_string(), "7".to_string())]);
//! let bytes = tensor_set::encode(&[("raw/", &raw), ("ema/", &ema)], &metadata)?;
//!
//! // Reading checks the metadata first (here: parse `step`), then the tensors and the digest.
//! let (sets, step) = tensor_set::decode(&bytes, &["raw/", "ema/"], |m| field::<u64>(m, "step"))?;
//! assert_eq!((sets[0][0][0], sets[1][0][0], step), (0.5, 0.25, 7));
//!
//! // One changed byte anywhere (here in a value of the `ema/` set) fails the load.
//! let mut changed = bytes.clone();
//! *changed.last_mut().unwrap() ^= 1;
//! assert!(tensor_set::decode(&changed, &["raw/", "ema/"], |_| Ok(())).is_err());
//! # Ok::<(), model_format::WeightsError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};

use crate::arch::TENSORS;
use crate::digest::Fnv1a64;
use crate::error::{bad_field, WeightsError};

/// Largest JSON header accepted. Ours is about 2 KB; the cap stops a corrupt length field
/// from making us allocate gigabytes.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Largest file [`read_file`] accepts: 64 MiB. The model is 4.3 MB and a checkpoint (two
/// sets) 8.5 MB; anything much larger is not one of ours, and is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// The metadata field holding the digest of the tensors and every other metadata field.
pub const DIGEST_FIELD: &str = "weights_digest";
/// Separates this digest from any other FNV-1a use (and from the tensors-only digest of
/// format version 1), and versions its encoding.
const DIGEST_DOMAIN: &[u8] = b"cifar10 tensor set digest v2\0";

/// One complete set of the model's tensors: a flat vector per entry of [`TENSORS`], in order.
pub type Tensors = Vec<Vec<f32>>;

/// String metadata of a file, sorted by key.
pub type Fields = BTreeMap<String, String>;

/// Serialises the sets (each `(prefix, tensors)`) with `metadata` and the digest of both.
/// Refuses a set with a missing, extra, misshapen or non-finite tensor.
pub fn encode(sets: &[(&str, &[Vec<f32>])], metadata: &Fields) -> Result<Vec<u8>, WeightsError> {
    for &(prefix, tensors) in sets {
        check_set(prefix, tensors)?;
    }
    let mut fields: HashMap<String, String> = metadata.clone().into_iter().collect();
    fields.insert(DIGEST_FIELD.into(), digest(sets, metadata));
    let bytes: Vec<Vec<u8>> = sets
        .iter()
        .flat_map(|(_, tensors)| tensors.iter())
        .map(|t| t.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let names =
        sets.iter().flat_map(|(prefix, _)| TENSORS.iter().map(move |spec| (format!("{prefix}{}", spec.name), spec)));
    let views = names
        .zip(&bytes)
        .map(|((name, spec), data)| {
            let view = TensorView::new(Dtype::F32, spec.shape.to_vec(), data)
                .map_err(|e| WeightsError::MalformedHeader(e.to_string()))?;
            Ok((name, view))
        })
        .collect::<Result<Vec<_>, WeightsError>>()?;
    let bytes = safetensors::tensor::serialize(views, Some(fields))
        .map_err(|e| WeightsError::MalformedHeader(e.to_string()))?;
    // The same tensors and metadata give the same bytes, whatever the HashMap's order.
    Ok(crate::quantized::canonical_header(bytes))
}

/// Parses and validates a file holding exactly one set per prefix in `prefixes`.
///
/// `read_metadata` sees the metadata first, so that a file of another kind or model is
/// reported as such (a missing `format`, another `architecture`) rather than as a digest
/// mismatch; its result is returned only once the tensors and the digest have been checked.
///
/// A training checkpoint, as `train` reads one:
///
/// ```
/// use model_format::arch::ARCHITECTURE;
/// use model_format::tensor_set::{self, expect_field, field, Fields};
///
/// struct State { step: u64, seed: u64, ema_decay: f64 }
/// fn read_state(m: &Fields) -> Result<State, model_format::WeightsError> {
///     expect_field(m, "format", "cifar10-train-checkpoint/v2")?;
///     expect_field(m, "architecture", ARCHITECTURE)?;
///     Ok(State { step: field(m, "step")?, seed: field(m, "seed")?, ema_decay: field(m, "ema_decay")? })
/// }
///
/// let raw = model_format::init::initial_tensors(1);
/// let fields = Fields::from([
///     ("format".to_string(), "cifar10-train-checkpoint/v2".to_string()),
///     ("architecture".to_string(), ARCHITECTURE.to_string()),
///     ("step".to_string(), "500".to_string()),
///     ("seed".to_string(), "1".to_string()),
///     ("ema_decay".to_string(), "0.9999".to_string()),
/// ]);
/// let bytes = tensor_set::encode(&[("raw/", &raw), ("ema/", &raw)], &fields)?;
/// let (sets, state) = tensor_set::decode(&bytes, &["raw/", "ema/"], read_state)?;
/// assert_eq!((sets[1] == raw, state.step, state.seed, state.ema_decay), (true, 500, 1, 0.9999));
/// # Ok::<(), model_format::WeightsError>(())
/// ```
pub fn decode<M>(
    bytes: &[u8],
    prefixes: &[&str],
    read_metadata: impl FnOnce(&Fields) -> Result<M, WeightsError>,
) -> Result<(Vec<Tensors>, M), WeightsError> {
    check_header_bounds(bytes)?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| map_safetensors_error(e, bytes))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| map_safetensors_error(e, bytes))?;
    let mut fields: Fields = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let metadata = read_metadata(&fields)?;
    let mut names = file.names();
    names.sort(); // the first unknown name in a stable order, not the hash map's
    for name in names {
        let known = prefixes
            .iter()
            .any(|prefix| name.strip_prefix(prefix).is_some_and(|t| crate::arch::tensor_id(t).is_some()));
        if !known {
            return Err(WeightsError::UnexpectedTensor(name.to_string()));
        }
    }
    let sets = prefixes.iter().map(|prefix| read_set(&file, prefix)).collect::<Result<Vec<_>, _>>()?;
    let stored = fields.remove(DIGEST_FIELD).ok_or_else(|| bad_field(DIGEST_FIELD, "missing"))?;
    let named: Vec<(&str, &[Vec<f32>])> = prefixes.iter().zip(&sets).map(|(p, s)| (*p, s.as_slice())).collect();
    let computed = digest(&named, &fields);
    if stored != computed {
        return Err(WeightsError::DigestMismatch { stored, computed });
    }
    Ok((sets, metadata))
}

/// The digest of `sets` and `metadata` (any [`DIGEST_FIELD`] in it is ignored), as
/// [`encode`] stores it: FNV-1a 64 over a length-prefixed encoding of every metadata
/// key and value in key order, then every tensor's full name, shape and values.
pub fn digest(sets: &[(&str, &[Vec<f32>])], metadata: &Fields) -> String {
    let mut hash = Fnv1a64::default();
    hash.update(DIGEST_DOMAIN);
    hash_fields(&mut hash, metadata);
    for &(prefix, tensors) in sets {
        for (spec, data) in TENSORS.iter().zip(tensors) {
            update_with_length(&mut hash, format!("{prefix}{}", spec.name).as_bytes());
            let shape: Vec<u8> = spec.shape.iter().flat_map(|&d| (d as u64).to_le_bytes()).collect();
            update_with_length(&mut hash, &shape);
            hash.update(&(data.len() as u64).to_le_bytes());
            for v in data {
                hash.update(&v.to_le_bytes());
            }
        }
    }
    hash.finish()
}

/// Every metadata key and value but the digest's own, in key order, length-prefixed.
pub(crate) fn hash_fields(hash: &mut Fnv1a64, metadata: &Fields) {
    for (key, value) in metadata.iter().filter(|(k, _)| k.as_str() != DIGEST_FIELD) {
        update_with_length(hash, key.as_bytes());
        update_with_length(hash, value.as_bytes());
    }
}

/// Length-prefixed, so that no two different sequences of strings hash the same bytes.
pub(crate) fn update_with_length(hash: &mut Fnv1a64, bytes: &[u8]) {
    hash.update(&(bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

/// Reads a whole file of at most [`MAX_FILE_BYTES`], refusing before reading anything a
/// path that is not a regular file (a folder, `/dev/zero`, a FIFO that would block) or a
/// file over the cap.
pub fn read_file(path: &Path) -> Result<Vec<u8>, WeightsError> {
    let io = |source| WeightsError::Io { path: path.into(), source };
    // `metadata` first: opening a FIFO for reading would block until a writer comes.
    check_regular(path, &std::fs::metadata(path).map_err(io)?)?;
    let file = File::open(path).map_err(io)?;
    // Again on the open file, in case the path was swapped in between.
    let meta = file.metadata().map_err(io)?;
    check_regular(path, &meta)?;
    let too_large = |size| WeightsError::FileTooLarge { path: path.into(), size, cap: MAX_FILE_BYTES };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take` bounds the read even if the file grows while we read it.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_file`] then `parse` on its bytes; errors inside the file are wrapped with its path.
pub fn parse_file<T>(path: &Path, parse: impl FnOnce(&[u8]) -> Result<T, WeightsError>) -> Result<T, WeightsError> {
    let bytes = read_file(path)?;
    parse(&bytes).map_err(|e| WeightsError::InFile { path: path.into(), source: Box::new(e) })
}

/// [`read_file`] then [`decode`]; errors inside the file are wrapped with its path.
pub fn load<M>(
    path: &Path,
    prefixes: &[&str],
    read_metadata: impl FnOnce(&Fields) -> Result<M, WeightsError>,
) -> Result<(Vec<Tensors>, M), WeightsError> {
    parse_file(path, |bytes| decode(bytes, prefixes, read_metadata))
}

/// [`encode`] then an atomic write ([`crate::atomic::write_file`]).
pub fn save(path: &Path, sets: &[(&str, &[Vec<f32>])], metadata: &Fields) -> Result<(), WeightsError> {
    let bytes = encode(sets, metadata)?;
    crate::atomic::write_file(path, &bytes).map_err(|source| WeightsError::Io { path: path.into(), source })
}

/// The metadata field `key`, parsed (`String`, numbers, …); an error names the field.
///
/// ```
/// let m = model_format::tensor_set::Fields::from([("seed".into(), "x1".into())]);
/// let err = model_format::tensor_set::field::<u64>(&m, "seed").unwrap_err();
/// assert_eq!(err.to_string(), "metadata field `seed`: `x1` is not a valid value");
/// ```
pub fn field<T: std::str::FromStr>(metadata: &Fields, key: &'static str) -> Result<T, WeightsError> {
    optional_field(metadata, key)?.ok_or_else(|| bad_field(key, "missing"))
}

/// Like [`field`], `None` when the field is absent.
pub fn optional_field<T: std::str::FromStr>(metadata: &Fields, key: &'static str) -> Result<Option<T>, WeightsError> {
    metadata
        .get(key)
        .map(|v| v.parse::<T>().map_err(|_| bad_field(key, format!("`{v}` is not a valid value"))))
        .transpose()
}

/// Checks that the metadata field `key` holds exactly `expected` (a format or architecture id).
pub fn expect_field(metadata: &Fields, key: &'static str, expected: &str) -> Result<(), WeightsError> {
    match metadata.get(key) {
        None => Err(bad_field(key, format!("missing (expected `{expected}`)"))),
        Some(found) if found != expected => Err(bad_field(key, format!("`{found}` is not `{expected}`"))),
        Some(_) => Ok(()),
    }
}

/// Checks one set: a tensor per entry of [`TENSORS`], each of its length, every value finite.
pub fn check_set(prefix: &str, tensors: &[Vec<f32>]) -> Result<(), WeightsError> {
    if tensors.len() < TENSORS.len() {
        return Err(WeightsError::MissingTensor(format!("{prefix}{}", TENSORS[tensors.len()].name)));
    }
    if tensors.len() > TENSORS.len() {
        return Err(WeightsError::UnexpectedTensor(format!("{prefix}#{}", TENSORS.len())));
    }
    for (spec, data) in TENSORS.iter().zip(tensors) {
        if data.len() != spec.len() {
            return Err(WeightsError::WrongShape {
                tensor: format!("{prefix}{}", spec.name),
                expected: spec.shape.to_vec(),
                found: vec![data.len()],
            });
        }
        check_finite(&format!("{prefix}{}", spec.name), data)?;
    }
    Ok(())
}

fn read_set(file: &SafeTensors<'_>, prefix: &str) -> Result<Tensors, WeightsError> {
    TENSORS
        .iter()
        .map(|spec| {
            let name = format!("{prefix}{}", spec.name);
            let view = file.tensor(&name).map_err(|_| WeightsError::MissingTensor(name.clone()))?;
            if view.dtype() != Dtype::F32 {
                return Err(WeightsError::WrongDtype {
                    tensor: name,
                    found: format!("{:?}", view.dtype()),
                    expected: "F32",
                });
            }
            if view.shape() != spec.shape {
                return Err(WeightsError::WrongShape {
                    tensor: name,
                    expected: spec.shape.to_vec(),
                    found: view.shape().to_vec(),
                });
            }
            let data: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            check_finite(&name, &data)?;
            Ok(data)
        })
        .collect()
}

pub(crate) fn check_finite(tensor: &str, data: &[f32]) -> Result<(), WeightsError> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(WeightsError::NonFinite { tensor: tensor.into(), index, value: data[index] }),
        None => Ok(()),
    }
}

fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), WeightsError> {
    if meta.is_file() {
        return Ok(());
    }
    Err(WeightsError::NotRegularFile { path: path.into(), kind: crate::atomic::kind_of(&meta.file_type()) })
}

/// Checks the 8-byte length prefix against the file size before the parser allocates.
pub(crate) fn check_header_bounds(bytes: &[u8]) -> Result<(), WeightsError> {
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

pub(crate) fn map_safetensors_error(e: SafeTensorError, bytes: &[u8]) -> WeightsError {
    match e {
        SafeTensorError::MetadataIncompleteBuffer => length_mismatch(bytes),
        SafeTensorError::HeaderTooLarge => WeightsError::HeaderTooLarge { length: u64::MAX },
        other => WeightsError::MalformedHeader(other.to_string()),
    }
}

/// The file's length is not what its header announces: says whether data is missing or
/// bytes follow the data. (safetensors reports both as one "incomplete" error.)
fn length_mismatch(bytes: &[u8]) -> WeightsError {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("checked by check_header_bounds")) as usize;
    let data_len = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + header_len])
        .ok()
        .and_then(|header| header.as_object()?.values().filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64()).max())
        .unwrap_or(0);
    let present = (bytes.len() - 8 - header_len) as u64;
    if present > data_len {
        WeightsError::TrailingBytes { extra: present - data_len }
    } else {
        WeightsError::Truncated(format!(
            "the tensor data is {} bytes shorter than the header announces",
            data_len - present
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: f32) -> Tensors {
        TENSORS.iter().map(|t| vec![value; t.len()]).collect()
    }

    #[test]
    fn two_prefixed_sets_round_trip_with_their_metadata() {
        let (raw, ema) = (set(0.5), set(-0.25));
        let meta = Fields::from([("seed".into(), "3".into())]);
        let bytes = encode(&[("raw/", &raw), ("ema/", &ema)], &meta).unwrap();
        let (sets, seed) = decode(&bytes, &["raw/", "ema/"], |m| field::<u64>(m, "seed")).unwrap();
        assert_eq!((sets, seed), (vec![raw, ema], 3));
    }

    #[test]
    fn a_set_under_the_wrong_prefix_is_named() {
        let bytes = encode(&[("raw/", &set(0.5))], &Fields::new()).unwrap();
        let err = decode(&bytes, &["ema/"], |_| Ok(())).unwrap_err();
        assert_eq!(err.to_string(), "unexpected tensor `raw/conv1.bias` (not part of cifar10-tutorial-cnn/v1)");
        let err = decode(&bytes, &["raw/", "ema/"], |_| Ok(())).unwrap_err();
        assert_eq!(err.to_string(), "tensor `ema/conv1.weight` is missing");
    }

    #[test]
    fn encoding_refuses_a_non_finite_value_naming_the_prefixed_tensor() {
        let mut ema = set(0.5);
        ema[3][2] = f32::INFINITY;
        let err = encode(&[("raw/", &set(0.5)), ("ema/", &ema)], &Fields::new()).unwrap_err();
        assert_eq!(err.to_string(), "tensor `ema/conv2.bias` holds a non-finite value (inf) at element 2");
    }

    #[test]
    fn the_digest_covers_every_field_and_the_prefixes() {
        let raw = set(0.5);
        let meta = Fields::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        let base = digest(&[("raw/", &raw)], &meta);
        let mut edited = meta.clone();
        edited.insert("b".into(), "3".into());
        assert_ne!(digest(&[("raw/", &raw)], &edited), base);
        // Moving a character between a key and its value changes the digest too.
        let shifted = Fields::from([("a1".into(), "".into()), ("b".into(), "2".into())]);
        assert_ne!(digest(&[("raw/", &raw)], &shifted), base);
        assert_ne!(digest(&[("ema/", &raw)], &meta), base);
        let mut with_digest = meta.clone();
        with_digest.insert(DIGEST_FIELD.into(), "anything".into());
        assert_eq!(digest(&[("raw/", &raw)], &with_digest), base);
    }

    #[test]
    fn trailing_bytes_and_missing_bytes_are_told_apart() {
        let bytes = encode(&[("", &set(0.5))], &Fields::new()).unwrap();
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 5]);
        let err = decode(&longer, &[""], |_| Ok(())).unwrap_err();
        assert!(matches!(err, WeightsError::TrailingBytes { extra: 5 }), "{err}");
        assert!(err.to_string().starts_with("5 trailing bytes after the tensor data"), "{err}");
        let err = decode(&bytes[..bytes.len() - 8], &[""], |_| Ok(())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated weights file: the tensor data is 8 bytes shorter than the header announces"
        );
    }

    #[test]
    fn field_helpers_name_the_field() {
        let m = Fields::from([("format".into(), "v9".into())]);
        assert_eq!(
            expect_field(&m, "format", "v1").unwrap_err().to_string(),
            "metadata field `format`: `v9` is not `v1`"
        );
        assert_eq!(
            expect_field(&m, "architecture", "x").unwrap_err().to_string(),
            "metadata field `architecture`: missing (expected `x`)"
        );
        assert_eq!(field::<u64>(&m, "step").unwrap_err().to_string(), "metadata field `step`: missing");
        assert_eq!(optional_field::<u64>(&m, "step").unwrap(), None);
    }
}
