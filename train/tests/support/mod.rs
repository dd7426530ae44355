//! What several of the trainer's integration tests share.

use std::path::{Path, PathBuf};

/// A data folder whose five training files and test file are all the in-repo sample.
pub fn sample_data_dir(dir: &Path) -> PathBuf {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sample");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"];
    for name in names {
        std::os::unix::fs::symlink(sample.join("test_batch.bin"), data.join(format!("{name}.bin"))).unwrap();
    }
    std::os::unix::fs::symlink(sample.join("batches.meta.txt"), data.join("batches.meta.txt")).unwrap();
    data
}
