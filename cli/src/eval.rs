//! `cifar10 eval`: precision@1 over the CIFAR-10 test file, per-class accuracy, the
//! confusion matrix and the throughput; and for CI pipelines, gates (exit status 1 when one
//! fails), a paired comparison with a baseline model, agreement between backends, a quick
//! class-balanced subset, and JUnit / Markdown reports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use infer::evaluation::{accuracy, balanced_subset, compare, evaluate, Comparison, Evaluation, GateResult, Gates};
use infer::Classifier;
use model_format::cifar::Records;
use serde_json::json;

use cifar10_cli::plot::{self, ConfusionChart};
use cifar10_cli::progress::{Mode, Progress};

use crate::eval_data::{self, Source, TestImages};
use crate::model_source::{self, ModelSource};
use crate::report::{self, Report};
use crate::{backend, output};

/// Exit status when a gate failed (errors and usage mistakes exit with 2).
pub const GATE_FAILED: u8 = 1;

/// Evaluate a model on the CIFAR-10 test set, optionally gating on the result.
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "eval",
    note = "Exit status: 0 when it ran and every gate passed (or none was set), 1 when a gate failed, 2 for bad input or usage.",
    note = "With any gate, --junit or --summary set, missing data is an error, never the bundled sample."
)]
pub struct EvalArgs {
    /// weights: a .safetensors file (float32 or int8), or `bundled` (the float32 model built into this binary,
    /// the default) or `bundled:int8`
    #[argh(option, default = "model_source::ModelSource::BundledFloat", from_str_fn(model_source::parse))]
    model: ModelSource,
    /// cifar-10-batches-bin folder (default: $CIFAR10_DATA_DIR, then
    /// ../shared/cifar10/cifar-10-batches-bin; with none of them and $CI unset, the 1,000 test
    /// images bundled in the binary, said so in the output)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// engine: cpu (pure Rust, default; `ndarray` is an old name for it) or onnx; a comma list
    /// (cpu,onnx) evaluates with each and checks that they agree (--max-disagreements)
    #[argh(option, default = "String::from(\"cpu\")")]
    backend: String,
    /// print one JSON object instead of tables
    #[argh(switch)]
    json: bool,
    /// threads per batch, 1 to 256 (default: all cores, at most 256)
    #[argh(option, default = "backend::default_threads().min(infer::error::MAX_THREADS)")]
    threads: usize,
    /// images per engine call (default 128)
    #[argh(option, default = "128")]
    batch_size: usize,
    /// also draw the confusion matrix and per-class accuracy into this file: PNG, or SVG when
    /// the name ends in .svg (replaced atomically; never an input, a link or a non-regular file)
    #[argh(option)]
    plot: Option<PathBuf>,
    /// gate: fail when precision@1 is below this (0-1)
    #[argh(option)]
    min_precision: Option<f64>,
    /// gate: fail unless exactly this many images are right (a backend and kernel class give
    /// the same bits on every machine, so an exact count is a fair check)
    #[argh(option)]
    expect_correct: Option<usize>,
    /// a model to compare with on the same images, with the first backend: per-class counts
    /// before and after, images that flipped, and McNemar's exact test on the flips
    /// (a file, `bundled` or `bundled:int8`)
    #[argh(option, from_str_fn(model_source::parse))]
    baseline: Option<ModelSource>,
    /// gate (needs --baseline): fail when precision@1 fell by more than this (absolute, 0-1)
    #[argh(option)]
    max_drop: Option<f64>,
    /// gate (needs --baseline): fail when worse than the baseline with McNemar's exact
    /// p-value below this (0-1, e.g. 0.05): worse beyond noise
    #[argh(option)]
    significance: Option<f64>,
    /// gate (with several backends): fail when another backend's predictions differ from the
    /// first's on more than this many images (default 0)
    #[argh(option)]
    max_disagreements: Option<usize>,
    /// evaluate a class-balanced subset for a quick check: the first N/10 test images of each
    /// class, in file order (N a positive multiple of 10)
    #[argh(option)]
    limit: Option<usize>,
    /// write a JUnit XML report: one test case per gate and per class (replaced atomically)
    #[argh(option)]
    junit: Option<PathBuf>,
    /// write a Markdown summary, e.g. to $GITHUB_STEP_SUMMARY (replaced atomically)
    #[argh(option)]
    summary: Option<PathBuf>,
}

