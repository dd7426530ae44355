//! The trainer's error type: every failure names the file, flag, tensor or step at fault.

use std::fmt;
use std::path::PathBuf;

use model_format::cifar::DataError;
use model_format::WeightsError;

/// Everything that can stop the trainer.
#[derive(Debug)]
pub enum TrainError {
    /// libtorch refused an operation (bad device, out of memory, shape mismatch).
    Torch(tch::TchError),
    /// A weights file or a set of weights is invalid.
    Weights(WeightsError),
    /// The CIFAR-10 data is missing or corrupt.
    Data(DataError),
    /// A file or folder could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// A flag or setting is invalid; the message names it.
    Config(String),
    /// A checkpoint file is unreadable or belongs to another model or run.
    Checkpoint { path: PathBuf, problem: String },
    /// The loss became NaN or infinite at `step` or at a step since the previous read-back
    /// (losses are read back at log, summary, evaluation and checkpoint steps).
    NonFiniteLoss { step: u64, loss: f64 },
    /// A data-parallel rendezvous or collective failed (the message names the rank, the
    /// address or the lost rank).
    Dist(c10d::DistError),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Torch(e) if e.to_string().contains("out of memory") => write!(
                f,
                "libtorch: {e}\nthe device ran out of memory: lower --batch-size (examples per tower) or use fewer --towers"
            ),
            TrainError::Torch(e) => write!(f, "libtorch: {e}"),
            TrainError::Weights(e) => write!(f, "{e}"),
            TrainError::Data(e) => write!(f, "{e}"),
            TrainError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            TrainError::Config(message) => write!(f, "{message}"),
            TrainError::Checkpoint { path, problem } => write!(f, "checkpoint {}: {problem}", path.display()),
            TrainError::Dist(e) => write!(f, "distributed training: {e}"),
            TrainError::NonFiniteLoss { step, loss } => write!(
                f,
                "model diverged with loss = {loss} by step {step}; training stopped without saving (try a lower --learning-rate)"
            ),
        }
    }
}

impl std::error::Error for TrainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrainError::Torch(e) => Some(e),
            TrainError::Weights(e) => Some(e),
            TrainError::Data(e) => Some(e),
            TrainError::Io { source, .. } => Some(source),
            TrainError::Dist(e) => Some(e),
            _ => None,
        }
    }
}

impl From<c10d::DistError> for TrainError {
    fn from(e: c10d::DistError) -> Self {
        TrainError::Dist(e)
    }
}

impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        TrainError::Torch(e)
    }
}

impl From<WeightsError> for TrainError {
    fn from(e: WeightsError) -> Self {
        TrainError::Weights(e)
    }
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        TrainError::Data(e)
    }
}

impl TrainError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }
}
