//! An installed `cifar10` works from any folder: with no `--model` it uses the float model
//! built into it (`bundled:int8` names the int8 one), and says which, with its digest. The
//! binary is run from a folder outside the checkout, with nothing of the checkout beside it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use infer::Classifier;
use model_format::cifar::{Records, DATA_DIR_ENV};
use model_format::Model;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A folder outside the checkout holding only `bin/cifar10` and two pictures.
struct Installed {
    root: PathBuf,
}

impl Installed {
    fn new(tag: &str) -> Installed {
        let root = std::env::temp_dir().join(format!("cifar10-installed-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("work")).unwrap();
        let binary = root.join("bin/cifar10");
        if std::fs::hard_link(env!("CARGO_BIN_EXE_cifar10"), &binary).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_cifar10"), &binary).unwrap();
        }
        Installed { root }
    }

    /// `cifar10 ARGS…` run in the work folder, with no data variable and no `$CI`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.root.join("bin/cifar10"));
        command.current_dir(self.root.join("work")).env_remove(DATA_DIR_ENV).env_remove("CI").args(args);
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn shipped(name: &str) -> PathBuf {
    repo().join("models").join(name)
}

/// Record `index` of the bundled sample as a PNG file in `dir`.
fn picture(dir: &Path, index: usize) -> PathBuf {
    let records = Records::read_file(repo().join("data/sample/test_batch.bin")).unwrap();
    let chw = records.image(index);
    let hwc: Vec<u8> = (0..32 * 32).flat_map(|pixel| (0..3).map(move |c| chw[c * 32 * 32 + pixel])).collect();
    let path = dir.join(format!("record{index}.png"));
    image::RgbImage::from_raw(32, 32, hwc).unwrap().save(&path).unwrap();
    path
}

#[test]
fn classify_without_model_uses_the_built_in_models() {
    let installed = Installed::new("classify");
    let work = installed.root.join("work");
    for index in [0, 1, 2] {
        let png = picture(&work, index);
        let name = png.file_name().unwrap().to_str().unwrap();
        for (flags, file) in
            [(&[][..], "cifar10.safetensors"), (&["--model", "bundled:int8"][..], "cifar10-int8.safetensors")]
        {
            let expected = Classifier::from_path(shipped(file)).unwrap().classify_image_file(&png).unwrap();
            let mut args = vec!["classify", "--json"];
            args.extend_from_slice(flags);
            args.push(name);
            let line: serde_json::Value = serde_json::from_str(installed.run(&args).trim()).unwrap();
            assert_eq!(line["class"], expected.class, "{file} on record {index}");
            let top = line["top"][0]["probability"].as_f64().unwrap();
            assert!((top - f64::from(expected.probabilities[expected.class])).abs() < 1e-6, "{file}: {top}");
        }
    }
}

#[test]
fn eval_without_model_names_the_built_in_model_and_its_digest() {
    let installed = Installed::new("eval");
    for (flags, file) in
        [(&[][..], "cifar10.safetensors"), (&["--model", "bundled:int8"][..], "cifar10-int8.safetensors")]
    {
        let digest = Model::load(shipped(file)).unwrap().digest();
        let mut args = vec!["eval", "--json", "--limit", "100"];
        args.extend_from_slice(flags);
        let report: serde_json::Value = serde_json::from_str(&installed.run(&args)).unwrap();
        let model = report["model"].as_str().unwrap();
        assert!(model.starts_with(&format!("bundled {file}")) && model.contains(&digest), "{model}");
        let records = Records::read_file(repo().join("data/sample/test_batch.bin")).unwrap();
        let subset = infer::evaluation::balanced_subset(&records, 100).unwrap();
        let predictions = Classifier::from_path(shipped(file)).unwrap().classify_records(subset.as_bytes()).unwrap();
        let correct = predictions.iter().enumerate().filter(|(i, p)| p.class == subset.label(*i) as usize).count();
        assert_eq!(report["correct"], correct, "{file}");
    }
    let output = installed.command(&["eval", "--model", "bundled:int4"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bundled:int8"));
}

#[test]
fn serve_without_model_serves_the_built_in_one() {
    let installed = Installed::new("serve");
    let mut child =
        installed.command(&["serve", "--quiet", "--addr", "127.0.0.1:0"]).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "the server stopped before listening");
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    assert!(line.contains("bundled cifar10.safetensors"), "{line}");
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(b"GET /model-card HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let card: serde_json::Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let digest = Model::load(shipped("cifar10.safetensors")).unwrap().digest();
    assert_eq!(card["weights"]["file"], "cifar10.safetensors (bundled)", "{card}");
    assert_eq!(card["weights"]["weights_digest"], digest, "{card}");
}
