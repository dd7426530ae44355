//! The committed model (`models/cifar10.safetensors`) against its manifest: the exact number
//! of correct test images for each backend (ndarray, ONNX Runtime, tch) on the in-repo
//! sample (always) and on the full test set, the backends' agreement, and loud failures when
//! a manifest or a model's metadata does not belong. Likewise the committed int8 model
//! (`models/cifar10-int8.safetensors`, the manifest's `int8` section): its exact counts, its
//! size, its precision within half a point of the float model's, and that it is what
//! quantizing the committed float model gives.
//!
//! The exact counts hold for one copy of CIFAR-10: the one whose fingerprint the manifest
//! records. The full-test-set check compares the data's fingerprint with the manifest's first:
//! - same copy: exact counts and agreement;
//! - another copy (e.g. the original binaries rather than the JPEG-rebuilt copy): with
//!   `CI=true` the test fails (CI must run on the manifest's copy); elsewhere the backends'
//!   agreement is checked and a line in the test output says the counts belong to another copy;
//! - no data: with `CI=true` the test fails; elsewhere a line in the test output says it did
//!   not run. Those lines are written to the stderr handle, which `cargo test` shows even for
//!   a passing test (see `bundled_support::shown`).

mod bundled_support;

use bundled_support::{
    check_manifest, correct, in_ci, int8_logits, logits, preprocessed, quantize_bundled, repo_path, sample, shown,
    top_two, BACKENDS, INT8_BACKENDS, INT8_MODEL, MANIFEST, MAX_INT8_BYTES, MODEL,
};
use infer::prediction::argmax;
use model_format::arch::NUM_CLASSES;
use model_format::cifar::{Dataset, Records};
use model_format::{QuantizedWeights, Weights, WeightsError};
use serde_json::Value;

/// Backends may disagree on the top class only where the top two logits are this close.
const NEAR_TIE: f32 = 1e-4;
/// Share of images on which every pair of backends must pick the same class.
const MIN_AGREEMENT: f64 = 0.999;

fn model() -> Weights {
    Weights::load(repo_path(MODEL)).unwrap_or_else(|e| panic!("{e}"))
}

fn int8_model() -> QuantizedWeights {
    QuantizedWeights::load(repo_path(INT8_MODEL)).unwrap_or_else(|e| panic!("{e}"))
}