/// What one run measured, before it is reported.
struct Outcome {
    result: Evaluation,
    backends: Vec<(String, Comparison)>,
    baseline: Option<Comparison>,
    gates: Vec<GateResult>,
    per_second: f64,
}

pub fn run(mut args: EvalArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let gates = check_flags(&args)?;
    let backends = backend_names(&args.backend)?;
    let classifiers = backends
        .iter()
        .map(|name| backend::open_classifier(name, &args.model, args.threads))
        .collect::<Result<Vec<_>, _>>()?;
    // Report the engine's own name (`cpu`), also when it was chosen by its old name.
    args.backend = classifiers[0].engine().name().to_string();
    let baseline = match &args.baseline {
        Some(source) => Some(backend::open_classifier(&backends[0], source, args.threads)?),
        None => None,
    };
    let strict = gates.any() || args.junit.is_some() || args.summary.is_some();
    let TestImages { mut records, source, files } = eval_data::open(args.data_dir.as_deref(), strict)?;
    // Before minutes of work, not after; the data folder's files are inputs too.
    let mut inputs: Vec<PathBuf> = args.model.path().map(Path::to_path_buf).into_iter().collect();
    inputs.extend(args.baseline.as_ref().and_then(|b| b.path()).map(Path::to_path_buf));
    inputs.extend(files);
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    check_outputs(&args, &inputs)?;
    if let Some(n) = args.limit {
        records = balanced_subset(&records, n).map_err(|e| format!("--limit: {e}"))?;
    }

    let outcome = measure(&classifiers, baseline.as_ref(), &records, &gates, args.batch_size)?;
    let names = classifiers[0].class_names();
    let text = if args.json {
        format!("{}\n", report_json(&outcome, names, &args, &source))
    } else {
        report_text(&outcome, names, &args, &source)?
    };
    output::print(&text)?;
    if let Some(path) = &args.plot {
        save_plot(&outcome.result, names, &args, &source, path, &inputs)?;
    }
    write_reports(&outcome, names, &args, &source)?;
    for gate in outcome.gates.iter().filter(|g| !g.passed) {
        eprintln!("eval: gate {} failed: {}", gate.gate, gate.detail);
    }
    Ok(if outcome.gates.iter().all(|g| g.passed) { ExitCode::SUCCESS } else { ExitCode::from(GATE_FAILED) })
}

/// The gates, after checking every flag's range and that the flags a gate needs are there.
fn check_flags(args: &EvalArgs) -> Result<Gates, String> {
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    infer::error::check_threads("--threads", args.threads).map_err(|e| e.to_string())?;
    let fraction = |flag: &str, value: Option<f64>| match value {
        Some(v) if !(0.0..=1.0).contains(&v) => Err(format!("--{flag} {v} is outside 0-1")),
        _ => Ok(value),
    };
    let several_backends = args.backend.contains(',');
    if args.baseline.is_none() && (args.max_drop.is_some() || args.significance.is_some()) {
        return Err("--max-drop and --significance compare with a baseline: give --baseline MODEL".into());
    }
    if args.max_disagreements.is_some() && !several_backends {
        return Err("--max-disagreements compares backends: give several, e.g. --backend cpu,onnx".into());
    }
    Ok(Gates {
        min_precision: fraction("min-precision", args.min_precision)?,
        expect_correct: args.expect_correct,
        max_drop: fraction("max-drop", args.max_drop)?,
        significance: fraction("significance", args.significance)?,
        max_disagreements: if several_backends { Some(args.max_disagreements.unwrap_or(0)) } else { None },
    })
}

/// `cpu,onnx` → `["cpu", "onnx"]`, each named once.
fn backend_names(list: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        return Err(format!("--backend `{list}`: an empty name (expected {} or a comma list)", backend::BACKENDS));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!("--backend `{list}` names {name} twice"));
        }
    }
    Ok(names)
}

