//! Images per second of the Rust engine classifying one batch of 128 interleaved (HWC)
//! images from the sample again and again: the baseline `infer-py/bench/throughput.py`
//! compares the Python module with (the same work through `Classifier`, the same threads).
//!
//! `cargo run --release -p cifar10-c --example throughput -- THREADS SECONDS`
//! prints one number, images per second.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use infer::Classifier;
use model_format::arch::IMAGE_LEN;
use model_format::cifar::RECORD_LEN;
use model_format::Weights;

const BATCH: usize = 128;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [threads, seconds] = args.as_slice() else {
        return Err("usage: throughput THREADS SECONDS".into());
    };
    let (threads, seconds): (usize, f64) = (threads.parse()?, seconds.parse()?);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let classifier = Classifier::from_weights(&Weights::load(root.join("models/cifar10.safetensors"))?, threads)?;
    let records = std::fs::read(root.join("data/sample/test_batch.bin"))?;
    let images = hwc_batch(&records[..BATCH * RECORD_LEN]);

    classifier.classify_hwc(&images)?; // warm-up: sizes the engine's workspace
    let start = Instant::now();
    let mut classified = 0;
    while start.elapsed().as_secs_f64() < seconds {
        classified += classifier.classify_hwc(&images)?.len();
    }
    println!("{:.1}", classified as f64 / start.elapsed().as_secs_f64());
    Ok(())
}

/// CIFAR-10 records (a label byte, then R, G and B planes) to interleaved HWC images.
fn hwc_batch(records: &[u8]) -> Vec<u8> {
    let plane = IMAGE_LEN / 3;
    let mut hwc = Vec::with_capacity(records.len());
    for record in records.chunks_exact(RECORD_LEN) {
        for p in 0..plane {
            hwc.extend((0..3).map(|c| record[1 + c * plane + p]));
        }
    }
    hwc
}
