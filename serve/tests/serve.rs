//! `cifar10 serve` over real HTTP on a loopback port: every endpoint, the binary tensor
//! extension, dynamic batching, limits, error paths, metrics and graceful shutdown.

mod serve_support;

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infer::cpu::CpuEngine;
use infer::{Classifier, Engine};
use model_format::arch::{self, IMAGE_LEN, INPUT_LEN, NUM_CLASSES};
use serde_json::{json, Value};
use serve::Limits;
use serve_support::*;

const SEED: u64 = 7;

fn engine() -> Arc<dyn Engine> {
    Arc::new(CpuEngine::new(&infer::random_weights(SEED), 1).unwrap())
}

fn classifier() -> Classifier {
    Classifier::from_weights(&infer::random_weights(SEED), 1).unwrap()
}

fn f32s(value: &Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn output<'a>(response: &'a Value, name: &str) -> &'a Value {
    response["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {response}"))
}

#[test]
fn health_and_metadata_endpoints_answer() {
    let server = start(engine(), |_| {});
    let addr = server.addr();
    assert_eq!(get(addr, "/v2/health/live").json(), json!({ "live": true }));
    assert_eq!(get(addr, "/v2/health/ready").json(), json!({ "ready": true }));
    let meta = get(addr, "/v2").json();
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")), "{meta}");

    let model = get(addr, "/v2/models/cifar10");
    assert_eq!(model.status, 200);
    let model = model.json();
    assert_eq!(model["name"], "cifar10");
    assert_eq!(model["platform"], "cifar10-cpu");
    let inputs = model["inputs"].as_array().unwrap();
    assert!(inputs.contains(&json!({ "name": "image", "datatype": "UINT8", "shape": [-1, 32, 32, 3] })), "{model}");
    assert!(inputs.contains(&json!({ "name": "input", "datatype": "FP32", "shape": [-1, 3, 24, 24] })), "{model}");
    let outputs = model["outputs"].as_array().unwrap();
    assert!(outputs.contains(&json!({ "name": "logits", "datatype": "FP32", "shape": [-1, 10] })), "{model}");
    assert!(outputs.contains(&json!({ "name": "probabilities", "datatype": "FP32", "shape": [-1, 10] })));
    assert!(outputs.contains(&json!({ "name": "label", "datatype": "INT64", "shape": [-1] })));
    assert_eq!(get(addr, "/v2/models/cifar10/versions/1").json(), model);

    assert_eq!(get(addr, "/v2/models/cifar10/ready").json(), json!({ "name": "cifar10", "ready": true }));
    assert_eq!(get(addr, "/v2/models/cifar10/versions/1/ready").status, 200);

    let unknown = get(addr, "/v2/models/resnet/ready");
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().contains("unknown model 'resnet'"));
    let version = get(addr, "/v2/models/cifar10/versions/2");
    assert_eq!(version.status, 404);
    assert!(version.error().contains("version '2'"));
    server.shutdown().unwrap();
}

#[test]
fn json_inference_matches_the_library() {
    let server = start(engine(), |c| c.log_requests = true);
    let images: Vec<u8> = (0..3).flat_map(image).collect();
    let mut request = image_request(&images, 3);
    request["id"] = json!("req-1");
    let reply = post_json(server.addr(), "/v2/models/cifar10/infer", &request);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.header("inference-header-content-length").is_none());
    let response = reply.json();
    assert_eq!(response["model_name"], "cifar10");
    assert_eq!(response["id"], "req-1");

    let expected = classifier().classify_hwc(&images).unwrap();
    let logits = output(&response, "logits");
    assert_eq!(logits["datatype"], "FP32");
    assert_eq!(logits["shape"], json!([3, 10]));
    let served_logits = f32s(&logits["data"]);
    let served_probabilities = f32s(&output(&response, "probabilities")["data"]);
    let labels = &output(&response, "label")["data"];
    for (i, prediction) in expected.iter().enumerate() {
        // The same engine on the same batch of three: the same bits.
        assert_eq!(&served_logits[i * NUM_CLASSES..][..NUM_CLASSES], &prediction.logits);
        assert_eq!(&served_probabilities[i * NUM_CLASSES..][..NUM_CLASSES], &prediction.probabilities);
        assert_eq!(labels[i], json!(prediction.class));
    }
    server.shutdown().unwrap();
}

