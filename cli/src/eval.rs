//! `cifar10 eval`: precision@1 over the CIFAR-10 test file, per-class accuracy, the
//! confusion matrix and the throughput.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use infer::evaluation::{evaluate, Evaluation};
use model_format::cifar::Dataset;
use serde_json::json;

use cifar10_cli::plot::{self, ConfusionChart};
use cifar10_cli::progress::{Mode, Progress};

use crate::{backend, output};

/// Evaluate a model on the CIFAR-10 test set.
#[derive(FromArgs)]
#[argh(subcommand, name = "eval")]
pub struct EvalArgs {
    /// weights file (.safetensors)
    #[argh(option)]
    model: PathBuf,
    /// cifar-10-batches-bin folder (default: $CIFAR10_DATA_DIR, then ../shared/cifar10/cifar-10-batches-bin)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// engine: cpu (pure Rust, default; `ndarray` is an old name for it) or onnx
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
}

pub fn run(mut args: EvalArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    infer::error::check_threads("--threads", args.threads)?;
    let classifier = backend::open_classifier(&args.backend, &args.model, args.threads)?;
    // Report the engine's own name (`cpu`), also when it was chosen by its old name.
    args.backend = classifier.engine().name().to_string();
    let dataset = Dataset::locate(args.data_dir.as_deref())?;
    if let Some(path) = &args.plot {
        // Before minutes of work, not after; the data folder's files are inputs too.
        plot::check_output(path, &as_paths(&inputs(&args, &dataset)))?;
    }
    let records = dataset.test()?;
    let progress = Progress::new(Mode::for_stderr(), "evaluating", "images", records.len() as u64);
    let start = Instant::now();
    let result = evaluate(classifier.engine(), &records, args.batch_size, |done| progress.set_position(done as u64))?;
    let seconds = start.elapsed().as_secs_f64();
    progress.finish();
    let per_second = result.total() as f64 / seconds;
    let names = classifier.class_names();
    let text = if args.json {
        format!("{}\n", report_json(&result, names, per_second, &args, &dataset))
    } else {
        report_text(&result, names, per_second, &args, &dataset)?
    };
    output::print(&text)?;
    if let Some(path) = &args.plot {
        save_plot(&result, names, &args, path, &inputs(&args, &dataset))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `eval` reads: the model and the data folder's files.
fn inputs(args: &EvalArgs, dataset: &Dataset) -> Vec<PathBuf> {
    std::iter::once(args.model.clone()).chain(dataset.files()).collect()
}

fn as_paths(paths: &[PathBuf]) -> Vec<&Path> {
    paths.iter().map(PathBuf::as_path).collect()
}

fn save_plot(
    result: &Evaluation,
    names: &[String],
    args: &EvalArgs,
    path: &Path,
    inputs: &[PathBuf],
) -> Result<(), plot::PlotError> {
    let model = args.model.file_name().map_or_else(|| args.model.display().to_string(), |n| n.to_string_lossy().into());
    let title = format!(
        "{model} on CIFAR-10 test images: precision@1 {:.4} ({}/{})",
        result.precision_at_1(),
        result.correct(),
        result.total()
    );
    let chart = ConfusionChart { confusion: &result.confusion, class_names: names, title };
    plot::save(&chart, path, &as_paths(inputs))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn report_json(
    result: &Evaluation,
    names: &[String],
    per_second: f64,
    args: &EvalArgs,
    data: &Dataset,
) -> serde_json::Value {
    let per_class: Vec<_> = (0..names.len())
        .map(|c| {
            let (correct, total) = result.class_counts(c);
            json!({ "class": c, "label": names[c], "correct": correct, "total": total,
                    "accuracy": if total == 0 { 0.0 } else { correct as f64 / total as f64 } })
        })
        .collect();
    json!({
        "correct": result.correct(),
        "total": result.total(),
        "precision_at_1": result.precision_at_1(),
        "images_per_second": per_second,
        "backend": args.backend,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "model": args.model.display().to_string(),
        "data_dir": data.dir.display().to_string(),
        "per_class": per_class,
        "confusion": result.confusion,
    })
}

fn report_text(
    result: &Evaluation,
    names: &[String],
    per_second: f64,
    args: &EvalArgs,
    data: &Dataset,
) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    writeln!(out, "model     {}", args.model.display())?;
    writeln!(out, "data      {}", data.dir.display())?;
    writeln!(out, "backend   {} ({} threads, batch {})", args.backend, args.threads, args.batch_size)?;
    writeln!(out, "precision @ 1 = {:.4} ({}/{})", result.precision_at_1(), result.correct(), result.total())?;
    writeln!(out, "throughput    = {per_second:.0} images/s\n")?;
    writeln!(out, "{:<12} {:>8} {:>12}", "class", "accuracy", "correct")?;
    for (c, name) in names.iter().enumerate() {
        let (correct, total) = result.class_counts(c);
        let accuracy = if total == 0 { 0.0 } else { correct as f64 / total as f64 };
        writeln!(out, "{name:<12} {accuracy:>8.4} {:>12}", format!("{correct}/{total}"))?;
    }
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
    Ok(out)
}