/// Every file eval writes may be written: not an input, not a link or folder, and no two
/// reports in one file.
fn check_outputs(args: &EvalArgs, inputs: &[&Path]) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(path) = &args.plot {
        plot::check_output(path, inputs)?;
    }
    let reports = [("--junit", &args.junit), ("--summary", &args.summary), ("--plot", &args.plot)];
    let outputs: Vec<(&str, &Path)> = reports.iter().filter_map(|(flag, p)| Some((*flag, p.as_deref()?))).collect();
    for (i, (flag, path)) in outputs.iter().enumerate() {
        model_format::atomic::check_output(flag, path, inputs)?;
        let same = |other: &Path| other == *path || model_format::atomic::check_not_an_input(path, &[other]).is_err();
        if let Some((other, _)) = outputs[..i].iter().find(|(_, other)| same(other)) {
            return Err(format!("{flag} {} is also {other}: give each report its own file", path.display()).into());
        }
    }
    Ok(())
}

/// Evaluates with every backend (and the baseline), compares, and checks the gates.
fn measure(
    classifiers: &[Classifier],
    baseline: Option<&Classifier>,
    records: &Records,
    gates: &Gates,
    batch_size: usize,
) -> Result<Outcome, infer::InferError> {
    let runs = classifiers.len() + usize::from(baseline.is_some());
    let progress = Progress::new(Mode::for_stderr(), "evaluating", "images", (runs * records.len()) as u64);
    let mut done = 0;
    let mut run = |classifier: &Classifier| {
        let result = evaluate(classifier.engine(), records, batch_size, |n| progress.set_position((done + n) as u64));
        done += records.len();
        result
    };
    let start = Instant::now();
    let result = run(&classifiers[0])?;
    let per_second = result.total() as f64 / start.elapsed().as_secs_f64();
    let mut backends = Vec::new();
    for classifier in &classifiers[1..] {
        let other = run(classifier)?;
        backends.push((classifier.engine().name().to_string(), compare(&result, &other)?));
    }
    let baseline = match baseline {
        Some(classifier) => Some(compare(&run(classifier)?, &result)?),
        None => None,
    };
    progress.finish();
    let gates = gates.check(&result, baseline.as_ref(), &backends);
    Ok(Outcome { result, backends, baseline, gates, per_second })
}

