//! Training checkpoints: one file per save, `model.ckpt-<step>.safetensors` in the train
//! folder, written with model-format's tensor-set codec ([`model_format::tensor_set`]): the
//! raw weights (`raw/<tensor>`), their moving averages (`ema/<tensor>`) and the run's state in
//! the metadata: step, seed, the number of training examples (which, with the seed and the
//! batch, fix the input order and every random draw still to come) and the [`Schedule`]
//! (per-tower batch, towers, learning rate and decay, moving-average decay) that a resumed
//! run must share. The codec's digest covers every tensor and metadata field, and reading
//! refuses non-finite values. Written atomically; only the newest `keep` files are kept.

use std::path::{Path, PathBuf};

use model_format::arch::ARCHITECTURE;
use model_format::tensor_set::{self, expect_field, field, Fields};
use model_format::WeightsError;

use crate::config::Schedule;
use crate::error::TrainError;

/// Identifies our checkpoint files and their layout version. Version 2 made `batch_size` the
/// per-tower batch, added the rest of the [`Schedule`] and the codec's digest.
pub const CHECKPOINT_FORMAT: &str = "cifar10-train-checkpoint/v2";
/// The previous version, recognised only to explain why it is refused.
const CHECKPOINT_FORMAT_V1: &str = "cifar10-train-checkpoint/v1";
/// The two weight sets of a checkpoint, by name prefix.
const SETS: [&str; 2] = ["raw/", "ema/"];
/// Metadata keys of the [`Schedule`], in [`Schedule::fields`] order.
const SCHEDULE_KEYS: [&str; 7] = [
    "batch_size_per_tower",
    "towers",
    "world_size",
    "learning_rate",
    "learning_rate_decay_factor",
    "num_epochs_per_decay",
    "moving_average_decay",
];
const PREFIX: &str = "model.ckpt-";
const SUFFIX: &str = ".safetensors";

/// Everything needed to continue a run exactly where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Steps completed.
    pub step: u64,
    pub seed: u64,
    /// Size of the training set the input order was drawn for.
    pub train_examples: usize,
    /// The settings the run was trained with.
    pub schedule: Schedule,
    /// Trained weights, flat, [`model_format::TENSORS`] order.
    pub raw: Vec<Vec<f32>>,
    /// Their moving averages.
    pub ema: Vec<Vec<f32>>,
}

/// The metadata part of a checkpoint.
struct State {
    step: u64,
    seed: u64,
    train_examples: usize,
    schedule: Schedule,
}

/// The file name for a checkpoint at `step`.
pub fn file_name(step: u64) -> String {
    format!("{PREFIX}{step:010}{SUFFIX}")
}

impl Checkpoint {
    /// Writes `dir/model.ckpt-<step>.safetensors` atomically, then deletes all but the
    /// newest `keep` checkpoints. Returns the path written.
    pub fn save(&self, dir: &Path, keep: usize) -> Result<PathBuf, TrainError> {
        let path = dir.join(file_name(self.step));
        let bytes = self.to_bytes().map_err(|e| problem(&path, e))?;
        model_format::atomic::write_file(&path, &bytes).map_err(TrainError::io(&path))?;
        prune(dir, keep.max(1))?;
        Ok(path)
    }

    fn to_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        let schedule = SCHEDULE_KEYS.into_iter().zip(self.schedule.fields()).map(|(key, (_, value))| (key, value));
        let metadata: Fields = [
            ("format", CHECKPOINT_FORMAT.to_string()),
            ("architecture", ARCHITECTURE.to_string()),
            ("step", self.step.to_string()),
            ("seed", self.seed.to_string()),
            ("train_examples", self.train_examples.to_string()),
        ]
        .into_iter()
        .chain(schedule)
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        tensor_set::encode(&[(SETS[0], &self.raw), (SETS[1], &self.ema)], &metadata)
    }

    /// Reads and validates a checkpoint; a file of another model or format, a changed byte or
    /// a non-finite value is refused with the field or tensor at fault.
    pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
        let bytes = tensor_set::read_file(path).map_err(|e| match e {
            WeightsError::Io { source, .. } => TrainError::Io { path: path.into(), source },
            other => problem(path, other),
        })?;
        Self::from_bytes(&bytes).map_err(|e| problem(path, e))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, WeightsError> {
        let (mut sets, state) = tensor_set::decode(bytes, &SETS, read_state)?;
        let (ema, raw) = (sets.pop().expect("two sets"), sets.pop().expect("two sets"));
        let State { step, seed, train_examples, schedule } = state;
        Ok(Checkpoint { step, seed, train_examples, schedule, raw, ema })
    }
}

fn problem(path: &Path, error: WeightsError) -> TrainError {
    TrainError::Checkpoint { path: path.into(), problem: error.to_string() }
}

