//! The test images `cifar10 eval` counts: the data folder (`--data-dir`, `$CIFAR10_DATA_DIR`,
//! then the default place), else — only for a person trying the command, never for a run
//! whose figure anything depends on — the 1,000 test records bundled into the binary
//! (`data/sample/`), said plainly in the first line and in the result.

use std::path::{Path, PathBuf};

#[cfg(feature = "bundled-sample")]
use model_format::cifar::FETCH_COMMAND;
use model_format::cifar::{resolve_data_dir, DataError, Dataset, Records, DATA_DIR_ENV};

/// The first 1,000 records of the development copy's `test_batch.bin` (`data/sample/`).
#[cfg(feature = "bundled-sample")]
const BUNDLED_SAMPLE: &[u8] = include_bytes!("../../data/sample/test_batch.bin");

/// What the result names as its data.
pub const BUNDLED_SAMPLE_NAME: &str = "bundled sample (the first 1,000 CIFAR-10 test images)";

/// Where the counted images came from.
pub enum Source {
    Folder(PathBuf),
    #[cfg_attr(not(feature = "bundled-sample"), allow(dead_code))]
    BundledSample,
}

impl Source {
    /// A short description for the result.
    pub fn describe(&self) -> String {
        match self {
            Source::Folder(dir) => dir.display().to_string(),
            Source::BundledSample => BUNDLED_SAMPLE_NAME.into(),
        }
    }
}

/// The images, where they came from, and the files read for them (inputs no output may
/// replace).
pub struct TestImages {
    pub records: Records,
    pub source: Source,
    pub files: Vec<PathBuf>,
}

/// Opens the test images for `eval`. Missing data falls back to the bundled sample only when
/// nothing asked for particular data: no `--data-dir`, no `$CIFAR10_DATA_DIR`, no `$CI`, and
/// not `strict` (a gate or a report asked for).
pub fn open(flag: Option<&Path>, strict: bool) -> Result<TestImages, DataError> {
    let asked_for_data = strict || flag.is_some() || std::env::var_os(DATA_DIR_ENV).is_some() || ci();
    match resolve_data_dir(flag) {
        Some(dir) => {
            let dataset = Dataset::open(&dir)?;
            Ok(TestImages { records: dataset.test()?, files: dataset.files(), source: Source::Folder(dataset.dir) })
        }
        None if asked_for_data => Err(DataError::NoDataDir),
        #[cfg(not(feature = "bundled-sample"))]
        None => Err(DataError::NoDataDir),
        #[cfg(feature = "bundled-sample")]
        None => {
            eprintln!(
                "eval: no CIFAR-10 data folder found, so this counts the {BUNDLED_SAMPLE_NAME}; for the full \
                 10,000, run `{FETCH_COMMAND}` (or pass --data-dir)"
            );
            Ok(TestImages { records: bundled_sample(), source: Source::BundledSample, files: Vec::new() })
        }
    }
}

/// Whether this runs in a CI pipeline (`$CI` set and not empty, as CI systems set it).
fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

#[cfg(feature = "bundled-sample")]
fn bundled_sample() -> Records {
    Records::from_bytes(BUNDLED_SAMPLE.to_vec(), "bundled sample").expect("the bundled sample is valid records")
}

#[cfg(all(test, feature = "bundled-sample"))]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_sample_holds_1000_valid_records() {
        let records = bundled_sample();
        assert_eq!(records.len(), 1000);
        assert_eq!(records.fingerprint(), sample_fingerprint_in_manifest());
    }

    fn sample_fingerprint_in_manifest() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/cifar10.manifest.json");
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        manifest["dataset"]["sample_fingerprint"].as_str().unwrap().to_string()
    }
}
