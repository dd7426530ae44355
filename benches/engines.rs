//! Images per second of the inference engines at batch 1, 16 and 128 with 1 and 2 threads, on
//! the same weights, beside the machine's measured sgemm peak; every engine's single-image
//! latency (batch 1, 1 thread: p50 and p99 of each call timed alone); and our convolution
//! product against `matrixmultiply::sgemm`.
//!
//! `cargo bench --bench engines` (a few minutes). Weights: `$CIFAR10_MODEL` if set, else
//! seeded weights (speed does not depend on the values). `BENCH_SECONDS` sets the time spent
//! per measurement (default 0.6 s); `BENCH_ROUNDS` how many times each cell is measured,
//! every engine in turn, keeping each engine's best (default 2).
//!
//! Peers: tch (libtorch) and ONNX Runtime always; OpenVINO and TFLite (XNNPACK) when the
//! optional venv of `scripts/setup-bench-peers.sh` exists (`$PEERS_VENV`, default
//! `.venv/peers`), driven through `benches/peers.py`. A row says why a peer is absent. The
//! Python peers' latencies are timed in Python around each call, so they include the binding's
//! call overhead (about a microsecond), as a Python caller would see it.
//!
//! Int8: our engine on the int8 model (`$CIFAR10_INT8_MODEL` if set, else the float weights
//! quantized here like `cifar10 quantize`), in every table with its ratio to our float engine,
//! and the two int8 anchors from the peers venv, each quantizing the same float model with its
//! own tool on the same 1,000 calibration images: TFLite full-integer quantization (XNNPACK)
//! and ONNX Runtime's `quantize_static` (QDQ, per channel, run by its Python binding). The
//! calibration images are the first 1,000 of `data_batch_1.bin` (the data folder of
//! `cifar10 eval`: `$CIFAR10_DATA_DIR`, else `../shared/cifar10/cifar-10-batches-bin`); without
//! it, the `data/sample` test images stand in (speed does not depend on them) and no precision
//! is reported. With it, a last table gives each int8 model's file size and precision@1 on
//! `data/sample` and on the full test set.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use infer::cpu::{CpuEngine, Kernel, ProductBench};
use infer::prediction::argmax;
use infer::Engine;
use model_format::arch::{self, INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE, NUM_CLASSES};
use model_format::cifar::{Dataset, Records};
use model_format::preprocess::preprocess;
use model_format::quantize::{self, DEFAULT_CALIBRATION_IMAGES};
use model_format::{QuantizedWeights, Weights};
use tch::{Device, Kind, Tensor};

const BATCHES: [usize; 3] = [1, 16, 128];
const THREADS: [usize; 2] = [1, 2];
/// The portable kernel does its multiply-adds in software on most CPUs: measured at small
/// batches only, or a cell would take minutes.
const PORTABLE_MAX_BATCH: usize = 16;
/// Single-image calls timed per latency measurement, at the least (after one warm-up call).
const MIN_LATENCY_CALLS: usize = 200;

/// Something that turns a batch of preprocessed inputs into logits.
trait Runner {
    fn logits(&mut self, input: &[f32], batch: usize, out: &mut [f32]);
}

struct EngineRunner(Box<dyn Engine>);

impl Runner for EngineRunner {
    fn logits(&mut self, input: &[f32], batch: usize, out: &mut [f32]) {
        self.0.logits_flat(input, batch, out).expect("engine runs");
    }
}

/// The trainer's tch network on CPU. Its thread count is tch's global intra-op setting, set
/// when the runner is built (only tch rows set it, and a row is rebuilt for each thread count),
/// not on every call, where it would count in tch's latency.
struct TchRunner {
    net: train::model::Net,
}

impl Runner for TchRunner {
    fn logits(&mut self, input: &[f32], batch: usize, out: &mut [f32]) {
        let shape = [batch as i64, INPUT_CHANNELS as i64, INPUT_SIZE as i64, INPUT_SIZE as i64];
        let xs = Tensor::from_slice(input).view(shape);
        let logits = tch::no_grad(|| self.net.forward(&xs)).to_kind(Kind::Float).contiguous();
        logits.view([-1]).copy_data(out, batch * NUM_CLASSES);
    }
}