#[test]
fn preprocessed_fp32_input_gives_the_engines_logits() {
    let engine = engine();
    let server = start(Arc::clone(&engine), |_| {});
    let input: Vec<f32> = (0..INPUT_LEN).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    // Nested rows, as numpy's tolist() gives them.
    let nested: Vec<Vec<Vec<f32>>> =
        input.chunks(24 * 24).map(|plane| plane.chunks(24).map(<[f32]>::to_vec).collect()).collect();
    let request = json!({
        "inputs": [{ "name": "input", "shape": [1, 3, 24, 24], "datatype": "FP32", "data": [nested] }],
        "outputs": [{ "name": "logits" }]
    });
    let reply = post_json(server.addr(), "/v2/models/cifar10/versions/1/infer", &request);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let response = reply.json();
    assert_eq!(response["outputs"].as_array().unwrap().len(), 1, "only the requested output: {response}");
    let mut expected = vec![0f32; NUM_CLASSES];
    engine.logits_flat(&input, 1, &mut expected).unwrap();
    assert_eq!(f32s(&output(&response, "logits")["data"]), expected);
    server.shutdown().unwrap();
}

/// Splits a binary-extension response into its JSON and each output's bytes.
fn binary_outputs(reply: &Reply) -> (Value, Vec<(String, Vec<u8>)>) {
    let length: usize =
        reply.header("inference-header-content-length").expect("the header-length header").parse().unwrap();
    let header: Value = serde_json::from_slice(&reply.body[..length]).unwrap();
    let mut offset = length;
    let mut outputs = Vec::new();
    for output in header["outputs"].as_array().unwrap() {
        if let Some(size) = output["parameters"]["binary_data_size"].as_u64() {
            assert!(output.get("data").is_none(), "binary outputs carry no JSON data: {output}");
            outputs.push((
                output["name"].as_str().unwrap().to_string(),
                reply.body[offset..offset + size as usize].to_vec(),
            ));
            offset += size as usize;
        }
    }
    assert_eq!(offset, reply.body.len(), "every binary byte belongs to an output");
    (header, outputs)
}

#[test]
fn binary_tensor_extension_round_trips() {
    let server = start(engine(), |_| {});
    let images: Vec<u8> = (10..12).flat_map(image).collect();
    let header = json!({
        "inputs": [{ "name": "image", "shape": [2, 32, 32, 3], "datatype": "UINT8",
                     "parameters": { "binary_data_size": images.len() } }],
        "parameters": { "binary_data_output": true }
    });
    let (body, length) = binary_body(&header, &images);
    let reply = request(
        server.addr(),
        "POST",
        "/v2/models/cifar10/infer",
        &[("Inference-Header-Content-Length", &length)],
        &body,
    );
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), Some("application/octet-stream"));
    let (_, outputs) = binary_outputs(&reply);
    let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["logits", "probabilities", "label"]);

    let expected = classifier().classify_hwc(&images).unwrap();
    let logits: Vec<f32> = outputs[0].1.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let labels: Vec<i64> = outputs[2].1.chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(&logits[..NUM_CLASSES], &expected[0].logits);
    assert_eq!(&logits[NUM_CLASSES..], &expected[1].logits);
    assert_eq!(labels, [expected[0].class as i64, expected[1].class as i64]);

    // Per-output choice: label as binary, probabilities as JSON, logits not returned.
    let header = json!({
        "inputs": [{ "name": "image", "shape": [2, 32, 32, 3], "datatype": "UINT8",
                     "parameters": { "binary_data_size": images.len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "binary_data": false } },
                    { "name": "label", "parameters": { "binary_data": true } }]
    });
    let (body, length) = binary_body(&header, &images);
    let reply = request(
        server.addr(),
        "POST",
        "/v2/models/cifar10/infer",
        &[("Inference-Header-Content-Length", &length)],
        &body,
    );
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let (json, outputs) = binary_outputs(&reply);
    assert_eq!(json["outputs"].as_array().unwrap().len(), 2);
    assert_eq!(f32s(&output(&json, "probabilities")["data"])[..NUM_CLASSES], expected[0].probabilities);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].0, "label");
    server.shutdown().unwrap();
}

