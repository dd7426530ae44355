//! The load-time overflow bound: trained models lie far inside it, and a weight or an int8
//! scale product of 1e30 is refused naming the layer.

use std::path::{Path, PathBuf};

use model_format::bounds::{check, worst_case, LIMIT};
use model_format::quantized::{ActivationQuant, QuantizedWeights};
use model_format::{Model, WeightsError};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_bundled_models_are_far_inside_the_limit() {
    for file in ["models/cifar10.safetensors", "models/cifar10-int8.safetensors"] {
        let model = Model::load(repo(file)).unwrap();
        let bound = worst_case(&model, 1e6).unwrap();
        eprintln!("{file}: worst case {bound:.2e} for inputs within ±1e6");
        assert!(bound < LIMIT / 1e15, "{file}: {bound:e}");
    }
}

#[test]
fn a_weight_of_1e30_in_any_layer_is_refused_naming_it() {
    let Model::Float(weights) = Model::load(repo("models/cifar10.safetensors")).unwrap() else { panic!() };
    let layers = ["conv1", "conv2", "local3", "local4", "softmax_linear"];
    for (layer, tensor) in layers.iter().zip([0, 2, 4, 6, 8]) {
        let mut tensors = weights.clone().into_tensors();
        tensors[tensor][0] = 1e30;
        let big = model_format::Weights::new(tensors, weights.metadata.clone()).unwrap();
        let err = check(&Model::Float(big), 1e6).unwrap_err();
        assert!(matches!(err, WeightsError::Overflow { .. }), "{err}");
        // The first layer that could overflow is this one or the LRN right after it.
        assert!(err.to_string().contains("could overflow"), "{err}");
        let WeightsError::Overflow { layer: at, .. } = err else { unreachable!() };
        assert!(at.starts_with(&layer[..4]) || at.starts_with("norm"), "{layer}: {at}");
    }
}

#[test]
fn int8_scales_whose_product_overflows_are_refused() {
    // Each scale alone is finite and positive; their product is not a finite f32.
    let input = ActivationQuant { scale: 1e30, zero_point: 0 };
    let err = check(&Model::Int8(QuantizedWeights::uniform(1e30, input)), 1e6).unwrap_err();
    assert!(matches!(err, WeightsError::Overflow { layer: "conv1", .. }), "{err}");
    // Sane scales pass.
    let input = ActivationQuant::from_range(-3.0, 3.0);
    check(&Model::Int8(QuantizedWeights::uniform(0.01, input)), 1e6).unwrap();
}
