//! `cifar10 serve`: the model over HTTP (KServe v2 / Open Inference Protocol, Triton's
//! binary extension, a plain image endpoint, `/metrics`, a page at `/`). The server lives in
//! the `serve` crate; this file turns flags into its configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use model_format::Weights;
use serve::{Limits, ModelCard, ServeConfig, Server};

use crate::backend;

/// Serve the model over HTTP (KServe v2 REST; stops cleanly on SIGTERM or Ctrl-C).
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// weights file (.safetensors)
    #[argh(option)]
    model: PathBuf,
    /// address to listen on (default 127.0.0.1:8080)
    #[argh(option, default = "String::from(\"127.0.0.1:8080\")")]
    addr: String,
    /// engine: cpu (pure Rust, default; `ndarray` is an old name for it) or onnx
    #[argh(option, default = "String::from(\"cpu\")")]
    backend: String,
    /// model name in the URLs (default cifar10)
    #[argh(option, default = "String::from(\"cifar10\")")]
    name: String,
    /// most images per engine run, and per request (default 64)
    #[argh(option, default = "64")]
    max_batch: usize,
    /// longest a request waits for others to share its batch, in ms (default 2)
    #[argh(option, default = "2")]
    max_wait_ms: u64,
    /// threads per engine run (default 1)
    #[argh(option, default = "1")]
    threads: usize,
    /// engine runs in parallel, each on its own batch (default: cores / threads)
    #[argh(option)]
    workers: Option<usize>,
    /// threads parsing HTTP (default 2)
    #[argh(option, default = "2")]
    http_threads: usize,
    /// largest request body in bytes (default 16 MiB)
    #[argh(option, default = "16 << 20")]
    max_body_bytes: usize,
    /// most images waiting for the engine before requests get 503 (default 1024)
    #[argh(option, default = "1024")]
    max_queue: usize,
    /// longest a request may take before it gets 504, in ms (default 30000)
    #[argh(option, default = "30_000")]
    timeout_ms: u64,
    /// no log line per request
    #[argh(switch)]
    quiet: bool,
}

/// Largest `--max-batch` accepted: far beyond any useful batch, and small enough that the
/// batch-size histogram's power-of-two buckets cannot overflow.
const MAX_BATCH_LIMIT: usize = 1 << 16;

pub fn run(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.max_batch == 0 || args.threads == 0 || args.http_threads == 0 {
        return Err("--max-batch, --threads and --http-threads must be at least 1".into());
    }
    if args.max_batch > MAX_BATCH_LIMIT {
        return Err(format!("--max-batch {} is above the limit of {MAX_BATCH_LIMIT}", args.max_batch).into());
    }
    let weights = Weights::load(&args.model)?;
    let engine = backend::engine_for(&args.backend, &weights, args.threads)?;
    let workers = args.workers.unwrap_or_else(|| (backend::default_threads() / args.threads).max(1));
    let config = ServeConfig {
        addr: args.addr.clone(),
        model_name: args.name.clone(),
        class_names: weights.metadata.class_names.clone(),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_batch: args.max_batch,
            max_queued_images: args.max_queue.max(args.max_batch),
            request_timeout: Duration::from_millis(args.timeout_ms),
        },
        max_wait: Duration::from_millis(args.max_wait_ms),
        engine_workers: workers,
        http_threads: args.http_threads,
        log_requests: !args.quiet,
        handle_signals: true,
        model_card: Some(ModelCard::from_metadata(&weights.metadata, args.model.display().to_string())),
    };
    let server = Server::start(config, Arc::from(engine))?;
    eprintln!(
        "serving {} as '{}' on http://{} (page at /; {} backend, {workers} engine worker(s) × {} thread(s), batches up to {} images / {} ms)",
        args.model.display(),
        args.name,
        server.addr(),
        args.backend,
        args.threads,
        args.max_batch,
        args.max_wait_ms,
    );
    server.wait()?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}
