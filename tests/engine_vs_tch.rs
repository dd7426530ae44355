//! The pure-Rust engine against the trainer's tch forward pass on CPU, on the same weights,
//! for every image of the CIFAR-10 test set: logits within 1e-4 (relative to their size) and
//! the same top class.
//!
//! Weights: the model named by `$CIFAR10_MODEL` when set, else the committed trained model
//! (`models/cifar10.safetensors`). The test checks that on these weights and images LRN
//! changes the logits by more than 1% (tch's layers with and without the LRN steps), so an
//! engine that dropped or broke LRN could not pass. (At the tutorial's initial scale the
//! activations are small and LRN is nearly the identity: such weights would prove little.)
//! Data: the full test file when the data folder is found (see
//! `model_format::cifar::Dataset::locate`), else the in-repo 1,000-image sample, with a line
//! in the test output saying so. tch against the f64 reference forward pass is tested in
//! `train` (`model::tests::forward_matches_the_reference_where_lrn_matters`).

mod bundled_support;

use bundled_support::{repo_path, sample, shown, MODEL};
use infer::cpu::CpuEngine;
use infer::prediction::argmax;
use infer::Engine;
use model_format::arch::{Layer, INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE, LAYERS, NUM_CLASSES};
use model_format::cifar::{Dataset, Records};
use model_format::preprocess::preprocess;
use model_format::Weights;
use tch::{Device, Kind, Tensor};
use train::model::Net;

/// Largest logit difference allowed, relative to `1 + |logit|`.
const TOLERANCE: f32 = 1e-4;
const BATCH: usize = 500;
/// Smallest relative change of the logits that LRN must make on the first batch.
const MIN_LRN_EFFECT: f64 = 0.01;

fn weights() -> Weights {
    match std::env::var_os("CIFAR10_MODEL") {
        Some(path) => Weights::load(&path).unwrap_or_else(|e| panic!("$CIFAR10_MODEL: {e}")),
        None => Weights::load(repo_path(MODEL)).unwrap_or_else(|e| panic!("{e}")),
    }
}

fn test_records() -> Records {
    match Dataset::locate(None).and_then(|d| d.test()) {
        Ok(records) => records,
        Err(e) => {
            shown(&format!("engine_vs_tch: full test set unavailable ({e}); comparing on data/sample (1,000 images)"));
            sample()
        }
    }
}

fn as_batch(input: &[f32]) -> Tensor {
    let batch = (input.len() / INPUT_LEN) as i64;
    Tensor::from_slice(input).view([batch, INPUT_CHANNELS as i64, INPUT_SIZE as i64, INPUT_SIZE as i64])
}

fn values(t: Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
}

fn tch_logits(net: &Net, input: &[f32]) -> Vec<f32> {
    values(tch::no_grad(|| net.forward(&as_batch(input))))
}

/// tch's layers with every LRN step left out.
fn tch_logits_without_lrn(net: &Net, input: &[f32]) -> Vec<f32> {
    let layers = LAYERS.iter().filter(|(_, layer)| !matches!(layer, Layer::Lrn(_)));
    values(tch::no_grad(|| layers.fold(as_batch(input), |x, (_, layer)| train::layers::apply(layer, &x, net.params()))))
}

/// ‖a − b‖ / ‖b‖.
fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (diff / b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>()).sqrt()
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
        let theirs = tch_logits(&net, &input[..n * INPUT_LEN]);
        if start == 0 {
            let effect = relative_difference(&tch_logits_without_lrn(&net, &input[..n * INPUT_LEN]), &theirs);
            assert!(effect > MIN_LRN_EFFECT, "LRN changes the logits by only {:.2}%: weak weights", 100.0 * effect);
            eprintln!("LRN changes the logits of the first {n} images by {:.2}%", 100.0 * effect);
        }
        for (i, (a, b)) in ours.chunks_exact(NUM_CLASSES).zip(theirs.chunks_exact(NUM_CLASSES)).enumerate() {
            let image = start + i;
            for (x, y) in a.iter().zip(b) {
                let diff = (x - y).abs() / (1.0 + y.abs());
                worst = worst.max(diff);
                assert!(diff <= TOLERANCE, "image {image}: logits {a:?} (ndarray) vs {b:?} (tch)");
            }
            assert_eq!(argmax(a), argmax(b), "image {image}: top class differs: {a:?} vs {b:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, records.len());
    eprintln!("{checked} images: largest relative logit difference {worst:e}");
}
