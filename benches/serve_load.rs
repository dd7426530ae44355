//! Load on `cifar10 serve` over loopback: C concurrent keep-alive clients (1, 4, 16, 64),
//! each sending one-image inference requests the way Triton's client does (binary
//! UINT8 input, binary outputs). Prints requests/s, p50/p99 latency and errors per level,
//! the engine's own batch throughput measured in the same run for comparison, and the
//! process's memory idle and under load. Bounded: a request budget and a time cap per
//! level (`SERVE_LOAD_REQUESTS`, `SERVE_LOAD_SECONDS` override them).
//!
//! `cargo bench --bench serve_load`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infer::cpu::CpuEngine;
use infer::Engine;
use model_format::arch::{IMAGE_LEN, INPUT_LEN, NUM_CLASSES};
use serve::{Limits, ServeConfig, Server};

const CLIENTS: [usize; 4] = [1, 4, 16, 64];
const MAX_BATCH: usize = 64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One inference request body (binary extension) and its JSON header's length.
fn request_body(seed: u8) -> (Vec<u8>, usize) {
    let header = serde_json::json!({
        "inputs": [{ "name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8",
                     "parameters": { "binary_data_size": IMAGE_LEN } }],
        "parameters": { "binary_data_output": true }
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend((0..IMAGE_LEN).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    (body, header.len())
}

/// A keep-alive HTTP/1.1 connection sending the same request again and again.
struct Client {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr, seed: u8) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let (body, header_length) = request_body(seed);
        let mut request = format!(
            "POST /v2/models/cifar10/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
             Inference-Header-Content-Length: {header_length}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        Ok(Client { reader: BufReader::new(stream), request })
    }

    /// Sends one request; the status code back.
    fn send(&mut self) -> std::io::Result<u16> {
        self.reader.get_mut().write_all(&self.request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

struct LevelResult {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

/// Runs `clients` threads until `budget` requests are sent or `cap` has passed.
fn run_level(addr: SocketAddr, clients: usize, budget: u64, cap: Duration) -> LevelResult {
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let per_client: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let sent = Arc::clone(&sent);
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    let mut client = match Client::connect(addr, c as u8) {
                        Ok(client) => client,
                        Err(_) => return (latencies, 1),
                    };
                    while sent.fetch_add(1, Ordering::Relaxed) < budget && start.elapsed() < cap {
                        let t = Instant::now();
                        match client.send() {
                            Ok(200) => latencies.push(t.elapsed()),
                            _ => {
                                errors += 1;
                                match Client::connect(addr, c as u8) {
                                    Ok(fresh) => client = fresh,
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let errors = per_client.iter().map(|(_, e)| e).sum();
    let mut latencies: Vec<Duration> = per_client.into_iter().flat_map(|(l, _)| l).collect();
    latencies.sort();
    LevelResult { requests: latencies.len() + errors, errors, seconds, latencies }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Images/s of `workers` threads each running the engine on batches of `batch`, for `seconds`.
fn engine_throughput(engine: &dyn Engine, batch: usize, workers: usize, seconds: f64) -> f64 {
    let inputs: Vec<f32> = (0..batch * INPUT_LEN).map(|i| ((i % 97) as f32 - 48.0) / 30.0).collect();
    let images = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut logits = vec![0f32; batch * NUM_CLASSES];
                while start.elapsed().as_secs_f64() < seconds {
                    engine.logits_flat(&inputs, batch, &mut logits).expect("the engine runs");
                    images.fetch_add(batch as u64, Ordering::Relaxed);
                }
            });
        }
    });
    images.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// (VmRSS, VmHWM) of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The (sum, count) of the server's batch-size histogram, from `/metrics`.
fn batch_totals(addr: SocketAddr) -> (f64, f64) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(f64::NAN)
    };
    (value("cifar10_batch_size_sum "), value("cifar10_batch_size_count "))
}

fn main() {
    let budget = env_or("SERVE_LOAD_REQUESTS", 2_000);
    let cap = Duration::from_secs(env_or("SERVE_LOAD_SECONDS", 15));
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let engine: Arc<dyn Engine> = Arc::new(CpuEngine::new(&infer::random_weights(0), 1).expect("engine"));

    let config = ServeConfig {
        addr: "127.0.0.1:0".into(),
        limits: Limits { max_batch: MAX_BATCH, max_queued_images: 4096, ..Limits::default() },
        max_wait: Duration::from_millis(2),
        engine_workers: workers,
        http_threads: 2,
        log_requests: false,
        ..ServeConfig::default()
    };
    let server = Server::start(config, Arc::clone(&engine)).expect("server starts");
    let addr = server.addr();
    std::thread::sleep(Duration::from_millis(200));
    let (idle_rss, _) = memory_mib();

    println!("serve_load: {workers} engine worker(s) x 1 thread, max batch {MAX_BATCH}, max wait 2 ms, binary 1-image requests");
    println!(
        "engine img/s: the engine alone on batches of {MAX_BATCH}, {workers} thread(s), measured \
         right before each level (the CPU is shared: compare within a row)"
    );
    // Context for the ratios: how the engine alone scales with the batch size.
    let sweep: Vec<String> = [1, 4, 16, MAX_BATCH]
        .iter()
        .map(|&b| format!("batch {b}: {:.0}", engine_throughput(engine.as_ref(), b, workers, 1.0)))
        .collect();
    println!("engine alone, images/s on {workers} thread(s): {}", sweep.join(", "));
    println!();
    println!("| clients | requests | errors | req/s | p50 ms | p99 ms | mean batch | engine img/s | served / engine | VmRSS MiB |");
    println!("|--------:|---------:|-------:|------:|-------:|-------:|-----------:|-------------:|----------------:|----------:|");
    let sampling = AtomicBool::new(true);
    let peak_rss = AtomicU64::new(0);
    let mut total_errors = 0;
    std::thread::scope(|scope| {
        // Samples RSS while the load runs (the high-water mark alone includes start-up).
        scope.spawn(|| {
            while sampling.load(Ordering::Relaxed) {
                let (rss, _) = memory_mib();
                peak_rss.fetch_max((rss * 1024.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        for clients in CLIENTS {
            let budget = if clients == 1 { budget / 4 } else { budget };
            // The engine alone, with the server idle, right before the load.
            let engine_ips = engine_throughput(engine.as_ref(), MAX_BATCH, workers, 2.0);
            let before = batch_totals(addr);
            let level = run_level(addr, clients, budget, cap);
            let after = batch_totals(addr);
            let mean_batch = (after.0 - before.0) / (after.1 - before.1);
            let rps = (level.requests - level.errors) as f64 / level.seconds;
            total_errors += level.errors;
            println!(
                "| {clients:>7} | {:>8} | {:>6} | {rps:>5.0} | {:>6.2} | {:>6.2} | {mean_batch:>10.1} | {engine_ips:>12.0} | {:>14.0}% | {:>9.1} |",
                level.requests,
                level.errors,
                percentile(&level.latencies, 0.50),
                percentile(&level.latencies, 0.99),
                100.0 * rps / engine_ips,
                memory_mib().0,
            );
        }
        sampling.store(false, Ordering::Relaxed);
    });
    let (_, hwm) = memory_mib();
    println!();
    println!(
        "memory (whole bench process: server + client threads): idle VmRSS {idle_rss:.1} MiB, \
         peak VmRSS under load {:.1} MiB, VmHWM {hwm:.1} MiB",
        peak_rss.load(Ordering::Relaxed) as f64 / 1024.0
    );
    println!("errors: {total_errors} (goal 0); served/engine goal at 64 clients: >= 80%");
    server.shutdown().expect("server stops");
}
