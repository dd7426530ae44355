//! Writers replace only regular files, never write an output over an input, and clean up
//! the temporary files of writes that were killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use model_format::atomic::{check_not_an_input, temp_path_for, write_file, STALE_AFTER};
use model_format::{Metadata, Weights, TENSORS};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("safe-outputs-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo {} failed", path.display());
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_fifo_is_not_replaced() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("out.onnx");
    mkfifo(&fifo);
    let err = write_file(&fifo, b"model").unwrap_err();
    assert_eq!(err.to_string(), "is a FIFO, not a regular file: refusing to replace it");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo_like());
    // Through the weights writer, the error names the path.
    let weights = Weights::new(TENSORS.iter().map(|t| vec![0.0; t.len()]).collect(), Metadata::default()).unwrap();
    let err = weights.save(&fifo).unwrap_err().to_string();
    assert_eq!(err, format!("{}: is a FIFO, not a regular file: refusing to replace it", fifo.display()));
    assert_eq!(names(&dir), ["out.onnx"], "a temporary file was left behind");
    fs::remove_dir_all(&dir).unwrap();
}

/// `is_fifo` without a platform trait import at every call.
trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn a_device_behind_a_link_and_a_folder_are_not_replaced() {
    let dir = temp_dir("device");
    // A link to /dev/null inside our folder: were the check missing, only the link would
    // be replaced, never /dev/null itself.
    let link = dir.join("null.safetensors");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let err = write_file(&link, b"model").unwrap_err();
    assert_eq!(err.to_string(), "is a character device, not a regular file: refusing to replace it");
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    let folder = dir.join("folder");
    fs::create_dir(&folder).unwrap();
    let err = write_file(&folder, b"model").unwrap_err();
    assert_eq!(err.to_string(), "is a folder, not a regular file: refusing to replace it");
    assert!(folder.is_dir());
    // A regular file, and a link to one, are replaced.
    let file = dir.join("model.safetensors");
    write_file(&file, b"old").unwrap();
    write_file(&file, b"new").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"new");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_output_that_is_an_input_is_refused_naming_both() {
    let dir = temp_dir("same");
    let input = dir.join("model.safetensors");
    fs::write(&input, b"weights").unwrap();
    let hard_link = dir.join("hard.safetensors");
    fs::hard_link(&input, &hard_link).unwrap();
    let soft_link = dir.join("soft.safetensors");
    std::os::unix::fs::symlink(&input, &soft_link).unwrap();
    let other = dir.join("other.safetensors");
    fs::write(&other, b"other").unwrap();
    let spellings = [input.clone(), dir.join(".").join("model.safetensors"), hard_link, soft_link];
    for output in &spellings {
        let err = check_not_an_input(output, &[&other, &input]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "output {} is the same file as the input {}: writing it would destroy the input; choose another output path",
                output.display(),
                input.display()
            )
        );
    }
    check_not_an_input(&other, &[&input]).unwrap();
    check_not_an_input(&dir.join("new.onnx"), &[&input]).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

/// Makes a file that looks `age` old.
fn file_aged(path: &Path, age: Duration) {
    fs::write(path, b"half-written").unwrap();
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn stale_temporaries_of_killed_writes_are_removed_and_nothing_else() {
    let dir = temp_dir("stale");
    let old = STALE_AFTER + Duration::from_secs(60);
    // Process ids never exceed 2^22 on Linux: u32::MAX is a writer that is surely gone.
    let dead = u32::MAX;
    file_aged(&dir.join(format!(".model.safetensors.{dead}.0.tmp")), old);
    file_aged(&dir.join(format!(".ckpt.v1.safetensors.{dead}.17.tmp")), old);
    // Kept: a recent temporary (a writer elsewhere may still be at it), ours, a live
    // writer's (process 1 always runs), and names or kinds that are not our temporaries.
    let kept = [
        format!(".recent.onnx.{dead}.0.tmp"),
        temp_path_for(&dir.join("mine.onnx")).file_name().unwrap().to_string_lossy().into_owned(),
        ".live.onnx.1.0.tmp".to_string(),
        format!(".model.safetensors.{dead}.tmp"),
        format!("model.safetensors.{dead}.0.tmp"),
        format!(".model.safetensors.{dead}.0.tmp.bak"),
        "notes.tmp".to_string(),
    ];
    fs::write(dir.join(&kept[0]), b"x").unwrap();
    for name in &kept[1..] {
        file_aged(&dir.join(name), old);
    }
    let folder = format!(".folder.{dead}.0.tmp");
    fs::create_dir(dir.join(&folder)).unwrap();

    write_file(&dir.join("out.bin"), b"new").unwrap();

    let mut expected: Vec<String> = kept.to_vec();
    expected.push(folder);
    expected.push("out.bin".into());
    expected.sort();
    assert_eq!(names(&dir), expected);
    fs::remove_dir_all(&dir).unwrap();
}
