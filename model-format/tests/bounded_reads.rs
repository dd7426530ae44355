//! `Weights::load` (and every reader of the tensor-set codec) refuses, before reading
//! anything, a path that is not a regular file or a file over the size cap, naming the file;
//! bytes after the data are reported as such.

use std::path::{Path, PathBuf};

use model_format::tensor_set::MAX_FILE_BYTES;
use model_format::{Metadata, Weights, WeightsError, TENSORS};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bounded-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_model() -> Weights {
    Weights::new(TENSORS.iter().map(|t| vec![0.01; t.len()]).collect(), Metadata::default()).unwrap()
}

#[test]
fn an_oversize_file_is_refused_before_it_is_read() {
    let dir = temp_dir("oversize");
    let path = dir.join("huge.safetensors");
    // Sparse, 64 GiB: reading it would exhaust memory, so an error here means it was not read.
    let size = 64u64 << 30;
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let err = Weights::load(&path).unwrap_err();
    assert!(matches!(err, WeightsError::FileTooLarge { size: s, cap: MAX_FILE_BYTES, .. } if s == size), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&path.display().to_string())
            && text.contains(&size.to_string())
            && text.contains(&MAX_FILE_BYTES.to_string()),
        "{text}"
    );
    // Just over the cap is refused too; the model itself is far below it.
    std::fs::File::create(&path).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
    assert!(matches!(Weights::load(&path), Err(WeightsError::FileTooLarge { .. })));
    assert!(small_model().to_bytes().unwrap().len() as u64 * 4 < MAX_FILE_BYTES);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_zero_is_refused_at_once() {
    let err = Weights::load("/dev/zero").unwrap_err();
    assert!(matches!(err, WeightsError::NotRegularFile { kind: "a character device", .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "/dev/zero: is a character device, not a regular file; a model or checkpoint must be a file"
    );
}

#[test]
fn a_fifo_or_a_folder_is_refused_without_blocking() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("model.safetensors");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo failed");
    // Opening a FIFO for reading would block until a writer comes: the error must come first.
    let err = Weights::load(&fifo).unwrap_err();
    assert!(matches!(err, WeightsError::NotRegularFile { kind: "a FIFO", .. }), "{err}");
    let err = Weights::load(&dir).unwrap_err();
    assert!(matches!(err, WeightsError::NotRegularFile { kind: "a folder", .. }), "{err}");
    assert!(err.to_string().starts_with(&dir.display().to_string()), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trailing_bytes_are_reported_as_such() {
    let dir = temp_dir("trailing");
    let path = dir.join("model.safetensors");
    let mut bytes = small_model().to_bytes().unwrap();
    bytes.extend_from_slice(b"extra");
    std::fs::write(&path, &bytes).unwrap();
    let err = Weights::load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}: 5 trailing bytes after the tensor data (corrupt, or two files joined together)", path.display())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_file_is_named() {
    let err = Weights::load(Path::new("/nonexistent/model.safetensors")).unwrap_err().to_string();
    assert!(err.starts_with("/nonexistent/model.safetensors: "), "{err}");
}
