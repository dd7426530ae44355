//! README's first command, `cifar10 eval --model models/cifar10.safetensors`, on a clone with
//! no data beside it: it counts the 1,000 test images bundled in the binary and says so; and
//! where a figure matters (a data folder named, or `$CI` set) missing data stays an error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use infer::Classifier;
use model_format::cifar::{Records, DATA_DIR_ENV, FETCH_COMMAND};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A folder with nothing beside it: its `../shared` does not exist.
fn lone_folder(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cifar10-first-{tag}-{}", std::process::id())).join("clone");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `cifar10 eval --model <bundled model> EXTRA…` in `dir`, with no data variable and no `$CI`.
fn eval(dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cifar10"));
    command.current_dir(dir).env_remove(DATA_DIR_ENV).env_remove("CI");
    command.arg("eval").arg("--model").arg(repo().join("models/cifar10.safetensors")).args(extra);
    command
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The bundled model's count on `data/sample/`, computed by the library.
fn library_count_on_the_sample() -> usize {
    let records = Records::read_file(repo().join("data/sample/test_batch.bin")).unwrap();
    let classifier = Classifier::from_path(repo().join("models/cifar10.safetensors")).unwrap();
    let predictions = classifier.classify_records(records.as_bytes()).unwrap();
    predictions.iter().enumerate().filter(|(i, p)| p.class == records.label(*i) as usize).count()
}

fn manifest_count_on_the_sample() -> u64 {
    let text = std::fs::read_to_string(repo().join("models/cifar10.manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["results"]["sample"]["correct"]["cpu"].as_u64().unwrap()
}

#[test]
fn without_data_the_first_command_counts_the_bundled_sample_and_says_so() {
    let dir = lone_folder("sample");
    let output = eval(&dir, &[]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("bundled sample") && first.contains("1,000"), "first line: {first}");
    assert!(first.contains(FETCH_COMMAND), "the first line names the command for the full set: {first}");
    let expected = library_count_on_the_sample();
    assert_eq!(expected as u64, manifest_count_on_the_sample());
    assert!(stdout.contains(&format!("({expected}/1000)")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("data") && l.contains("bundled sample")), "{stdout}");

    let json = eval(&dir, &["--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["correct"], expected);
    assert_eq!(report["total"], 1000);
    assert!(report["data"].as_str().unwrap().contains("bundled sample"));
    assert!(report["data_dir"].is_null());
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn where_a_figure_matters_missing_data_stays_an_error() {
    let dir = lone_folder("strict");
    let missing = dir.join("no-such-folder");
    let cases: [(&str, Command); 4] = [
        ("CI set", {
            let mut c = eval(&dir, &[]);
            c.env("CI", "true");
            c
        }),
        ("data variable names a missing folder", {
            let mut c = eval(&dir, &[]);
            c.env(DATA_DIR_ENV, &missing);
            c
        }),
        ("data variable set but empty", {
            let mut c = eval(&dir, &[]);
            c.env(DATA_DIR_ENV, "");
            c
        }),
        ("--data-dir names a missing folder", eval(&dir, &["--data-dir", missing.to_str().unwrap()])),
    ];
    for (case, mut command) in cases {
        let output = command.output().unwrap();
        let (stdout, stderr) = text(&output);
        assert!(!output.status.success(), "{case}: exit 0 with {stdout}");
        assert!(!stderr.contains("bundled sample") && stdout.is_empty(), "{case}: fell back: {stderr}");
        assert!(stderr.starts_with("error: "), "{case}: {stderr}");
    }
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}
