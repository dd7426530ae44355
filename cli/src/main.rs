//! `cifar10`: evaluate, classify and serve the CIFAR-10 tutorial model.

mod backend;
mod classify;
mod data;
mod eval;
#[cfg(feature = "onnx")]
mod export_onnx;
mod output;
mod quantize;
#[cfg(feature = "serve")]
mod serve;

use std::process::ExitCode;

use argh::FromArgs;

/// Run the CIFAR-10 tutorial model on CPU.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Eval(eval::EvalArgs),
    Classify(classify::ClassifyArgs),
    Data(data::DataCommand),
    Quantize(quantize::QuantizeArgs),
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    #[cfg(feature = "onnx")]
    ExportOnnx(export_onnx::ExportOnnxArgs),
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Data(args) => data::run(args),
        Command::Quantize(args) => quantize::run(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(args),
        #[cfg(feature = "onnx")]
        Command::ExportOnnx(args) => export_onnx::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
