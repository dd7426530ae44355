//! `cifar10`: evaluate, classify and serve the CIFAR-10 tutorial model.

mod backend;
mod classify;
mod data;
mod eval;
mod eval_data;
#[cfg(feature = "onnx")]
mod export_onnx;
mod model_source;
mod output;
mod quantize;
mod report;
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

/// Exit status for bad input or usage (1 is `eval`'s failed gate).
const USAGE_OR_INPUT_ERROR: u8 = 2;

/// Parses the command line; `--help` exits 0, a usage mistake exits 2 (argh's own `from_env`
/// would exit 1, the status `eval` keeps for a failed gate).
fn parse() -> Result<Cli, ExitCode> {
    let args: Vec<String> = match std::env::args_os().map(|a| a.into_string()).collect() {
        Ok(args) => args,
        Err(arg) => {
            eprintln!("error: an argument is not valid UTF-8: {}", arg.to_string_lossy());
            return Err(ExitCode::from(USAGE_OR_INPUT_ERROR));
        }
    };
    let name = args.first().map_or("cifar10", |a| a.rsplit('/').next().unwrap_or(a));
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    Cli::from_args(&[name], &rest).map_err(|exit| match exit.status {
        Ok(()) => {
            println!("{}", exit.output);
            ExitCode::SUCCESS
        }
        Err(()) => {
            eprintln!("{}\nRun {name} --help for more information.", exit.output);
            ExitCode::from(USAGE_OR_INPUT_ERROR)
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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
            ExitCode::from(USAGE_OR_INPUT_ERROR)
        }
    }
}
