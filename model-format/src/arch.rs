//! The model, written once: every tensor's name and shape, the layer order and the
//! tutorial's hyperparameters. Every crate reads the architecture from here.
//!
//! Layout conventions, used by every engine and by the weights file:
//! - activations are NCHW (`[batch, channels, height, width]`), `f32`;
//! - convolution kernels are OIHW (`[out_channels, in_channels, kh, kw]`);
//! - fully connected weights are `[out_features, in_features]` (`y = W·x + b`);
//! - the flatten between `pool2` and `local3` is in CHW order: feature index
//!   `c·36 + h·6 + w` of the `[64, 6, 6]` pooled map (see [`FLATTEN_ORDER`]).

/// Architecture id stored in every weights file; a file with another id is refused.
pub const ARCHITECTURE: &str = "cifar10-tutorial-cnn/v1";

/// Side of the square network input (the central or random crop of the 32×32 image).
pub const INPUT_SIZE: usize = 24;
/// Colour channels of the input.
pub const INPUT_CHANNELS: usize = 3;
/// Values in one preprocessed input: 3·24·24 = 1,728.
pub const INPUT_LEN: usize = INPUT_CHANNELS * INPUT_SIZE * INPUT_SIZE;
/// Side of the stored CIFAR-10 images.
pub const IMAGE_SIZE: usize = 32;
/// Bytes of one raw CIFAR-10 image (planar R, G, B, 1,024 bytes each).
pub const IMAGE_LEN: usize = INPUT_CHANNELS * IMAGE_SIZE * IMAGE_SIZE;
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// CIFAR-10's class names in label order (also in `batches.meta.txt`).
pub const CLASS_NAMES: [&str; NUM_CLASSES] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// How a tensor is initialised by the trainer (the tutorial's choices).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with this standard deviation, resampled beyond two deviations.
    TruncatedNormal { std: f32 },
    /// Every element set to this value.
    Constant(f32),
}

/// One stored tensor of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorSpec {
    /// Name in the weights file (and in tch's `VarStore`).
    pub name: &'static str,
    /// Shape, in the layout stated in the module docs.
    pub shape: &'static [usize],
    /// The trainer's initialisation.
    pub init: Init,
    /// L2 weight decay factor (the tutorial's `wd`); 0 means none.
    pub weight_decay: f32,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Always false: no tensor of the model is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Index of a tensor in [`TENSORS`].
pub type TensorId = usize;

pub const CONV1_WEIGHT: TensorId = 0;
pub const CONV1_BIAS: TensorId = 1;
pub const CONV2_WEIGHT: TensorId = 2;
pub const CONV2_BIAS: TensorId = 3;
pub const LOCAL3_WEIGHT: TensorId = 4;
pub const LOCAL3_BIAS: TensorId = 5;
pub const LOCAL4_WEIGHT: TensorId = 6;
pub const LOCAL4_BIAS: TensorId = 7;
pub const SOFTMAX_WEIGHT: TensorId = 8;
pub const SOFTMAX_BIAS: TensorId = 9;

const FILTERS: usize = 64;
const KERNEL: usize = 5;
const POOLED: usize = 6;
/// Features after the flatten: 64·6·6 = 2,304.
pub const FLAT_FEATURES: usize = FILTERS * POOLED * POOLED;
const LOCAL3: usize = 384;
const LOCAL4: usize = 192;