fn write_reports(
    outcome: &Outcome,
    names: &[String],
    args: &EvalArgs,
    source: &Source,
) -> Result<(), Box<dyn std::error::Error>> {
    let report = Report {
        model_name: args.model.file_name(),
        data: source.describe(),
        subset: args.limit,
        backend: &args.backend,
        result: &outcome.result,
        class_names: names,
        baseline: outcome.baseline.as_ref(),
        baseline_name: args.baseline.as_ref().map(ModelSource::file_name),
        backends: &outcome.backends,
        gates: &outcome.gates,
        plot: args.plot.as_deref(),
    };
    let files =
        [(&args.junit, report::junit::render as fn(&Report) -> String), (&args.summary, report::summary::render)];
    for (path, render) in files {
        if let Some(path) = path {
            model_format::atomic::write_file(path, render(&report).as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn save_plot(
    result: &Evaluation,
    names: &[String],
    args: &EvalArgs,
    source: &Source,
    path: &Path,
    inputs: &[&Path],
) -> Result<(), plot::PlotError> {
    let images = match source {
        Source::Folder(_) => "CIFAR-10 test images",
        Source::BundledSample => "the first 1,000 CIFAR-10 test images (bundled sample)",
    };
    let title = format!(
        "{} on {images}: precision@1 {:.4} ({}/{})",
        args.model.file_name(),
        result.precision_at_1(),
        result.correct(),
        result.total()
    );
    let chart = ConfusionChart { confusion: &result.confusion, class_names: names, title };
    plot::save(&chart, path, inputs)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn report_json(outcome: &Outcome, names: &[String], args: &EvalArgs, data: &Source) -> serde_json::Value {
    let result = &outcome.result;
    let per_class: Vec<_> = (0..names.len())
        .map(|c| {
            let (correct, total) = result.class_counts(c);
            let mut class = json!({ "class": c, "label": names[c], "correct": correct, "total": total,
                    "accuracy": accuracy(correct, total) });
            if let Some(change) = &outcome.baseline {
                class["baseline_correct"] = json!(change.per_class[c].0);
            }
            class
        })
        .collect();
    let gates: Vec<_> =
        outcome.gates.iter().map(|g| json!({ "gate": g.gate, "passed": g.passed, "detail": g.detail })).collect();
    let backends: Vec<_> = outcome
        .backends
        .iter()
        .map(|(name, change)| json!({ "backend": name, "disagreements": change.disagreements }))
        .collect();
    let baseline = outcome.baseline.as_ref().map(|change| {
        json!({
            "model": args.baseline.as_ref().map(ModelSource::describe),
            "precision_change": change.precision_change(),
            "right_to_wrong": change.right_to_wrong,
            "wrong_to_right": change.wrong_to_right,
            "mcnemar_p": change.p_value,
        })
    });
    json!({
        "correct": result.correct(),
        "total": result.total(),
        "precision_at_1": result.precision_at_1(),
        "images_per_second": outcome.per_second,
        "backend": args.backend,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "model": args.model.describe(),
        "data_dir": match data { Source::Folder(dir) => json!(dir.display().to_string()), Source::BundledSample => json!(null) },
        "data": data.describe(),
        "subset": args.limit,
        "passed": outcome.gates.iter().all(|g| g.passed),
        "gates": gates,
        "baseline": baseline,
        "other_backends": backends,
        "per_class": per_class,
        "confusion": result.confusion,
    })
}

fn report_text(outcome: &Outcome, names: &[String], args: &EvalArgs, data: &Source) -> Result<String, std::fmt::Error> {
    let result = &outcome.result;
    let mut out = String::new();
    writeln!(out, "model     {}", args.model.describe())?;
    writeln!(out, "data      {}", data.describe())?;
    if let Some(n) = args.limit {
        writeln!(out, "subset    {n} images: the first {} of each class (a quick check, not the whole set)", n / 10)?;
    }
    writeln!(out, "backend   {} ({} threads, batch {})", args.backend, args.threads, args.batch_size)?;
    writeln!(out, "precision @ 1 = {:.4} ({}/{})", result.precision_at_1(), result.correct(), result.total())?;
    writeln!(out, "throughput    = {:.0} images/s\n", outcome.per_second)?;
    for (name, change) in &outcome.backends {
        writeln!(out, "{name:<9} predicts differently on {} images", change.disagreements.len())?;
    }
    if let Some(change) = &outcome.baseline {
        let path = args.baseline.as_ref().map(ModelSource::file_name).unwrap_or_default();
        writeln!(
            out,
            "baseline  {path}: precision {:+.4}, {} right→wrong, {} wrong→right, McNemar exact p = {:.4}\n",
            change.precision_change(),
            change.right_to_wrong,
            change.wrong_to_right,
            change.p_value
        )?;
    }
    for gate in &outcome.gates {
        writeln!(out, "gate {:<16} {}  {}", gate.gate, if gate.passed { "passed" } else { "FAILED" }, gate.detail)?;
    }
    if !outcome.gates.is_empty() {
        writeln!(out)?;
    }
    write_classes(&mut out, outcome, names)?;
    write_confusion(&mut out, result, names)?;
    Ok(out)
}

fn write_classes(out: &mut String, outcome: &Outcome, names: &[String]) -> std::fmt::Result {
    let with_baseline = outcome.baseline.is_some();
    write!(out, "{:<12} {:>8} {:>12}", "class", "accuracy", "correct")?;
    writeln!(out, "{}", if with_baseline { format!(" {:>12}", "baseline") } else { String::new() })?;
    for (c, name) in names.iter().enumerate() {
        let (correct, total) = outcome.result.class_counts(c);
        write!(out, "{name:<12} {:>8.4} {:>12}", accuracy(correct, total), format!("{correct}/{total}"))?;
        match &outcome.baseline {
            Some(change) => writeln!(out, " {:>12}", format!("{}/{total}", change.per_class[c].0))?,
            None => writeln!(out)?,
        }
    }
    Ok(())
}

fn write_confusion(out: &mut String, result: &Evaluation, names: &[String]) -> std::fmt::Result {
    writeln!(out, "\nconfusion matrix (rows: true class, columns: predicted)")?;
    write!(out, "{:<12}", "")?;
    for name in names {
        write!(out, " {name:>6.6}")?;
    }
    writeln!(out)?;
    for (name, row) in names.iter().zip(&result.confusion) {
        write!(out, "{name:<12}")?;
        for count in row {
            write!(out, " {count:>6}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