/// What a row is, which decides the tables it is in and what it is compared with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// Our float engine, the first row.
    Ours,
    /// Our float engine on the portable kernel: throughput at small batches only.
    Portable,
    /// Our engine on the int8 model.
    Int8,
    /// A float engine ours is compared with.
    Peer,
    /// An int8 engine on its own quantization of the same float model.
    Int8Anchor,
}

/// Preprocessed labelled images for precision@1, in memory and in files for `peers.py`.
struct EvalSet {
    name: &'static str,
    images: Vec<f32>,
    labels: Vec<u8>,
    images_file: PathBuf,
    labels_file: PathBuf,
}

/// One table row: an engine measured at a (batch, threads) cell.
trait Contender {
    fn name(&self) -> String;
    /// Images per second, or why there is no figure.
    fn rate(&mut self, inputs: &[f32], batch: usize, threads: usize, budget: Duration) -> Result<f64, String>;
    /// The time of each single-image call on one thread, at least [`MIN_LATENCY_CALLS`] of
    /// them over at least `budget`, or why there is no figure.
    fn latencies(&mut self, inputs: &[f32], budget: Duration) -> Result<Vec<Duration>, String>;
    fn role(&self) -> Role;
    /// Correct top-1 answers on `set`, or why there is no figure.
    fn correct(&mut self, set: &EvalSet) -> Result<usize, String>;
    /// Bytes of the model file it runs, or why there is no figure.
    fn file_bytes(&mut self) -> Result<usize, String>;
}

/// A Rust-side engine, built afresh for each thread count.
struct Local {
    name: String,
    build: Box<dyn Fn(usize) -> Box<dyn Runner>>,
    role: Role,
    /// The size of its weights file, when it is in the precision table.
    file_bytes: Option<usize>,
    max_batch: usize,
    built: Option<(usize, Box<dyn Runner>)>,
}

impl Local {
    /// The runner built for `threads`, building it when the last one had another count.
    fn runner(&mut self, threads: usize) -> &mut dyn Runner {
        if self.built.as_ref().is_none_or(|(t, _)| *t != threads) {
            self.built = Some((threads, (self.build)(threads)));
        }
        &mut *self.built.as_mut().expect("built above").1
    }
}

impl Contender for Local {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn rate(&mut self, inputs: &[f32], batch: usize, threads: usize, budget: Duration) -> Result<f64, String> {
        if batch > self.max_batch {
            return Err("skipped (slow)".into());
        }
        Ok(throughput(self.runner(threads), inputs, batch, budget))
    }

    fn latencies(&mut self, inputs: &[f32], budget: Duration) -> Result<Vec<Duration>, String> {
        Ok(latencies(self.runner(1), &inputs[..INPUT_LEN], budget))
    }

    fn role(&self) -> Role {
        self.role
    }

    fn correct(&mut self, set: &EvalSet) -> Result<usize, String> {
        let runner = self.runner(THREADS[THREADS.len() - 1]);
        let mut logits = vec![0f32; EVAL_BATCH * NUM_CLASSES];
        let mut correct = 0;
        for (images, labels) in set.images.chunks(EVAL_BATCH * INPUT_LEN).zip(set.labels.chunks(EVAL_BATCH)) {
            let out = &mut logits[..labels.len() * NUM_CLASSES];
            runner.logits(images, labels.len(), out);
            correct += out.chunks_exact(NUM_CLASSES).zip(labels).filter(|(l, &y)| argmax(l) == y as usize).count();
        }
        Ok(correct)
    }

    fn file_bytes(&mut self) -> Result<usize, String> {
        self.file_bytes.ok_or_else(|| "-".into())
    }
}

/// Images per call when counting correct answers.
const EVAL_BATCH: usize = 100;

