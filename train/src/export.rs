//! Turning a checkpoint into a model-format weights file: the averaged (or raw) weights with
//! metadata (step, moving-average decay, weights kind, dataset fingerprint, and the
//! precision@1 measured on the test set while exporting), and the check that an output
//! never overwrites a checkpoint or a file the export reads.

use std::path::{Path, PathBuf};

use model_format::{Metadata, Weights, WeightsKind};
use tch::Device;

use crate::checkpoint::Checkpoint;
use crate::error::TrainError;
use crate::evaluate::EvalSet;

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
        WeightsKind::Averaged => checkpoint.ema.clone(),
        WeightsKind::Raw => checkpoint.raw.clone(),
    };
    let precision = test.precision_of_showing_progress(&values, device)?;
    let mut metadata = Metadata {
        step: Some(checkpoint.step),
        ema_decay: (kind == WeightsKind::Averaged).then_some(checkpoint.schedule.moving_average_decay),
        weights_kind: Some(kind),
        dataset_fingerprint: Some(dataset_fingerprint.into()),
        precision_at_1: Some(precision),
        ..Metadata::default()
    };
    metadata.extra.insert("trained_by".into(), "cifar10-train".into());
    metadata.extra.insert("source_checkpoint".into(), source.display().to_string());
    metadata.extra.insert("test_images".into(), test.len().to_string());
    Ok(Weights::new(values, metadata)?)
}

/// Refuses an `output` (given by `flag`) that would destroy or shadow what the run depends
/// on: one of the run's checkpoints (any `model.ckpt-*.safetensors` of `train_dir`, existing
/// or not, since a later `--resume` would take it for one), or any file in `reads` (the
/// checkpoint being exported, another output), whatever the spelling (links, `..`).
///
/// ```
/// use std::path::Path;
/// let dir = std::env::temp_dir();
/// let ckpt = dir.join(train::checkpoint::file_name(7));
/// let err = train::export::check_output("--output", &ckpt, &dir, &[]).unwrap_err().to_string();
/// assert!(err.contains("--output") && err.contains("checkpoint"));
/// train::export::check_output("--output", &dir.join("model.safetensors"), &dir, &[]).unwrap();
/// ```
pub fn check_output(flag: &str, output: &Path, train_dir: &Path, reads: &[&Path]) -> Result<(), TrainError> {
    let refuse = |what: String| Err(TrainError::Config(format!("{flag} {}: {what}", output.display())));
    let target = resolved(output);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if target.parent() == Some(resolved(train_dir).as_path()) && crate::checkpoint::step_of(&name).is_some() {
        return refuse(format!(
            "is a checkpoint of the run in {}; choose a name outside model.ckpt-*.safetensors",
            train_dir.display()
        ));
    }
    // The same-file check below needs files that exist; another output may not exist yet.
    if let Some(read) = reads.iter().find(|read| resolved(read) == target) {
        return refuse(format!("is the same path as {}, which this export reads or writes", read.display()));
    }
    let checkpoints: Vec<PathBuf> = crate::checkpoint::list(train_dir)?.into_iter().map(|(_, p)| p).collect();
    let inputs: Vec<&Path> = reads.iter().copied().chain(checkpoints.iter().map(PathBuf::as_path)).collect();
    match model_format::atomic::check_not_an_input(output, &inputs) {
        Ok(()) => Ok(()),
        Err(e) => refuse(e.to_string()),
    }
}

/// `path` with links and `..` resolved: the file itself when it exists, else its folder's
/// resolved path joined with its name (for the checkpoint-name check, which also covers
/// files not written yet).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            parent.canonicalize().unwrap_or_else(|_| parent.to_path_buf()).join(name)
        }
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::arch::IMAGE_LEN;
    use model_format::cifar::Records;

    #[test]
    fn exported_files_carry_the_metadata_and_load_back() {
        let raw = model_format::init::initial_tensors(1);
        let ema = model_format::init::initial_tensors(2);
        let schedule = crate::config::TrainConfig::new("unused").schedule();
        let ckpt = Checkpoint { step: 42, seed: 1, train_examples: 10, schedule, raw: raw.clone(), ema: ema.clone() };
        let bytes: Vec<u8> = (0..20u8)
            .flat_map(|l| std::iter::once(l % 10).chain((0..IMAGE_LEN).map(move |i| (i as u8).wrapping_mul(l))))
            .collect();
        let test = EvalSet::new(&Records::from_bytes(bytes, "mem").unwrap());
        let dir = std::env::temp_dir().join(format!("export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (kind, expected) in [(WeightsKind::Averaged, &ema), (WeightsKind::Raw, &raw)] {
            let weights = to_weights(&ckpt, Path::new("ckpt"), kind, &test, "fnv1a64:0123", Device::Cpu).unwrap();
            let path = dir.join(format!("{}.safetensors", kind.as_str()));
            weights.save(&path).unwrap();
            let back = Weights::load(&path).unwrap();
            let m = &back.metadata;
            assert_eq!(
                (m.step, m.weights_kind, m.dataset_fingerprint.as_deref()),
                (Some(42), Some(kind), Some("fnv1a64:0123"))
            );
            assert_eq!(m.ema_decay, (kind == WeightsKind::Averaged).then_some(0.9999));
            let p = m.precision_at_1.unwrap();
            assert!((0.0..=1.0).contains(&p) && (p * 20.0).fract() == 0.0, "{p} is a count over 20 images");
            assert_eq!(back.tensor(0), expected[0].as_slice());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_output_onto_a_checkpoint_or_an_input_is_refused() {
        let dir = std::env::temp_dir().join(format!("export-guard-{}", std::process::id()));
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        let ckpt = run.join(crate::checkpoint::file_name(3));
        std::fs::write(&ckpt, b"checkpoint").unwrap();
        let other = dir.join("elsewhere.safetensors");
        std::fs::write(&other, b"x").unwrap();
        // the checkpoint itself, by another spelling of its path
        let spelled = run.join("..").join("run").join(crate::checkpoint::file_name(3));
        let err = check_output("--output", &spelled, &run, &[]).unwrap_err().to_string();
        assert!(err.contains("--output") && err.contains("checkpoint of the run"), "{err}");
        // a future checkpoint name in the train folder
        assert!(check_output("--output", &run.join(crate::checkpoint::file_name(9)), &run, &[]).is_err());
        // the file being exported (a --checkpoint outside the run) and the other output
        let err = check_output("--output", &other, &run, &[&other]).unwrap_err().to_string();
        assert!(err.contains("which this export reads or writes"), "{err}");
        let hard_link = dir.join("hard.safetensors");
        std::fs::hard_link(&other, &hard_link).unwrap();
        let err = check_output("--output", &hard_link, &run, &[&other]).unwrap_err().to_string();
        assert!(err.contains("is the same file as the input"), "{err}");
        let not_yet = dir.join("new.safetensors");
        assert!(check_output("--raw-output", &not_yet, &run, &[&not_yet])
            .unwrap_err()
            .to_string()
            .contains("same path"));
        // a symbolic link to a checkpoint
        let link = dir.join("link.safetensors");
        std::os::unix::fs::symlink(&ckpt, &link).unwrap();
        let err = check_output("--output", &link, &run, &[]).unwrap_err().to_string();
        assert!(err.contains("link.safetensors: is a checkpoint of the run"), "{err}");
        check_output("--output", &run.join("model.safetensors"), &run, &[&ckpt]).unwrap();
        assert_eq!(std::fs::read(&ckpt).unwrap(), b"checkpoint");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
