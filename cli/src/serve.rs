//! `cifar10 serve`: the model over HTTP (KServe v2 / Open Inference Protocol, Triton's
//! binary extension, a plain image endpoint, `/metrics`, a page at `/`). The server lives in
//! the `serve` crate; this file turns flags into its configuration.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use serve::limits::Bound;
use serve::{AllowedHosts, Limits, ModelCard, ServeConfig, Server};

use crate::backend;
use crate::model_source::{self, ModelSource};

/// Serve the model over HTTP (KServe v2 REST; stops cleanly on SIGTERM or Ctrl-C).
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// weights: a .safetensors file, or `bundled` (the float32 model built into this binary,
    /// the default) or `bundled:int8`
    #[argh(option, default = "model_source::ModelSource::BundledFloat", from_str_fn(model_source::parse))]
    model: ModelSource,
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
    /// threads parsing HTTP (default 1: the cheapest per request; more for many busy
    /// connections)
    #[argh(option, default = "1")]
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
    /// longest a client may take to send a request's headers, in ms; also how long an idle
    /// connection stays open (default 10000)
    #[argh(option, default = "10_000")]
    header_timeout_ms: u64,
    /// most connections open at once (default 256)
    #[argh(option, default = "256")]
    max_connections: usize,
    /// most requests with a body over 32 KiB, or an image, read and parsed or decoded at
    /// once (default 2)
    #[argh(option, default = "2")]
    max_large_bodies: usize,
    /// the Host names answered: `auto` (the default: only loopback names when --addr is a
    /// loopback address, any name otherwise), `*`, or a comma-separated list such as
    /// `api.example.com,.internal` (a leading '.' allows subdomains). Health probes and
    /// /metrics answer any name.
    #[argh(option, default = "AllowedHosts::Auto", from_str_fn(allowed_hosts))]
    allowed_hosts: AllowedHosts,
    /// no log line per request
    #[argh(switch)]
    quiet: bool,
}

fn allowed_hosts(text: &str) -> Result<AllowedHosts, String> {
    text.parse()
}

/// `--threads`: threads inside each engine run.
const THREADS: Bound = Bound { field: "threads", flag: "--threads", min: 1, max: infer::error::MAX_THREADS as u64 };

pub fn run(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Every flag is checked, against the server's own ranges, before the model is loaded.
    THREADS.check(args.threads as u64)?;
    let workers = args.workers.unwrap_or_else(|| (backend::default_threads() / args.threads).max(1));
    // Every engine thread of the server together stays within the library's one bound.
    if workers.saturating_mul(args.threads) > infer::error::MAX_THREADS {
        return Err(format!(
            "--workers {workers} × --threads {} is {} engine threads, more than the limit of {}",
            args.threads,
            workers.saturating_mul(args.threads),
            infer::error::MAX_THREADS
        )
        .into());
    }
    let mut config = config(&args, workers);
    config.validate()?;
    let model = args.model.load()?;
    let engine = backend::engine_for(&args.backend, &model, args.threads)?;
    let backend = engine.name();
    config.class_names = model.metadata().class_names.clone();
    config.model_card = Some(ModelCard::for_model(&model, args.model.file_name()));
    let server = Server::start(config, Arc::from(engine))?;
    eprintln!(
        "serving {} as '{}' on http://{} (page at /; {} backend, {workers} engine worker(s) × {} thread(s), batches up to {} images / {} ms; {})",
        args.model.describe(),
        args.name,
        server.addr(),
        backend,
        args.threads,
        args.max_batch,
        args.max_wait_ms,
        serve::HostPolicy::resolve(&args.allowed_hosts, server.addr()),
    );
    server.wait()?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The server configuration the flags ask for (class names and model card come from the
/// model file, set once it is loaded).
fn config(args: &ServeArgs, workers: usize) -> ServeConfig {
    ServeConfig {
        addr: args.addr.clone(),
        model_name: args.name.clone(),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_batch: args.max_batch,
            max_queued_images: args.max_queue,
            request_timeout: Duration::from_millis(args.timeout_ms),
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            max_connections: args.max_connections,
            max_large_bodies: args.max_large_bodies,
        },
        max_wait: Duration::from_millis(args.max_wait_ms),
        engine_workers: workers,
        http_threads: args.http_threads,
        log_requests: !args.quiet,
        handle_signals: true,
        allowed_hosts: args.allowed_hosts.clone(),
        ..ServeConfig::default()
    }
}
