//! `cifar10 classify`: top-k labels and probabilities for image files (PNG/JPEG) and
//! CIFAR-10 `.bin` record files (one line per record).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use cifar10_cli::plot::{self, TopKChart};
use infer::image_input::read_hwc;
use infer::{Classifier, InferError, Prediction};
use model_format::arch::{IMAGE_SIZE, INPUT_CHANNELS};
use model_format::cifar::Records;
use model_format::NUM_CLASSES;
use ndarray::ArrayView4;
use serde_json::json;

use crate::model_source::{self, ModelSource};
use crate::{backend, output};

/// Classify images (PNG, JPEG) or CIFAR-10 .bin record files.
#[derive(FromArgs)]
#[argh(subcommand, name = "classify")]
pub struct ClassifyArgs {
    /// weights: a .safetensors file, or `bundled` (the float32 model built into this binary,
    /// the default) or `bundled:int8`
    #[argh(option, default = "model_source::ModelSource::BundledFloat", from_str_fn(model_source::parse))]
    model: ModelSource,
    /// engine: cpu (pure Rust, default; `ndarray` is an old name for it) or onnx
    #[argh(option, default = "String::from(\"cpu\")")]
    backend: String,
    /// how many classes to list per image, 1 to 10 (default 3)
    #[argh(option, default = "3")]
    top: usize,
    /// threads per batch, 1 to 256 (default 1)
    #[argh(option, default = "1")]
    threads: usize,
    /// print JSON (one object per line) instead of text
    #[argh(switch)]
    json: bool,
    /// also draw the image as the model sees it beside its top-5 bars into this file: PNG,
    /// or SVG when the name ends in .svg (one image file only; replaced atomically)
    #[argh(option)]
    plot: Option<PathBuf>,
    /// image files or CIFAR-10 .bin record files
    #[argh(positional)]
    files: Vec<PathBuf>,
}

/// Classes `--plot` draws bars for.
const PLOT_TOP: usize = 5;

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
    if !(1..=NUM_CLASSES).contains(&args.top) {
        return Err(format!("--top must be between 1 and {NUM_CLASSES}, got {}", args.top).into());
    }
    infer::error::check_threads("--threads", args.threads)?;
    if let Some(path) = &args.plot {
        check_plot_args(&args, path)?;
    }
    let classifier = backend::open_classifier(&args.backend, &args.model, args.threads)?;
    if let Some(path) = &args.plot {
        return plot_one(&classifier, &args, path);
    }
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

/// `--plot` draws one image: refuse anything else before loading the model.
fn check_plot_args(args: &ClassifyArgs, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    match args.files.as_slice() {
        [file] if !is_records_file(file) => Ok(plot::check_output(path, &inputs(&args.model, file)).map(|_| ())?),
        _ => Err("--plot draws one image: give exactly one PNG or JPEG file (not a .bin record file)".into()),
    }
}

/// Classifies the one image of `--plot`, prints its line and draws the chart.
fn plot_one(classifier: &Classifier, args: &ClassifyArgs, path: &Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let file = &args.files[0];
    // The pixels drawn are the ones classified: decoded and scaled once.
    let hwc = read_hwc(file)?;
    let image = ArrayView4::from_shape((1, IMAGE_SIZE, IMAGE_SIZE, INPUT_CHANNELS), &hwc)?;
    let prediction = classifier.classify_array(image)?.remove(0);
    let item = Item { name: file.display().to_string(), record: None, prediction };
    output::print(&format_item(&item, args))?;
    let ranked = item.prediction.top_k(PLOT_TOP).into_iter().map(|r| (r.label, r.probability)).collect();
    let title = format!(
        "{}: {}",
        file.file_name().map_or(item.name.clone(), |n| n.to_string_lossy().into()),
        item.prediction.label
    );
    plot::save(&TopKChart { image_hwc: &hwc, ranked, title }, path, &inputs(&args.model, file))?;
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn is_records_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin"))
}

fn classify_file(classifier: &Classifier, path: &Path) -> Result<Vec<Item>, InferError> {
    let name = path.display().to_string();
    if is_records_file(path) {
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

/// The files `--plot` must not replace: the model's (unless it is built in) and the image's.
fn inputs<'a>(model: &'a ModelSource, image: &'a Path) -> Vec<&'a Path> {
    model.path().into_iter().chain([image]).collect()
}
