//! The digest covers every metadata field as well as the tensors: a saved file in which one
//! byte of a class name, the weights kind, the step or any other field was changed, or in
//! which a value became NaN, fails to load, with an error naming the field or tensor.

use model_format::arch::{CLASS_NAMES, LOCAL3_WEIGHT};
use model_format::tensor_set::{self, Fields, DIGEST_FIELD};
use model_format::{Metadata, Weights, WeightsError, WeightsKind, TENSORS};

fn weights() -> Weights {
    let tensors = TENSORS
        .iter()
        .enumerate()
        .map(|(t, spec)| (0..spec.len()).map(|i| ((i * 13 + t) % 97) as f32 / 1000.0 - 0.04).collect())
        .collect();
    let mut metadata = Metadata {
        step: Some(100),
        ema_decay: Some(0.9999),
        weights_kind: Some(WeightsKind::Averaged),
        dataset_fingerprint: Some("fnv1a64:0123456789abcdef".into()),
        precision_at_1: Some(0.8124),
        ..Metadata::default()
    };
    metadata.extra.insert("trained_by".into(), "cifar10-train".into());
    Weights::new(tensors, metadata).unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tampering-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The file with its JSON header text edited by `edit` (the length prefix follows).
fn with_header(bytes: &[u8], edit: impl FnOnce(String) -> String) -> Vec<u8> {
    let end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = edit(String::from_utf8(bytes[8..end].to_vec()).unwrap());
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    out
}

/// Where the data of tensor `name` starts in the file.
fn offset_of(bytes: &[u8], name: &str) -> usize {
    let end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..end]).unwrap();
    end + header[name]["data_offsets"][0].as_u64().unwrap() as usize
}

