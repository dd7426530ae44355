//! The `cifar10 eval` and `cifar10 classify` commands, run as a user would, on the
//! in-repo 1,000-image sample and a seeded model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use infer::Classifier;
use model_format::cifar::Records;

fn cifar10() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cifar10"))
}

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sample")
}

/// A fresh temporary folder holding a seeded model file.
fn model_dir(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("infer-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.safetensors");
    infer::random_weights(11).save(&model).unwrap();
    (dir, model)
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn eval_json_counts_agree_with_the_library() {
    let (dir, model) = model_dir("eval");
    let output = cifar10()
        .args(["eval", "--json", "--threads", "2", "--batch-size", "64", "--model"])
        .arg(&model)
        .arg("--data-dir")
        .arg(sample_dir())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();

    let records = Records::read_file(sample_dir().join("test_batch.bin")).unwrap();
    let classifier = Classifier::from_path(&model).unwrap();
    let predictions = classifier.classify_records(records.as_bytes()).unwrap();
    let correct = predictions.iter().enumerate().filter(|(i, p)| p.class == records.label(*i) as usize).count();

    assert_eq!(report["total"], records.len());
    assert_eq!(report["correct"], correct);
    assert_eq!(report["precision_at_1"].as_f64().unwrap(), correct as f64 / records.len() as f64);
    assert!(report["images_per_second"].as_f64().unwrap() > 0.0);
    let confusion = report["confusion"].as_array().unwrap();
    let diagonal: u64 = (0..10).map(|c| confusion[c][c].as_u64().unwrap()).sum();
    assert_eq!(diagonal as usize, correct);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_old_backend_name_is_the_cpu_engine() {
    let (dir, model) = model_dir("alias");
    let run = |backend: &str| {
        let output = cifar10()
            .args(["eval", "--json", "--backend", backend, "--model"])
            .arg(&model)
            .arg("--data-dir")
            .arg(sample_dir())
            .output()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&stdout(&output)).unwrap()
    };
    let (cpu, ndarray) = (run("cpu"), run("ndarray"));
    assert_eq!(cpu["correct"], ndarray["correct"]);
    assert_eq!(cpu["confusion"], ndarray["confusion"]);
    assert_eq!(ndarray["backend"], "cpu", "the report names the engine, not the alias");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn export_onnx_refuses_to_write_over_its_model() {
    let (dir, model) = model_dir("export");
    let before = std::fs::read(&model).unwrap();
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    for out in [&model, &link] {
        let output = cifar10().args(["export-onnx", "--model"]).arg(&model).arg("--out").arg(out).output().unwrap();
        assert!(!output.status.success(), "export-onnx --out {} succeeded", out.display());
        assert!(String::from_utf8_lossy(&output.stderr).contains("model.safetensors"));
    }
    assert_eq!(std::fs::read(&model).unwrap(), before, "the weights are untouched");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_text_reports_the_exact_count() {
    let (dir, model) = model_dir("text");
    let output = cifar10().arg("eval").arg("--model").arg(&model).arg("--data-dir").arg(sample_dir()).output().unwrap();
    let text = stdout(&output);
    assert!(text.contains("/1000)"), "{text}");
    assert!(text.contains("confusion matrix"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn classify_lists_top_k_for_records_and_images() {
    let (dir, model) = model_dir("classify");
    let records = Records::read_file(sample_dir().join("test_batch.bin")).unwrap();
    let bin = dir.join("three.bin");
    std::fs::write(&bin, records.head(3).as_bytes()).unwrap();
    let png = dir.join("red.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([220, 20, 20])).save(&png).unwrap();

    let output = cifar10()
        .args(["classify", "--json", "--top", "2", "--model"])
        .arg(&model)
        .arg(&bin)
        .arg(&png)
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = stdout(&output).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "three records and one image");
    for line in &lines {
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["label"], line["label"]);
        assert!(top[0]["probability"].as_f64() >= top[1]["probability"].as_f64());
    }
    assert_eq!(lines[1]["record"], 1);
    assert_eq!(lines[1]["stored_label"], records.label(1));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_inputs_fail_with_a_message_naming_the_file() {
    let (dir, model) = model_dir("bad");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let short = dir.join("short.bin");
    std::fs::write(&short, vec![1u8; 3073 + 10]).unwrap();
    let output = cifar10().arg("classify").arg("--model").arg(&model).arg(&text).arg(&short).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("notes.txt: not a PNG or JPEG image"), "{stderr}");
    assert!(stderr.contains("short.bin: 3083 bytes is not a whole number"), "{stderr}");

    let broken = dir.join("broken.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let output =
        cifar10().arg("eval").arg("--model").arg(&broken).arg("--data-dir").arg(sample_dir()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.safetensors"), "{stderr}");

    let output = cifar10().args(["eval", "--backend", "tpu", "--model"]).arg(&model).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown backend `tpu`"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_flags_out_of_range_are_refused_naming_flag_and_range() {
    let (dir, model) = model_dir("serve-flags");
    let cases: [(&[&str], &str); 6] = [
        (&["--allowed-hosts", "a.example:80"], "--allowed-hosts: \"a.example:80\" is not a host name"),
        (&["--max-queue", "0"], "--max-queue (max_queued_images) must be in 1..=1048576, got 0"),
        (&["--max-queue", "8"], "--max-queue (max_queued_images) must be at least --max-batch (max_batch), 64"),
        (&["--workers", "0"], "--workers (engine_workers) must be in 1..=256, got 0"),
        (&["--threads", "0"], "--threads (threads) must be in 1..=256, got 0"),
        (
            &["--max-wait-ms", "40000"],
            "--max-wait-ms (max_wait) must be below --timeout-ms (request_timeout), 30000 ms",
        ),
    ];
    for (flags, needle) in cases {
        let output =
            cifar10().args(["serve", "--addr", "127.0.0.1:0", "--model"]).arg(&model).args(flags).output().unwrap();
        assert!(!output.status.success(), "{flags:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The flag reaches the server: a name it does not list is refused, the probes still answer.
#[test]
fn serve_answers_only_the_allowed_hosts() {
    let server = ServeProcess::start("allowed-hosts", &["--allowed-hosts", "api.example.com"]);
    assert_eq!(server.request("GET", "/v2", "", b""), 403);
    assert_eq!(server.request("GET", "/v2/health/ready", "", b""), 200);
    let server = ServeProcess::start("loopback-hosts", &[]);
    assert_eq!(server.request("GET", "/v2", "", b""), 200);
}

#[test]
fn classify_refuses_truncated_images() {
    let (dir, model) = model_dir("truncated");
    let picture = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 90]));
    let jpeg = dir.join("whole.jpg");
    picture.save(&jpeg).unwrap();
    let png = dir.join("whole.png");
    picture.save(&png).unwrap();
    let cut = |path: &Path, name: &str, keep: fn(usize) -> usize| {
        let bytes = std::fs::read(path).unwrap();
        let out = dir.join(name);
        std::fs::write(&out, &bytes[..keep(bytes.len())]).unwrap();
        out
    };
    let half_jpeg = cut(&jpeg, "half.jpg", |n| n / 2);
    let no_iend = cut(&png, "no-iend.png", |n| n - 12);
    let output = cifar10().args(["classify", "--model"]).arg(&model).arg(&jpeg).arg(&png).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for (file, needle) in [
        (&half_jpeg, "half.jpg: cannot decode: truncated JPEG"),
        (&no_iend, "no-iend.png: cannot decode: truncated PNG"),
    ] {
        let output = cifar10().args(["classify", "--model"]).arg(&model).arg(file).output().unwrap();
        assert!(!output.status.success(), "{needle} was classified");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(needle),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `cifar10 serve` running as a child process, killed when dropped.
struct ServeProcess {
    child: std::process::Child,
    addr: String,
    dir: PathBuf,
    /// Kept open, so that the server's writes to stderr never fail.
    _stderr: std::io::BufReader<std::process::ChildStderr>,
}

impl ServeProcess {
    fn start(tag: &str, flags: &[&str]) -> ServeProcess {
        use std::io::BufRead;
        let (dir, model) = model_dir(tag);
        let mut child = cifar10()
            .args(["serve", "--quiet", "--addr", "127.0.0.1:0", "--model"])
            .arg(&model)
            .args(flags)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("the server stopped before listening: {seen}");
            }
            if let Some(rest) = line.split("http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
            seen.push_str(&line);
        };
        ServeProcess { child, addr, dir, _stderr: stderr }
    }

    /// The child's peak resident memory so far, in bytes (Linux's VmHWM).
    fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmHWM line");
        kib << 10
    }

    /// Sends one request on a fresh connection; the status code of the answer.
    fn request(&self, method: &str, path: &str, headers: &str, body: &[u8]) -> u16 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
        let length = match headers.contains("Content-Length") {
            true => String::new(),
            false => format!("Content-Length: {}\r\n", body.len()),
        };
        let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{length}{headers}\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(body); // a refused body may be cut short
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
    }

    /// Sends `count` copies of a request at once; their status codes.
    fn concurrently(&self, count: usize, path: &str, headers: &str, body: &[u8]) -> Vec<u16> {
        std::thread::scope(|s| {
            let sent: Vec<_> = (0..count).map(|_| s.spawn(|| self.request("POST", path, headers, body))).collect();
            sent.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const MIB: u64 = 1 << 20;
const INFER: &str = "/v2/models/cifar10/infer";

/// A 16 MiB JSON inference request that is almost all tensor values, the costliest kind
/// to parse.
fn json_bomb() -> Vec<u8> {
    let head = br#"{"inputs":[{"name":"input","shape":[1,3,24,24],"datatype":"FP32","data":[0"#;
    let tail = b"]}]}";
    let values = ((16 << 20) - head.len() - tail.len()) / 2;
    let mut body = head.to_vec();
    body.extend(std::iter::repeat_n(*b",0", values).flatten());
    body.extend_from_slice(tail);
    body
}

#[test]
fn served_json_parsing_memory_is_bounded() {
    let server = ServeProcess::start("json-bomb", &[]);
    let small = serde_json::json!({ "inputs": [{ "name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8",
                                                 "data": vec![7u8; 3072] }] });
    assert_eq!(server.request("POST", INFER, "", small.to_string().as_bytes()), 200);
    let idle = server.peak_memory();
    // Eight at once: each refused (8M values for a 1,728-value shape) after being parsed.
    let body = json_bomb();
    assert_eq!(body.len(), 16 << 20);
    assert!(server.concurrently(8, INFER, "", &body).iter().all(|&s| s == 400));
    // The stated bound: 2 large bodies at a time, each held once with at most 64 × 12 KiB
    // of values parsed from it, plus what the allocator keeps of freed bodies (up to two
    // more); before, each such body took 820 MB to parse.
    let grown = server.peak_memory().saturating_sub(idle);
    assert!(grown < 5 * 16 * MIB, "peak memory grew by {} MiB", grown / MIB);
}

/// A PNG chunk with its length and CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let crc = |bytes: &[u8]| {
        !bytes.iter().fold(!0u32, |c, &b| {
            (0..8).fold(c ^ u32::from(b), |c, _| if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 })
        })
    };
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc(&out[4..]).to_be_bytes());
    out
}

/// A zlib stream of `1 + 258 × repeats` zero bytes, 13 bits per 258 bytes: a literal
/// zero, then copies of length 258 at distance 1 (fixed Huffman codes).
fn zlib_zeros(repeats: usize) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let (mut acc, mut bits) = (0u64, 0u32);
    let mut put = |out: &mut Vec<u8>, value: u64, n: u32| {
        acc |= value << bits;
        bits += n;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    };
    // Huffman codes go most significant bit first.
    let code = |value: u64, n: u32| (0..n).fold(0, |r, i| r | (((value >> i) & 1) << (n - 1 - i)));
    put(&mut out, 0b011, 3); // final block, fixed codes
    put(&mut out, code(0x30, 8), 8); // literal 0
    for _ in 0..repeats {
        put(&mut out, code(0xC5, 8), 8); // length 258
        put(&mut out, 0, 5); // distance 1
    }
    put(&mut out, 0, 7); // end of block
    put(&mut out, 0, 7); // flush to a byte
    let total = 1 + 258 * repeats as u64;
    let adler = ((total % 65521) << 16) | 1;
    out.extend_from_slice(&(adler as u32).to_be_bytes());
    out
}

/// A 32×32 PNG carrying an iCCP chunk (a colour profile) of under 2 MB that inflates to
/// 330 MB: the png crate inflates such a profile whole, whatever `image::Limits` says.
fn png_bomb() -> Vec<u8> {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(32, 32, image::Rgb([30, 60, 90]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut profile = b"icc\0\0".to_vec(); // name, compression method
    profile.extend(zlib_zeros(1_280_000));
    let mut bomb = png[..33].to_vec(); // signature and IHDR
    bomb.extend(png_chunk(b"iCCP", &profile));
    bomb.extend_from_slice(&png[33..]);
    bomb
}

#[test]
fn served_image_decoding_ignores_compressed_metadata() {
    let server = ServeProcess::start("png-bomb", &[]);
    let bomb = png_bomb();
    assert!(bomb.len() < 2 << 20);
    assert_eq!(server.request("POST", "/classify", "", &bomb[..33]), 400); // warm up
    let idle = server.peak_memory();
    assert!(server.concurrently(4, "/classify", "", &bomb).iter().all(|&s| s == 200));
    // Inflating the chunk would take 330 MB per request; the pixels take nothing.
    let grown = server.peak_memory().saturating_sub(idle);
    assert!(grown < 32 * MIB, "peak memory grew by {} MiB", grown / MIB);
}

#[test]
fn served_oversize_announcements_and_idle_connections_cost_nothing() {
    let server = ServeProcess::start("oversize", &["--max-connections", "64", "--header-timeout-ms", "500"]);
    assert_eq!(server.request("GET", "/v2/health/live", "", b""), 200);
    let idle = server.peak_memory();
    // Announced 1 GiB bodies are refused before a byte is read (`request` sends none).
    let huge = format!("Expect: 100-continue\r\nContent-Length: {}\r\n", 1u64 << 30);
    let statuses = std::thread::scope(|s| {
        let sent: Vec<_> = (0..16).map(|_| s.spawn(|| server.request("POST", INFER, &huge, b""))).collect();
        sent.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    assert!(statuses.iter().all(|&s| s == 413), "{statuses:?}");
    // Connections that never send their headers are closed, not kept.
    let silent: Vec<_> = (0..100).map(|_| std::net::TcpStream::connect(&server.addr).unwrap()).collect();
    for mut stream in silent {
        use std::io::Read;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        assert_eq!(stream.read(&mut [0u8; 16]).unwrap_or(0), 0, "a silent connection got an answer");
    }
    assert_eq!(server.request("GET", "/v2/health/live", "", b""), 200);
    let grown = server.peak_memory().saturating_sub(idle);
    assert!(grown < 16 * MIB, "peak memory grew by {} MiB", grown / MIB);
}

#[test]
fn both_backends_refuse_inputs_out_of_range_alike_and_answer_finite_logits() {
    for backend in ["cpu", "onnx"] {
        let server = ServeProcess::start(&format!("range-{backend}"), &["--backend", backend]);
        // 200 means finite logits: the server answers 500 rather than send `null`s.
        for (value, status) in [(1e20f32, 400), (-1e20, 400), (1.5e6, 400), (1e6, 200), (-1e6, 200), (40.0, 200)] {
            let body = serde_json::json!({ "inputs": [{ "name": "input", "shape": [1, 3, 24, 24],
                                                        "datatype": "FP32", "data": vec![value; 1728] }] });
            assert_eq!(server.request("POST", INFER, "", body.to_string().as_bytes()), status, "{backend} {value}");
        }
    }
}