fn read_state(m: &Fields) -> Result<State, WeightsError> {
    let refuse = |field, problem| Err(WeightsError::Metadata { field, problem });
    match m.get("format").map(String::as_str) {
        Some(CHECKPOINT_FORMAT_V1) => {
            return refuse(
                "format",
                format!(
                    "`{CHECKPOINT_FORMAT_V1}` was written before the batch size became per tower and the learning-rate \
                     and moving-average settings were recorded; this trainer reads {CHECKPOINT_FORMAT} only (export it \
                     with the trainer that wrote it, or start a new run)"
                ),
            )
        }
        _ => expect_field(m, "format", CHECKPOINT_FORMAT)?,
    }
    if let Some(other) = m.get("architecture").filter(|a| *a != ARCHITECTURE) {
        return refuse(
            "architecture",
            format!("`{other}` is not {ARCHITECTURE}: this checkpoint belongs to another model"),
        );
    }
    expect_field(m, "architecture", ARCHITECTURE)?;
    let [batch, towers, world, rate, factor, epochs, decay] = SCHEDULE_KEYS;
    Ok(State {
        step: field(m, "step")?,
        seed: field(m, "seed")?,
        train_examples: field(m, "train_examples")?,
        schedule: Schedule {
            batch_size: field(m, batch)?,
            towers: field(m, towers)?,
            // Checkpoints from before distributed training have no world size: they ran alone.
            world_size: tensor_set::optional_field(m, world)?.unwrap_or(1),
            learning_rate: field(m, rate)?,
            learning_rate_decay_factor: field(m, factor)?,
            epochs_per_decay: field(m, epochs)?,
            moving_average_decay: field(m, decay)?,
        },
    })
}

/// The step of a checkpoint file name (`model.ckpt-<step>.safetensors`), or None for any
/// other name.
///
/// ```
/// assert_eq!(train::checkpoint::step_of("model.ckpt-0000000042.safetensors"), Some(42));
/// assert_eq!(train::checkpoint::step_of("model.safetensors"), None);
/// ```
pub fn step_of(file_name: &str) -> Option<u64> {
    file_name.strip_prefix(PREFIX).and_then(|s| s.strip_suffix(SUFFIX)).and_then(|s| s.parse::<u64>().ok())
}

/// The checkpoints in `dir`, oldest first, with their steps.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(TrainError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = step_of(&name) {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    Ok(list(dir)?.pop().map(|(_, path)| path))
}

fn prune(dir: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list(dir)?;
    let excess = all.len().saturating_sub(keep);
    for (_, path) in &all[..excess] {
        std::fs::remove_file(path).map_err(TrainError::io(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: u64) -> Checkpoint {
        let raw = model_format::init::initial_tensors(step);
        let ema = raw.iter().map(|t| t.iter().map(|v| v * 0.5).collect()).collect();
        let schedule = crate::config::Schedule {
            batch_size: 16,
            towers: 3,
            world_size: 2,
            learning_rate: 0.05,
            learning_rate_decay_factor: 0.3,
            epochs_per_decay: 2.5,
            moving_average_decay: 0.999,
        };
        Checkpoint { step, seed: 7, train_examples: 100, schedule, raw, ema }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn save_load_round_trip_and_keep_the_newest() {
        let dir = temp_dir("round-trip");
        for step in [10, 20, 30, 40] {
            sample(step).save(&dir, 2).unwrap();
        }
        let steps: Vec<u64> = list(&dir).unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [30, 40]);
        let back = Checkpoint::load(&latest(&dir).unwrap().unwrap()).unwrap();
        assert_eq!(back, sample(40));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_weights_file_or_foreign_model_is_refused_by_name() {
        let dir = temp_dir("foreign");
        let weights = model_format::Weights::new(sample(1).raw, model_format::Metadata::default()).unwrap();
        let path = dir.join(file_name(5));
        weights.save(&path).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("model.ckpt-0000000005") && err.contains("`format`: missing"), "{err}");

        let find = |bytes: &[u8], text: &str| bytes.windows(text.len()).position(|w| w == text.as_bytes()).unwrap();
        let mut bytes = sample(2).to_bytes().unwrap();
        let at = find(&bytes, ARCHITECTURE);
        bytes[at + ARCHITECTURE.len() - 2] = b'9'; // "…/v1" becomes "…/91", same length
        let err = Checkpoint::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("another model"), "{err}");

        let mut bytes = sample(3).to_bytes().unwrap();
        let at = find(&bytes, CHECKPOINT_FORMAT);
        bytes[at + CHECKPOINT_FORMAT.len() - 1] = b'1'; // a v1 checkpoint
        let err = Checkpoint::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("`cifar10-train-checkpoint/v1`") && err.contains("per tower"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_changed_byte_or_a_non_finite_value_is_refused() {
        let mut bytes = sample(4).to_bytes().unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let err = Checkpoint::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("weights_digest"), "{err}");
        let dir = temp_dir("non-finite");
        let mut diverged = sample(4);
        diverged.ema[0][3] = f32::NAN;
        let err = diverged.save(&dir, 1).unwrap_err().to_string();
        assert!(err.contains("conv1.weight") && err.contains("non-finite"), "{err}");
        assert!(list(&dir).unwrap().is_empty(), "nothing was written");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
