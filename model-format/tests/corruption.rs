//! Corrupts valid weight and dataset files at random — truncation, flipped bytes, bad
//! headers — and checks that every case gives an error (or, for a flip that lands in
//! pixel data, valid records) and that none panics.

use std::panic::{catch_unwind, AssertUnwindSafe};

use model_format::cifar::{Records, RECORD_LEN};
use model_format::weights::{Metadata, Weights, WeightsError, FORMAT_VERSION};
use model_format::TENSORS;

/// A small seeded generator (xorshift64*) so the cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn valid_weights() -> Vec<u8> {
    let mut rng = Rng(42);
    let tensors =
        TENSORS.iter().map(|t| (0..t.len()).map(|_| (rng.below(2001) as f32 - 1000.0) / 10_000.0).collect()).collect();
    let metadata = Metadata { step: Some(100), ..Metadata::default() };
    Weights::new(tensors, metadata).unwrap().to_bytes().unwrap()
}

fn header_len(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// Parses without letting a panic escape: a panic fails the test with the case named.
fn parse(bytes: &[u8], case: &str) -> Result<Weights, WeightsError> {
    catch_unwind(AssertUnwindSafe(|| Weights::from_bytes(bytes)))
        .unwrap_or_else(|_| panic!("Weights::from_bytes panicked on {case}"))
}

#[test]
fn every_truncation_of_a_weights_file_is_an_error() {
    let bytes = valid_weights();
    let mut rng = Rng(1);
    let mut cuts: Vec<usize> = (0..200).map(|_| rng.below(bytes.len())).collect();
    cuts.extend([0, 1, 7, 8, 9, header_len(&bytes) - 1, header_len(&bytes), bytes.len() - 1]);
    for cut in cuts {
        let err = parse(&bytes[..cut], &format!("a cut at {cut}")).expect_err("truncated file accepted");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn flipped_header_bytes_never_panic_and_flipped_data_is_caught() {
    let bytes = valid_weights();
    let original = Weights::from_bytes(&bytes).unwrap();
    let header = header_len(&bytes);
    let mut rng = Rng(2);
    for _ in 0..300 {
        let mut bad = bytes.clone();
        let at = rng.below(header);
        bad[at] ^= 1 << rng.below(8);
        // A flip in the header can still leave valid JSON with the same meaning (e.g. in
        // padding spaces); what matters is no panic and no silently different weights.
        if let Ok(w) = parse(&bad, &format!("a header flip at {at}")) {
            let same = w.iter().zip(original.iter()).all(|((_, a), (_, b))| a == b);
            assert!(same, "header flip at {at} was accepted with different weights");
        }
    }
    for _ in 0..300 {
        let mut bad = bytes.clone();
        let at = header + rng.below(bytes.len() - header);
        bad[at] ^= 1 << rng.below(8);
        let err = parse(&bad, &format!("a data flip at {at}")).expect_err("data flip accepted");
        assert!(
            matches!(err, WeightsError::DigestMismatch { .. } | WeightsError::NonFinite { .. }),
            "data flip at {at}: {err}"
        );
    }
}

#[test]
fn bad_headers_each_give_their_own_error() {
    let bytes = valid_weights();
    let header = header_len(&bytes);

    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(parse(&huge, "a huge header length"), Err(WeightsError::HeaderTooLarge { .. })));

    let mut not_json = bytes.clone();
    not_json[8] = b'[';
    assert!(matches!(parse(&not_json, "a JSON list header"), Err(WeightsError::MalformedHeader(_))));

    let text = String::from_utf8(bytes[8..header].to_vec()).unwrap();
    let with = |from: &str, to: &str| {
        assert!(text.contains(from), "header lacks {from}");
        let new = text.replacen(from, to, 1);
        let mut out = (new.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(new.as_bytes());
        out.extend_from_slice(&bytes[header..]);
        out
    };
    let f32_to_f16 = with("\"F32\"", "\"F16\"");
    assert!(matches!(
        parse(&f32_to_f16, "dtype F16"),
        Err(WeightsError::WrongDtype { .. }) | Err(WeightsError::MalformedHeader(_))
    ));
    let renamed = with("conv2.weight", "conv9.weight");
    assert!(
        matches!(parse(&renamed, "a renamed tensor"), Err(WeightsError::UnexpectedTensor(name)) if name == "conv9.weight")
    );
    let arch = with("cifar10-tutorial-cnn/v1", "cifar10-tutorial-cnn/v9");
    assert!(matches!(parse(&arch, "another architecture"), Err(WeightsError::Metadata { field: "architecture", .. })));
    let current = format!("\"format_version\":\"{FORMAT_VERSION}\"");
    let version = with(&current, "\"format_version\":\"7\"");
    assert!(matches!(parse(&version, "format version 7"), Err(WeightsError::Metadata { field: "format_version", .. })));
}

#[test]
fn a_wrong_shape_is_named() {
    // Same byte count, other shape: [64, 3, 5, 5] stored as [64, 75].
    let bytes = valid_weights();
    let header = header_len(&bytes);
    let text = String::from_utf8(bytes[8..header].to_vec()).unwrap();
    let new = text.replacen("[64,3,5,5]", "[64,75]", 1);
    let mut out = (new.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&bytes[header..]);
    let err = parse(&out, "a reshaped tensor").unwrap_err();
    assert_eq!(err.to_string(), "tensor `conv1.weight` has shape [64, 75], expected [64, 3, 5, 5]");
}

fn valid_records(n: usize) -> Vec<u8> {
    let mut rng = Rng(3);
    (0..n)
        .flat_map(|i| {
            let pixels: Vec<u8> = (0..RECORD_LEN - 1).map(|_| rng.below(256) as u8).collect();
            std::iter::once((i % 10) as u8).chain(pixels)
        })
        .collect()
}

#[test]
fn corrupt_record_files_give_errors_not_panics() {
    let bytes = valid_records(20);
    let mut rng = Rng(4);
    let read = |b: Vec<u8>, case: &str| {
        catch_unwind(AssertUnwindSafe(|| Records::from_bytes(b, "test_batch.bin")))
            .unwrap_or_else(|_| panic!("Records::from_bytes panicked on {case}"))
    };
    for _ in 0..100 {
        let cut = rng.below(bytes.len());
        if !cut.is_multiple_of(RECORD_LEN) || cut == 0 {
            let err = read(bytes[..cut].to_vec(), &format!("a cut at {cut}")).expect_err("truncated file accepted");
            assert!(err.to_string().starts_with("test_batch.bin: "), "{err}");
        }
    }
    for _ in 0..100 {
        let mut bad = bytes.clone();
        let record = rng.below(20);
        bad[record * RECORD_LEN] = 10 + rng.below(246) as u8;
        let err = read(bad, "a bad label").expect_err("bad label accepted");
        assert!(err.to_string().contains(&format!("byte offset {}", record * RECORD_LEN)), "{err}");
    }
    for _ in 0..100 {
        // A flip in pixel bytes is indistinguishable from another image: still 20 records.
        let mut flipped = bytes.clone();
        let at = rng.below(20) * RECORD_LEN + 1 + rng.below(RECORD_LEN - 1);
        flipped[at] ^= 0xff;
        assert_eq!(read(flipped, "a pixel flip").unwrap().len(), 20);
    }
}

#[test]
fn a_short_file_on_disk_names_the_file() {
    let dir = std::env::temp_dir().join(format!("corrupt-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data_batch_3.bin");
    let mut bytes = valid_records(3);
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&path, bytes).unwrap();
    let err = Records::read_file(&path).unwrap_err().to_string();
    assert!(err.contains("data_batch_3.bin") && err.contains("not a whole number"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
