//! Progress of long commands: a bar on a terminal, plain lines when stderr is a log,
//! and the range check of `classify --top`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cifar10() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cifar10"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn eval_prints_plain_progress_lines_into_a_log() {
    let output = cifar10()
        .args(["eval", "--threads", "2", "--batch-size", "100", "--model"])
        .arg(repo().join("models/cifar10.safetensors"))
        .arg("--data-dir")
        .arg(repo().join("data/sample"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("evaluating: ")).collect();
    let expected: Vec<String> =
        (1..=10).map(|t| format!("evaluating: {}/1000 images ({}%)", 100 * t, 10 * t)).collect();
    assert_eq!(lines, expected, "stderr: {stderr}");
    assert!(!stderr.contains('\r') && !stderr.contains('\x1b'), "terminal control codes in a log: {stderr:?}");
}

#[test]
fn classify_top_outside_1_to_10_is_refused_naming_the_flag() {
    let image = repo().join("data/sample/test_batch.bin");
    for top in ["0", "11"] {
        let output = cifar10()
            .args(["classify", "--top", top, "--model"])
            .arg(repo().join("models/cifar10.safetensors"))
            .arg(&image)
            .output()
            .unwrap();
        assert!(!output.status.success(), "--top {top} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("--top must be between 1 and 10, got {top}")), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn eval_draws_a_bar_on_a_terminal() {
    // `script` (util-linux) runs the command on a pseudo-terminal and copies what it draws.
    let quote = |p: PathBuf| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let command = format!(
        "{} eval --threads 1 --batch-size 100 --model {} --data-dir {} > /dev/null",
        quote(PathBuf::from(env!("CARGO_BIN_EXE_cifar10"))),
        quote(repo().join("models/cifar10.safetensors")),
        quote(repo().join("data/sample")),
    );
    let output = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .expect("`script` (Debian's util-linux package) runs the command on a terminal");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let drawn = String::from_utf8_lossy(&output.stdout);
    assert!(drawn.contains("evaluating [") && drawn.contains("/1000 images ("), "no bar drawn: {drawn:?}");
    assert!(drawn.contains('\r') || drawn.contains('\x1b'), "the bar is never redrawn: {drawn:?}");
    assert!(!drawn.contains("evaluating: "), "plain log lines on a terminal: {drawn:?}");
}
