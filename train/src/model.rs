//! The tutorial's network on tch: a [`VarStore`] whose variables are named exactly as the
//! weights file's tensors (`"conv1.weight"`, …), the tutorial's seeded initialisation, and
//! the forward pass of [`model_format::arch::LAYERS`].

use model_format::arch::{Layer, LAYERS, TENSORS};
use model_format::init::initial_tensors;
use model_format::{Metadata, Weights};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::error::TrainError;
use crate::{flat, layers};

/// The CIFAR-10 tutorial CNN: its variables and its forward pass.
///
/// ```
/// use train::model::Net;
/// let net = Net::new(tch::Device::Cpu, 42);
/// let logits = net.forward(&tch::Tensor::zeros([2, 3, 24, 24], (tch::Kind::Float, tch::Device::Cpu)));
/// assert_eq!(logits.size(), [2, 10]);
/// ```
pub struct Net {
    vs: VarStore,
    /// The variables in [`TENSORS`] order (handles sharing storage with `vs`), each a view
    /// of its slice of `flat`.
    params: Vec<Tensor>,
    /// Every variable's values in one buffer ([`crate::flat`]): what the trainer updates,
    /// averages and copies between towers in one operation each.
    flat: Tensor,
}

impl Net {
    /// A freshly initialised network: truncated normals and constants as
    /// [`model_format::arch::TensorSpec::init`] says ([`model_format::init`]), the same bits
    /// for the same seed on every machine and device.
    pub fn new(device: Device, seed: u64) -> Net {
        Self::from_values(&initial_tensors(seed), device).expect("initial values have the model's shapes")
    }

    /// A network holding `weights`, on `device`.
    pub fn from_weights(weights: &Weights, device: Device) -> Result<Net, TrainError> {
        let values: Vec<Vec<f32>> = weights.iter().map(|(_, data)| data.to_vec()).collect();
        Self::from_values(&values, device)
    }

    /// A network holding `values` (one flat vector per tensor, [`TENSORS`] order).
    pub fn from_values(values: &[Vec<f32>], device: Device) -> Result<Net, TrainError> {
        let (flat, views) = flat::copy_of(&layout_tensors(values, device)?)?;
        let vs = VarStore::new(device);
        let root = vs.root();
        let mut params = Vec::with_capacity(TENSORS.len());
        for (spec, view) in TENSORS.iter().zip(views) {
            // tch's VarStore separates path components with '.', so "conv1.weight" is
            // variable "weight" under "conv1". `detach` keeps the storage (the buffer's
            // slice) and makes the variable a leaf of its own for autograd.
            let (scope, leaf) = spec.name.split_once('.').expect("tensor names are layer.kind");
            params.push(root.sub(scope).add(leaf, view.f_detach()?, true));
        }
        Ok(Net { vs, params, flat })
    }

    /// Every variable's values in one buffer, [`TENSORS`] order, each in its memory layout
    /// ([`crate::flat`]). Writing it (without autograd) writes the variables.
    pub fn flat(&self) -> &Tensor {
        &self.flat
    }

    /// The variables, in [`TENSORS`] order.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// The underlying variable store.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The device the variables live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Logits `[N, 10]` for a batch of preprocessed inputs `[N, 3, 24, 24]`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        forward(&self.params, xs)
    }

    /// Like [`Net::forward`], also returning every layer's output by its tutorial name
    /// (for activation summaries). The layers run in [`LAYERS`]' order, so every named output
    /// exists; the logits and gradients are the same bits as [`Net::forward`]'s.
    pub fn forward_with_activations(&self, xs: &Tensor) -> (Tensor, Vec<(&'static str, Tensor)>) {
        forward_with_activations(&self.params, xs)
    }

    /// `½‖W‖²` of every tensor with a weight decay, times its factor (the tutorial's
    /// `weight_loss`, added to the cross-entropy).
    pub fn weight_decay_loss(&self) -> Option<Tensor> {
        weight_decay_loss(&self.params)
    }

    /// Overwrites every variable with `values` (same order and shapes; any device).
    pub fn load_tensors(&mut self, values: &[Tensor]) -> Result<(), TrainError> {
        tch::no_grad(|| {
            for (param, value) in self.params.iter_mut().zip(values) {
                param.f_copy_(value)?;
            }
            Ok(())
        })
    }

    /// The variables' values, copied to the CPU, flat, [`TENSORS`] order.
    pub fn values(&self) -> Result<Vec<Vec<f32>>, TrainError> {
        tensors_to_values(&self.params)
    }

    /// The variables as a validated weights file with `metadata`.
    pub fn to_weights(&self, metadata: Metadata) -> Result<Weights, TrainError> {
        Ok(Weights::new(self.values()?, metadata)?)
    }
}

