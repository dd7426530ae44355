//! Turning a checkpoint into a model-format weights file: the averaged (or raw) weights with
//! metadata (step, moving-average decay, weights kind, dataset fingerprint, and the
//! precision@1 measured on the test set while exporting).

use std::path::Path;

use model_format::{Metadata, Weights};
use tch::Device;

use crate::checkpoint::Checkpoint;
use crate::error::TrainError;
use crate::evaluate::EvalSet;

/// Which of a checkpoint's two weight sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsKind {
    /// The moving average (what the tutorial evaluates and serves).
    Ema,
    /// The trained variables themselves.
    Raw,
}

impl WeightsKind {
    /// The metadata value: `"ema"` or `"raw"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsKind::Ema => "ema",
            WeightsKind::Raw => "raw",
        }
    }
}

/// The chosen weights of `checkpoint` (read from `source`), measured on `test`, with metadata.
pub fn to_weights(
    checkpoint: &Checkpoint,
    source: &Path,
    kind: WeightsKind,
    test: &EvalSet,
    dataset_fingerprint: &str,
    device: Device,
) -> Result<Weights, TrainError> {
    let values = match kind {
        WeightsKind::Ema => checkpoint.ema.clone(),
        WeightsKind::Raw => checkpoint.raw.clone(),
    };
    let precision = test.precision_of(&values, device)?;
    let mut metadata = Metadata {
        step: Some(checkpoint.step),
        ema_decay: (kind == WeightsKind::Ema).then_some(checkpoint.ema_decay),
        weights_kind: Some(kind.as_str().into()),
        dataset_fingerprint: Some(dataset_fingerprint.into()),
        precision_at_1: Some(precision),
        ..Metadata::default()
    };
    metadata.extra.insert("trained_by".into(), "cifar10-train".into());
    metadata.extra.insert("source_checkpoint".into(), source.display().to_string());
    metadata.extra.insert("test_images".into(), test.len().to_string());
    Ok(Weights::new(values, metadata)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::arch::IMAGE_LEN;
    use model_format::cifar::Records;

    #[test]
    fn exported_files_carry_the_metadata_and_load_back() {
        let raw = crate::model::initial_values(1);
        let ema = crate::model::initial_values(2);
        let ckpt = Checkpoint {
            step: 42,
            seed: 1,
            batch_size: 8,
            train_examples: 10,
            ema_decay: 0.9999,
            raw: raw.clone(),
            ema: ema.clone(),
        };
        let bytes: Vec<u8> = (0..20u8)
            .flat_map(|l| std::iter::once(l % 10).chain((0..IMAGE_LEN).map(move |i| (i as u8).wrapping_mul(l))))
            .collect();
        let test = EvalSet::new(&Records::from_bytes(bytes, "mem").unwrap());
        let dir = std::env::temp_dir().join(format!("export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (kind, expected) in [(WeightsKind::Ema, &ema), (WeightsKind::Raw, &raw)] {
            let weights = to_weights(&ckpt, Path::new("ckpt"), kind, &test, "fnv1a64:0123", Device::Cpu).unwrap();
            let path = dir.join(format!("{}.safetensors", kind.as_str()));
            weights.save(&path).unwrap();
            let back = Weights::load(&path).unwrap();
            let m = &back.metadata;
            assert_eq!(
                (m.step, m.weights_kind.as_deref(), m.dataset_fingerprint.as_deref()),
                (Some(42), Some(kind.as_str()), Some("fnv1a64:0123"))
            );
            assert_eq!(m.ema_decay, (kind == WeightsKind::Ema).then_some(0.9999));
            let p = m.precision_at_1.unwrap();
            assert!((0.0..=1.0).contains(&p) && (p * 20.0).fract() == 0.0, "{p} is a count over 20 images");
            assert_eq!(back.tensor(0), expected[0].as_slice());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