/// Every tensor of the model, in file order.
pub const TENSORS: [TensorSpec; 10] = [
    TensorSpec {
        name: "conv1.weight",
        shape: &[FILTERS, INPUT_CHANNELS, KERNEL, KERNEL],
        init: Init::TruncatedNormal { std: 5e-2 },
        weight_decay: 0.0,
    },
    TensorSpec { name: "conv1.bias", shape: &[FILTERS], init: Init::Constant(0.0), weight_decay: 0.0 },
    TensorSpec {
        name: "conv2.weight",
        shape: &[FILTERS, FILTERS, KERNEL, KERNEL],
        init: Init::TruncatedNormal { std: 5e-2 },
        weight_decay: 0.0,
    },
    TensorSpec { name: "conv2.bias", shape: &[FILTERS], init: Init::Constant(0.1), weight_decay: 0.0 },
    TensorSpec {
        name: "local3.weight",
        shape: &[LOCAL3, FLAT_FEATURES],
        init: Init::TruncatedNormal { std: 0.04 },
        weight_decay: 0.004,
    },
    TensorSpec { name: "local3.bias", shape: &[LOCAL3], init: Init::Constant(0.1), weight_decay: 0.0 },
    TensorSpec {
        name: "local4.weight",
        shape: &[LOCAL4, LOCAL3],
        init: Init::TruncatedNormal { std: 0.04 },
        weight_decay: 0.004,
    },
    TensorSpec { name: "local4.bias", shape: &[LOCAL4], init: Init::Constant(0.1), weight_decay: 0.0 },
    TensorSpec {
        name: "softmax_linear.weight",
        shape: &[NUM_CLASSES, LOCAL4],
        init: Init::TruncatedNormal { std: 1.0 / LOCAL4 as f32 },
        weight_decay: 0.0,
    },
    TensorSpec { name: "softmax_linear.bias", shape: &[NUM_CLASSES], init: Init::Constant(0.0), weight_decay: 0.0 },
];

/// Total number of parameters: 1,068,298.
pub const PARAM_COUNT: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < TENSORS.len() {
        let shape = TENSORS[i].shape;
        let mut n = 1;
        let mut d = 0;
        while d < shape.len() {
            n *= shape[d];
            d += 1;
        }
        total += n;
        i += 1;
    }
    total
};

/// Looks a tensor up by its file name.
pub fn tensor_id(name: &str) -> Option<TensorId> {
    TENSORS.iter().position(|t| t.name == name)
}

/// A 2-D convolution, stride 1, SAME padding (`pad` zeros on every side), bias added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv {
    pub weight: TensorId,
    pub bias: TensorId,
    /// Zero padding on each side; `(kernel - 1) / 2` reproduces TensorFlow's SAME for stride 1.
    pub pad: usize,
}

impl Conv {
    pub fn out_channels(&self) -> usize {
        TENSORS[self.weight].shape[0]
    }
    pub fn in_channels(&self) -> usize {
        TENSORS[self.weight].shape[1]
    }
    pub fn kernel(&self) -> usize {
        TENSORS[self.weight].shape[2]
    }
}

/// Max pooling with TensorFlow's SAME padding: for an input side `n`, the output side is
/// `ceil(n / stride)` and the padding is split with the odd element at the end. Padded
/// positions never win the max (they count as −∞, not 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxPool {
    pub size: usize,
    pub stride: usize,
}

impl MaxPool {
    /// Output side for an input side `n`.
    pub fn out_size(&self, n: usize) -> usize {
        n.div_ceil(self.stride)
    }

    /// `(pad_begin, pad_end)` for an input side `n`, as TensorFlow's SAME computes it.
    pub fn padding(&self, n: usize) -> (usize, usize) {
        let needed = ((self.out_size(n) - 1) * self.stride + self.size).saturating_sub(n);
        (needed / 2, needed - needed / 2)
    }
}

/// Local response normalisation across channels with TensorFlow's convention:
/// `y[c] = x[c] / (bias + alpha · Σ x[c']²)^beta`, the sum over
/// `c' ∈ [c − depth_radius, c + depth_radius]` clipped to the valid channels.
/// (ONNX's LRN divides alpha by the window size `2·depth_radius + 1`; convert when exporting.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lrn {
    pub depth_radius: usize,
    pub bias: f32,
    pub alpha: f32,
    pub beta: f32,
}

