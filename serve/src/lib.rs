//! `cifar10 serve`: the model over HTTP, speaking the KServe v2 / Open Inference
//! Protocol (so Triton and KServe clients work unchanged), with Triton's binary tensor
//! data extension, a plain image endpoint for curl, dynamic batching and `/metrics`.
//!
//! Routes:
//! - `GET /v2/health/live`, `/v2/health/ready`, `/v2` (server metadata);
//! - `GET /v2/models/{name}[/versions/1]` (metadata), `…/ready`;
//! - `POST /v2/models/{name}[/versions/1]/infer`: inputs `image` (UINT8 `[N,32,32,3]`)
//!   or `input` (FP32 `[N,3,24,24]`); outputs `logits`, `probabilities`, `label`
//!   (JSON or binary; Triton's `classification` parameter gives top-k strings);
//! - `POST /classify?top_k=5` (or `/v2/models/{name}/classify`): a PNG or JPEG body;
//! - `GET /metrics`: Prometheus text;
//! - `GET /`: a page to classify an image in a browser; `GET /model-card`: what it shows.
//!
//! ```
//! use std::sync::Arc;
//! use serve::{ServeConfig, Server};
//! let engine = infer::cpu::CpuEngine::new(&infer::random_weights(0), 1)?;
//! let config = ServeConfig { addr: "127.0.0.1:0".into(), ..ServeConfig::default() };
//! let server = Server::start(config, Arc::new(engine))?;
//! println!("listening on {}", server.addr());
//! server.shutdown()?; // finishes in-flight requests first
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod admission;
mod api_error;
mod app;
mod batcher;
mod binary;
mod connection;
mod cpu_time;
mod host_policy;
mod inference;
pub mod limits;
mod metrics;
mod observe;
mod page;
mod protocol;
mod request_json;
mod routes;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use api_error::ApiError;
pub use batcher::{BatchConfig, Batcher, SubmitError};
pub use host_policy::{AllowedHosts, HostPolicy, MAX_ALLOWED_HOSTS};
pub use limits::Limits;
pub use metrics::Metrics;
pub use page::ModelCard;
pub use protocol::{
    IMAGE_INPUT, LABEL_OUTPUT, LOGITS_OUTPUT, MAX_INPUT_MAGNITUDE, MODEL_VERSION, OUTPUTS, PREPROCESSED_INPUT,
    PROBABILITIES_OUTPUT,
};

use app::App;
use connection::{Connection, GuardedListener};
use infer::Engine;

/// Everything the server needs besides the engine.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free one (see [`Server::addr`]).
    pub addr: String,
    /// The model's name in the URLs (`/v2/models/{name}`).
    pub model_name: String,
    /// Class names in label order, for the image endpoint.
    pub class_names: Vec<String>,
    pub limits: Limits,
    /// Longest the first request of a batch waits for others.
    pub max_wait: Duration,
    /// Threads running the engine, each on its own batch.
    pub engine_workers: usize,
    /// Async runtime threads (HTTP parsing and routing only; the engine never runs there).
    /// One (the default) runs the runtime on the server's own thread, without work stealing:
    /// the cheapest per request, and enough to feed many engine workers (the engine's forward
    /// pass costs about ten times what HTTP and parsing cost). More spread the HTTP work of
    /// many connections over threads, at the price of waking idle threads to look for work.
    pub http_threads: usize,
    /// One line per request on stderr.
    pub log_requests: bool,
    /// Stop on SIGTERM or Ctrl-C (the CLI); tests stop through [`Server::shutdown`].
    pub handle_signals: bool,
    /// The weights' metadata for the page's model card (`GET /model-card`), when known.
    pub model_card: Option<ModelCard>,
    /// The `Host` names answered (`--allowed-hosts`); the default answers only loopback
    /// names on a loopback address. Health probes and `/metrics` answer every name.
    pub allowed_hosts: AllowedHosts,
}

impl ServeConfig {
    /// Checks every setting against its [`limits::Bound`] (the same ranges `cifar10 serve`
    /// applies to its flags) and the settings against each other. [`Server::start`] calls
    /// it; the message names the flag and the field at fault and the valid range.
    ///
    /// ```
    /// let config = serve::ServeConfig { engine_workers: 0, ..Default::default() };
    /// assert!(config.validate().unwrap_err().contains("--workers (engine_workers) must be in 1..="));
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        check_model_name(&self.model_name)?;
        self.limits.validate()?;
        limits::ENGINE_WORKERS.check(self.engine_workers as u64)?;
        limits::HTTP_THREADS.check(self.http_threads as u64)?;
        limits::MAX_WAIT_MS.check(limits::millis(self.max_wait))?;
        if self.max_wait >= self.limits.request_timeout {
            return Err(format!(
                "{} ({}) must be below {} ({}), {} ms, or every partial batch would time out; got {} ms",
                limits::MAX_WAIT_MS.flag,
                limits::MAX_WAIT_MS.field,
                limits::REQUEST_TIMEOUT_MS.flag,
                limits::REQUEST_TIMEOUT_MS.field,
                limits::millis(self.limits.request_timeout),
                limits::millis(self.max_wait),
            ));
        }
        Ok(())
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: "127.0.0.1:8080".into(),
            model_name: "cifar10".into(),
            class_names: model_format::CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            limits: Limits::default(),
            max_wait: Duration::from_millis(2),
            engine_workers: 1,
            http_threads: 1,
            log_requests: true,
            handle_signals: false,
            model_card: None,
            allowed_hosts: AllowedHosts::Auto,
        }
    }
}

