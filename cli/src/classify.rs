//! `cifar10 classify`: top-k labels and probabilities for image files (PNG/JPEG) and
//! CIFAR-10 `.bin` record files (one line per record).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use infer::{Classifier, InferError, Prediction};
use model_format::cifar::Records;
use serde_json::json;

use crate::{backend, output};

/// Classify images (PNG, JPEG) or CIFAR-10 .bin record files.
#[derive(FromArgs)]
#[argh(subcommand, name = "classify")]
pub struct ClassifyArgs {
    /// weights file (.safetensors)
    #[argh(option)]
    model: PathBuf,
    /// engine: cpu (pure Rust, default; `ndarray` is an old name for it) or onnx
    #[argh(option, default = "String::from(\"cpu\")")]
    backend: String,
    /// how many classes to list per image (default 3)
    #[argh(option, default = "3")]
    top: usize,
    /// threads per batch (default 1)
    #[argh(option, default = "1")]
    threads: usize,
    /// print JSON (one object per line) instead of text
    #[argh(switch)]
    json: bool,
    /// image files or CIFAR-10 .bin record files
    #[argh(positional)]
    files: Vec<PathBuf>,
}

/// One classified item: a file, or one record of a `.bin` file.
struct Item {
    name: String,
    record: Option<(usize, u8)>,
    prediction: Prediction,
}

pub fn run(args: ClassifyArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.files.is_empty() {
        return Err("give at least one file to classify".into());
    }
    let classifier = backend::open_classifier(&args.backend, &args.model, args.threads.max(1))?;
    let mut failed = false;
    for file in &args.files {
        match classify_file(&classifier, file) {
            Ok(items) => {
                let text: String = items.iter().map(|item| format_item(item, &args)).collect();
                output::print(&text)?;
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn classify_file(classifier: &Classifier, path: &Path) -> Result<Vec<Item>, InferError> {
    let name = path.display().to_string();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin")) {
        let records = Records::read_file(path)?;
        let predictions = classifier.classify_records(records.as_bytes())?;
        return Ok(predictions
            .into_iter()
            .enumerate()
            .map(|(i, prediction)| Item { name: name.clone(), record: Some((i, records.label(i))), prediction })
            .collect());
    }
    Ok(vec![Item { name, record: None, prediction: classifier.classify_image_file(path)? }])
}

/// One output line for `item`.
fn format_item(item: &Item, args: &ClassifyArgs) -> String {
    let top = item.prediction.top_k(args.top);
    if args.json {
        let top: Vec<_> =
            top.iter().map(|r| json!({ "class": r.class, "label": r.label, "probability": r.probability })).collect();
        let mut line =
            json!({ "file": item.name, "class": item.prediction.class, "label": item.prediction.label, "top": top });
        if let Some((index, stored)) = item.record {
            line["record"] = json!(index);
            line["stored_label"] = json!(stored);
        }
        return format!("{line}\n");
    }
    let name = match item.record {
        Some((index, _)) => format!("{}#{index}", item.name),
        None => item.name.clone(),
    };
    let ranked: Vec<String> = top.iter().map(|r| format!("{} {:.1}%", r.label, 100.0 * r.probability)).collect();
    format!("{name}: {}\n", ranked.join(", "))
}