impl Lrn {
    /// Channels in the window: `2·depth_radius + 1`.
    pub fn window(&self) -> usize {
        2 * self.depth_radius + 1
    }

    /// `t^-beta` in `f32`, as every engine's LRN computes it: the tutorial's beta = 0.75 is
    /// `1 / (√t · ⁴√t)` (exactly rounded operations only, much cheaper than `powf`, and the
    /// same bits on every instruction set); another beta uses `powf`.
    ///
    /// ```
    /// let v = model_format::arch::LRN.inverse_power(16.0);
    /// assert_eq!(v, 0.125);
    /// ```
    #[inline(always)]
    pub fn inverse_power(&self, t: f32) -> f32 {
        if self.beta == 0.75 {
            let root = t.sqrt();
            1.0 / (root * root.sqrt())
        } else {
            t.powf(-self.beta)
        }
    }
}

/// A fully connected layer `y = W·x + b` with `W` stored `[out, in]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dense {
    pub weight: TensorId,
    pub bias: TensorId,
}

impl Dense {
    pub fn out_features(&self) -> usize {
        TENSORS[self.weight].shape[0]
    }
    pub fn in_features(&self) -> usize {
        TENSORS[self.weight].shape[1]
    }
}

/// One step of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layer {
    Conv(Conv),
    Relu,
    MaxPool(MaxPool),
    Lrn(Lrn),
    /// `[N, C, H, W]` → `[N, C·H·W]` in CHW order.
    Flatten,
    Dense(Dense),
}

/// The tutorial's pooling: 3×3 window, stride 2, SAME.
pub const POOL: MaxPool = MaxPool { size: 3, stride: 2 };
/// The tutorial's LRN: depth radius 4, bias 1.0, alpha 0.001/9, beta 0.75.
pub const LRN: Lrn = Lrn { depth_radius: 4, bias: 1.0, alpha: 0.001 / 9.0, beta: 0.75 };

/// How the `[64, 6, 6]` map after `pool2` is flattened for `local3`.
pub const FLATTEN_ORDER: &str = "CHW";

/// The forward pass, in order, each step with the tutorial's name. The output of the last
/// layer (`softmax_linear`, linear: no ReLU after it) is the logits; probabilities are their
/// softmax.
pub const LAYERS: [(&str, Layer); 14] = [
    ("conv1", Layer::Conv(Conv { weight: CONV1_WEIGHT, bias: CONV1_BIAS, pad: 2 })),
    ("conv1_relu", Layer::Relu),
    ("pool1", Layer::MaxPool(POOL)),
    ("norm1", Layer::Lrn(LRN)),
    ("conv2", Layer::Conv(Conv { weight: CONV2_WEIGHT, bias: CONV2_BIAS, pad: 2 })),
    ("conv2_relu", Layer::Relu),
    ("norm2", Layer::Lrn(LRN)),
    ("pool2", Layer::MaxPool(POOL)),
    ("flatten", Layer::Flatten),
    ("local3", Layer::Dense(Dense { weight: LOCAL3_WEIGHT, bias: LOCAL3_BIAS })),
    ("local3_relu", Layer::Relu),
    ("local4", Layer::Dense(Dense { weight: LOCAL4_WEIGHT, bias: LOCAL4_BIAS })),
    ("local4_relu", Layer::Relu),
    ("softmax_linear", Layer::Dense(Dense { weight: SOFTMAX_WEIGHT, bias: SOFTMAX_BIAS })),
];

/// Shape of one example's activation (without the batch dimension) between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActShape {
    /// `[channels, height, width]`
    Map { c: usize, h: usize, w: usize },
    /// `[features]`
    Flat(usize),
}

