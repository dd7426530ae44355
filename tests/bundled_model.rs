//! The committed model (`models/cifar10.safetensors`) against its manifest: the exact number
//! of correct test images for each backend (ndarray, ONNX Runtime, tch) on the in-repo
//! sample (always) and on the full test set (when the data folder is found), the backends'
//! agreement, and loud failures when a manifest or a model's metadata does not belong.

mod bundled_support;

use bundled_support::{
    check_manifest, correct, logits, preprocessed, repo_path, top_two, BACKENDS, MANIFEST, MODEL, SAMPLE,
};
use infer::prediction::argmax;
use model_format::arch::NUM_CLASSES;
use model_format::cifar::{Dataset, Records};
use model_format::{Weights, WeightsError};
use serde_json::Value;

/// Backends may disagree on the top class only where the top two logits are this close.
const NEAR_TIE: f32 = 1e-4;
/// Share of images on which every pair of backends must pick the same class.
const MIN_AGREEMENT: f64 = 0.999;

fn model() -> Weights {
    Weights::load(repo_path(MODEL)).unwrap_or_else(|e| panic!("{e}"))
}

fn manifest() -> Value {
    let path = repo_path(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Counts on `records` must equal the manifest's `results.<set>.correct`, and the
/// backends must agree on the argmax except at near-ties.
fn check_counts(set: &str, records: &Records) -> Vec<usize> {
    let weights = model();
    let expected = &manifest()["results"][set];
    assert_eq!(expected["total"].as_u64(), Some(records.len() as u64), "manifest results.{set}.total");
    let inputs = preprocessed(records);
    let all: Vec<Vec<f32>> = BACKENDS.iter().map(|b| logits(b, &weights, &inputs)).collect();
    let counts: Vec<usize> = all.iter().map(|l| correct(l, records)).collect();
    for (backend, count) in BACKENDS.iter().zip(&counts) {
        eprintln!("{set}: {backend} {count}/{}", records.len());
    }
    for (backend, &count) in BACKENDS.iter().zip(&counts) {
        assert_eq!(
            expected["correct"][backend].as_u64(),
            Some(count as u64),
            "{set}: {backend} gets {count} correct, the manifest says {}",
            expected["correct"][backend]
        );
    }
    for a in 0..BACKENDS.len() {
        for b in a + 1..BACKENDS.len() {
            check_agreement(BACKENDS[a], &all[a], BACKENDS[b], &all[b]);
        }
    }
    counts
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

#[test]
fn the_manifest_describes_the_committed_model() {
    check_manifest(&manifest(), &model()).unwrap();
}

#[test]
fn sample_counts_equal_the_manifest() {
    let records = Records::read_file(repo_path(SAMPLE)).unwrap();
    check_counts("sample", &records);
}

#[test]
fn full_test_set_counts_equal_the_manifest() {
    let records = match Dataset::locate(None).and_then(|d| d.test()) {
        Ok(records) => records,
        Err(e) => {
            eprintln!("SKIPPED: full test set unavailable ({e}); the sample test still runs");
            return;
        }
    };
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
