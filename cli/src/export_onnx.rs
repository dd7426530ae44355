//! `cifar10 export-onnx`: writes the model as a standard ONNX file.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use model_format::onnx::{self, INPUT_NAME, IR_VERSION, LOGITS_NAME, OPSET_VERSION, PROBABILITIES_NAME};
use model_format::Model;

use crate::model_source::{self, ModelSource};

/// Export a model to ONNX (input: preprocessed float32 [N,3,24,24]).
#[derive(FromArgs)]
#[argh(subcommand, name = "export-onnx")]
pub struct ExportOnnxArgs {
    /// model: a .safetensors file, float or int8 (exported as a QDQ graph), or `bundled` (the
    /// float32 model built into this binary, the default) or `bundled:int8`
    #[argh(option, default = "model_source::ModelSource::BundledFloat", from_str_fn(model_source::parse))]
    model: ModelSource,
    /// ONNX file to write (replaced atomically; never the model, a link or a non-regular file)
    #[argh(option)]
    out: PathBuf,
}

pub fn run(args: ExportOnnxArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Refused before any work: writing the ONNX file over the weights would destroy them.
    model_format::atomic::check_output("--out", &args.out, &args.model.path().into_iter().collect::<Vec<_>>())?;
    let model = args.model.load()?;
    onnx::save_model(&model, &args.out)?;
    println!(
        "wrote {} ({}, ONNX IR {IR_VERSION}, opset {OPSET_VERSION}): input `{INPUT_NAME}` {}; outputs `{LOGITS_NAME}` and `{PROBABILITIES_NAME}` float32 [N,10]",
        args.out.display(),
        if matches!(model, Model::Int8(_)) { "int8 QDQ graph" } else { "float32 graph" },
        onnx::input_contract()
    );
    Ok(ExitCode::SUCCESS)
}
