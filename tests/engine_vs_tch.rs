//! The pure-Rust engine against the trainer's tch forward pass on CPU, on the same weights,
//! for every image of the CIFAR-10 test set: logits within 1e-4 and the same top class.
//!
//! Weights: the model named by `$CIFAR10_MODEL` when set (a trained one), else seeded
//! weights from the tutorial's initialisation with the weight tensors scaled ×3, which
//! gives logits of ~15 like a trained network's (at the initial scale they are ~0.1 and
//! an absolute tolerance would prove little). Data: the full test file when the data
//! folder is found (see `model_format::cifar::Dataset::locate`), else the in-repo
//! 1,000-image sample.

use infer::cpu::CpuEngine;
use infer::prediction::argmax;
use infer::Engine;
use model_format::arch::{INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE, NUM_CLASSES};
use model_format::cifar::{Dataset, Records};
use model_format::preprocess::preprocess;
use model_format::Weights;
use tch::{Device, Kind, Tensor};
use train::model::Net;

const TOLERANCE: f32 = 1e-4;
const BATCH: usize = 500;

fn weights() -> Weights {
    match std::env::var_os("CIFAR10_MODEL") {
        Some(path) => Weights::load(&path).unwrap_or_else(|e| panic!("$CIFAR10_MODEL: {e}")),
        None => scaled(infer::random_weights(2024), 3.0),
    }
}

/// `weights` with every weight tensor (not the biases) multiplied by `gain`.
fn scaled(weights: Weights, gain: f32) -> Weights {
    let tensors = weights
        .iter()
        .map(|(spec, t)| t.iter().map(|&v| if spec.name.ends_with(".weight") { v * gain } else { v }).collect())
        .collect();
    Weights::new(tensors, weights.metadata.clone()).unwrap()
}

fn test_records() -> Records {
    match Dataset::locate(None).and_then(|d| d.test()) {
        Ok(records) => records,
        Err(e) => {
            eprintln!("full test set unavailable ({e}); using data/sample");
            Records::read_file(concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample/test_batch.bin")).unwrap()
        }
    }
}

fn tch_logits(net: &Net, input: &[f32], batch: usize) -> Vec<f32> {
    let shape = [batch as i64, INPUT_CHANNELS as i64, INPUT_SIZE as i64, INPUT_SIZE as i64];
    let xs = Tensor::from_slice(input).view(shape);
    let logits = tch::no_grad(|| net.forward(&xs)).to_kind(Kind::Float).contiguous();
    Vec::<f32>::try_from(logits.view([-1])).unwrap()
}

#[test]
fn cpu_matches_tch_on_every_test_image() {
    tch::set_num_threads(2);
    let weights = weights();
    let net = Net::from_weights(&weights, Device::Cpu).unwrap();
    let engine = CpuEngine::new(&weights, 2).unwrap();
    let records = test_records();

    let mut input = vec![0f32; BATCH * INPUT_LEN];
    let mut ours = vec![0f32; BATCH * NUM_CLASSES];
    let (mut worst, mut checked) = (0f32, 0);
    for start in (0..records.len()).step_by(BATCH) {
        let n = BATCH.min(records.len() - start);
        for (i, slot) in input[..n * INPUT_LEN].chunks_exact_mut(INPUT_LEN).enumerate() {
            preprocess(records.image(start + i), slot);
        }
        engine.logits_flat(&input[..n * INPUT_LEN], n, &mut ours[..n * NUM_CLASSES]).unwrap();
        let theirs = tch_logits(&net, &input[..n * INPUT_LEN], n);
        for (i, (a, b)) in ours.chunks_exact(NUM_CLASSES).zip(theirs.chunks_exact(NUM_CLASSES)).enumerate() {
            let image = start + i;
            for (x, y) in a.iter().zip(b) {
                let diff = (x - y).abs();
                worst = worst.max(diff);
                assert!(diff <= TOLERANCE, "image {image}: logits {a:?} (ndarray) vs {b:?} (tch)");
            }
            assert_eq!(argmax(a), argmax(b), "image {image}: top class differs: {a:?} vs {b:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, records.len());
    eprintln!("{checked} images: largest logit difference {worst:e}");
    // Guard against a vacuous pass: the logits must be of a trained network's size.
    let largest = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(largest > 1.0, "logits are all tiny ({largest}); the comparison would prove little");
}