fn manifest() -> Value {
    let path = repo_path(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every backend's logits on `records`, [`BACKENDS`] order, after checking that the
/// backends agree on the argmax except at near-ties; and each backend's correct count.
fn agreeing_logits(set: &str, records: &Records) -> Vec<usize> {
    let weights = model();
    let inputs = preprocessed(records);
    let all: Vec<Vec<f32>> = BACKENDS.iter().map(|b| logits(b, &weights, &inputs)).collect();
    for a in 0..BACKENDS.len() {
        for b in a + 1..BACKENDS.len() {
            check_agreement(BACKENDS[a], &all[a], BACKENDS[b], &all[b]);
        }
    }
    let counts: Vec<usize> = all.iter().map(|l| correct(l, records)).collect();
    for (backend, count) in BACKENDS.iter().zip(&counts) {
        eprintln!("{set}: {backend} {count}/{}", records.len());
    }
    counts
}

/// Counts on `records` must equal the manifest's `results.<set>.correct`, and the
/// backends must agree on the argmax except at near-ties.
fn check_counts(set: &str, records: &Records) -> Vec<usize> {
    let expected = &manifest()["results"][set];
    assert_eq!(expected["total"].as_u64(), Some(records.len() as u64), "manifest results.{set}.total");
    let counts = agreeing_logits(set, records);
    for (backend, &count) in BACKENDS.iter().zip(&counts) {
        assert_eq!(
            expected["correct"][backend].as_u64(),
            Some(count as u64),
            "{set}: {backend} gets {count} correct, the manifest says {}",
            expected["correct"][backend]
        );
    }
    counts
}

/// The manifest's fingerprint of a set (`test_set_fingerprint`, `sample_fingerprint`).
fn manifest_fingerprint(key: &str) -> String {
    manifest()["dataset"][key].as_str().unwrap_or_else(|| panic!("manifest lacks dataset.{key}")).to_string()
}

fn check_agreement(name_a: &str, a: &[f32], name_b: &str, b: &[f32]) {
    let images = a.len() / NUM_CLASSES;
    let mut disagreements = 0;
    for (i, (la, lb)) in a.chunks_exact(NUM_CLASSES).zip(b.chunks_exact(NUM_CLASSES)).enumerate() {
        if argmax(la) != argmax(lb) {
            disagreements += 1;
            let (first, second) = top_two(la);
            assert!(
                first - second <= NEAR_TIE,
                "image {i}: {name_a} and {name_b} disagree although the top two logits are {} apart",
                first - second
            );
        }
    }
    let agreement = 1.0 - disagreements as f64 / images as f64;
    assert!(agreement >= MIN_AGREEMENT, "{name_a} and {name_b} agree on only {:.2}% of images", 100.0 * agreement);
}

/// The full test set when it is the manifest's copy; `None` (with a line in the test output)
/// when it is unavailable or another copy outside CI; a failure under `CI=true`.
fn manifest_test_set(test: &str) -> Option<Records> {
    let records = match Dataset::locate(None).and_then(|d| d.test()) {
        Ok(records) => records,
        Err(e) if in_ci() => {
            panic!("CI=true and the full test set is unavailable ({e}): CI must check the exact counts")
        }
        Err(e) => {
            shown(&format!("{test}: NOT RUN: full test set unavailable ({e})"));
            return None;
        }
    };
    let (found, expected) = (records.fingerprint(), manifest_fingerprint("test_set_fingerprint"));
    assert!(
        !in_ci() || found == expected,
        "CI=true and the test set's fingerprint {found} is not the manifest's {expected}"
    );
    if found != expected {
        shown(&format!("{test}: NOT RUN: the test set's fingerprint {found} is not the manifest's {expected}"));
        return None;
    }
    Some(records)
}

/// The int8 model's counts on `records` must equal the manifest's `int8.results.<set>.correct`.
fn check_int8_counts(set: &str, records: &Records) -> usize {
    let expected = &manifest()["int8"]["results"][set];
    assert_eq!(expected["total"].as_u64(), Some(records.len() as u64), "manifest int8.results.{set}.total");
    let (model, inputs) = (int8_model(), preprocessed(records));
    let mut cpu = 0;
    for backend in INT8_BACKENDS {
        let count = correct(&int8_logits(backend, &model, &inputs), records);
        eprintln!("{set}: int8 {backend} {count}/{}", records.len());
        assert_eq!(
            expected["correct"][backend].as_u64(),
            Some(count as u64),
            "{set}: the int8 model on {backend} gets {count} correct, the manifest says {}",
            expected["correct"][backend]
        );
        cpu = if backend == "cpu" { count } else { cpu };
    }
    cpu
}

#[test]
fn the_int8_model_is_the_manifests_and_small() {
    let int8 = int8_model();
    assert_eq!(
        manifest()["int8"]["weights_digest"].as_str(),
        Some(int8.digest().as_str()),
        "manifest int8.weights_digest"
    );
    let bytes = std::fs::metadata(repo_path(INT8_MODEL)).unwrap().len();
    assert!(bytes <= MAX_INT8_BYTES, "{INT8_MODEL} is {bytes} bytes, more than {MAX_INT8_BYTES}");
    assert_eq!(manifest()["int8"]["file_bytes"].as_u64(), Some(bytes), "manifest int8.file_bytes");
    assert_eq!(int8.metadata.step, model().metadata.step, "the int8 model comes from the committed float model");
}

#[test]
fn the_int8_model_is_what_quantizing_the_float_model_gives() {
    let dataset = match Dataset::locate(None) {
        Ok(dataset) => dataset,
        Err(e) if in_ci() => panic!("CI=true and the training data is unavailable ({e}): CI must check the int8 model"),
        Err(e) => return shown(&format!("bundled_model: int8 requantization NOT RUN: no data ({e})")),
    };
    let fresh = quantize_bundled(&model(), &dataset).unwrap_or_else(|e| panic!("{e}"));
    assert!(fresh == int8_model(), "quantizing {MODEL} does not give {INT8_MODEL}: run examples/bundle_model.rs again");
}

#[test]
fn int8_sample_counts_equal_the_manifest() {
    check_int8_counts("sample", &sample());
}

#[test]
fn int8_full_test_set_counts_equal_the_manifest_within_half_a_point_of_float() {
    let Some(records) = manifest_test_set("bundled_model (int8)") else { return };
    let int8 = check_int8_counts("full_test_set", &records);
    let float = manifest()["results"]["full_test_set"]["correct"]["cpu"].as_u64().expect("float cpu count");
    assert!(int8 as u64 + 50 >= float, "int8 {int8}/10000 is more than half a point below float {float}/10000");
}

#[test]
fn the_manifest_describes_the_committed_model() {
    check_manifest(&manifest(), &model()).unwrap();
}

#[test]
fn sample_counts_equal_the_manifest() {
    let records = sample();
    assert_eq!(records.fingerprint(), manifest_fingerprint("sample_fingerprint"), "data/sample is not the manifest's");
    check_counts("sample", &records);
}

#[test]
fn full_test_set_counts_equal_the_manifest() {
    let records = match Dataset::locate(None).and_then(|d| d.test()) {
        Ok(records) => records,
        Err(e) if in_ci() => {
            panic!("CI=true and the full test set is unavailable ({e}): CI must check the exact counts")
        }
        Err(e) => {
            shown(&format!(
                "bundled_model: NOT RUN: full test set unavailable ({e}); only the sample's counts were checked"
            ));
            return;
        }
    };
    let (found, expected) = (records.fingerprint(), manifest_fingerprint("test_set_fingerprint"));
    if found != expected {
        assert!(
            !in_ci(),
            "CI=true and the test set's fingerprint {found} is not the manifest's {expected}: an unknown copy of \
             CIFAR-10, for which the exact counts cannot be checked"
        );
        shown(&format!(
            "bundled_model: the test set's fingerprint {found} differs from the manifest's {expected}: this is another \
             copy of CIFAR-10, so only the backends' agreement is checked; the exact counts (manifest \
             results.full_test_set) belong to the manifest's copy"
        ));
        agreeing_logits("full_test_set (another copy)", &records);
        return;
    }
    let counts = check_counts("full_test_set", &records);
    // The trainer measured precision@1 with tch when it exported the model.
    let tch = counts[BACKENDS.iter().position(|&b| b == "tch").unwrap()];
    let stated = model().metadata.precision_at_1.expect("the committed model states its precision@1");
    assert_eq!(stated, tch as f64 / records.len() as f64, "metadata precision_at_1 vs the tch count");
}

#[test]
fn a_manifest_for_other_weights_fails_loudly() {
    let weights = model();
    let mut wrong_digest = manifest();
    wrong_digest["weights_digest"] = Value::from("fnv1a64:0000000000000000");
    let err = check_manifest(&wrong_digest, &weights).unwrap_err();
    assert!(err.contains("weights_digest"), "{err}");
    let mut wrong_step = manifest();
    wrong_step["training"]["steps"] = Value::from(1);
    assert!(check_manifest(&wrong_step, &weights).unwrap_err().contains("training.steps"));
    let mut no_counts = manifest();
    no_counts["results"]["sample"]["correct"].as_object_mut().unwrap().remove("onnx");
    assert!(check_manifest(&no_counts, &weights).unwrap_err().contains("results.sample.correct.onnx"));
}

#[test]
fn a_model_file_whose_metadata_does_not_match_its_weights_fails_loudly() {
    let bytes = std::fs::read(repo_path(MODEL)).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Nudge one weight: the stored digest no longer matches the tensors.
    let mut altered = bytes.clone();
    altered[header + 4 * 1000] ^= 0x01;
    assert!(matches!(Weights::from_bytes(&altered), Err(WeightsError::DigestMismatch { .. })));
    // Claim another architecture in the metadata.
    let text = String::from_utf8(bytes[8..header].to_vec())
        .unwrap()
        .replace("cifar10-tutorial-cnn/v1", "cifar10-tutorial-cnn/v2");
    let mut foreign = (text.len() as u64).to_le_bytes().to_vec();
    foreign.extend_from_slice(text.as_bytes());
    foreign.extend_from_slice(&bytes[header..]);
    assert!(matches!(Weights::from_bytes(&foreign), Err(WeightsError::Metadata { field: "architecture", .. })));
}