/// A running server. Dropping it stops it like [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// Binds `config.addr` and serves `engine` on a background thread. Errors
    /// (`InvalidInput`) if a setting is out of range (see [`ServeConfig::validate`]), or if
    /// the address cannot be bound or the runtime cannot start.
    pub fn start(config: ServeConfig, engine: Arc<dyn Engine>) -> io::Result<Server> {
        config.validate().map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        let listener = std::net::TcpListener::bind(&config.addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.addr)))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = http_runtime(config.http_threads)?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("cifar10-serve".into())
            .spawn(move || run(runtime, listener, config, engine, stopped))?;
        Ok(Server { addr, stop: Some(stop), thread: Some(thread) })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, finishes the requests in flight, and returns.
    pub fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Serves until a signal (with `handle_signals`) stops the server.
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| Err(io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.join();
    }
}

/// The async runtime for `threads` HTTP threads. One thread gets a current-thread runtime,
/// run by the server thread itself: a request's task is woken (by the engine worker) on the
/// thread that answers it, and no other thread is woken to look for work, as a multi-thread
/// runtime's idle workers are on every wake-up from outside it (two futex wake-ups and
/// context switches per request, most of the server's own CPU per request; see
/// `benches/serve_overhead.py`).
fn http_runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        // Image decoding and large-body parsing run here: bounded, so a flood of them
        // queues instead of spawning hundreds of threads.
        .max_blocking_threads(2 * threads)
        .thread_name("cifar10-http")
        .enable_all()
        .build()
}

fn run(
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    config: ServeConfig,
    engine: Arc<dyn Engine>,
    stopped: oneshot::Receiver<()>,
) -> io::Result<()> {
    let metrics = Arc::new(Metrics::new(config.limits.max_batch));
    let batch = BatchConfig {
        max_batch: config.limits.max_batch,
        max_wait: config.max_wait,
        max_queued_images: config.limits.max_queued_images,
        workers: config.engine_workers,
    };
    let app = Arc::new(App {
        model_name: config.model_name.clone(),
        backend: engine.name(),
        page: page::Page::new(&config, engine.name()),
        class_names: config.class_names.clone().into(),
        limits: config.limits,
        batcher: Batcher::start(engine, batch, Arc::clone(&metrics)),
        metrics,
        log_requests: config.log_requests,
        ready: AtomicBool::new(true),
        stopping: tokio::sync::watch::Sender::new(false),
    });
    let hosts = HostPolicy::resolve(&config.allowed_hosts, listener.local_addr()?);
    let router = routes::router(Arc::clone(&app), hosts);
    let served = runtime.block_on(async {
        let listener = GuardedListener::new(
            tokio::net::TcpListener::from_std(listener)?,
            config.limits.max_connections,
            config.limits.header_timeout,
        );
        let app_for_signal = Arc::clone(&app);
        let signalled = Arc::new(tokio::sync::Notify::new());
        let notify = Arc::clone(&signalled);
        let signal = async move {
            stop_requested(stopped, config.handle_signals).await;
            app_for_signal.ready.store(false, Ordering::Relaxed);
            app_for_signal.stopping.send_replace(true);
            if app_for_signal.log_requests {
                eprintln!("shutting down: finishing requests in flight");
            }
            notify.notify_one();
        };
        let service = router.into_make_service_with_connect_info::<Connection>();
        let serving = axum::serve(listener, service).with_graceful_shutdown(signal);
        // Requests end within the request timeout and idle connections within the header
        // timeout; this is the last resort should a connection still hang on.
        let grace = config.limits.request_timeout + Duration::from_secs(1);
        tokio::select! {
            served = serving => served,
            _ = async { signalled.notified().await; tokio::time::sleep(grace).await } => {
                eprintln!("shutdown: gave up on connections still open after {} ms", grace.as_millis());
                Ok(())
            }
        }
    });
    // Connections are closed: let the engine finish what is queued, then stop its threads.
    app.batcher.shutdown();
    drop(runtime);
    served
}

/// Longest model name: it is one segment of every model URL.
pub const MAX_MODEL_NAME: usize = 64;

/// The model name must be one URL path segment that needs no escaping: 1 to
/// [`MAX_MODEL_NAME`] letters, digits, `.`, `_` or `-`, and neither `.` nor `..` (which
/// clients resolve away). Otherwise the model's URLs could not be reached.
///
/// ```
/// assert!(serve::check_model_name("cifar10-int8_v2.1").is_ok());
/// for bad in ["", "a/b", "..", ".", "a b", "%2F"] {
///     assert!(serve::check_model_name(bad).unwrap_err().starts_with("--name"), "{bad}");
/// }
/// ```
pub fn check_model_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_MODEL_NAME || !name.chars().all(allowed) || name == "." || name == ".." {
        return Err(format!(
            "--name {name:?}: a model name is 1 to {MAX_MODEL_NAME} letters, digits, '.', '_' or '-' \
             (one URL path segment), and not '.' or '..'"
        ));
    }
    Ok(())
}

/// Resolves on `stopped`, or on SIGTERM / Ctrl-C when `signals` is set.
async fn stop_requested(stopped: oneshot::Receiver<()>, signals: bool) {
    if !signals {
        let _ = stopped.await;
        return;
    }
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                tokio::select! {
                    _ = stopped => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
        };
        tokio::select! {
            _ = stopped => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = stopped => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
