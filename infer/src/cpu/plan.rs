//! The forward pass compiled from [`model_format::arch::LAYERS`]: per-image map steps up to the flatten, then
//! fully connected steps over a chunk of the batch. A ReLU right after a convolution or a
//! dense layer is fused into it.

use model_format::arch::{self, ActShape, Layer, INPUT_SHAPE, LAYERS};
use model_format::Weights;

use super::conv::ConvStep;
use super::dense::DenseStep;
use super::gemm::Micro;
use super::kernel::{self, Kernel};
use super::lrn::LrnStep;
use super::pool::PoolStep;
use super::workers::Team;
use super::workspace::Sizes;
use crate::error::InferError;

/// One step on a single image's `[c, h, w]` map.
#[derive(Debug, Clone)]
pub(crate) enum MapStep {
    Conv(ConvStep),
    Pool(PoolStep),
    Lrn(LrnStep),
    Relu,
}

impl MapStep {
    /// Runs the step from `input` into `out`, shared out between the team; `col` is a
    /// convolution's scratch.
    pub(crate) fn run(&self, input: &[f32], out: &mut [f32], col: &mut [f32], team: &Team, kernel: Kernel) {
        match self {
            MapStep::Conv(conv) => conv.run(input, out, col, team, kernel),
            MapStep::Pool(pool) => pool.run(input, out, team, kernel),
            MapStep::Lrn(lrn) => lrn.run(input, out, team, kernel),
            MapStep::Relu => out.iter_mut().zip(input).for_each(|(o, &x)| *o = kernel::relu(x)),
        }
    }
}

/// Walks [`LAYERS`] in order, handing `add` each layer with its input shape and whether the
/// activations are flattened yet (which `add` sets at the flatten step). Returns the largest
/// feature-map length the layers produce. Both the float and the int8 plan are built on it.
pub(crate) fn walk_layers(
    mut add: impl FnMut(&str, &Layer, ActShape, &mut bool) -> Result<(), InferError>,
) -> Result<usize, InferError> {
    let (mut shape, mut flattened, mut map_len) = (INPUT_SHAPE, false, 0);
    for (name, layer) in LAYERS.iter() {
        add(name, layer, shape, &mut flattened)?;
        shape = arch::output_shape(layer, shape);
        if !flattened {
            map_len = map_len.max(shape.len());
        }
    }
    Ok(map_len)
}

/// The compiled network with the sizes of every buffer it needs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) map_steps: Vec<MapStep>,
    pub(crate) dense_steps: Vec<DenseStep>,
    /// The buffers it needs.
    pub(crate) sizes: Sizes,
    /// The kernel every step uses.
    pub(crate) kernel: Kernel,
}

impl Plan {
    pub(crate) fn build(weights: &Weights, kernel: Kernel) -> Result<Self, InferError> {
        let kernel = kernel.check_available()?;
        let mut plan = Plan {
            map_steps: Vec::new(),
            dense_steps: Vec::new(),
            sizes: Sizes { map_len: INPUT_SHAPE.len(), ..Sizes::default() },
            kernel,
        };
        let map_len = walk_layers(|name, layer, shape, flattened| plan.add(name, layer, shape, weights, flattened))?;
        plan.sizes.map_len = plan.sizes.map_len.max(map_len);
        plan.sizes.dense_len =
            plan.dense_steps.iter().map(|d| d.out_features).max().unwrap_or(0).max(plan.sizes.flat_len);
        Ok(plan)
    }

    fn add(
        &mut self,
        name: &str,
        layer: &Layer,
        shape: ActShape,
        weights: &Weights,
        flattened: &mut bool,
    ) -> Result<(), InferError> {
        let unsupported =
            || InferError::Backend(format!("layer `{name}` ({layer:?}) cannot follow a {shape:?} activation"));
        match (*layer, shape, *flattened) {
            (Layer::Conv(conv), ActShape::Map { h, w, .. }, false) => {
                let (weight, bias) = (weights.tensor(conv.weight), weights.tensor(conv.bias));
                let step = ConvStep::new(&conv, weight, bias, h, w, Micro::new(self.kernel));
                self.sizes.col_len = self.sizes.col_len.max(step.scratch_len());
                self.map_steps.push(MapStep::Conv(step));
            }
            (Layer::MaxPool(pool), ActShape::Map { c, h, w }, false) => {
                self.map_steps.push(MapStep::Pool(PoolStep::new(pool, c, h, w)));
            }
            (Layer::Lrn(lrn), ActShape::Map { c, h, w }, false) => {
                self.map_steps.push(MapStep::Lrn(LrnStep::new(lrn, c, h * w)));
            }
            (Layer::Relu, _, false) => match self.map_steps.last_mut() {
                Some(MapStep::Conv(conv)) if !conv.relu => conv.relu = true,
                _ => self.map_steps.push(MapStep::Relu),
            },
            (Layer::Flatten, _, false) => {
                *flattened = true;
                self.sizes.flat_len = shape.len();
            }
            (Layer::Dense(dense), ActShape::Flat(n), true) if n == dense.in_features() => {
                let step =
                    DenseStep::new(&dense, weights.tensor(dense.weight), weights.tensor(dense.bias), self.kernel);
                self.dense_steps.push(step);
            }
            (Layer::Relu, _, true) => match self.dense_steps.last_mut() {
                Some(dense) if !dense.relu => dense.relu = true,
                _ => return Err(unsupported()),
            },
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// Floats of weights the steps hold.
    pub(crate) fn weight_floats(&self) -> usize {
        let maps = self.map_steps.iter().map(|step| match step {
            MapStep::Conv(conv) => conv.weight_floats(),
            _ => 0,
        });
        maps.chain(self.dense_steps.iter().map(DenseStep::weight_floats)).sum()
    }

    /// Width of the network output (the logits).
    pub(crate) fn out_len(&self) -> usize {
        self.dense_steps.last().map_or(self.sizes.flat_len, |d| d.out_features)
    }
}
