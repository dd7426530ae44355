//! `cifar10 eval` as a CI gate, run as a pipeline would run it on the in-repo sample: each
//! gate passes and fails on purpose, the exit statuses (0 passed, 1 a gate failed, 2 bad input
//! or usage), the paired comparison with a baseline (its p-value against SciPy's), agreement
//! between backends, the quick subset, and the JUnit report read by an independent parser.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use model_format::arch::tensor_id;
use model_format::cifar::Records;
use model_format::Weights;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn float_model() -> PathBuf {
    repo().join("models/cifar10.safetensors")
}

fn sample() -> PathBuf {
    repo().join("data/sample")
}

/// A scratch folder for one test, removed by the caller.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cifar10-gates-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `cifar10 eval --json --model MODEL --data-dir data/sample EXTRA…`.
fn eval(model: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cifar10"))
        .args(["eval", "--json", "--threads", "2", "--model"])
        .arg(model)
        .arg("--data-dir")
        .arg(sample())
        .args(extra)
        .output()
        .unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)))
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

/// The bundled model with `change` applied to its tensors, saved in `dir`.
fn changed_model(dir: &Path, name: &str, change: impl FnOnce(&mut [Vec<f32>])) -> PathBuf {
    let weights = Weights::load(float_model()).unwrap();
    let metadata = weights.metadata.clone();
    let mut tensors = weights.into_tensors();
    change(&mut tensors);
    let path = dir.join(name);
    Weights::new(tensors, metadata).unwrap().save(&path).unwrap();
    path
}

/// Worse on purpose: a bias towards class 0 (airplane) moves many images there.
fn worse_model(dir: &Path) -> PathBuf {
    changed_model(dir, "worse.safetensors", |t| t[tensor_id("softmax_linear.bias").unwrap()][0] += 4.0)
}

/// The bundled model's count on the sample, by the library and checked against the manifest.
fn sample_count() -> usize {
    let records = Records::read_file(sample().join("test_batch.bin")).unwrap();
    let classifier = infer::Classifier::from_path(float_model()).unwrap();
    let predictions = classifier.classify_records(records.as_bytes()).unwrap();
    let count = predictions.iter().enumerate().filter(|(i, p)| p.class == records.label(*i) as usize).count();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/cifar10.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["results"]["sample"]["correct"]["cpu"], count);
    count
}

fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash scripts/setup.sh`", python.display());
    python
}

#[test]
fn the_floor_and_the_exact_count_pass_and_fail() {
    let count = sample_count();
    let floor_ok = format!("{:.3}", count as f64 / 1000.0);
    let floor_high = format!("{:.3}", (count + 1) as f64 / 1000.0);
    let passed = eval(&float_model(), &["--min-precision", &floor_ok, "--expect-correct", &count.to_string()]);
    assert_eq!(status(&passed), 0, "{}", String::from_utf8_lossy(&passed.stderr));
    let report = json(&passed);
    assert_eq!(report["passed"], true);
    assert_eq!(report["gates"].as_array().unwrap().len(), 2);

    let low = eval(&float_model(), &["--min-precision", &floor_high]);
    assert_eq!(status(&low), 1);
    let stderr = String::from_utf8_lossy(&low.stderr);
    assert!(stderr.contains("gate min-precision failed") && stderr.contains("0.0010 short"), "{stderr}");
    assert_eq!(json(&low)["passed"], false);

    let off_by_one = eval(&float_model(), &["--expect-correct", &(count - 1).to_string()]);
    assert_eq!(status(&off_by_one), 1);
    assert!(String::from_utf8_lossy(&off_by_one.stderr)
        .contains(&format!("{count}/1000 right, expected exactly {}", count - 1)));
}

#[test]
fn a_worse_model_fails_against_its_baseline_and_the_same_model_passes() {
    let dir = scratch("baseline");
    let worse = worse_model(&dir);
    let baseline = float_model();
    let baseline = baseline.to_str().unwrap();
    let gates = ["--baseline", baseline, "--max-drop", "0.002", "--significance", "0.05"];
    let failed = eval(&worse, &gates);
    assert_eq!(status(&failed), 1, "{}", String::from_utf8_lossy(&failed.stderr));
    let report = json(&failed);
    let change = &report["baseline"];
    let (lost, gained) = (change["right_to_wrong"].as_u64().unwrap(), change["wrong_to_right"].as_u64().unwrap());
    assert!(lost > gained + 20, "the changed bias loses images: {lost} lost, {gained} gained");
    assert_eq!(report["correct"].as_i64().unwrap(), sample_count() as i64 - lost as i64 + gained as i64);
    let failed_gates: Vec<&str> = report["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["passed"] == false)
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    assert_eq!(failed_gates, ["max-drop", "significance"]);
    let per_class_old: u64 =
        report["per_class"].as_array().unwrap().iter().map(|c| c["baseline_correct"].as_u64().unwrap()).sum();
    assert_eq!(per_class_old as usize, sample_count());

    // The same model as its own baseline: no flips, p = 1, every gate passes.
    let same = eval(&float_model(), &gates);
    assert_eq!(status(&same), 0);
    assert_eq!(json(&same)["baseline"]["mcnemar_p"], 1.0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_p_value_is_scipys_exact_binomial_test_on_the_flips() {
    let dir = scratch("scipy");
    let mut flips = Vec::new();
    for (i, bias) in [0.6f32, 1.5, 4.0].into_iter().enumerate() {
        let model = changed_model(&dir, &format!("m{i}.safetensors"), |t| {
            t[tensor_id("softmax_linear.bias").unwrap()][i + 2] += bias;
        });
        let report = json(&eval(&model, &["--baseline", float_model().to_str().unwrap()]));
        let change = &report["baseline"];
        flips.push((
            change["right_to_wrong"].as_u64().unwrap(),
            change["wrong_to_right"].as_u64().unwrap(),
            change["mcnemar_p"].as_f64().unwrap(),
        ));
    }
    let script = "import sys, scipy.stats as s\nfor a in sys.argv[1:]:\n    b, c = map(int, a.split(','))\n    print(s.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0)";
    let output = Command::new(python())
        .args(["-c", script])
        .args(flips.iter().map(|(b, c, _)| format!("{b},{c}")))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let scipy: Vec<f64> = String::from_utf8(output.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    for ((b, c, ours), theirs) in flips.iter().zip(&scipy) {
        assert!((ours - theirs).abs() <= 1e-9 * theirs.max(1e-300), "{b},{c}: ours {ours}, SciPy {theirs}");
    }
    assert!(flips.iter().any(|(b, c, _)| b + c > 0), "the changes flip some images: {flips:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn non_finite_logits_fail_the_run_instead_of_scoring() {
    let dir = scratch("overflow");
    // Finite weights whose products overflow: the logits are infinite or NaN.
    let diverged = changed_model(&dir, "diverged.safetensors", |t| {
        for name in ["local3.weight", "local4.weight"] {
            t[tensor_id(name).unwrap()].iter_mut().for_each(|w| *w *= 1e30);
        }
    });
    let output = eval(&diverged, &["--min-precision", "0.05"]);
    // Refused when loaded (the layers' worst case overflows f32); a model that slipped through
    // would be refused by the evaluation at its first non-finite logit (infer's unit tests).
    assert_eq!(status(&output), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could overflow") || stderr.contains("not finite"), "{stderr}");
    assert!(output.stdout.is_empty(), "no score is printed: {}", String::from_utf8_lossy(&output.stdout));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_int8_model_is_gated_against_its_float_baseline() {
    let int8 = repo().join("models/cifar10-int8.safetensors");
    let output = eval(&int8, &["--baseline", float_model().to_str().unwrap(), "--max-drop", "0.002"]);
    assert_eq!(status(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/cifar10.manifest.json")).unwrap()).unwrap();
    assert_eq!(json(&output)["correct"], manifest["int8"]["results"]["sample"]["correct"]["cpu"]);
}

#[test]
fn float_backends_agree_exactly_and_the_gate_counts_disagreements() {
    let output = eval(&float_model(), &["--backend", "cpu,onnx"]);
    assert_eq!(status(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    let report = json(&output);
    assert_eq!(report["other_backends"][0]["backend"], "onnx");
    assert_eq!(report["other_backends"][0]["disagreements"].as_array().unwrap().len(), 0);
    assert_eq!(report["gates"][0]["gate"], "max-disagreements (onnx)");
}

#[test]
fn exit_statuses_tell_usage_and_input_errors_from_failed_gates() {
    let usage = Command::new(env!("CARGO_BIN_EXE_cifar10")).args(["eval", "--no-such-flag"]).output().unwrap();
    assert_eq!(status(&usage), 2);
    let help = Command::new(env!("CARGO_BIN_EXE_cifar10")).args(["eval", "--help"]).output().unwrap();
    assert_eq!(status(&help), 0);
    assert!(String::from_utf8_lossy(&help.stdout).contains("1 when a gate failed"));
    let missing = eval(Path::new("no-such-model.safetensors"), &[]);
    assert_eq!(status(&missing), 2);
    for (flags, says) in [
        (&["--min-precision", "1.5"][..], "--min-precision 1.5 is outside 0-1"),
        (&["--max-drop", "0.01"][..], "give --baseline"),
        (&["--max-disagreements", "3"][..], "give several"),
        (&["--limit", "15"][..], "--limit: 15 is not a positive multiple of 10"),
        (&["--backend", "cpu,cpu"][..], "names cpu twice"),
    ] {
        let output = eval(&float_model(), flags);
        assert_eq!(status(&output), 2, "{flags:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(says),
            "{flags:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_quick_subset_is_balanced_and_deterministic() {
    let first = eval(&float_model(), &["--limit", "100"]);
    let report = json(&first);
    assert_eq!(report["total"], 100);
    assert_eq!(report["subset"], 100);
    for class in report["per_class"].as_array().unwrap() {
        assert_eq!(class["total"], 10);
    }
    // An independent count: the first ten records of each class, by the library.
    let records = Records::read_file(sample().join("test_batch.bin")).unwrap();
    let mut taken = [0; 10];
    let chosen: Vec<usize> = (0..records.len())
        .filter(|&i| {
            let class = records.label(i) as usize;
            taken[class] += 1;
            taken[class] <= 10
        })
        .collect();
    let classifier = infer::Classifier::from_path(float_model()).unwrap();
    let predictions = classifier.classify_records(records.as_bytes()).unwrap();
    let correct = chosen.iter().filter(|&&i| predictions[i].class == records.label(i) as usize).count();
    assert_eq!(report["correct"], correct);
    let again = json(&eval(&float_model(), &["--limit", "100"]));
    assert_eq!(again["confusion"], report["confusion"]);
    let text = Command::new(env!("CARGO_BIN_EXE_cifar10"))
        .args(["eval", "--limit", "100", "--model"])
        .arg(float_model())
        .arg("--data-dir")
        .arg(sample())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("subset    100 images"), "the text says it is a subset");
}

#[test]
fn the_junit_report_reads_back_with_junitparser_and_the_summary_says_why() {
    let dir = scratch("junit");
    let (junit, summary) = (dir.join("eval.xml"), dir.join("summary.md"));
    let output = Command::new(env!("CARGO_BIN_EXE_cifar10"))
        .args(["eval", "--threads", "2", "--min-precision", "0.9", "--expect-correct"])
        .arg(sample_count().to_string())
        .arg("--model")
        .arg(float_model())
        .arg("--data-dir")
        .arg(sample())
        .arg("--junit")
        .arg(&junit)
        .arg("--summary")
        .arg(&summary)
        .output()
        .unwrap();
    assert_eq!(status(&output), 1);
    let script = "import sys\nfrom junitparser import JUnitXml, Failure\nxml = JUnitXml.fromfile(sys.argv[1])\n\
                  for suite in xml:\n    for case in suite:\n        \
                  print(case.name, 'failed' if any(isinstance(r, Failure) for r in case.result) else 'passed')";
    let parsed = Command::new(python()).args(["-c", script]).arg(&junit).output().unwrap();
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    let cases = String::from_utf8(parsed.stdout).unwrap();
    let lines: Vec<&str> = cases.lines().collect();
    assert_eq!(lines.len(), 2 + 10, "{cases}");
    assert_eq!(lines[0], "gate min-precision failed");
    assert_eq!(lines[1], "gate expect-correct passed");
    assert!(lines[2..].iter().all(|l| l.starts_with("class ") && l.ends_with(" passed")), "{cases}");

    let markdown = std::fs::read_to_string(&summary).unwrap();
    assert!(markdown.starts_with("## cifar10 eval: `cifar10.safetensors` FAILED"), "{markdown}");
    assert!(markdown.contains("| min-precision | **failed** |"), "{markdown}");
    assert!(markdown.contains("### Confusion matrix"), "{markdown}");

    // Reports are outputs: never an input, never each other.
    let onto_model = Command::new(env!("CARGO_BIN_EXE_cifar10"))
        .args(["eval", "--model"])
        .arg(float_model())
        .arg("--data-dir")
        .arg(sample())
        .arg("--junit")
        .arg(float_model())
        .output()
        .unwrap();
    assert_eq!(status(&onto_model), 2);
    assert!(String::from_utf8_lossy(&onto_model.stderr).contains("is the same file as the input"));
    std::fs::remove_dir_all(dir).unwrap();
}
