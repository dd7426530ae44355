//! Triton's own Python client (`tritonclient[http]`, which sends binary tensors by
//! default) against our server. Skipped, with a message, when `.venv` lacks the client
//! (`.venv/bin/pip install 'tritonclient[http]'`).

mod serve_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use infer::cpu::CpuEngine;
use infer::Classifier;
use serde_json::{json, Value};
use serve_support::{image, start};

const SEED: u64 = 11;

const CLIENT: &str = r#"
import json, sys
import numpy as np
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

job = json.load(sys.stdin)
client = http.InferenceServerClient(url=job["addr"])
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready("cifar10"),
    "metadata": client.get_model_metadata("cifar10"),
}
images = np.array(job["images"], dtype=np.uint8).reshape(-1, 32, 32, 3)

# Defaults: binary input, all outputs requested as binary.
inp = http.InferInput("image", list(images.shape), "UINT8")
inp.set_data_from_numpy(images)
result = client.infer("cifar10", [inp])
out["binary"] = {
    "logits": result.as_numpy("logits").tolist(),
    "probabilities": result.as_numpy("probabilities").tolist(),
    "label": result.as_numpy("label").tolist(),
}

# JSON input and a JSON output.
inp = http.InferInput("image", list(images.shape), "UINT8")
inp.set_data_from_numpy(images, binary_data=False)
result = client.infer("cifar10", [inp], outputs=[http.InferRequestedOutput("label", binary_data=False)])
out["json_label"] = result.as_numpy("label").tolist()
out["json_outputs"] = [o["name"] for o in result.get_response()["outputs"]]

# Triton's classification extension, binary (the client's default).
inp = http.InferInput("image", list(images.shape), "UINT8")
inp.set_data_from_numpy(images)
result = client.infer("cifar10", [inp], outputs=[http.InferRequestedOutput("probabilities", class_count=3)])
out["top3"] = [[s.decode() for s in row] for row in result.as_numpy("probabilities")]

try:
    client.infer("resnet", [inp])
    out["unknown_model_error"] = None
except InferenceServerException as e:
    out["unknown_model_error"] = str(e)
print(json.dumps(out))
"#;

fn python() -> Option<std::path::PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let has_client = Command::new(&python)
        .args(["-c", "import tritonclient.http, numpy"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    has_client.then_some(python)
}

#[test]
fn tritons_python_client_works_unchanged() {
    // scripts/setup.sh installs the client: its absence is a broken setup, not a reason to skip.
    let python = python().expect(".venv/bin/python cannot import tritonclient.http (run scripts/setup.sh)");
    let weights = infer::random_weights(SEED);
    let server = start(Arc::new(CpuEngine::new(&weights, 1).unwrap()), |_| {});
    let images: Vec<Vec<u8>> = (0..2).map(|i| image(100 + i)).collect();
    let job = json!({ "addr": server.addr().to_string(), "images": images });

    let mut child = Command::new(python)
        .args(["-c", CLIENT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child.stdin.take().unwrap().write_all(job.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "client failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!((&out["live"], &out["ready"], &out["model_ready"]), (&json!(true), &json!(true), &json!(true)));
    assert_eq!(out["metadata"]["name"], "cifar10");
    let expected = Classifier::from_weights(&weights, 1).unwrap().classify_hwc(&images.concat()).unwrap();
    for (i, want) in expected.iter().enumerate() {
        let logits: Vec<f32> =
            out["binary"]["logits"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(logits, want.logits, "image {i}");
        let probabilities: Vec<f32> =
            out["binary"]["probabilities"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(probabilities, want.probabilities, "image {i}");
        assert_eq!(out["binary"]["label"][i], json!(want.class));
        assert_eq!(out["json_label"][i], json!(want.class));
    }
    assert_eq!(out["json_outputs"], json!(["label"]));
    for (row, prediction) in out["top3"].as_array().unwrap().iter().zip(&expected) {
        let want: Vec<String> =
            prediction.top_k(3).iter().map(|r| format!("{}:{}:{}", r.probability, r.class, r.label)).collect();
        assert_eq!(row, &json!(want));
    }
    let error = out["unknown_model_error"].as_str().expect("inferring on an unknown model raises");
    assert!(error.contains("unknown model 'resnet'"), "{error}");
    server.shutdown().unwrap();
}
