//! Training checkpoints: one safetensors file per save, `model.ckpt-<step>.safetensors` in
//! the train folder, holding the raw weights (`raw/<tensor>`), their moving averages
//! (`ema/<tensor>`) and the run's state in the metadata: step, seed, the number of training
//! examples (which, with the seed and the batch, fix the input order and every random draw
//! still to come) and the [`Schedule`] (per-tower batch, towers, learning rate and decay,
//! moving-average decay) that a resumed run must share. Written atomically; only the newest
//! `keep` files are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use model_format::arch::{ARCHITECTURE, TENSORS};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::config::Schedule;
use crate::error::TrainError;

/// Identifies our checkpoint files and their layout version. Version 2 made `batch_size` the
/// per-tower batch and added the rest of the [`Schedule`].
pub const CHECKPOINT_FORMAT: &str = "cifar10-train-checkpoint/v2";
/// The previous version, recognised only to explain why it is refused.
const CHECKPOINT_FORMAT_V1: &str = "cifar10-train-checkpoint/v1";
/// Metadata keys of the [`Schedule`], in [`Schedule::fields`] order.
const SCHEDULE_KEYS: [&str; 6] = [
    "batch_size_per_tower",
    "towers",
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
    /// Trained weights, flat, [`TENSORS`] order.
    pub raw: Vec<Vec<f32>>,
    /// Their moving averages.
    pub ema: Vec<Vec<f32>>,
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
        let bytes = self.to_bytes()?;
        model_format::atomic::write_file(&path, &bytes).map_err(TrainError::io(&path))?;
        prune(dir, keep.max(1))?;
        Ok(path)
    }

    fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let raw_bytes: Vec<Vec<u8>> =
            self.raw.iter().chain(&self.ema).map(|t| t.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let names =
            TENSORS.iter().map(|t| format!("raw/{}", t.name)).chain(TENSORS.iter().map(|t| format!("ema/{}", t.name)));
        let shapes = TENSORS.iter().chain(TENSORS.iter()).map(|t| t.shape.to_vec());
        let views = names
            .zip(shapes)
            .zip(&raw_bytes)
            .map(|((name, shape), bytes)| {
                Ok((name, TensorView::new(Dtype::F32, shape, bytes).map_err(|e| TrainError::Config(e.to_string()))?))
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        let schedule = SCHEDULE_KEYS.into_iter().zip(self.schedule.fields()).map(|(key, (_, value))| (key, value));
        let metadata: HashMap<String, String> = [
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
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| TrainError::Config(e.to_string()))
    }

    /// Reads and validates a checkpoint; a file of another model or format is refused with
    /// the field or tensor at fault.
    pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
        let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
        Self::from_bytes(&bytes).map_err(|problem| TrainError::Checkpoint { path: path.into(), problem })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let field = |key: &str| {
            meta.get(key).ok_or_else(|| format!("metadata field `{key}` is missing (not a cifar10-train checkpoint?)"))
        };
        let format = field("format")?;
        if format == CHECKPOINT_FORMAT_V1 {
            return Err(format!(
                "format `{format}` was written before the batch size became per tower and the learning-rate and \
                 moving-average settings were recorded; this trainer reads {CHECKPOINT_FORMAT} only (export it with the \
                 trainer that wrote it, or start a new run)"
            ));
        }
        if format != CHECKPOINT_FORMAT {
            return Err(format!("format `{format}` is not {CHECKPOINT_FORMAT}"));
        }
        let architecture = field("architecture")?;
        if architecture != ARCHITECTURE {
            return Err(format!(
                "architecture `{architecture}` is not {ARCHITECTURE}: this checkpoint belongs to another model"
            ));
        }
        let number = |key: &str| -> Result<f64, String> {
            let text = field(key)?;
            text.parse::<f64>().map_err(|_| format!("metadata field `{key}`: `{text}` is not a number"))
        };
        let integer = |key: &str| -> Result<u64, String> {
            let text = field(key)?;
            text.parse::<u64>().map_err(|_| format!("metadata field `{key}`: `{text}` is not a whole number"))
        };
        for name in file.names() {
            let known = name.split_once('/').is_some_and(|(kind, t)| {
                (kind == "raw" || kind == "ema") && model_format::arch::tensor_id(t).is_some()
            });
            if !known {
                return Err(format!("unexpected tensor `{name}` (not part of {ARCHITECTURE})"));
            }
        }
        let read_set = |kind: &str| -> Result<Vec<Vec<f32>>, String> {
            TENSORS
                .iter()
                .map(|spec| {
                    let name = format!("{kind}/{}", spec.name);
                    let view = file.tensor(&name).map_err(|_| format!("tensor `{name}` is missing"))?;
                    if view.dtype() != Dtype::F32 || view.shape() != spec.shape {
                        return Err(format!(
                            "tensor `{name}` is {:?} {:?}, expected F32 {:?}",
                            view.dtype(),
                            view.shape(),
                            spec.shape
                        ));
                    }
                    Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
                })
                .collect()
        };
        let [batch, towers, rate, factor, epochs, decay] = SCHEDULE_KEYS;
        Ok(Checkpoint {
            step: integer("step")?,
            seed: integer("seed")?,
            train_examples: integer("train_examples")? as usize,
            schedule: Schedule {
                batch_size: integer(batch)? as usize,
                towers: integer(towers)? as usize,
                learning_rate: number(rate)?,
                learning_rate_decay_factor: number(factor)?,
                epochs_per_decay: number(epochs)?,
                moving_average_decay: number(decay)?,
            },
            raw: read_set("raw")?,
            ema: read_set("ema")?,
        })
    }
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
        let raw = crate::model::initial_values(step);
        let ema = raw.iter().map(|t| t.iter().map(|v| v * 0.5).collect()).collect();
        let schedule = crate::config::Schedule {
            batch_size: 16,
            towers: 3,
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
        assert!(err.contains("model.ckpt-0000000005") && err.contains("`format` is missing"), "{err}");

        let find = |bytes: &[u8], text: &str| bytes.windows(text.len()).position(|w| w == text.as_bytes()).unwrap();
        let mut bytes = sample(2).to_bytes().unwrap();
        let at = find(&bytes, ARCHITECTURE);
        bytes[at + ARCHITECTURE.len() - 2] = b'9'; // "…/v1" becomes "…/91", same length
        let err = Checkpoint::from_bytes(&bytes).unwrap_err();
        assert!(err.contains("another model"), "{err}");

        let mut bytes = sample(3).to_bytes().unwrap();
        let at = find(&bytes, CHECKPOINT_FORMAT);
        bytes[at + CHECKPOINT_FORMAT.len() - 1] = b'1'; // a v1 checkpoint
        let err = Checkpoint::from_bytes(&bytes).unwrap_err();
        assert!(err.contains("`cifar10-train-checkpoint/v1`") && err.contains("per tower"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
