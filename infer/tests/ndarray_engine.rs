//! The pure-Rust engine against a naive, independent forward pass written from the
//! tutorial's definitions (direct loops in f64), plus its error and determinism contract.

use infer::ndarray_engine::{NdarrayEngine, Workspace};
use infer::{random_weights, Engine, InferError};
use model_format::arch::{self, ActShape, Layer, INPUT_LEN, INPUT_SHAPE, LAYERS, NUM_CLASSES, SOFTMAX_LINEAR};
use model_format::Weights;

/// Seeded pseudo-random inputs roughly like standardised images.
fn inputs(batch: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..batch * INPUT_LEN)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// The forward pass of one image, straight from the definitions in `model_format::arch`.
fn reference(weights: &Weights, image: &[f32]) -> Vec<f64> {
    let mut x: Vec<f64> = image.iter().map(|&v| f64::from(v)).collect();
    let mut shape = INPUT_SHAPE;
    let last = Layer::Dense(SOFTMAX_LINEAR);
    for layer in LAYERS.iter().map(|(_, l)| l).chain(std::iter::once(&last)) {
        x = match (*layer, shape) {
            (Layer::Conv(conv), ActShape::Map { c, h, w }) => {
                let (wt, b, k, pad) = (weights.tensor(conv.weight), weights.tensor(conv.bias), conv.kernel(), conv.pad as isize);
                let mut out = vec![0f64; conv.out_channels() * h * w];
                for o in 0..conv.out_channels() {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut acc = f64::from(b[o]);
                            for i in 0..c {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let (iy, ix) = (y as isize + ky as isize - pad, xx as isize + kx as isize - pad);
                                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                            acc += f64::from(wt[((o * c + i) * k + ky) * k + kx])
                                                * x[(i * h + iy as usize) * w + ix as usize];
                                        }
                                    }
                                }
                            }
                            out[(o * h + y) * w + xx] = acc;
                        }
                    }
                }
                out
            }
            (Layer::Relu, _) => x.iter().map(|v| v.max(0.0)).collect(),
            (Layer::MaxPool(pool), ActShape::Map { c, h, w }) => {
                let (oh, ow) = (pool.out_size(h), pool.out_size(w));
                let (pt, pl) = (pool.padding(h).0 as isize, pool.padding(w).0 as isize);
                let mut out = vec![f64::NEG_INFINITY; c * oh * ow];
                for ch in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for dy in 0..pool.size as isize {
                                for dx in 0..pool.size as isize {
                                    let (iy, ix) = ((oy * pool.stride) as isize + dy - pt, (ox * pool.stride) as isize + dx - pl);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        let v = x[(ch * h + iy as usize) * w + ix as usize];
                                        let o = &mut out[(ch * oh + oy) * ow + ox];
                                        *o = o.max(v);
                                    }
                                }
                            }
                        }
                    }
                }
                out
            }
            (Layer::Lrn(lrn), ActShape::Map { c, h, w }) => {
                let plane = h * w;
                let mut out = vec![0f64; x.len()];
                for ch in 0..c {
                    for p in 0..plane {
                        let lo = ch.saturating_sub(lrn.depth_radius);
                        let hi = (ch + lrn.depth_radius).min(c - 1);
                        let sum: f64 = (lo..=hi).map(|j| x[j * plane + p].powi(2)).sum();
                        let scale = (f64::from(lrn.bias) + f64::from(lrn.alpha) * sum).powf(f64::from(lrn.beta));
                        out[ch * plane + p] = x[ch * plane + p] / scale;
                    }
                }
                out
            }
            (Layer::Flatten, _) => x,
            (Layer::Dense(dense), _) => {
                let (wt, b, n) = (weights.tensor(dense.weight), weights.tensor(dense.bias), dense.in_features());
                (0..dense.out_features())
                    .map(|o| f64::from(b[o]) + (0..n).map(|i| f64::from(wt[o * n + i]) * x[i]).sum::<f64>())
                    .collect()
            }
            (layer, shape) => panic!("unexpected {layer:?} on {shape:?}"),
        };
        shape = arch::output_shape(layer, shape);
    }
    x
}

fn logits(engine: &NdarrayEngine, input: &[f32]) -> Vec<f32> {
    let batch = input.len() / INPUT_LEN;
    let mut out = vec![0f32; batch * NUM_CLASSES];
    engine.logits(input, batch, &mut out).unwrap();
    out
}

