//! Helpers shared by the server tests: a minimal HTTP/1.1 client over `TcpStream`,
//! test engines, and request builders.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infer::{Engine, InferError};
use model_format::arch::{IMAGE_LEN, NUM_CLASSES};
use serde_json::Value;
use serve::{ServeConfig, Server};

/// A response as read off the socket.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body text if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` message of a 4xx/5xx JSON body.
    pub fn error(&self) -> String {
        let json = self.json();
        json["error"].as_str().unwrap_or_else(|| panic!("no \"error\" string in {json}")).to_string()
    }
}

/// Sends one request on a fresh connection and reads the whole response.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request_for_host(addr, &addr.to_string(), method, path, headers, body)
}

/// [`request`] with the `Host` header `host`, as a browser sends the name it resolved.
pub fn request_for_host(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send the head");
    // The server may answer (413) and close before reading all of a large body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the response to {method} {path}: {e}"),
        }
    }
    parse_response(&raw)
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], &[])
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(addr, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
}

fn parse_response(raw: &[u8]) -> Reply {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = std::str::from_utf8(&raw[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Starts a server on a free loopback port; `tweak` adjusts the configuration.
pub fn start(engine: Arc<dyn Engine>, tweak: impl FnOnce(&mut ServeConfig)) -> Server {
    let mut config = ServeConfig { addr: "127.0.0.1:0".into(), log_requests: false, ..ServeConfig::default() };
    tweak(&mut config);
    Server::start(config, engine).expect("the server starts")
}

/// A deterministic interleaved (HWC) 32×32 RGB image.
pub fn image(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..IMAGE_LEN)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// The JSON body of an inference request on raw images (HWC, concatenated).
pub fn image_request(images: &[u8], count: usize) -> Value {
    serde_json::json!({
        "inputs": [{ "name": "image", "shape": [count, 32, 32, 3], "datatype": "UINT8", "data": images }]
    })
}

/// A binary-extension body: the JSON header then `binary`; returns (body, header length).
pub fn binary_body(header: &Value, binary: &[u8]) -> (Vec<u8>, String) {
    let mut body = header.to_string().into_bytes();
    let length = body.len().to_string();
    body.extend_from_slice(binary);
    (body, length)
}

/// An engine that blocks while its gate is held and counts the calls that entered it.
pub struct GatedEngine {
    pub gate: Mutex<()>,
    pub entered: AtomicUsize,
}

impl GatedEngine {
    pub fn new() -> Arc<Self> {
        Arc::new(GatedEngine { gate: Mutex::new(()), entered: AtomicUsize::new(0) })
    }

    /// Waits until `n` engine calls have started.
    pub fn wait_entered(&self, n: usize) {
        let start = Instant::now();
        while self.entered.load(Ordering::SeqCst) < n {
            assert!(start.elapsed() < Duration::from_secs(20), "the engine was never called");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Engine for GatedEngine {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn logits_flat(&self, _: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let _open = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        for row in logits.chunks_exact_mut(NUM_CLASSES).take(batch) {
            for (k, v) in row.iter_mut().enumerate() {
                *v = k as f32;
            }
        }
        Ok(())
    }
}

/// An engine that always fails.
pub struct FailingEngine;

impl Engine for FailingEngine {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn logits_flat(&self, _: &[f32], _: usize, _: &mut [f32]) -> Result<(), InferError> {
        Err(InferError::Backend("simulated backend failure".into()))
    }
}

/// The value of an unlabelled metric line `name value` in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}
