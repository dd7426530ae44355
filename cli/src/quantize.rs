//! `cifar10 quantize`: post-training static quantization of a float model into the int8
//! variant (see `model_format::quantized`), calibrated on training images.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use model_format::cifar::Dataset;
use model_format::quantize::{self, DEFAULT_CALIBRATION_IMAGES};
use model_format::Model;

use crate::model_source::{self, ModelSource};

/// Quantize a float model to int8 (weights per output channel, activations per tensor).
#[derive(FromArgs)]
#[argh(subcommand, name = "quantize")]
pub struct QuantizeArgs {
    /// float weights: a .safetensors file, or `bundled` (the float32 model built into this
    /// binary, the default)
    #[argh(option, default = "model_source::ModelSource::BundledFloat", from_str_fn(model_source::parse))]
    model: ModelSource,
    /// int8 model file to write (replaced atomically; never an input, a link or a non-regular
    /// file)
    #[argh(option)]
    out: PathBuf,
    /// how many training images calibrate the activation ranges: the first N of
    /// data_batch_1.bin, then data_batch_2.bin, … (default 1000; 1 to 50000)
    #[argh(option, default = "DEFAULT_CALIBRATION_IMAGES")]
    calibration_images: usize,
    /// cifar-10-batches-bin folder (default: $CIFAR10_DATA_DIR, then ../shared/cifar10/cifar-10-batches-bin)
    #[argh(option)]
    data_dir: Option<PathBuf>,
}

pub fn run(args: QuantizeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Refused before any work: the output must not replace the model it is made from.
    model_format::atomic::check_output("--out", &args.out, &args.model.path().into_iter().collect::<Vec<_>>())?;
    let weights = match args.model.load()? {
        Model::Float(weights) => weights,
        Model::Int8(_) => {
            return Err(format!(
                "--model {}: this is already an int8 model; quantize takes a float32 one",
                args.model.describe()
            )
            .into())
        }
    };
    // Nor any file of the data folder it calibrates on (checked again: the folder is known now).
    let dataset = Dataset::locate(args.data_dir.as_deref())?;
    let inputs: Vec<PathBuf> = args.model.path().map(Path::to_path_buf).into_iter().chain(dataset.files()).collect();
    let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
    model_format::atomic::check_output("--out", &args.out, &inputs)?;
    let (images, description) = quantize::calibration_images(&dataset, args.calibration_images)?;
    let start = Instant::now();
    let int8 = quantize::quantize(&weights, &images, &description)?;
    int8.save(&args.out)?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} (int8, {bytes} bytes, digest {}) in {:.1} s; calibration: {description}",
        args.out.display(),
        int8.digest(),
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
