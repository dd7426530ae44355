//! Writer tests: files are decoded both here (prost) and by TensorBoard's own Python reader.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::proto::{Event, Payload, What};
use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("train-summary-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn read_events(path: &Path) -> Vec<Event> {
    let bytes = fs::read(path).unwrap();
    let records = tfrecord::read_records(&bytes).unwrap();
    records.iter().map(|r| Event::decode(r.as_slice()).unwrap()).collect()
}

/// Deterministic spread of values over [-3, 3), with exact zeros mixed in.
fn sample_values(n: usize) -> Vec<f32> {
    let mut state = 12345u32;
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            if i % 50 == 0 {
                0.0
            } else {
                (state >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
            }
        })
        .collect()
}

/// An RGB gradient, `height × width × 3`.
fn sample_pixels(height: usize, width: usize) -> Vec<u8> {
    (0..height * width)
        .flat_map(|i| {
            let (y, x) = (i / width, i % width);
            [(y * 255 / height) as u8, (x * 255 / width) as u8, ((x + y) % 256) as u8]
        })
        .collect()
}

/// What both round-trip tests write.
struct Logged {
    path: PathBuf,
    before: f64,
    after: f64,
    histogram_values: Vec<f32>,
    pixels: Vec<u8>,
}

const IMAGE_HW: (usize, usize) = (24, 20);
const LOSSES: [(i64, f32); 4] = [(0, 2.25), (10, 1.75), (20, 0.5), (30, f32::NAN)];

fn write_sample_run(dir: &Path) -> Logged {
    let before = now();
    let mut writer = SummaryWriter::create(dir).unwrap();
    for (step, loss) in LOSSES {
        writer.scalar("loss", step, loss).unwrap();
    }
    writer.scalar("learning_rate", 10, 0.1).unwrap();
    let histogram_values = sample_values(1000);
    writer.histogram("conv1/weights", 20, &histogram_values).unwrap();
    let pixels = sample_pixels(IMAGE_HW.0, IMAGE_HW.1);
    writer.image("input", 30, IMAGE_HW.0, IMAGE_HW.1, 3, &pixels).unwrap();
    writer.flush().unwrap();
    let after = now();
    Logged { path: writer.path().to_path_buf(), before, after, histogram_values, pixels }
}

#[test]
fn writer_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<SummaryWriter>();
}

#[test]
fn file_is_named_like_tensorflows_and_never_reused() {
    let dir = TempDir::new("names");
    let first = SummaryWriter::create(&dir.0.join("nested/run")).unwrap();
    let second = SummaryWriter::create(&dir.0.join("nested/run")).unwrap();
    assert_ne!(first.path(), second.path());
    for writer in [&first, &second] {
        assert_eq!(writer.path().parent().unwrap(), dir.0.join("nested/run"));
        let name = writer.path().file_name().unwrap().to_str().unwrap();
        let rest = name.strip_prefix("events.out.tfevents.").unwrap();
        let parts: Vec<&str> = rest.split('.').collect();
        let secs: f64 = parts[0].parse().unwrap();
        assert!((secs - now()).abs() < 60.0, "{name}");
        assert_eq!(parts[parts.len() - 2], std::process::id().to_string(), "{name}");
        parts[parts.len() - 1].parse::<u64>().unwrap();
        assert!(!parts[1..parts.len() - 2].join(".").is_empty(), "no hostname in {name}");
    }
}

#[test]
fn header_event_is_on_disk_right_after_create() {
    let dir = TempDir::new("header");
    let before = now();
    let writer = SummaryWriter::create(&dir.0).unwrap();
    // Read while the writer is alive: the header must not wait for a flush or drop.
    let events = read_events(writer.path());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())));
    assert!(events[0].wall_time >= before.floor() && events[0].wall_time <= now());
}