fn png(hwc: &[u8]) -> Vec<u8> {
    let buffer = image::RgbImage::from_raw(32, 32, hwc.to_vec()).unwrap();
    let mut out = Cursor::new(Vec::new());
    buffer.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn image_endpoint_returns_the_librarys_top_k() {
    let server = start(engine(), |_| {});
    let bytes = png(&image(3));
    let reply = request(server.addr(), "POST", "/classify?top_k=3", &[("Content-Type", "image/png")], &bytes);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let response = reply.json();
    let expected = classifier().classify_image(&bytes, "test.png").unwrap();
    assert_eq!(response["class"], json!(expected.class));
    assert_eq!(response["label"], json!(expected.label));
    let top = response["predictions"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    for (served, want) in top.iter().zip(expected.top_k(3)) {
        assert_eq!(served["class"], json!(want.class));
        assert_eq!(served["label"], json!(want.label));
        assert_eq!(served["probability"].as_f64().unwrap() as f32, want.probability);
    }
    let reply = request(server.addr(), "POST", "/v2/models/cifar10/classify", &[], &bytes);
    assert_eq!(reply.json()["predictions"].as_array().unwrap().len(), 5, "five by default");
    // A small PNG announcing a huge canvas is refused before decoding.
    let mut huge_png = Cursor::new(Vec::new());
    image::GrayImage::new(4097, 4097).write_to(&mut huge_png, image::ImageFormat::Png).unwrap();
    let reply = request(server.addr(), "POST", "/classify", &[], huge_png.get_ref());
    expect_error(reply, 413, "4097x4097");
    server.shutdown().unwrap();
}

/// Sends `body` to the infer route and checks for a JSON error with `status` whose
/// message contains `needle`.
fn expect_error(reply: Reply, status: u16, needle: &str) {
    assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(&reply.body));
    let message = reply.error();
    assert!(message.contains(needle), "error {message:?} should mention {needle:?}");
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let server = start(engine(), |c| c.limits = Limits { max_body_bytes: 64 << 10, max_batch: 4, ..Limits::default() });
    let addr = server.addr();
    let infer = "/v2/models/cifar10/infer";
    let post = |body: &[u8]| request(addr, "POST", infer, &[], body);
    let one = image(1);

    expect_error(post(b"{\"inputs\": [ oops"), 400, "malformed inference request JSON");
    expect_error(post(b"[1, 2]"), 400, "malformed");
    expect_error(post_json(addr, infer, &json!({ "inputs": [] })), 400, "exactly one input");
    let wrong_shape =
        json!({ "inputs": [{ "name": "image", "shape": [1, 32, 32], "datatype": "UINT8", "data": one }] });
    expect_error(post_json(addr, infer, &wrong_shape), 400, "shape [1, 32, 32]");
    let zero_batch =
        json!({ "inputs": [{ "name": "image", "shape": [0, 32, 32, 3], "datatype": "UINT8", "data": [] }] });
    expect_error(post_json(addr, infer, &zero_batch), 400, "N >= 1");
    let wrong_type =
        json!({ "inputs": [{ "name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": one }] });
    expect_error(post_json(addr, infer, &wrong_type), 400, "must be UINT8");
    let short = json!({ "inputs": [{ "name": "image", "shape": [2, 32, 32, 3], "datatype": "UINT8", "data": one }] });
    expect_error(post_json(addr, infer, &short), 400, "has 3072 data values, its shape needs 6144");
    let not_numbers = json!({ "inputs": [{ "name": "input", "shape": [1, 3, 24, 24], "datatype": "FP32", "data": vec!["x"; INPUT_LEN] }] });
    expect_error(post_json(addr, infer, &not_numbers), 400, "not a number");
    let unknown_input =
        json!({ "inputs": [{ "name": "pixels", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": one }] });
    expect_error(post_json(addr, infer, &unknown_input), 400, "unknown input 'pixels'");
    let mut unknown_output = image_request(&one, 1);
    unknown_output["outputs"] = json!([{ "name": "features" }]);
    expect_error(post_json(addr, infer, &unknown_output), 400, "unknown output 'features'");
    let no_data = json!({ "inputs": [{ "name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8" }] });
    expect_error(post_json(addr, infer, &no_data), 400, "neither data nor binary_data_size");
    let too_many: Vec<u8> = (0..5).flat_map(image).collect();
    expect_error(post_json(addr, infer, &image_request(&too_many, 5)), 400, "maximum batch of 4");

    // Binary extension errors.
    let header = json!({ "inputs": [{ "name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8",
                                      "parameters": { "binary_data_size": 3072 } }] });
    let (body, length) = binary_body(&header, &one[..3000]);
    expect_error(
        request(addr, "POST", infer, &[("Inference-Header-Content-Length", &length)], &body),
        400,
        "only 3000 bytes",
    );
    let (mut body, length) = binary_body(&header, &one);
    body.extend_from_slice(b"extra");
    expect_error(
        request(addr, "POST", infer, &[("Inference-Header-Content-Length", &length)], &body),
        400,
        "no input claims",
    );
    expect_error(
        request(addr, "POST", infer, &[("Inference-Header-Content-Length", "999999")], &body),
        400,
        "body has only",
    );
    expect_error(
        request(addr, "POST", infer, &[("Inference-Header-Content-Length", "ten")], &body),
        400,
        "not a byte count",
    );
    let wrong_size = json!({ "inputs": [{ "name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8",
                                          "parameters": { "binary_data_size": 100 } }] });
    let (body, length) = binary_body(&wrong_size, &one[..100]);
    expect_error(
        request(addr, "POST", infer, &[("Inference-Header-Content-Length", &length)], &body),
        400,
        "needs 3072",
    );
    let nan = f32::NAN.to_le_bytes().repeat(INPUT_LEN);
    let header = json!({ "inputs": [{ "name": "input", "shape": [1, 3, 24, 24], "datatype": "FP32",
                                      "parameters": { "binary_data_size": nan.len() } }] });
    let (body, length) = binary_body(&header, &nan);
    expect_error(
        request(addr, "POST", infer, &[("Inference-Header-Content-Length", &length)], &body),
        400,
        "not finite",
    );

    // Limits, routing and the image endpoint.
    expect_error(post(&vec![b' '; 100 << 10]), 413, "request body");
    expect_error(post_json(addr, "/v2/models/resnet/infer", &image_request(&one, 1)), 404, "unknown model 'resnet'");
    expect_error(get(addr, "/v3/anything"), 404, "no such route");
    expect_error(get(addr, infer), 405, "method not allowed");
    expect_error(request(addr, "POST", "/classify", &[], b"GIF89a not really"), 400, "request body");
    expect_error(request(addr, "POST", "/classify", &[], b"\x89PNG\r\n\x1a\n truncated"), 400, "request body");
    expect_error(request(addr, "POST", "/classify", &[], b""), 400, "empty body");
    expect_error(request(addr, "POST", "/classify?top_k=0", &[], &png(&one)), 400, "top_k");
    expect_error(request(addr, "POST", "/classify?top_k=many", &[], &png(&one)), 400, "query");

    // Still serving, and every error was counted.
    let ok = post_json(addr, infer, &image_request(&one, 1));
    assert_eq!(ok.status, 200);
    let metrics = String::from_utf8(get(addr, "/metrics").body).unwrap();
    assert!(metric(&metrics, "cifar10_request_errors_total") >= 26.0, "{metrics}");
    server.shutdown().unwrap();
}

#[test]
fn engine_failures_are_500_with_a_message() {
    let server = start(Arc::new(FailingEngine), |_| {});
    let reply = post_json(server.addr(), "/v2/models/cifar10/infer", &image_request(&image(0), 1));
    expect_error(reply, 500, "simulated backend failure");
    assert_eq!(get(server.addr(), "/v2/health/live").status, 200);
    server.shutdown().unwrap();
}

#[test]
fn concurrent_requests_are_batched_together() {
    let server = start(engine(), |c| {
        c.max_wait = Duration::from_millis(300);
        c.limits.max_batch = 8;
    });
    let addr = server.addr();
    let images: Vec<Vec<u8>> = (0..8).map(image).collect();
    let replies: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = images
            .iter()
            .map(|img| scope.spawn(move || post_json(addr, "/v2/models/cifar10/infer", &image_request(img, 1)).json()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Each request got its own image's answer back.
    let expected = classifier().classify_hwc(&images.concat()).unwrap();
    for (reply, want) in replies.iter().zip(&expected) {
        assert_eq!(output(reply, "label")["data"][0], json!(want.class));
        let logits = f32s(&output(reply, "logits")["data"]);
        for (a, b) in logits.iter().zip(&want.logits) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{logits:?} vs {:?}", want.logits);
        }
    }
    let metrics = String::from_utf8(get(addr, "/metrics").body).unwrap();
    let runs = metric(&metrics, "cifar10_batch_size_count");
    assert!(runs < 8.0, "8 concurrent requests took {runs} engine runs: no batching\n{metrics}");
    assert_eq!(metric(&metrics, "cifar10_images_total"), 8.0);
    server.shutdown().unwrap();
}

#[test]
fn overload_is_refused_quickly_with_503() {
    let engine = GatedEngine::new();
    let server = start(engine.clone(), |c| {
        c.max_wait = Duration::ZERO;
        c.limits = Limits { max_batch: 1, max_queued_images: 1, ..Limits::default() };
    });
    let addr = server.addr();
    let closed = engine.gate.lock().unwrap();
    let body = image_request(&image(0), 1);
    std::thread::scope(|scope| {
        let running = scope.spawn(|| post_json(addr, "/v2/models/cifar10/infer", &body));
        engine.wait_entered(1);
        let queued = scope.spawn(|| post_json(addr, "/v2/models/cifar10/infer", &body));
        let start = Instant::now();
        while metric(&String::from_utf8(get(addr, "/metrics").body).unwrap(), "cifar10_queue_depth_images") < 1.0 {
            assert!(start.elapsed() < Duration::from_secs(20), "the second request never queued");
            std::thread::sleep(Duration::from_millis(2));
        }
        let start = Instant::now();
        let refused = post_json(addr, "/v2/models/cifar10/infer", &body);
        assert!(start.elapsed() < Duration::from_secs(5), "refusal took {:?}", start.elapsed());
        expect_error(refused, 503, "overloaded");
        drop(closed);
        assert_eq!(running.join().unwrap().status, 200);
        assert_eq!(queued.join().unwrap().status, 200);
    });
    server.shutdown().unwrap();
}

#[test]
fn slow_requests_time_out_with_504() {
    let engine = GatedEngine::new();
    let server = start(engine.clone(), |c| c.limits.request_timeout = Duration::from_millis(200));
    let closed = engine.gate.lock().unwrap();
    let reply = post_json(server.addr(), "/v2/models/cifar10/infer", &image_request(&image(0), 1));
    expect_error(reply, 504, "timed out after 200 ms");
    drop(closed);
    assert_eq!(post_json(server.addr(), "/v2/models/cifar10/infer", &image_request(&image(0), 1)).status, 200);
    server.shutdown().unwrap();
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let engine = GatedEngine::new();
    let server = start(engine.clone(), |_| {});
    let addr = server.addr();
    let closed = engine.gate.lock().unwrap();
    let in_flight =
        std::thread::spawn(move || post_json(addr, "/v2/models/cifar10/infer", &image_request(&image(0), 1)));
    engine.wait_entered(1);
    let stopping = std::thread::spawn(move || server.shutdown());
    std::thread::sleep(Duration::from_millis(100));
    assert!(!stopping.is_finished(), "shutdown must wait for the request in flight");
    drop(closed);
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    stopping.join().unwrap().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn metrics_report_requests_latency_batches_and_queue() {
    let server = start(engine(), |_| {});
    let addr = server.addr();
    assert_eq!(post_json(addr, "/v2/models/cifar10/infer", &image_request(&image(0), 1)).status, 200);
    assert_eq!(get(addr, "/v2/models/nope").status, 404);
    let reply = get(addr, "/metrics");
    assert!(reply.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(reply.body).unwrap();
    for needle in [
        "cifar10_requests_total{route=\"/v2/models/{name}/infer\",status=\"200\"} 1\n",
        "cifar10_requests_total{route=\"/v2/models/{name}\",status=\"404\"} 1\n",
        "cifar10_request_duration_seconds_bucket{route=\"/v2/models/{name}/infer\",le=\"+Inf\"} 1\n",
        "# TYPE cifar10_batch_size histogram\n",
        "cifar10_batch_size_count 1\n",
        "cifar10_queue_depth_images 0\n",
        "cifar10_request_errors_total 1\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    server.shutdown().unwrap();
}

/// The CPU time of this whole process (every thread) so far.
fn process_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to write.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) }, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[test]
fn engine_cpu_is_counted_per_request_and_is_part_of_the_process_cpu() {
    let server = start(engine(), |c| c.max_wait = Duration::ZERO);
    let addr = server.addr();
    let engine_cpu =
        || metric(&String::from_utf8(get(addr, "/metrics").body).unwrap(), "cifar10_engine_cpu_seconds_total");
    let header = json!({
        "inputs": [{ "name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8",
                     "parameters": { "binary_data_size": IMAGE_LEN } }],
        "outputs": [{ "name": "label" }]
    });
    let requests = 20;
    // The process clock is read outside the engine counter's readings, so that its window
    // holds the counter's.
    let process_before = process_cpu();
    let engine_before = engine_cpu();
    for i in 0..requests {
        let (body, length) = binary_body(&header, &image(i));
        let headers = [("Inference-Header-Content-Length", length.as_str())];
        assert_eq!(request(addr, "POST", "/v2/models/cifar10/infer", &headers, &body).status, 200);
    }
    let engine = engine_cpu() - engine_before;
    let process = process_cpu() - process_before;
    // No CPU core does a forward pass faster than at 1 TFLOP/s: each request's engine call
    // took at least its FLOPs at that rate.
    let least = requests as f64 * arch::flops_per_image() as f64 / 1e12;
    assert!(engine >= least, "engine CPU {engine} s for {requests} requests, below the least possible {least} s");
    assert!(engine <= process.as_secs_f64(), "engine CPU {engine} s above the whole process's {process:?}");
    server.shutdown().unwrap();
}

#[test]
fn several_http_threads_serve_too() {
    // One HTTP thread (the default) runs a current-thread runtime; more, a multi-thread one.
    let server = start(engine(), |c| c.http_threads = 3);
    let addr = server.addr();
    assert_eq!(get(addr, "/v2/health/ready").json(), json!({ "ready": true }));
    let replies: Vec<Value> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|i| s.spawn(move || post_json(addr, "/v2/models/cifar10/infer", &image_request(&image(i), 1)).json()))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (i, reply) in replies.iter().enumerate() {
        let expected = classifier().classify_hwc(&image(i as u64)).unwrap();
        assert_eq!(f32s(&output(reply, "logits")["data"]), expected[0].logits);
    }
    server.shutdown().unwrap();
}

#[test]
fn large_requests_are_served_whole() {
    // 16 images as JSON text (~170 KB): parsed on a blocking thread, one engine batch.
    let server = start(engine(), |_| {});
    let images: Vec<u8> = (0..16).flat_map(|i| image(200 + i)).collect();
    let reply = post_json(server.addr(), "/v2/models/cifar10/infer", &image_request(&images, 16));
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let response = reply.json();
    let expected = classifier().classify_hwc(&images).unwrap();
    let labels: Vec<Value> = expected.iter().map(|p| json!(p.class)).collect();
    assert_eq!(output(&response, "label")["data"], json!(labels));
    assert_eq!(output(&response, "probabilities")["shape"], json!([16, 10]));
    server.shutdown().unwrap();
}

#[test]
fn classification_extension_gives_top_k_strings() {
    let server = start(engine(), |_| {});
    let images: Vec<u8> = (0..2).flat_map(|i| image(300 + i)).collect();
    let mut request = image_request(&images, 2);
    request["outputs"] = json!([{ "name": "probabilities", "parameters": { "classification": 3 } }]);
    let reply = post_json(server.addr(), "/v2/models/cifar10/infer", &request);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let response = reply.json();
    let out = output(&response, "probabilities");
    assert_eq!((&out["datatype"], &out["shape"]), (&json!("BYTES"), &json!([2, 3])));
    let expected = classifier().classify_hwc(&images).unwrap();
    let strings: Vec<&str> = out["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for (row, prediction) in strings.chunks(3).zip(&expected) {
        for (s, want) in row.iter().zip(prediction.top_k(3)) {
            let parts: Vec<&str> = s.split(':').collect();
            assert_eq!(parts[0].parse::<f32>().unwrap(), want.probability, "{s}");
            assert_eq!(parts[1..], [want.class.to_string().as_str(), want.label.as_str()], "{s}");
        }
    }

    request["outputs"] = json!([{ "name": "label", "parameters": { "classification": 2 } }]);
    let reply = post_json(server.addr(), "/v2/models/cifar10/infer", &request);
    expect_error(reply, 400, "classification applies to");
    request["outputs"] = json!([{ "name": "logits", "parameters": { "classification": 11 } }]);
    let reply = post_json(server.addr(), "/v2/models/cifar10/infer", &request);
    expect_error(reply, 400, "class count in 0..=10");
    server.shutdown().unwrap();
}

#[test]
fn a_stalled_client_cannot_hold_shutdown_forever() {
    let server = start(engine(), |c| c.limits.request_timeout = Duration::from_millis(200));
    let mut stalled = std::net::TcpStream::connect(server.addr()).unwrap();
    std::io::Write::write_all(&mut stalled, b"POST /v2/models/cifar10/infer HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    server.shutdown().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "shutdown took {:?}", start.elapsed());
}

/// A page on another site must not reach a server on loopback: not by DNS rebinding (a
/// name of its own pointed at 127.0.0.1, sent as `Host`), not by a cross-origin "simple"
/// POST. Probes and `/metrics` still answer any `Host`, as kubelet and Prometheus use IPs.
#[test]
fn a_loopback_server_answers_only_loopback_names_and_its_own_origin() {
    let server = start(engine(), |_| {});
    let addr = server.addr();
    let port = addr.port();
    let bytes = png(&image(3));
    let classify =
        |host: &str, headers: &[(&str, &str)]| request_for_host(addr, host, "POST", "/classify", headers, &bytes);
    for host in
        [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("app.localhost:{port}"), "[::1]".into()]
    {
        let reply = classify(&host, &[]);
        assert_eq!(reply.status, 200, "{host}: {}", String::from_utf8_lossy(&reply.body));
    }
    for host in [format!("rebind.evil.example:{port}"), "10.0.0.7".into(), format!("localhost.evil.example:{port}")] {
        let reply = classify(&host, &[]);
        assert_eq!(reply.status, 403, "{host}");
        assert!(reply.error().contains("--allowed-hosts"), "{host}: {}", reply.error());
        let reply = request_for_host(addr, &host, "GET", "/v2/models/cifar10", &[], &[]);
        assert_eq!(reply.status, 403, "{host}");
        for probe in ["/v2/health/live", "/v2/health/ready", "/metrics"] {
            assert_eq!(request_for_host(addr, &host, "GET", probe, &[], &[]).status, 200, "{host} {probe}");
        }
    }
    let own = format!("localhost:{port}");
    let own_origin = format!("http://localhost:{port}");
    assert_eq!(classify(&own, &[("Origin", &own_origin)]).status, 200);
    for origin in
        ["http://evil.example", "null", &format!("http://127.0.0.1:{port}"), &format!("http://localhost:{}", port ^ 1)]
    {
        let reply = classify(&own, &[("Origin", origin), ("Content-Type", "text/plain")]);
        assert_eq!(reply.status, 403, "{origin}");
        assert!(reply.error().contains("cross-origin"), "{origin}: {}", reply.error());
        assert!(!reply.headers.iter().any(|(name, _)| name.to_ascii_lowercase().starts_with("access-control")));
    }
    // Nothing refused reached the engine: 5 images, those of the 4 accepted names and of
    // the same-origin request.
    let metrics = String::from_utf8(get(addr, "/metrics").body).unwrap();
    assert_eq!(metric(&metrics, "cifar10_images_total"), 5.0, "{metrics}");
    server.shutdown().unwrap();
}

#[test]
fn allowed_hosts_lists_the_names_a_public_server_answers() {
    let server = start(engine(), |c| c.allowed_hosts = "api.example.com,.corp.example".parse().unwrap());
    let addr = server.addr();
    for (host, status) in [
        ("api.example.com", 200),
        ("API.example.com:443", 200),
        ("a.b.corp.example", 200),
        ("corp.example", 200),
        ("localhost", 403),
        ("example.com", 403),
    ] {
        assert_eq!(request_for_host(addr, host, "GET", "/v2/models/cifar10", &[], &[]).status, status, "{host}");
    }
    server.shutdown().unwrap();
    let server = start(engine(), |c| c.allowed_hosts = serve::AllowedHosts::Any);
    assert_eq!(request_for_host(server.addr(), "anything.example", "GET", "/v2", &[], &[]).status, 200);
    server.shutdown().unwrap();
}
