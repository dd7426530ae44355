//! The `cifar10-train` binary itself, on a short run over the in-repo sample: the start line
//! names the devices and the towers, and nothing in the output is a libtorch warning (a
//! deprecated call warns once per call, so a warning in the per-batch path would flood the
//! log).

mod support;

use std::process::Command;

use support::sample_data_dir;

/// Lines that libtorch's logging writes for a warning (`[W …]`, or `Warning: …` from its
/// `TORCH_WARN` handler).
fn warning_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.trim_start().starts_with("[W") || l.contains("Warning:")).collect()
}

#[test]
fn a_short_two_tower_run_names_its_devices_and_logs_no_libtorch_warning() {
    let dir = std::env::temp_dir().join(format!("cli-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = sample_data_dir(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_cifar10-train"))
        .args(["train", "--data-dir"])
        .arg(&data)
        .arg("--train-dir")
        .arg(dir.join("run"))
        .args(["--devices", "cpu", "--towers", "2", "--batch-size", "4", "--max-steps", "6", "--train-examples", "64"])
        .args(["--log-frequency", "2", "--summary-every", "3", "--checkpoint-every", "0", "--threads", "1"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    let start = text.lines().find(|l| l.starts_with("training ")).expect("a start line");
    assert!(
        start.contains("on devices cpu (--devices") && start.contains("2 tower(s) per device = 2 tower(s)"),
        "{start}"
    );
    assert_eq!(warning_lines(&text), Vec::<&str>::new(), "{text}");
    assert!(text.contains("done at step 6"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn warning_lines_are_recognised() {
    let log = "step 1\n[W1207 23:00:00.000 Memory.cpp:42] Warning: The argument 'device' of Tensor.pin_memory() is deprecated\nok";
    assert_eq!(warning_lines(log).len(), 1);
}