/// `benches/peers.py` running in the peers venv, shared by its engines' rows.
struct PeerServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PeerServer {
    /// Starts the server; `Err` says why there are no Python peers.
    fn start(onnx: &Path, safetensors: &Path, calibration: &Path) -> Result<(Self, serde_json::Value), String> {
        let venv = std::env::var_os("PEERS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/peers"));
        let python = venv.join("bin/python");
        if !python.exists() {
            return Err(format!("absent: no {} (run scripts/setup-bench-peers.sh)", python.display()));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers.py");
        let mut child = Command::new(&python)
            .arg(script)
            .arg("--onnx")
            .arg(onnx)
            .arg("--safetensors")
            .arg(safetensors)
            .arg("--calibration")
            .arg(calibration)
            .arg("--workdir")
            .arg(onnx.parent().expect("the model file is in a folder"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("absent: cannot start {}: {e}", python.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| format!("absent: peers.py: {e}"))?;
        let status = serde_json::from_str(&line).map_err(|e| format!("absent: peers.py said {line:?}: {e}"))?;
        Ok((PeerServer { child, stdin, stdout }, status))
    }

    fn rate(&mut self, peer: &str, batch: usize, threads: usize, budget: Duration) -> Result<f64, String> {
        let line = self.ask(&format!("rate {peer} {batch} {threads} {}", budget.as_secs_f64()))?;
        line.parse().map_err(|_| line)
    }

    fn latencies(&mut self, peer: &str, budget: Duration) -> Result<Vec<Duration>, String> {
        let line = self.ask(&format!("latency {peer} {MIN_LATENCY_CALLS} {}", budget.as_secs_f64()))?;
        let nanos: Result<Vec<u64>, _> = line.split_whitespace().map(str::parse).collect();
        nanos.map(|n| n.into_iter().map(Duration::from_nanos).collect()).map_err(|_| line)
    }

    fn correct(&mut self, peer: &str, set: &EvalSet) -> Result<usize, String> {
        let line =
            self.ask(&format!("precision {peer} {} {}", set.images_file.display(), set.labels_file.display()))?;
        let counts: Vec<usize> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        match counts[..] {
            [correct, total] if total == set.labels.len() => Ok(correct),
            _ => Err(line),
        }
    }

    fn file_bytes(&mut self, peer: &str) -> Result<usize, String> {
        let line = self.ask(&format!("size {peer}"))?;
        line.parse().map_err(|_| line)
    }

    /// Sends one request line and returns the answer line, trimmed.
    fn ask(&mut self, request: &str) -> Result<String, String> {
        writeln!(self.stdin, "{request}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python peer's row; `server` is `Err(why)` when the peer is absent.
struct Python {
    peer: &'static str,
    role: Role,
    label: String,
    server: Result<std::rc::Rc<std::cell::RefCell<PeerServer>>, String>,
}

impl Contender for Python {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn rate(&mut self, _: &[f32], batch: usize, threads: usize, budget: Duration) -> Result<f64, String> {
        match &self.server {
            Ok(server) => server.borrow_mut().rate(self.peer, batch, threads, budget),
            Err(why) => Err(why.clone()),
        }
    }

    fn latencies(&mut self, _: &[f32], budget: Duration) -> Result<Vec<Duration>, String> {
        match &self.server {
            Ok(server) => server.borrow_mut().latencies(self.peer, budget),
            Err(why) => Err(why.clone()),
        }
    }

    fn role(&self) -> Role {
        self.role
    }

    fn correct(&mut self, set: &EvalSet) -> Result<usize, String> {
        match &self.server {
            Ok(server) => server.borrow_mut().correct(self.peer, set),
            Err(why) => Err(why.clone()),
        }
    }

    fn file_bytes(&mut self) -> Result<usize, String> {
        match &self.server {
            Ok(server) => server.borrow_mut().file_bytes(self.peer),
            Err(why) => Err(why.clone()),
        }
    }
}

/// The Python peers, each with its version or why it is absent.
fn python_peers(weights: &Weights, dir: &Path, calibration: &Path) -> Vec<Python> {
    let (onnx, safetensors) = (dir.join("model.onnx"), dir.join("model.safetensors"));
    let started = model_format::onnx::save(weights, &onnx)
        .map_err(|e| format!("absent: cannot write {}: {e}", onnx.display()))
        .and_then(|()| {
            let bytes = weights.to_bytes().map_err(|e| format!("absent: {e}"))?;
            std::fs::write(&safetensors, bytes).map_err(|e| format!("absent: {e}"))
        })
        .and_then(|()| PeerServer::start(&onnx, &safetensors, calibration));
    let (server, status) = match started {
        Ok((server, status)) => (Ok(std::rc::Rc::new(std::cell::RefCell::new(server))), status),
        Err(why) => (Err(why), serde_json::Value::Null),
    };
    [
        ("openvino", Role::Peer),
        ("tflite", Role::Peer),
        ("tflite-int8", Role::Int8Anchor),
        ("ort-int8", Role::Int8Anchor),
    ]
    .into_iter()
    .map(|(peer, role)| {
        let (label, server) = match (&server, status.get(peer)) {
            (Err(why), _) => (peer.to_string(), Err(why.clone())),
            (Ok(server), Some(s)) if s.get("version").is_some() => {
                (format!("{peer} {}", s["version"].as_str().unwrap_or("?")), Ok(server.clone()))
            }
            (Ok(_), s) => (
                peer.to_string(),
                Err(format!("absent: {}", s.map_or("no status".into(), |s| s["absent"].to_string()))),
            ),
        };
        Python { peer, role, label, server }
    })
    .collect()
}

/// The models every row runs: the float weights, our int8 model, and the calibration images
/// the int8 anchors quantize with (in a file for `peers.py`).
struct Models<'a> {
    float: &'a Weights,
    int8: &'a QuantizedWeights,
    calibration: &'a Path,
}

fn contenders(models: &Models, dir: &Path) -> Vec<Box<dyn Contender>> {
    let local = |name: &str, role: Role, max_batch: usize, build: Box<dyn Fn(usize) -> Box<dyn Runner>>| {
        Box::new(Local { name: name.into(), build, role, file_bytes: None, max_batch, built: None })
    };
    let weights = models.float;
    let (a, b, c, d, q) = (weights.clone(), weights.clone(), weights.clone(), weights.clone(), models.int8.clone());
    let mut ours = local(
        "cpu",
        Role::Ours,
        usize::MAX,
        Box::new(move |t| Box::new(EngineRunner(Box::new(CpuEngine::new(&a, t).expect("engine builds"))))),
    );
    ours.file_bytes = weights.to_bytes().ok().map(|b| b.len());
    let mut int8 = local(
        "cpu int8",
        Role::Int8,
        usize::MAX,
        Box::new(move |t| Box::new(EngineRunner(Box::new(CpuEngine::new_int8(&q, t).expect("int8 engine builds"))))),
    );
    int8.file_bytes = models.int8.to_bytes().ok().map(|b| b.len());
    let mut rows: Vec<Box<dyn Contender>> = vec![
        ours,
        local(
            "cpu portable",
            Role::Portable,
            PORTABLE_MAX_BATCH,
            Box::new(move |t| {
                let engine = CpuEngine::with_kernel(&b, t, Kernel::Portable).expect("engine builds");
                Box::new(EngineRunner(Box::new(engine)))
            }),
        ),
        int8,
        local(
            "tch",
            Role::Peer,
            usize::MAX,
            Box::new(move |threads| {
                tch::set_num_threads(threads as i32);
                let net = train::model::Net::from_weights(&c, Device::Cpu).expect("net builds");
                Box::new(TchRunner { net })
            }),
        ),
        // The root package always builds infer's `onnx` feature (see its dev-dependencies).
        local(
            "onnxruntime",
            Role::Peer,
            usize::MAX,
            Box::new(move |t| {
                let engine = infer::onnx::OnnxEngine::from_weights(&d, t).expect("ONNX Runtime loads the model");
                Box::new(EngineRunner(Box::new(engine)))
            }),
        ),
    ];
    rows.extend(python_peers(weights, dir, models.calibration).into_iter().map(|p| Box::new(p) as Box<dyn Contender>));
    rows
}

/// Images per second of `runner` at `batch`, over about `budget`.
fn throughput(runner: &mut dyn Runner, inputs: &[f32], batch: usize, budget: Duration) -> f64 {
    let mut out = vec![0f32; batch * NUM_CLASSES];
    let input = &inputs[..batch * INPUT_LEN];
    runner.logits(input, batch, &mut out); // warm-up: workspaces, lazy initialisation
    let start = Instant::now();
    let mut calls = 0;
    while calls < 1 || start.elapsed() < budget {
        runner.logits(input, batch, &mut out);
        calls += 1;
    }
    (calls * batch) as f64 / start.elapsed().as_secs_f64()
}

/// GFLOP/s of `matrixmultiply::sgemm` on `m × k` by `k × n` on one thread.
fn sgemm_rate(m: usize, k: usize, n: usize, budget: Duration) -> f64 {
    let (a, b, mut c) = (vec![1.0f32; m * k], vec![0.5f32; k * n], vec![0f32; m * n]);
    rate_of(2 * m * k * n, budget, || {
        // SAFETY: a is m×k, b k×n and c m×n, all row-major.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    })
}

/// GFLOP/s of `work` (`flops` each call) over about `budget`, after a warm-up call.
fn rate_of(flops: usize, budget: Duration, mut work: impl FnMut()) -> f64 {
    work();
    let start = Instant::now();
    let mut calls = 0;
    while calls < 2 || start.elapsed() < budget {
        work();
        calls += 1;
    }
    (flops * calls) as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// GFLOP/s of square 1024³ sgemm on `threads` threads, each multiplying its own matrices
/// (how the engine uses threads: one chunk of the batch each).
fn sgemm_peak(threads: usize, budget: Duration) -> f64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| sgemm_rate(1024, 1024, 1024, budget))).collect();
        handles.into_iter().map(|h| h.join().expect("sgemm thread")).sum()
    })
}

fn inputs(max_batch: usize) -> Vec<f32> {
    let records =
        Records::read_file(concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample/test_batch.bin")).expect("data/sample");
    let mut inputs = vec![0f32; max_batch * INPUT_LEN];
    for (i, slot) in inputs.chunks_exact_mut(INPUT_LEN).enumerate() {
        preprocess(records.image(i % records.len()), slot);
    }
    inputs
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':'])));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{} ({cores} threads available)", model.unwrap_or("unknown CPU"))
}

