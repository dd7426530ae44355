//! What the training loop logs to TensorBoard, by the tutorial's tags: losses and their
//! moving averages, the learning rate, throughput, precision@1, and every
//! `--summary-every` steps histograms of activations, gradients and weights, activation
//! sparsity and a few distorted input images.

use std::path::Path;

use model_format::arch::{INPUT_SIZE, TENSORS};
use tch::Tensor;

use crate::error::TrainError;
use crate::summary::SummaryWriter;

/// Layers whose outputs the tutorial summarises (`_activation_summary`).
const SUMMARISED_ACTIVATIONS: [(&str, &str); 4] =
    [("conv1_relu", "conv1"), ("conv2_relu", "conv2"), ("local3_relu", "local3"), ("local4_relu", "local4")];
/// Distorted inputs shown per summary (the tutorial's `max_outputs`).
const IMAGES_SHOWN: i64 = 3;

/// The loop's TensorBoard writer.
pub struct Board {
    writer: SummaryWriter,
    path: std::path::PathBuf,
}

fn values(t: &Tensor) -> Result<Vec<f32>, TrainError> {
    Ok(Vec::<f32>::try_from(&t.f_to_device(tch::Device::Cpu)?.detach().flatten(0, -1))?)
}

impl Board {
    /// Starts an event file in `dir`.
    pub fn create(dir: &Path) -> Result<Board, TrainError> {
        let writer = SummaryWriter::create(dir).map_err(TrainError::io(dir))?;
        let path = writer.path().to_path_buf();
        Ok(Board { writer, path })
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> TrainError {
        TrainError::io(self.path.clone())
    }

    /// One scalar.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<(), TrainError> {
        let io = self.io();
        self.writer.scalar(tag, step as i64, value as f32).map_err(io)
    }

    /// Histograms and sparsity of the summarised activations.
    pub fn activations(&mut self, step: u64, activations: &[(&'static str, Tensor)]) -> Result<(), TrainError> {
        for (layer, tag) in SUMMARISED_ACTIVATIONS {
            if let Some((_, act)) = activations.iter().find(|(name, _)| *name == layer) {
                let data = values(act)?;
                let zeros = data.iter().filter(|&&v| v == 0.0).count() as f64 / data.len().max(1) as f64;
                let io = self.io();
                self.writer.histogram(&format!("{tag}/activations"), step as i64, &data).map_err(io)?;
                self.scalar(&format!("{tag}/sparsity"), step, zeros)?;
            }
        }
        Ok(())
    }

    /// Histograms of every weight and its gradient.
    pub fn weights_and_gradients(
        &mut self,
        step: u64,
        weights: &[Tensor],
        gradients: &[Tensor],
    ) -> Result<(), TrainError> {
        for ((spec, w), g) in TENSORS.iter().zip(weights).zip(gradients) {
            let io = self.io();
            self.writer.histogram(spec.name, step as i64, &values(w)?).map_err(io)?;
            let io = self.io();
            self.writer.histogram(&format!("{}/gradients", spec.name), step as i64, &values(g)?).map_err(io)?;
        }
        Ok(())
    }

    /// The first few distorted inputs `[B,3,24,24]`, each min–max scaled to 0–255.
    pub fn images(&mut self, step: u64, images: &Tensor) -> Result<(), TrainError> {
        let shown = images.size()[0].min(IMAGES_SHOWN);
        for i in 0..shown {
            let hwc = images.f_get(i)?.f_permute([1, 2, 0])?.f_contiguous()?;
            let data = values(&hwc)?;
            let (lo, hi) = data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
            let pixels: Vec<u8> = data.iter().map(|&v| ((v - lo) * scale).round() as u8).collect();
            let io = self.io();
            self.writer.image(&format!("images/{i}"), step as i64, INPUT_SIZE, INPUT_SIZE, 3, &pixels).map_err(io)?;
        }
        Ok(())
    }

    /// Pushes buffered events to disk.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        let io = self.io();
        self.writer.flush().map_err(io)
    }
}