#[test]
fn events_decode_with_their_values_steps_and_wall_times() {
    let dir = TempDir::new("decode");
    let logged = write_sample_run(&dir.0);
    let events = read_events(&logged.path);
    assert_eq!(events.len(), 1 + LOSSES.len() + 3);
    for event in &events {
        assert!(event.wall_time >= logged.before.floor() && event.wall_time <= logged.after);
    }
    assert!(events.windows(2).all(|pair| pair[0].wall_time <= pair[1].wall_time));

    let values: Vec<(i64, String, Payload)> = events[1..]
        .iter()
        .map(|event| match &event.what {
            Some(What::Summary(summary)) => {
                assert_eq!(summary.value.len(), 1);
                let value = &summary.value[0];
                (event.step, value.tag.clone(), value.payload.clone().unwrap())
            }
            other => panic!("expected a summary, got {other:?}"),
        })
        .collect();
    for ((step, loss), (got_step, tag, payload)) in LOSSES.iter().zip(&values) {
        assert_eq!((got_step, tag.as_str()), (step, "loss"));
        match payload {
            Payload::SimpleValue(v) => assert_eq!(v.to_bits(), loss.to_bits()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(values[4], (10, "learning_rate".into(), Payload::SimpleValue(0.1)));
    let expected_histo = histogram::histogram(&logged.histogram_values).unwrap();
    assert_eq!(values[5], (20, "conv1/weights".into(), Payload::Histo(expected_histo)));
    match &values[6] {
        (30, tag, Payload::Image(image)) if tag == "input" => {
            assert_eq!((image.height, image.width, image.colorspace), (24, 20, 3));
            assert_eq!(&image.encoded_image_string[..4], b"\x89PNG");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unusable_log_dir_error_names_it() {
    let dir = TempDir::new("unwritable");
    fs::create_dir_all(&dir.0).unwrap();
    // A regular file where a directory should be: fails even for root, unlike chmod.
    let blocker = dir.0.join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let log_dir = blocker.join("run");
    let err = SummaryWriter::create(&log_dir).unwrap_err();
    assert!(err.to_string().contains(&log_dir.display().to_string()), "{err}");
}

#[test]
fn bad_input_errors_name_the_tag_and_leave_the_file_valid() {
    let dir = TempDir::new("bad-input");
    let mut writer = SummaryWriter::create(&dir.0).unwrap();
    let err = writer.histogram("fc1/weights", 1, &[0.5, f32::NAN]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("\"fc1/weights\""), "{err}");
    let err = writer.image("inputs", 1, 2, 2, 3, &[0; 11]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("\"inputs\"") && err.to_string().contains("expected 12"), "{err}");
    writer.scalar("loss", 1, 1.0).unwrap();
    writer.flush().unwrap();
    assert_eq!(read_events(writer.path()).len(), 2, "only the header and the scalar");
}

/// Reads an event file with TensorBoard's own code and prints what it found as JSON. Floats go
/// out as `repr` strings: exact in both directions, and NaN survives.
const READ_BACK_PY: &str = r#"
import io, json, sys
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

path = sys.argv[1]
# EventAccumulator stops quietly at a bad record; this reader raises DataLossError on any CRC
# mismatch, so count the records with it first.
reader, records = PyRecordReader_New(path), []
while True:
    try:
        reader.GetNext()
    except errors.OutOfRangeError:
        break
    records.append(reader.record())

acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0})
acc.Reload()
f = lambda x: repr(float(x))
tags = acc.Tags()
out = {
    "records": len(records),
    "file_version": event_pb2.Event.FromString(records[0]).file_version,
    "parsed_file_version": acc.file_version,
    "first_wall_time": f(acc.FirstEventTimestamp()),
    "scalars": {t: [[e.step, f(e.value), f(e.wall_time)] for e in acc.Scalars(t)] for t in tags["scalars"]},
    "histograms": {t: [{"step": e.step, "wall_time": f(e.wall_time),
                        **{k: f(getattr(e.histogram_value, k)) for k in ["min", "max", "num", "sum", "sum_squares"]},
                        "bucket_limit": [f(x) for x in e.histogram_value.bucket_limit],
                        "bucket": [f(x) for x in e.histogram_value.bucket]}
                       for e in acc.Histograms(t)] for t in tags["histograms"]},
    "images": {t: [{"step": e.step, "wall_time": f(e.wall_time), "width": e.width, "height": e.height,
                    "mode": Image.open(io.BytesIO(e.encoded_image_string)).mode,
                    "pixels": list(Image.open(io.BytesIO(e.encoded_image_string)).tobytes())}
                   for e in acc.Images(t)] for t in tags["images"]},
}
print(json.dumps(out))
"#;

fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

fn float(v: &serde_json::Value) -> f64 {
    v.as_str().unwrap_or_else(|| panic!("expected a repr string, got {v}")).parse().unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(float).collect()
}

#[test]
fn tensorboard_reads_back_scalars_histogram_and_image() {
    let python = venv_python();
    // scripts/setup.sh installs tensorboard: its absence is a broken setup, not a reason to skip.
    assert!(python.exists(), "{} is missing (run scripts/setup.sh)", python.display());
    let dir = TempDir::new("tensorboard");
    let logged = write_sample_run(&dir.0);
    let output = Command::new(&python).arg("-c").arg(READ_BACK_PY).arg(&logged.path).output().unwrap();
    assert!(output.status.success(), "python failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let in_run = |wall_time: f64| wall_time >= logged.before.floor() && wall_time <= logged.after;

    assert_eq!(got["records"], 1 + LOSSES.len() as u64 + 3, "every record passes both CRC checks");
    assert_eq!(got["file_version"], "brain.Event:2");
    assert_eq!(got["parsed_file_version"], 2.0);
    assert!(in_run(float(&got["first_wall_time"])));

    let losses = got["scalars"]["loss"].as_array().unwrap();
    assert_eq!(losses.len(), LOSSES.len());
    for (row, (step, loss)) in losses.iter().zip(LOSSES) {
        assert_eq!(row[0], step);
        let value = float(&row[1]);
        assert!(value.to_bits() == f64::from(loss).to_bits() || (loss.is_nan() && value.is_nan()), "{row}");
        assert!(in_run(float(&row[2])));
    }
    assert_eq!(float(&got["scalars"]["learning_rate"][0][1]), f64::from(0.1f32));

    let histos = got["histograms"]["conv1/weights"].as_array().unwrap();
    assert_eq!(histos.len(), 1);
    let h = &histos[0];
    let values: Vec<f64> = logged.histogram_values.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(h["step"], 20);
    assert_eq!(float(&h["num"]), values.len() as f64);
    assert_eq!(float(&h["min"]), values.iter().cloned().fold(f64::INFINITY, f64::min));
    assert_eq!(float(&h["max"]), values.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    assert!((float(&h["sum"]) - values.iter().sum::<f64>()).abs() < 1e-9);
    assert!((float(&h["sum_squares"]) - values.iter().map(|v| v * v).sum::<f64>()).abs() < 1e-9);
    let (limits, counts) = (floats(&h["bucket_limit"]), floats(&h["bucket"]));
    assert_eq!(limits.len(), counts.len());
    assert_eq!(counts.iter().sum::<f64>(), values.len() as f64);
    for (i, (&limit, &count)) in limits.iter().zip(&counts).enumerate() {
        let lower = if i == 0 { -f64::MAX } else { limits[i - 1] };
        let inside = values.iter().filter(|&&v| lower <= v && v < limit).count();
        assert_eq!(count, inside as f64, "bucket [{lower}, {limit})");
    }

    let images = got["images"]["input"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!((&image["step"], &image["height"], &image["width"]), (&30.into(), &24.into(), &20.into()));
    assert_eq!(image["mode"], "RGB");
    let pixels: Vec<u8> = image["pixels"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u8).collect();
    assert_eq!(pixels, logged.pixels);
}
