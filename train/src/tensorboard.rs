//! What the training loop logs to TensorBoard, by the tutorial's tags: losses and their
//! moving averages, the learning rate, throughput, precision@1, and every
//! `--summary-every` steps histograms of activations, gradients and weights, activation
//! sparsity and a few distorted input images.
//!
//! During training the event file is written by its own thread ([`SummaryThread`]): at a
//! summary step the loop only takes device-side copies of what it summarises (one copy of
//! the weights' buffer; the step's gradients and activations are its own and never
//! rewritten) and sends them; the copies to the host, the histograms (about 8 M values at
//! batch 128) and the writing happen beside the following steps.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use model_format::arch::{INPUT_SIZE, TENSORS};
use tch::Tensor;

use crate::error::TrainError;
use crate::summary::SummaryWriter;

/// Layers whose outputs the tutorial summarises (`_activation_summary`).
const SUMMARISED_ACTIVATIONS: [(&str, &str); 4] =
    [("conv1_relu", "conv1"), ("conv2_relu", "conv2"), ("local3_relu", "local3"), ("local4_relu", "local4")];
/// Distorted inputs shown per summary (the tutorial's `max_outputs`).
pub const IMAGES_SHOWN: i64 = 3;

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

/// What one summary step shows: the tensors are the loop's snapshots of that step (still on
/// the device), read back on the summary thread.
pub struct StepSummary {
    pub step: u64,
    /// The weights after the step's update, [`TENSORS`] order (views of a copy).
    pub weights: Vec<Tensor>,
    /// The step's averaged gradients, [`TENSORS`] order.
    pub gradients: Vec<Tensor>,
    /// The first tower's layer outputs.
    pub activations: Option<Vec<(&'static str, Tensor)>>,
    /// The first few distorted inputs `[n,3,24,24]` (a copy: the batch's buffer is reused).
    pub images: Tensor,
}

enum Message {
    Scalar(String, u64, f64),
    Step(Box<StepSummary>),
    Flush(Sender<Result<(), TrainError>>),
}

/// A [`Board`] on its own thread: the loop sends scalars and [`StepSummary`]s and goes on;
/// [`SummaryThread::flush`] waits for everything sent so far to be written and reports the
/// first error since the last flush.
pub struct SummaryThread {
    messages: Option<Sender<Message>>,
    handle: Option<JoinHandle<()>>,
    /// Nanoseconds the thread has spent on step summaries (reading back, histograms, writing).
    busy_nanos: Arc<AtomicU64>,
}

impl SummaryThread {
    /// Starts an event file in `dir` and the thread that writes it.
    pub fn create(dir: &Path) -> Result<SummaryThread, TrainError> {
        let mut board = Board::create(dir)?;
        let (messages, inbox) = channel::<Message>();
        let busy_nanos = Arc::new(AtomicU64::new(0));
        let busy = Arc::clone(&busy_nanos);
        let handle = std::thread::Builder::new()
            .name("summaries".into())
            .spawn(move || {
                let mut first_error: Option<TrainError> = None;
                for message in inbox {
                    let result = match message {
                        Message::Scalar(tag, step, value) => board.scalar(&tag, step, value),
                        Message::Step(summary) => {
                            let start = Instant::now();
                            let result = board.step_summary(&summary);
                            busy.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            result
                        }
                        Message::Flush(reply) => {
                            let flushed = board.flush();
                            let _ = reply.send(first_error.take().map_or(flushed, Err));
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        first_error.get_or_insert(e);
                    }
                }
            })
            .map_err(TrainError::io(dir))?;
        Ok(SummaryThread { messages: Some(messages), handle: Some(handle), busy_nanos })
    }

    fn send(&self, message: Message) -> Result<(), TrainError> {
        self.messages
            .as_ref()
            .and_then(|m| m.send(message).ok())
            .ok_or_else(|| TrainError::Config("the TensorBoard writer thread stopped (see the message above)".into()))
    }

    /// One scalar, written in order with everything else sent.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<(), TrainError> {
        self.send(Message::Scalar(tag.to_string(), step, value))
    }

    /// A summary step's histograms, sparsity and images, made on the thread.
    pub fn step_summary(&mut self, summary: StepSummary) -> Result<(), TrainError> {
        self.send(Message::Step(Box::new(summary)))
    }

    /// Waits until everything sent is on disk; the first error since the last flush.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        let (reply, answer) = channel();
        self.send(Message::Flush(reply))?;
        answer.recv().map_err(|_| TrainError::Config("the TensorBoard writer thread stopped".into()))?
    }

    /// Time the thread has spent on step summaries so far.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed))
    }
}

impl Drop for SummaryThread {
    fn drop(&mut self) {
        self.messages = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Board {
    /// Everything of a [`StepSummary`].
    pub fn step_summary(&mut self, summary: &StepSummary) -> Result<(), TrainError> {
        if let Some(activations) = &summary.activations {
            self.activations(summary.step, activations)?;
        }
        self.weights_and_gradients(summary.step, &summary.weights, &summary.gradients)?;
        self.images(summary.step, &summary.images)
    }
}