impl ActShape {
    pub fn len(&self) -> usize {
        match *self {
            ActShape::Map { c, h, w } => c * h * w,
            ActShape::Flat(n) => n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The input shape of the network: `[3, 24, 24]`.
pub const INPUT_SHAPE: ActShape = ActShape::Map { c: INPUT_CHANNELS, h: INPUT_SIZE, w: INPUT_SIZE };

/// The shape a layer produces from `input`. Panics only on a layer/shape combination
/// that [`LAYERS`] never produces.
pub fn output_shape(layer: &Layer, input: ActShape) -> ActShape {
    match (*layer, input) {
        (Layer::Conv(conv), ActShape::Map { h, w, .. }) => ActShape::Map { c: conv.out_channels(), h, w },
        (Layer::MaxPool(pool), ActShape::Map { c, h, w }) => {
            ActShape::Map { c, h: pool.out_size(h), w: pool.out_size(w) }
        }
        (Layer::Relu | Layer::Lrn(_), shape) => shape,
        (Layer::Flatten, shape) => ActShape::Flat(shape.len()),
        (Layer::Dense(dense), ActShape::Flat(_)) => ActShape::Flat(dense.out_features()),
        (layer, shape) => panic!("layer {layer:?} cannot take an input of shape {shape:?}"),
    }
}

/// Multiply-adds × 2 of one image's forward pass (36.9 MFLOP): convolutions and dense layers.
pub fn flops_per_image() -> usize {
    let mut shape = INPUT_SHAPE;
    let mut flops = 0;
    for (_, layer) in LAYERS.iter() {
        let out = output_shape(layer, shape);
        flops += match (layer, out) {
            (Layer::Conv(c), ActShape::Map { h, w, .. }) => {
                2 * c.out_channels() * c.in_channels() * c.kernel().pow(2) * h * w
            }
            (Layer::Dense(d), _) => 2 * d.in_features() * d.out_features(),
            _ => 0,
        };
        shape = out;
    }
    flops
}

/// Every layer's output shape, in [`LAYERS`] order (the last is the logits' `[10]`).
pub fn activation_shapes() -> Vec<ActShape> {
    let mut shape = INPUT_SHAPE;
    LAYERS
        .iter()
        .map(|(_, layer)| {
            shape = output_shape(layer, shape);
            shape
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_is_the_tutorials() {
        assert_eq!(PARAM_COUNT, 1_068_298);
    }

    #[test]
    fn shapes_chain_from_input_to_logits() {
        let shapes = activation_shapes();
        assert_eq!(shapes[2], ActShape::Map { c: 64, h: 12, w: 12 }); // pool1
        assert_eq!(shapes[7], ActShape::Map { c: 64, h: 6, w: 6 }); // pool2
        assert_eq!(shapes[8], ActShape::Flat(FLAT_FEATURES));
        assert_eq!(shapes[12], ActShape::Flat(192)); // local4_relu
        assert_eq!(*shapes.last().unwrap(), ActShape::Flat(NUM_CLASSES));
        assert_eq!(LAYERS.last().unwrap().0, "softmax_linear");
    }

    #[test]
    fn flops_are_the_sum_of_convolutions_and_dense_layers() {
        let conv1 = 2 * 64 * 3 * 25 * 24 * 24;
        let conv2 = 2 * 64 * 64 * 25 * 12 * 12;
        let dense = 2 * (2304 * 384 + 384 * 192 + 192 * 10);
        assert_eq!(flops_per_image(), conv1 + conv2 + dense);
    }

    #[test]
    fn same_pooling_puts_the_odd_pad_at_the_end() {
        assert_eq!(POOL.out_size(24), 12);
        assert_eq!(POOL.padding(24), (0, 1));
        assert_eq!(POOL.padding(12), (0, 1));
        assert_eq!(MaxPool { size: 3, stride: 1 }.padding(5), (1, 1));
    }

    #[test]
    fn tensor_names_are_unique_and_found() {
        for (i, t) in TENSORS.iter().enumerate() {
            assert_eq!(tensor_id(t.name), Some(i));
        }
        assert_eq!(tensor_id("conv3.weight"), None);
    }
}