/// Logits `[N, 10]` of the network with variables `params` ([`TENSORS`] order) for a batch
/// `xs` `[N, 3, 24, 24]`: [`Net::forward`] for a tower worker that holds the variables'
/// handles rather than the [`Net`].
pub fn forward(params: &[Tensor], xs: &Tensor) -> Tensor {
    let xs = in_layout(xs.shallow_clone()).expect("a copy of the input batch");
    training_order().fold(xs, |x, layer| layers::apply(layer, &x, params))
}

/// [`Net::forward_with_activations`] of the variables `params`.
pub fn forward_with_activations(params: &[Tensor], xs: &Tensor) -> (Tensor, Vec<(&'static str, Tensor)>) {
    let mut activations = Vec::with_capacity(LAYERS.len());
    let mut x = in_layout(xs.shallow_clone()).expect("a copy of the input batch");
    for (name, layer) in LAYERS.iter() {
        x = layers::apply(layer, &x, params);
        activations.push((*name, x.shallow_clone()));
    }
    (x, activations)
}

/// [`Net::weight_decay_loss`] of the variables `params`.
pub fn weight_decay_loss(params: &[Tensor]) -> Option<Tensor> {
    TENSORS
        .iter()
        .zip(params)
        .filter(|(spec, _)| spec.weight_decay > 0.0)
        .map(|(spec, p)| p.square().sum(None) * (0.5 * f64::from(spec.weight_decay)))
        .reduce(|a, b| a + b)
}

/// `values` (one flat vector per tensor, [`TENSORS`] order, checked against the shapes) as
/// tensors on `device`, in the layout the network computes in there ([`in_layout`]).
pub fn layout_tensors(values: &[Vec<f32>], device: Device) -> Result<Vec<Tensor>, TrainError> {
    if values.len() != TENSORS.len() {
        return Err(TrainError::Config(format!("{} tensors given, the model has {}", values.len(), TENSORS.len())));
    }
    TENSORS
        .iter()
        .zip(values)
        .map(|(spec, data)| {
            if data.len() != spec.len() {
                return Err(TrainError::Config(format!(
                    "tensor `{}` has {} values, expected {}",
                    spec.name,
                    data.len(),
                    spec.len()
                )));
            }
            let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
            in_layout(Tensor::f_from_slice(data)?.f_view(shape.as_slice())?.f_to_device(device)?)
        })
        .collect()
}

/// [`LAYERS`] in the order training runs them: a ReLU directly followed by a max pool runs
/// after the pool instead. Both are monotone and the max picks one input, so the values are
/// the same and so are the gradients (a window whose maximum is ≤ 0 passes no gradient
/// either way); the ReLU and its gradient then touch a quarter of the values (conv1's
/// output: 24×24 → 12×12 per channel), about 7% of a CPU training step.
fn training_order() -> impl Iterator<Item = &'static Layer> {
    let mut order: Vec<&Layer> = LAYERS.iter().map(|(_, layer)| layer).collect();
    for i in 1..order.len() {
        if matches!((order[i - 1], order[i]), (Layer::Relu, Layer::MaxPool(_))) {
            order.swap(i - 1, i);
        }
    }
    order.into_iter()
}