/// The time of each call of `runner` on the single image `input`, after a warm-up call: at
/// least [`MIN_LATENCY_CALLS`] calls, over at least `budget`.
fn latencies(runner: &mut dyn Runner, input: &[f32], budget: Duration) -> Vec<Duration> {
    let mut out = [0f32; NUM_CLASSES];
    runner.logits(input, 1, &mut out);
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < MIN_LATENCY_CALLS || start.elapsed() < budget {
        let t = Instant::now();
        runner.logits(input, 1, &mut out);
        times.push(t.elapsed());
    }
    times
}

fn main() {
    // matrixmultiply's own pool off: the engines' thread counts are the only parallelism.
    std::env::set_var("MATMUL_NUM_THREADS", "1");
    let env = |name: &str, default: f64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let budget = Duration::from_secs_f64(env("BENCH_SECONDS", 0.6));
    let rounds = env("BENCH_ROUNDS", 2.0) as usize;
    let weights = match std::env::var_os("CIFAR10_MODEL") {
        Some(path) => Weights::load(&path).expect("$CIFAR10_MODEL names a valid model"),
        None => infer::random_weights(2024),
    };
    let inputs = inputs(*BATCHES.iter().max().unwrap());
    let flops = arch::flops_per_image() as f64;
    let ours = CpuEngine::new(&weights, 1).expect("engine builds");

    println!("CPU: {}", cpu_model());
    println!("our kernel: {} (of those this CPU runs: {:?})", ours.kernel(), available_kernels());
    let peaks: Vec<f64> = THREADS.iter().map(|&t| sgemm_peak(t, budget)).collect();
    let peak_text: Vec<String> =
        THREADS.iter().zip(&peaks).map(|(t, p)| format!("{p:.1} GFLOP/s on {t} thread(s)")).collect();
    println!("sgemm peak (matrixmultiply, 1024³ per thread): {}", peak_text.join(", "));
    println!("forward pass: {:.1} MFLOP per image\n", flops / 1e6);

    product_table(budget);

    let dir = std::env::temp_dir().join(format!("cifar10-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let calibration = Calibration::load(&dir);
    println!("int8 calibration: {}", calibration.description);
    let int8 = int8_model(&weights, &calibration);
    let models = Models { float: &weights, int8: &int8, calibration: &calibration.file };
    let mut rows = contenders(&models, &dir);
    latency_table(&mut rows, &inputs, budget, rounds);
    throughput_table(&mut rows, &inputs, budget, rounds, (&peaks, flops));
    match &calibration.dataset {
        Some(dataset) => precision_table(&mut rows, dataset, &dir),
        None => println!("\nno int8 precision table: the anchors were calibrated on test images"),
    }
    drop(rows);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The images the int8 models are calibrated on, in `file` for `peers.py`.
struct Calibration {
    images: Vec<f32>,
    description: String,
    file: PathBuf,
    /// The data folder they came from; `None` when the sample's test images stand in.
    dataset: Option<Dataset>,
}

impl Calibration {
    /// The first 1,000 training images, as `cifar10 quantize` takes them by default; without
    /// a data folder, the 1,000 `data/sample` test images (the speed does not depend on them).
    fn load(dir: &Path) -> Self {
        let training = Dataset::locate(None).map_err(|e| e.to_string()).and_then(|dataset| {
            let (images, description) = quantize::calibration_images(&dataset, DEFAULT_CALIBRATION_IMAGES)
                .map_err(|e| format!("{}: {e}", dataset.dir.display()))?;
            Ok((images, description, dataset))
        });
        let (images, description, dataset) = match training {
            Ok((images, description, dataset)) => (images, description, Some(dataset)),
            Err(why) => {
                let description = format!("the {DEFAULT_CALIBRATION_IMAGES} data/sample test images, for speed only (no training images: {why})");
                (inputs(DEFAULT_CALIBRATION_IMAGES), description, None)
            }
        };
        let file = dir.join("calibration.f32");
        write_f32(&file, &images);
        Calibration { images, description, file, dataset }
    }
}

/// `$CIFAR10_INT8_MODEL`, else `weights` quantized on the calibration images.
fn int8_model(weights: &Weights, calibration: &Calibration) -> QuantizedWeights {
    if let Some(path) = std::env::var_os("CIFAR10_INT8_MODEL") {
        return QuantizedWeights::load(&path).expect("$CIFAR10_INT8_MODEL names a valid int8 model");
    }
    let start = Instant::now();
    let int8 =
        quantize::quantize(weights, &calibration.images, &calibration.description).expect("the weights quantize");
    println!("int8 model: the float weights quantized in {:.1} s", start.elapsed().as_secs_f64());
    int8
}

/// Writes `values` as little-endian float32, the layout `peers.py` reads.
fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

impl EvalSet {
    /// The preprocessed images and labels of `records`, also written under `dir` for `peers.py`.
    fn new(name: &'static str, stem: &str, records: &Records, dir: &Path) -> Self {
        let mut images = vec![0f32; records.len() * INPUT_LEN];
        for (i, slot) in images.chunks_exact_mut(INPUT_LEN).enumerate() {
            preprocess(records.image(i), slot);
        }
        let labels: Vec<u8> = (0..records.len()).map(|i| records.label(i)).collect();
        let (images_file, labels_file) = (dir.join(format!("{stem}.f32")), dir.join(format!("{stem}.labels")));
        write_f32(&images_file, &images);
        std::fs::write(&labels_file, &labels).unwrap_or_else(|e| panic!("cannot write {}: {e}", labels_file.display()));
        EvalSet { name, images, labels, images_file, labels_file }
    }
}

/// File size and precision@1 of our float and int8 models and of the int8 anchors, on
/// `data/sample` and on the full test set of `dataset`.
fn precision_table(rows: &mut [Box<dyn Contender>], dataset: &Dataset, dir: &Path) {
    let sample =
        Records::read_file(concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample/test_batch.bin")).expect("data/sample");
    let mut sets = vec![EvalSet::new("data/sample", "sample", &sample, dir)];
    match dataset.test() {
        Ok(test) => sets.push(EvalSet::new("test set", "test", &test, dir)),
        Err(e) => println!("no full test set: {e}"),
    }
    println!();
    print!("{:>24} {:>12}", "precision@1", "file bytes");
    sets.iter().for_each(|set| print!(" {:>16}", set.name));
    println!();
    for row in rows.iter_mut().filter(|r| matches!(r.role(), Role::Ours | Role::Int8 | Role::Int8Anchor)) {
        let bytes = row.file_bytes().map_or_else(|why| why, |b| b.to_string());
        print!("{:>24} {bytes:>12}", truncate(&row.name(), 24));
        for set in &sets {
            let start = Instant::now();
            let cell = match row.correct(set) {
                Ok(correct) => format!("{correct}/{} {:.0}s", set.labels.len(), start.elapsed().as_secs_f64()),
                Err(why) => why,
            };
            print!(" {:>16}", truncate(&cell, 16));
        }
        println!();
    }
}

fn available_kernels() -> Vec<&'static str> {
    Kernel::ALL.into_iter().filter(|k| k.is_available()).map(Kernel::name).collect()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Our convolution product (each kernel) against `matrixmultiply::sgemm`, one thread, on
/// conv2's shape (64 × 1600 by 1600 × 144) and on 1024³.
fn product_table(budget: Duration) {
    println!("{:>22} {:>14} {:>14}", "product, 1 thread", "64×1600×144", "1024³");
    let shapes = [(64, 1600, 144), (1024, 1024, 1024)];
    let sgemm: Vec<f64> = shapes.iter().map(|&(m, k, n)| sgemm_rate(m, k, n, budget)).collect();
    let cell = |v: f64| format!("{:>8.1} GFLOP/s", v);
    println!("{:>22} {}", "matrixmultiply sgemm", sgemm.iter().map(|&v| cell(v)).collect::<Vec<_>>().join(" "));
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available() && *k != Kernel::Portable) {
        let rates: Vec<String> = shapes
            .iter()
            .zip(&sgemm)
            .map(|(&(m, k, n), &theirs)| {
                let mut product = ProductBench::new(kernel, m, k, n).expect("the kernel runs here");
                let ours = rate_of(product.flops(), budget, || product.run());
                format!("{} ({:.2}x)", cell(ours), ours / theirs)
            })
            .collect();
        println!("{:>22} {}", format!("ours, {kernel}"), rates.join(" "));
    }
    println!();
}

/// Single-image latency (batch 1, 1 thread) of ours and of every peer, each taking turns with
/// the others `rounds` times (the calls of all its turns pooled), then the table: p50, p99, and
/// each peer's p50 over ours (above 1: ours is faster).
fn latency_table(rows: &mut [Box<dyn Contender>], inputs: &[f32], budget: Duration, rounds: usize) {
    // Row 0 is ours (float); the portable kernel is no contender at batch 1 (it is there for CPUs
    // without the fast kernels).
    let measured: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].role() != Role::Portable).collect();
    let mut times: Vec<Result<Vec<Duration>, String>> = vec![Ok(Vec::new()); rows.len()];
    for _ in 0..rounds.max(1) {
        for &r in &measured {
            times[r] = match (std::mem::replace(&mut times[r], Ok(Vec::new())), rows[r].latencies(inputs, budget)) {
                (Ok(mut old), Ok(new)) => {
                    old.extend(new);
                    Ok(old)
                }
                (Err(why), _) | (_, Err(why)) => Err(why),
            };
        }
    }
    let percentiles = |times: &mut Vec<Duration>| {
        times.sort();
        (times[times.len() / 2], times[times.len() * 99 / 100])
    };
    let ours_p50 = match &mut times[0] {
        Ok(t) => percentiles(t).0,
        Err(why) => panic!("our engine has no latency: {why}"),
    };
    println!("{:>24} {:>10} {:>10} {:>10} {:>8}", "latency b1 t1", "p50 µs", "p99 µs", "p50/ours", "calls");
    for &r in &measured {
        match &mut times[r] {
            Ok(t) => {
                let (p50, p99) = percentiles(t);
                let ratio = us(p50) / us(ours_p50);
                let name = truncate(&rows[r].name(), 24);
                println!("{name:>24} {:>10.1} {:>10.1} {ratio:>9.2}x {:>8}", us(p50), us(p99), t.len());
            }
            Err(why) => println!("{:>24} {why}", truncate(&rows[r].name(), 24)),
        }
    }
    println!();
}

/// Every row at every cell, the rows taking turns `rounds` times (each keeps its best), then
/// the table with each cell's ratio to the best peer.
fn throughput_table(
    rows: &mut [Box<dyn Contender>],
    inputs: &[f32],
    budget: Duration,
    rounds: usize,
    (peaks, flops): (&[f64], f64),
) {
    let cells: Vec<(usize, usize)> = BATCHES.iter().flat_map(|&b| THREADS.iter().map(move |&t| (b, t))).collect();
    let mut best: Vec<Vec<Result<f64, String>>> = vec![vec![Err("not run".into()); cells.len()]; rows.len()];
    for (c, &(batch, threads)) in cells.iter().enumerate() {
        for _ in 0..rounds.max(1) {
            for (r, row) in rows.iter_mut().enumerate() {
                let got = row.rate(inputs, batch, threads, budget);
                best[r][c] = match (&best[r][c], got) {
                    (Ok(old), Ok(new)) => Ok(old.max(new)),
                    (_, got) => got,
                };
            }
        }
    }
    print!("{:>24}", "img/s");
    cells.iter().for_each(|(b, t)| print!(" {:>16}", format!("b{b} t{t}")));
    println!();
    for (row, results) in rows.iter().zip(&best) {
        print!("{:>24}", truncate(&row.name(), 24));
        for result in results {
            match result {
                Ok(v) => print!(" {v:>16.0}"),
                Err(why) => print!(" {:>16}", truncate(why, 16)),
            }
        }
        println!();
    }
    for (row, results) in rows.iter().zip(&best) {
        if let Some(Err(why)) = results.iter().find(|r| r.is_err()) {
            println!("  {}: {why}", row.name());
        }
    }
    println!();
    let best_of = |role: Role, c: usize| {
        rows.iter()
            .zip(&best)
            .filter(|(row, _)| row.role() == role)
            .filter_map(|(row, results)| results[c].as_ref().ok().map(|v| (*v, row.name())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let versus = |ours: f64, theirs: Option<(f64, String)>| match theirs {
        Some((v, name)) => (format!("{:.2}x", ours / v), format!("{} ({v:.0})", truncate(&name, 16))),
        None => ("-".into(), "none measured".into()),
    };
    println!(
        "{:>9} {:>10} {:>10} {:>24} {:>9} {:>8}",
        "cell", "cpu img/s", "cpu/best", "best peer", "GFLOP/s", "of peak"
    );
    for (c, &(batch, threads)) in cells.iter().enumerate() {
        let Some((ours, _)) = best_of(Role::Ours, c) else { continue };
        let peak = peaks[THREADS.iter().position(|&t| t == threads).expect("a bench thread count")];
        let gflops = ours * flops / 1e9;
        let (ratio, peer) = versus(ours, best_of(Role::Peer, c));
        println!(
            "{:>9} {ours:>10.0} {ratio:>10} {peer:>24} {gflops:>9.1} {:>7.0}%",
            format!("b{batch} t{threads}"),
            100.0 * gflops / peak
        );
    }
    println!();
    println!("{:>9} {:>10} {:>10} {:>10} {:>28}", "cell", "int8 img/s", "int8/cpu", "int8/best", "best int8 anchor");
    for (c, &(batch, threads)) in cells.iter().enumerate() {
        let Some((int8, _)) = best_of(Role::Int8, c) else { continue };
        let float = best_of(Role::Ours, c).map_or("-".into(), |(v, _)| format!("{:.2}x", int8 / v));
        let (ratio, anchor) = versus(int8, best_of(Role::Int8Anchor, c));
        println!("{:>9} {int8:>10.0} {float:>10} {ratio:>10} {anchor:>28}", format!("b{batch} t{threads}"));
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}
