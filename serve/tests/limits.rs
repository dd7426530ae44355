//! The server's bounds seen from a client: oversize bodies refused before they are sent,
//! slow headers cut off, connections and large bodies capped, settings out of range
//! refused by name, and inputs or outputs out of range never answered with `null`s.
//! (The peak-memory checks run the real binary: see `cli/tests/cli.rs`.)

mod serve_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use infer::cpu::CpuEngine;
use infer::{Engine, InferError};
use model_format::arch::INPUT_LEN;
use serde_json::json;
use serve::{ServeConfig, Server};
use serve_support::*;

const INFER: &str = "/v2/models/cifar10/infer";

fn engine() -> Arc<dyn Engine> {
    Arc::new(CpuEngine::new(&infer::random_weights(3), 1).unwrap())
}

/// A connection whose reads give up after `seconds`, far beyond what the server should take.
fn connect(addr: SocketAddr, seconds: u64) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(seconds))).unwrap();
    stream
}

/// Reads one whole response (head and Content-Length bytes of body); `Err` if a read
/// timed out first.
fn read_reply(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .map_or(0, |v| v.parse::<usize>().unwrap());
            if raw.len() >= end + 4 + length {
                return Ok(text);
            }
        }
        match stream.read(&mut buf)? {
            0 => return Ok(text),
            n => raw.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends the head of a POST to the infer route announcing `length` body bytes.
fn post_head(stream: &mut TcpStream, length: usize) {
    let head =
        format!("POST {INFER} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
}

/// Reads until the server closes the connection; `Err` if the read timed out first.
fn read_to_close(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(raw),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn an_announced_oversize_body_gets_413_at_once_and_no_100_continue() {
    // With a request timeout of ten minutes, only an immediate answer arrives in time.
    let server = start(engine(), |c| c.limits.request_timeout = Duration::from_secs(600));
    let mut stream = connect(server.addr(), 60);
    let head = format!(
        "POST {INFER} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        100 << 20
    );
    stream.write_all(head.as_bytes()).unwrap();
    let text = read_reply(&mut stream).expect("an answer before the body is sent");
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("larger than the limit of 16777216 bytes"), "{text}");
}

#[test]
fn headers_sent_too_slowly_close_the_connection() {
    let server = start(engine(), |c| {
        c.limits.header_timeout = Duration::from_millis(300);
        c.limits.request_timeout = Duration::from_secs(600);
    });
    // A client that never finishes its headers, though it keeps sending bytes.
    let mut stream = connect(server.addr(), 60);
    let mut writer = stream.try_clone().unwrap();
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nX-Slow: ").unwrap();
    let drip = std::thread::spawn(move || {
        for _ in 0..3000 {
            if writer.write_all(b"a").is_err() {
                return true; // the server closed the connection
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    let raw = read_to_close(&mut stream).expect("the server closes the connection");
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));
    assert!(drip.join().unwrap(), "the slow client could write for a whole minute");
    // A prompt client on a fresh connection is still served.
    assert_eq!(get(server.addr(), "/v2/health/live").status, 200);
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let server = start(engine(), |c| c.limits.max_connections = 2);
    let idle: Vec<TcpStream> = (0..2).map(|_| connect(server.addr(), 60)).collect();
    let mut third = connect(server.addr(), 1);
    third.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let waited = third.read(&mut buf).expect_err("no answer while two connections are open");
    assert!(matches!(waited.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{waited}");
    drop(idle);
    third.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert!(read_reply(&mut third).unwrap().starts_with("HTTP/1.1 200 "));
}

#[test]
fn large_bodies_take_turns_while_small_requests_go_on() {
    let server = start(engine(), |c| c.limits.max_large_bodies = 1);
    let body = image_request(&image(1).repeat(16), 16).to_string().into_bytes();
    assert!(body.len() > serve::limits::SMALL_BODY_BYTES);
    // The first large request holds the only permit while it sends half its body.
    let mut holder = connect(server.addr(), 60);
    post_head(&mut holder, body.len());
    holder.write_all(&body[..body.len() / 2]).unwrap();
    // The second, whole, waits for the permit: no answer while the first is unfinished.
    let mut second = connect(server.addr(), 1);
    post_head(&mut second, body.len());
    second.write_all(&body).unwrap();
    let waited = read_reply(&mut second).expect_err("no answer while the permit is held");
    assert!(matches!(waited.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{waited}");
    // Small requests do not wait.
    assert_eq!(post_json(server.addr(), INFER, &image_request(&image(2), 1)).status, 200);
    holder.write_all(&body[body.len() / 2..]).unwrap();
    assert!(read_reply(&mut holder).unwrap().starts_with("HTTP/1.1 200 "));
    second.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert!(read_reply(&mut second).unwrap().starts_with("HTTP/1.1 200 "));
}

#[test]
fn settings_out_of_range_are_refused_naming_flag_field_and_range() {
    type Tweak = fn(&mut ServeConfig);
    let cases: [(Tweak, &str); 5] = [
        (|c| c.limits.max_queued_images = 0, "--max-queue (max_queued_images) must be in 1..=1048576, got 0"),
        (|c| c.engine_workers = 0, "--workers (engine_workers) must be in 1..=256, got 0"),
        (|c| c.http_threads = 0, "--http-threads (http_threads) must be in 1..=256, got 0"),
        (|c| c.max_wait = Duration::from_secs(31), "--max-wait-ms (max_wait) must be below --timeout-ms"),
        (|c| c.limits.max_body_bytes = 0, "--max-body-bytes (max_body_bytes) must be in 1024..="),
    ];
    for (tweak, needle) in cases {
        let mut config = ServeConfig { addr: "127.0.0.1:0".into(), log_requests: false, ..ServeConfig::default() };
        tweak(&mut config);
        let err = Server::start(config, engine()).err().expect("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn fp32_inputs_beyond_the_accepted_range_are_400_for_every_engine() {
    let server = start(engine(), |_| {});
    for bad in [1e20f32, -2e6] {
        let mut data = vec![0.5f32; INPUT_LEN];
        data[7] = bad;
        let body =
            json!({ "inputs": [{ "name": "input", "shape": [1, 3, 24, 24], "datatype": "FP32", "data": data }] });
        let reply = post_json(server.addr(), INFER, &body);
        assert_eq!(reply.status, 400);
        assert!(reply.error().contains("value 7 is") && reply.error().contains("outside the accepted range"));
    }
    let body = json!({ "inputs": [{ "name": "input", "shape": [1, 3, 24, 24], "datatype": "FP32",
                                    "data": vec![serve::MAX_INPUT_MAGNITUDE; INPUT_LEN] }] });
    assert_eq!(post_json(server.addr(), INFER, &body).status, 200);
}

/// An engine whose logits overflow: NaN for the first image of each batch.
struct OverflowingEngine;

impl Engine for OverflowingEngine {
    fn name(&self) -> &'static str {
        "overflowing"
    }
    fn logits_flat(&self, _: &[f32], _: usize, logits: &mut [f32]) -> Result<(), InferError> {
        logits.fill(1.0);
        logits[3] = f32::NAN;
        Ok(())
    }
}

#[test]
fn non_finite_logits_are_a_500_with_a_message_never_nulls() {
    let server = start(Arc::new(OverflowingEngine), |_| {});
    let reply = post_json(server.addr(), INFER, &image_request(&image(2), 1));
    assert_eq!(reply.status, 500);
    assert!(reply.error().contains("logits for image 0 are not finite"), "{}", reply.error());
    let png = {
        let mut bytes = Vec::new();
        image::RgbImage::from_raw(32, 32, image(2))
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        bytes
    };
    let reply = request(server.addr(), "POST", "/classify", &[], &png);
    assert_eq!(reply.status, 500, "{}", String::from_utf8_lossy(&reply.body));
}

#[test]
fn json_requests_cannot_inflate_lists_or_parameters() {
    let server = start(engine(), |_| {});
    let input = json!({ "name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": image(1) });
    let many_inputs = json!({ "inputs": vec![input.clone(); 3] });
    let reply = post_json(server.addr(), INFER, &many_inputs);
    assert!(reply.status == 400 && reply.error().contains("exactly one input") && reply.error().contains("got 3"));
    let long_shape = json!({ "inputs": [{ "name": "image", "shape": vec![1; 9], "datatype": "UINT8", "data": [] }] });
    let reply = post_json(server.addr(), INFER, &long_shape);
    assert!(reply.status == 400 && reply.error().contains("more than 8 elements"), "{}", reply.error());
    // Unknown parameters, however large, are skipped; known ones still work.
    let mut with_junk = input.clone();
    with_junk["parameters"] = json!({ "junk": vec![vec![0; 100]; 100], "binary_data_size": null });
    let reply = post_json(server.addr(), INFER, &json!({ "inputs": [with_junk] }));
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("binary_data_size must be a byte count, got null"), "{}", reply.error());
    let request = json!({ "inputs": [input], "parameters": { "junk": { "a": [1, 2] }, "binary_data_output": false } });
    assert_eq!(post_json(server.addr(), INFER, &request).status, 200);
}

#[test]
fn a_large_body_gives_its_permit_back_once_parsed_not_after_the_engine() {
    let engine = GatedEngine::new();
    let server = start(engine.clone(), |c| {
        c.max_wait = Duration::ZERO;
        c.limits.max_large_bodies = 1;
    });
    let addr = server.addr();
    let body = image_request(&image(4).repeat(16), 16);
    assert!(body.to_string().len() > serve::limits::SMALL_BODY_BYTES);
    let closed = engine.gate.lock().unwrap();
    std::thread::scope(|scope| {
        let running = scope.spawn(|| post_json(addr, INFER, &body));
        engine.wait_entered(1);
        // The first request waits for the engine; the only permit is free again, so the
        // second large body is read, parsed and queued.
        let queued = scope.spawn(|| post_json(addr, INFER, &body));
        let start = std::time::Instant::now();
        while metric(&String::from_utf8(get(addr, "/metrics").body).unwrap(), "cifar10_queue_depth_images") < 16.0 {
            assert!(start.elapsed() < Duration::from_secs(20), "the second large request never queued");
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(closed);
        assert_eq!(running.join().unwrap().status, 200);
        assert_eq!(queued.join().unwrap().status, 200);
    });
}

/// Opens a connection that sends a POST's head and `sent` of its body bytes, then stalls.
fn stalled_body(addr: SocketAddr, path: &str, chunked: bool) -> TcpStream {
    let mut stream = connect(addr, 60);
    let framing = if chunked { "Transfer-Encoding: chunked\r\n" } else { "Content-Length: 100000\r\n" };
    let head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{framing}\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(if chunked { b"a\r\n{\"inputs\":\r\n" } else { b"{\"inputs\":" }).unwrap();
    stream
}

#[test]
fn stalled_bodies_get_408_within_the_header_timeout_and_free_permits_and_slots() {
    let server = start(engine(), |c| {
        c.limits.header_timeout = Duration::from_millis(500);
        c.limits.request_timeout = Duration::from_secs(600);
        c.limits.max_large_bodies = 2;
        c.limits.max_connections = 4;
    });
    let started = std::time::Instant::now();
    // Two stalled large bodies (one announced, one chunked) hold both permits, and two
    // stalled small ones hold connection slots: all are cut off within the header timeout.
    let mut stalled = vec![
        stalled_body(server.addr(), INFER, false),
        stalled_body(server.addr(), "/classify", true),
        stalled_body(server.addr(), INFER, true),
    ];
    let mut small = connect(server.addr(), 60);
    small
        .write_all(format!("POST {INFER} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\n{{").as_bytes())
        .unwrap();
    stalled.push(small);
    for stream in &mut stalled {
        let raw = read_to_close(stream).expect("the server answers and closes");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(text.contains("the request body stalled: no bytes for 500 ms"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // Permits and slots are free again: an image request is served at once.
    let reply = post_json(server.addr(), INFER, &image_request(&image(1), 1));
    assert_eq!(reply.status, 200, "{}", reply.error());
}

#[test]
fn shutdown_with_a_stalled_body_open_ends_promptly() {
    let server = start(engine(), |c| {
        c.limits.header_timeout = Duration::from_secs(300);
        c.limits.request_timeout = Duration::from_secs(600);
    });
    let mut stream = stalled_body(server.addr(), INFER, false);
    // Let the server start reading the body.
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    server.shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    let raw = read_to_close(&mut stream).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 503 "), "{text}");
}

#[test]
fn model_names_that_are_not_one_url_segment_are_refused() {
    for bad in ["a/b", "", "../x", "..", "a b", "x?y"] {
        let config = ServeConfig { model_name: bad.into(), ..ServeConfig::default() };
        let err = config.validate().unwrap_err();
        assert!(err.starts_with("--name"), "{bad:?}: {err}");
    }
    let server = start(engine(), |c| c.model_name = "cifar10-int8.v2".into());
    assert_eq!(get(server.addr(), "/v2/models/cifar10-int8.v2/ready").status, 200);
}

#[test]
fn the_model_card_shows_the_file_name_not_its_folder() {
    let weights = infer::random_weights(3);
    let card = serve::ModelCard::for_model(&model_format::Model::Float(weights), "/srv/secret/models/m.safetensors");
    let server = start(engine(), |c| c.model_card = Some(card));
    let reply = get(server.addr(), "/model-card");
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["weights"]["file"], "m.safetensors", "{body}");
    assert!(!body.to_string().contains("/srv/secret"), "{body}");
}