/// `t` in the memory layout the network computes in on its device. On the CPU, 4-D tensors
/// (images, activations, convolution kernels) are channels-last (NHWC strides, NCHW shape):
/// libtorch then runs oneDNN's NHWC convolutions, and every layer keeps that layout; a
/// training step at batch 128 on 2 threads took about 25% less time than in NCHW
/// (`benches/train_step.rs`). CUDA keeps libtorch's default NCHW, which cuDNN is tuned for
/// in float32. The layout is invisible to callers: shapes and indexing stay NCHW.
pub fn in_layout(t: Tensor) -> Result<Tensor, TrainError> {
    if t.dim() != 4 || t.device() != Device::Cpu || is_channels_last(&t) {
        return Ok(t);
    }
    Ok(t.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])?)
}

/// Whether a 4-D tensor's channels are its innermost dimension in memory.
pub fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    size.len() == 4 && stride[1] == 1 && stride[3] == size[1] && stride[2] == size[1] * size[3]
}

/// Copies tensors to flat CPU vectors.
pub fn tensors_to_values(tensors: &[Tensor]) -> Result<Vec<Vec<f32>>, TrainError> {
    tensors.iter().map(|t| Ok(Vec::<f32>::try_from(&t.f_to_device(Device::Cpu)?.detach().flatten(0, -1))?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn variables_are_named_like_the_weights_file() {
        let net = Net::new(Device::Cpu, 1);
        let vars = net.var_store().variables();
        assert_eq!(vars.len(), TENSORS.len());
        for spec in &TENSORS {
            let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
            assert_eq!(vars[spec.name].size(), shape, "{}", spec.name);
        }
    }

    #[test]
    fn the_variables_are_views_of_one_buffer() {
        let net = Net::new(Device::Cpu, 7);
        assert_eq!(net.flat().size(), [model_format::PARAM_COUNT as i64]);
        let before = net.values().unwrap();
        tch::no_grad(|| {
            let _ = net.flat().shallow_clone().f_add_scalar_(1.0).unwrap();
        });
        for (after, before) in net.values().unwrap().iter().zip(&before) {
            for (a, b) in after.iter().zip(before) {
                assert_eq!(*a, b + 1.0);
            }
        }
        assert!(net.params().iter().all(|p| p.requires_grad()));
    }

    #[test]
    fn a_new_net_holds_the_shared_initialisation() {
        assert_eq!(Net::new(Device::Cpu, 5).values().unwrap(), initial_tensors(5));
    }

    #[test]
    fn weights_round_trip_through_the_var_store() {
        let net = Net::new(Device::Cpu, 3);
        let weights = net.to_weights(Metadata::default()).unwrap();
        let back = Net::from_weights(&weights, Device::Cpu).unwrap();
        assert_eq!(back.values().unwrap(), net.values().unwrap());
    }

    #[test]
    fn forward_gives_logits_and_named_activations() {
        let net = Net::new(Device::Cpu, 4);
        let xs = Tensor::randn([3, 3, 24, 24], (Kind::Float, Device::Cpu));
        let logits = net.forward(&xs);
        assert_eq!(logits.size(), [3, 10]);
        let (again, activations) = net.forward_with_activations(&xs);
        assert_eq!(
            Vec::<f32>::try_from(&again.flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(&logits.flatten(0, -1)).unwrap()
        );
        let names: Vec<&str> = activations.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, LAYERS.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        assert_eq!(activations[7].1.size(), [3, 64, 6, 6]);
    }

    /// The committed model's weights and the first `n` images of the in-repo sample,
    /// preprocessed: a trained network's activations are large enough for LRN to matter.
    fn bundled_weights_and_sample(n: usize) -> (Weights, Vec<f32>) {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let weights = Weights::load(format!("{root}/models/cifar10.safetensors")).unwrap();
        let records = model_format::cifar::Records::read_file(format!("{root}/data/sample/test_batch.bin")).unwrap();
        let mut images = vec![0f32; n * model_format::arch::INPUT_LEN];
        for (i, image) in images.chunks_exact_mut(model_format::arch::INPUT_LEN).enumerate() {
            model_format::preprocess::preprocess(records.image(i), image);
        }
        (weights, images)
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
    }

    /// ‖a − b‖ / ‖b‖ over every element.
    fn relative_difference(a: &[f32], b: &[f64]) -> f64 {
        let diff: f64 = a.iter().zip(b).map(|(x, y)| (f64::from(*x) - y).powi(2)).sum();
        (diff / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
    }

    #[test]
    fn forward_matches_the_reference_where_lrn_matters() {
        // The naive f64 forward pass of model-format against tch, on the committed model's
        // weights, where LRN changes the logits by more than 1% (checked here: the same tch
        // layers without the LRN steps), so a backend that dropped LRN would fail.
        let n = 20;
        let (weights, images) = bundled_weights_and_sample(n);
        let net = Net::from_weights(&weights, Device::Cpu).unwrap();
        let xs = Tensor::from_slice(&images).view([n as i64, 3, 24, 24]);
        let ours = flat(&tch::no_grad(|| net.forward(&xs)));
        let reference = model_format::reference::logits_batch(&weights, &images);
        for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
            assert!((f64::from(*a) - b).abs() <= 1e-4 * (1.0 + b.abs()), "logit {i}: tch {a} vs reference {b}");
        }
        let without_lrn = tch::no_grad(|| {
            LAYERS
                .iter()
                .filter(|(_, layer)| !matches!(layer, model_format::arch::Layer::Lrn(_)))
                .fold(xs.shallow_clone(), |x, (_, layer)| layers::apply(layer, &x, net.params()))
        });
        let lrn_effect = relative_difference(&flat(&without_lrn), &reference);
        assert!(lrn_effect > 0.01, "LRN changes the logits by only {:.3}%", 100.0 * lrn_effect);
    }

    #[test]
    fn a_cpu_net_computes_channels_last() {
        let net = Net::new(Device::Cpu, 6);
        for (spec, param) in TENSORS.iter().zip(net.params()) {
            assert_eq!(is_channels_last(param), spec.shape.len() == 4, "{}", spec.name);
        }
        let xs = Tensor::randn([2, 3, 24, 24], (Kind::Float, Device::Cpu));
        assert!(!is_channels_last(&xs));
        let (_, activations) = net.forward_with_activations(&xs);
        for (name, activation) in activations.iter().filter(|(_, a)| a.dim() == 4) {
            assert!(is_channels_last(activation), "{name}: strides {:?}", activation.stride());
        }
    }

    /// Logits and every gradient through `layers`, for `net` on `xs`.
    fn logits_and_gradients<'a>(
        net: &Net,
        xs: &Tensor,
        layers: impl Iterator<Item = &'a Layer>,
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        let logits =
            layers.fold(in_layout(xs.shallow_clone()).unwrap(), |x, layer| layers::apply(layer, &x, net.params()));
        let loss = logits.log_softmax(-1, Kind::Float).sum(Kind::Float);
        let gradients = Tensor::run_backward(&[&loss], net.params(), false, false);
        (flat(&logits), gradients.iter().map(flat).collect())
    }

    #[test]
    fn pooling_before_relu_gives_the_same_bits_forward_and_backward() {
        // Trained weights and real images, so that many pool windows hold both signs.
        let n = 8;
        let (weights, images) = bundled_weights_and_sample(n);
        let net = Net::from_weights(&weights, Device::Cpu).unwrap();
        let xs = Tensor::from_slice(&images).view([n as i64, 3, 24, 24]);
        let as_written = logits_and_gradients(&net, &xs, LAYERS.iter().map(|(_, layer)| layer));
        let reordered = logits_and_gradients(&net, &xs, training_order());
        assert_ne!(
            training_order().collect::<Vec<_>>(),
            LAYERS.iter().map(|(_, layer)| layer).collect::<Vec<_>>(),
            "the order changed"
        );
        assert_eq!(as_written.0, reordered.0);
        assert_eq!(as_written.1, reordered.1);
        assert_eq!(flat(&net.forward(&xs)), reordered.0);
    }

    #[test]
    fn weight_decay_covers_only_the_decayed_tensors() {
        let net = Net::new(Device::Cpu, 2);
        let values = net.values().unwrap();
        let expected: f64 = TENSORS
            .iter()
            .zip(&values)
            .map(|(s, v)| 0.5 * f64::from(s.weight_decay) * v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>())
            .sum();
        let got = net.weight_decay_loss().unwrap().double_value(&[]);
        assert!((got - expected).abs() < 1e-5 * expected, "{got} vs {expected}");
    }
}
