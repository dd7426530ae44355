//! `cifar10 serve` fills the page's model card from the weights' metadata: started as a user
//! would, on a free loopback port, then asked for `/` and `/model-card`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use model_format::Weights;

fn bundled_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cifar10.safetensors")
}

fn bundled_int8_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cifar10-int8.safetensors")
}

/// The server process; killed when dropped, so a failing test leaves nothing running.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cifar10 serve` with `model` on port 0 and returns it with the address it printed.
fn serve(model: &Path) -> (Serving, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cifar10"))
        .args(["serve", "--quiet", "--addr", "127.0.0.1:0", "--max-batch", "8", "--model"])
        .arg(model)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cifar10 serve starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (Serving(child), addr)
}

/// `GET path`: the status line, the head and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    (head.to_string(), body.to_string())
}

#[test]
fn serve_shows_the_weights_metadata_on_the_page() {
    let (_server, addr) = serve(&bundled_model());
    let (head, page) = get(&addr, "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/html"), "{head}");
    assert!(page.contains("<title>CIFAR-10 classifier</title>"));

    let (head, body) = get(&addr, "/model-card");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let card: serde_json::Value = serde_json::from_str(&body).unwrap();
    let metadata = Weights::load(bundled_model()).unwrap().metadata;
    assert_eq!(card["model_name"], "cifar10");
    assert_eq!(card["backend"], "cpu");
    assert_eq!(card["weights"]["step"], metadata.step.unwrap());
    assert_eq!(card["weights"]["precision_at_1"], metadata.precision_at_1.unwrap());
    assert_eq!(card["weights"]["dataset_fingerprint"], metadata.dataset_fingerprint.unwrap());
    // The file name only: the server's own paths are none of a client's business.
    assert_eq!(card["weights"]["file"], "cifar10.safetensors");
    assert_eq!(card["weights"]["variant"], "float32");
    assert_eq!(card["batching"]["max_batch"], 8);
}

#[test]
fn the_card_of_the_int8_model_says_int8() {
    let (_server, addr) = serve(&bundled_int8_model());
    let (head, body) = get(&addr, "/model-card");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let card: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(card["weights"]["variant"], "int8");
    assert_eq!(card["weights"]["file"], "cifar10-int8.safetensors");
}