#[test]
fn matches_the_naive_forward_pass() {
    for (seed, gain) in [(1, 1.0), (2, 3.0)] {
        let weights = strong_weights(seed, gain);
        let engine = NdarrayEngine::new(&weights, 1).unwrap();
        let input = inputs(3, seed);
        let got = logits(&engine, &input);
        for (image, row) in input.chunks(INPUT_LEN).zip(got.chunks(NUM_CLASSES)) {
            let want = reference(&weights, image);
            for (g, w) in row.iter().zip(&want) {
                assert!((f64::from(*g) - w).abs() < 1e-4, "engine {g} vs reference {w} (seed {seed}, gain {gain})");
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_batch_split_or_threads() {
    let weights = random_weights(4);
    let input = inputs(7, 4);
    let one = NdarrayEngine::new(&weights, 1).unwrap();
    let two = NdarrayEngine::new(&weights, 2).unwrap();
    let three = NdarrayEngine::new(&weights, 3).unwrap();
    let batched = logits(&one, &input);
    assert_eq!(logits(&two, &input), batched);
    assert_eq!(logits(&three, &input), batched);
    let single: Vec<f32> = input.chunks(INPUT_LEN).flat_map(|image| logits(&one, image)).collect();
    assert_eq!(single, batched, "an image alone and in a batch give the same bits");
    let shared: Vec<f32> = input.chunks(INPUT_LEN).flat_map(|image| logits(&two, image)).collect();
    assert_eq!(shared, batched, "an image whose convolutions are split between threads");
}

#[test]
fn a_workspace_is_reused_across_batch_sizes() {
    let engine = NdarrayEngine::new(&random_weights(5), 2).unwrap();
    let mut workspace = Workspace::new();
    let input = inputs(6, 5);
    let mut big = vec![0f32; 6 * NUM_CLASSES];
    engine.logits_with(&mut workspace, &input, 6, &mut big).unwrap();
    let bytes = workspace.bytes();
    assert_eq!(bytes, engine.workspace_bytes(6));
    let mut small = vec![0f32; 2 * NUM_CLASSES];
    engine.logits_with(&mut workspace, &input[..2 * INPUT_LEN], 2, &mut small).unwrap();
    assert_eq!(workspace.bytes(), bytes, "a smaller batch fits in the same buffers");
    assert_eq!(small[..], big[..2 * NUM_CLASSES]);
}

#[test]
fn bad_lengths_and_empty_batches_are_errors() {
    let engine = NdarrayEngine::new(&random_weights(6), 1).unwrap();
    let mut out = vec![0f32; NUM_CLASSES];
    assert!(matches!(engine.logits(&[], 0, &mut []), Err(InferError::EmptyBatch)));
    let err = engine.logits(&vec![0f32; INPUT_LEN - 1], 1, &mut out).unwrap_err();
    assert!(matches!(err, InferError::Length { what: "input", expected: INPUT_LEN, found } if found == INPUT_LEN - 1), "{err}");
    let err = engine.logits(&vec![0f32; INPUT_LEN], 1, &mut out[..9]).unwrap_err();
    assert_eq!(err.to_string(), "logits has 9 values, expected 10");
    assert_eq!(engine.name(), "ndarray");
}

#[test]
fn the_engine_is_shareable_between_threads() {
    let engine = std::sync::Arc::new(NdarrayEngine::new(&random_weights(7), 1).unwrap());
    let input = inputs(2, 7);
    let want = logits(&engine, &input);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| assert_eq!(logits(&engine, &input), want));
        }
    });
}

/// Tutorial-initialised weights with every weight tensor (not the biases) scaled by `gain`.
/// At the initial scale the logits are ~0.1 and LRN is close to the identity; a gain of 3
/// gives logits of ~15, as a trained network has, so that every layer counts.
fn strong_weights(seed: u64, gain: f32) -> Weights {
    let tensors = random_weights(seed)
        .iter()
        .map(|(spec, t)| {
            let is_weight = spec.name.ends_with(".weight");
            t.iter().map(|&v| if is_weight { v * gain } else { v }).collect()
        })
        .collect();
    Weights::new(tensors, Default::default()).unwrap()
}