/// Saves the weights, applies `edit` to the header of the file on disk, loads it again.
fn load_edited(name: &str, edit: impl FnOnce(String) -> String) -> Result<Weights, WeightsError> {
    let dir = temp_dir(name);
    let path = dir.join("model.safetensors");
    weights().save(&path).unwrap();
    std::fs::write(&path, with_header(&std::fs::read(&path).unwrap(), edit)).unwrap();
    let result = Weights::load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

fn assert_digest_error(result: Result<Weights, WeightsError>, case: &str) {
    let err = result.expect_err(case);
    let WeightsError::InFile { source, .. } = &err else { panic!("{case}: {err}") };
    assert!(matches!(**source, WeightsError::DigestMismatch { .. }), "{case}: {err}");
    assert!(err.to_string().contains(&format!("metadata field `{DIGEST_FIELD}`")), "{case}: {err}");
}

#[test]
fn one_changed_byte_of_a_class_name_fails_the_load() {
    let result = load_edited("cat-bat", |h| {
        assert!(h.contains("\\\"cat\\\""), "{h}");
        h.replacen("\\\"cat\\\"", "\\\"bat\\\"", 1)
    });
    assert_digest_error(result, "cat → bat");
}

#[test]
fn swapped_class_names_fail_the_load() {
    let result = load_edited("swap", |h| {
        h.replacen("\\\"cat\\\"", "\\\"@@@\\\"", 1).replacen("\\\"dog\\\"", "\\\"cat\\\"", 1).replacen(
            "\\\"@@@\\\"",
            "\\\"dog\\\"",
            1,
        )
    });
    assert_digest_error(result, "cat ↔ dog");
}

#[test]
fn every_field_that_changes_results_is_covered() {
    let edits: [(&str, &str, &str); 6] = [
        ("weights kind", "\"weights\":\"ema\"", "\"weights\":\"raw\""),
        ("step", "\"step\":\"100\"", "\"step\":\"900\""),
        ("ema decay", "\"ema_decay\":\"0.9999\"", "\"ema_decay\":\"0.999\""),
        ("precision", "\"precision_at_1\":\"0.8124\"", "\"precision_at_1\":\"0.9124\""),
        ("dataset", "fnv1a64:0123456789abcdef", "fnv1a64:0123456789abcdee"),
        ("an extra field", "\"trained_by\":\"cifar10-train\"", "\"trained_by\":\"cifar10-trair\""),
    ];
    for (case, from, to) in edits {
        let result = load_edited(case, |h| {
            assert!(h.contains(from), "{case}: header lacks {from}: {h}");
            h.replacen(from, to, 1)
        });
        assert_digest_error(result, case);
    }
    // Fields with a single valid value are refused by name before the digest is looked at.
    for (field, from, to) in [
        ("architecture", "cifar10-tutorial-cnn/v1", "cifar10-tutorial-cnn/v2"),
        ("input", "per-image standardization", "per-image standardisation"),
        ("format_version", "\"format_version\":\"2\"", "\"format_version\":\"3\""),
    ] {
        let err = load_edited(field, |h| h.replacen(from, to, 1)).unwrap_err();
        assert!(err.to_string().contains(&format!("metadata field `{field}`")), "{field}: {err}");
    }
}

#[test]
fn the_digest_is_what_catches_an_edit() {
    // The same class-name edit with a recomputed digest loads: the check above fails
    // because of the digest, not because the edited header is otherwise invalid.
    let bytes = weights().to_bytes().unwrap();
    let (_, fields) = tensor_set::decode(&bytes, &[""], |m| Ok(m.clone())).unwrap();
    let mut edited: Fields = fields.clone();
    let names: Vec<String> =
        CLASS_NAMES.iter().map(|n| if *n == "cat" { "bat".to_string() } else { n.to_string() }).collect();
    edited.insert("class_names".into(), serde_json::to_string(&names).unwrap());
    let w = weights();
    let tensors: Vec<Vec<f32>> = w.iter().map(|(_, d)| d.to_vec()).collect();
    let digest = tensor_set::digest(&[("", &tensors)], &edited);
    let stored = fields[DIGEST_FIELD].clone();
    let text_with = |h: String| h.replacen("\\\"cat\\\"", "\\\"bat\\\"", 1).replacen(&stored, &digest, 1);
    let loaded = Weights::from_bytes(&with_header(&bytes, text_with)).unwrap();
    assert_eq!(loaded.metadata.class_names[3], "bat");
}

#[test]
fn a_nan_in_a_tensor_fails_the_load_naming_the_tensor() {
    let bytes = weights().to_bytes().unwrap();
    let at = offset_of(&bytes, TENSORS[LOCAL3_WEIGHT].name) + 4 * 5;
    let mut bad = bytes.clone();
    bad[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = Weights::from_bytes(&bad).unwrap_err();
    assert_eq!(err.to_string(), "tensor `local3.weight` holds a non-finite value (NaN) at element 5");
}

#[test]
fn a_checkpoint_with_a_flipped_bit_or_a_nan_in_either_set_fails() {
    let w = weights();
    let raw: Vec<Vec<f32>> = w.iter().map(|(_, d)| d.to_vec()).collect();
    let ema: Vec<Vec<f32>> = raw.iter().map(|t| t.iter().map(|v| v * 0.5).collect()).collect();
    let meta = Fields::from([("step".into(), "5".into()), ("format".into(), "test-checkpoint/v1".into())]);
    let bytes = tensor_set::encode(&[("raw/", &raw), ("ema/", &ema)], &meta).unwrap();
    let read = |b: &[u8]| tensor_set::decode(b, &["raw/", "ema/"], |_| Ok(()));
    assert!(read(&bytes).is_ok());
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x10;
    assert!(matches!(read(&flipped), Err(WeightsError::DigestMismatch { .. })));
    let edited = with_header(&bytes, |h| h.replacen("\"step\":\"5\"", "\"step\":\"6\"", 1));
    assert!(matches!(read(&edited), Err(WeightsError::DigestMismatch { .. })));
    let mut nan = bytes.clone();
    let at = offset_of(&bytes, "ema/local4.bias");
    nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = read(&nan).unwrap_err();
    assert_eq!(err.to_string(), "tensor `ema/local4.bias` holds a non-finite value (NaN) at element 0");
}
