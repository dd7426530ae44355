//! Writers replace only regular files, never write an output over an input, and clean up
//! the temporary files of writes that were killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use model_format::atomic::{check_not_an_input, check_output, temp_path_for, write_file, STALE_AFTER};
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
fn links_devices_and_folders_are_not_replaced() {
    let dir = temp_dir("device");
    // A link is refused whatever it points to: to /dev/null, or to a regular file (renaming
    // over it would replace the link and leave the file the user named unchanged).
    let target = dir.join("target.safetensors");
    fs::write(&target, b"target").unwrap();
    for (name, points_to) in [("null.safetensors", Path::new("/dev/null")), ("file.safetensors", target.as_path())] {
        let link = dir.join(name);
        std::os::unix::fs::symlink(points_to, &link).unwrap();
        let err = write_file(&link, b"model").unwrap_err();
        assert_eq!(err.to_string(), "is a symbolic link: refusing to replace it; give the path of the file itself");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }
    assert_eq!(fs::read(&target).unwrap(), b"target");
    let folder = dir.join("folder");
    fs::create_dir(&folder).unwrap();
    let err = write_file(&folder, b"model").unwrap_err();
    assert_eq!(err.to_string(), "is a folder, not a regular file: refusing to replace it");
    assert!(folder.is_dir());
    let err = write_file(Path::new("/dev/null"), b"model").unwrap_err();
    assert_eq!(err.to_string(), "is a character device, not a regular file: refusing to replace it");
    // A regular file is replaced.
    let file = dir.join("model.safetensors");
    write_file(&file, b"old").unwrap();
    write_file(&file, b"new").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"new");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn links_planted_at_temporary_names_are_never_followed() {
    let dir = temp_dir("planted");
    let victim = dir.join("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    // Every name a predictable writer would use: `.out.onnx.<pid>.<counter>.tmp`.
    for n in 0..2000 {
        std::os::unix::fs::symlink(&victim, dir.join(format!(".out.onnx.{}.{n}.tmp", std::process::id()))).unwrap();
    }
    let out = dir.join("out.onnx");
    write_file(&out, b"model").unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "the write followed a planted link");
    assert!(fs::symlink_metadata(&out).unwrap().file_type().is_file(), "the output is a link");
    assert_eq!(fs::read(&out).unwrap(), b"model");
    // The names are random: two temporaries of one destination share no token.
    let token = |p: PathBuf| p.file_name().unwrap().to_string_lossy().rsplit('.').nth(1).unwrap().to_string();
    let (a, b) = (token(temp_path_for(&out)), token(temp_path_for(&out)));
    assert_eq!(a.len(), 16, "{a}");
    assert_ne!(a, b);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_output_names_the_flag_and_refuses_inputs_links_and_devices() {
    let dir = temp_dir("check-output");
    let input = dir.join("data_batch_1.bin");
    fs::write(&input, b"records").unwrap();
    let hard = dir.join("hard.bin");
    fs::hard_link(&input, &hard).unwrap();
    let soft = dir.join("soft.bin");
    std::os::unix::fs::symlink(&input, &soft).unwrap();
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    for output in [input.clone(), sub.join("..").join("data_batch_1.bin"), hard, soft] {
        let err = check_output("--out", &output, &[Path::new("/nonexistent"), &input]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "--out {}: is the same file as the input {}: writing it would destroy the input; choose another path",
                output.display(),
                input.display()
            )
        );
    }
    let link = dir.join("link.png");
    std::os::unix::fs::symlink(dir.join("elsewhere.png"), &link).unwrap();
    let err = check_output("--plot", &link, &[&input]).unwrap_err().to_string();
    assert!(err.starts_with(&format!("--plot {}: is a symbolic link", link.display())), "{err}");
    check_output("--out", &dir.join("new.onnx"), &[&input]).unwrap();
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
