//! Reader for the official CIFAR-10 binary release (`cifar-10-batches-bin/`):
//! `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`, `batches.meta.txt`.
//! Each record is 3,073 bytes: the label (0–9), then 1,024 red, 1,024 green and 1,024 blue
//! bytes of a 32×32 image, rows top to bottom. Records are kept exactly as read, so memory
//! is the data's size.
//!
//! ```no_run
//! use model_format::cifar::Dataset;
//! let data = Dataset::open("../shared/cifar10/cifar-10-batches-bin")?;
//! let test = data.test()?;
//! println!("{} test images, first is a {}", test.len(), data.class_names[test.label(0) as usize]);
//! # Ok::<(), model_format::cifar::DataError>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::arch::{CLASS_NAMES, IMAGE_LEN, NUM_CLASSES};
use crate::digest::Fnv1a64;

/// Bytes per record: one label byte and a planar 32×32 RGB image.
pub const RECORD_LEN: usize = 1 + IMAGE_LEN;
/// The five training files, in order.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The class-name file (one name a line).
pub const META_FILE: &str = "batches.meta.txt";
/// Environment variable that names the data folder when no `--data-dir` is given.
pub const DATA_DIR_ENV: &str = "CIFAR10_DATA_DIR";
/// Where the data is looked for when neither a flag nor [`DATA_DIR_ENV`] names it,
/// relative to the working directory (the repository root, beside `../shared`).
pub const DEFAULT_DATA_DIR: &str = "../shared/cifar10/cifar-10-batches-bin";

/// The command that downloads the official release to where [`DEFAULT_DATA_DIR`] points,
/// as run from a checkout of this project (the default build of `cifar10` has no download).
pub const FETCH_COMMAND: &str = "cargo run --release -p cifar10 --features fetch -- data fetch";

/// A problem with the data, naming the file and, for content errors, the byte offset.
#[derive(Debug)]
pub enum DataError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The folder holds no file of that name.
    MissingFile {
        path: PathBuf,
    },
    /// The file size is not a positive whole number of records.
    Size {
        path: PathBuf,
        len: u64,
    },
    /// A label byte outside 0–9.
    Label {
        path: PathBuf,
        offset: u64,
        label: u8,
    },
    /// `batches.meta.txt` does not list ten class names.
    Meta {
        path: PathBuf,
        problem: String,
    },
    /// No data folder was given and none was found at the default places.
    NoDataDir,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            DataError::MissingFile { path } => write!(f, "{}: no such file (is this a cifar-10-batches-bin folder?)", path.display()),
            DataError::Size { path, len } => {
                let whole = len / RECORD_LEN as u64;
                write!(
                    f,
                    "{}: {len} bytes is not a whole number of {RECORD_LEN}-byte records (file truncated or not CIFAR-10: {whole} whole records, then {} stray bytes at byte offset {})",
                    path.display(),
                    len % RECORD_LEN as u64,
                    whole * RECORD_LEN as u64
                )
            }
            DataError::Label { path, offset, label } => {
                write!(f, "{}: label {label} at byte offset {offset} is not a class 0-9 (corrupt record)", path.display())
            }
            DataError::Meta { path, problem } => write!(f, "{}: {problem}", path.display()),
            DataError::NoDataDir => write!(
                f,
                "no CIFAR-10 data folder: pass --data-dir, set {DATA_DIR_ENV}, or put the data at {DEFAULT_DATA_DIR} (to download it there, run `{FETCH_COMMAND}` in this project's checkout)"
            ),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Labelled images from one or more record files, kept as the raw records.
#[derive(Debug, Clone, Default)]
pub struct Records {
    bytes: Vec<u8>,
}

impl Records {
    /// Reads and validates one record file.
    pub fn read_file(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let mut records = Records::default();
        records.append_file(path.as_ref())?;
        Ok(records)
    }

    /// Reads and validates several record files into one set, allocating once.
    pub fn read_files(paths: &[PathBuf]) -> Result<Self, DataError> {
        let mut total = 0;
        for path in paths {
            total += file_len(path)?;
        }
        let mut records = Records { bytes: Vec::with_capacity(total as usize) };
        for path in paths {
            records.append_file(path)?;
        }
        Ok(records)
    }

    /// Validates records held in memory; `name` is used in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Self, DataError> {
        validate(Path::new(name), &bytes)?;
        Ok(Records { bytes })
    }

    fn append_file(&mut self, path: &Path) -> Result<(), DataError> {
        let len = file_len(path)?;
        let start = self.bytes.len();
        self.bytes.reserve_exact(len as usize);
        let io = |source| DataError::Io { path: path.into(), source };
        File::open(path).map_err(io)?.take(len).read_to_end(&mut self.bytes).map_err(io)?;
        if (self.bytes.len() - start) as u64 != len {
            let read = (self.bytes.len() - start) as u64;
            self.bytes.truncate(start);
            return Err(DataError::Size { path: path.into(), len: read });
        }
        if let Err(e) = validate(path, &self.bytes[start..]) {
            self.bytes.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.bytes.len() / RECORD_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The label (0–9) of record `i`.
    pub fn label(&self, i: usize) -> u8 {
        self.bytes[i * RECORD_LEN]
    }

    /// The planar 32×32 RGB pixels of record `i` (3,072 bytes).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.bytes[i * RECORD_LEN + 1..(i + 1) * RECORD_LEN]
    }

    /// The whole record `i` (3,073 bytes), as stored in the file.
    pub fn record(&self, i: usize) -> &[u8] {
        &self.bytes[i * RECORD_LEN..(i + 1) * RECORD_LEN]
    }

    /// The first `n` records (all of them if there are fewer).
    pub fn head(&self, n: usize) -> Records {
        Records { bytes: self.bytes[..n.min(self.len()) * RECORD_LEN].to_vec() }
    }

    /// The records as stored, ready to write back to a `.bin` file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Fingerprint of the record bytes (see [`crate::digest`]).
    pub fn fingerprint(&self) -> String {
        let mut hash = Fnv1a64::default();
        hash.update(&self.bytes);
        hash.finish()
    }
}

/// Largest record file read: an official batch file is 30,730,000 bytes (10,000 records).
/// The cap stops a wrong path (a disk image, a link to `/dev/zero`) from being read whole.
pub const MAX_RECORD_FILE_BYTES: u64 = 64 << 20;

/// The length of a record file, refused before any read when it is not a regular file or
/// is larger than [`MAX_RECORD_FILE_BYTES`].
fn file_len(path: &Path) -> Result<u64, DataError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(DataError::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        }),
        Ok(meta) if meta.len() > MAX_RECORD_FILE_BYTES => Err(DataError::Io {
            path: path.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} bytes, more than the {MAX_RECORD_FILE_BYTES}-byte limit for a record file", meta.len()),
            ),
        }),
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DataError::MissingFile { path: path.into() }),
        Err(source) => Err(DataError::Io { path: path.into(), source }),
    }
}

fn validate(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_LEN) {
        return Err(DataError::Size { path: path.into(), len: bytes.len() as u64 });
    }
    for (i, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        if record[0] as usize >= NUM_CLASSES {
            return Err(DataError::Label { path: path.into(), offset: (i * RECORD_LEN) as u64, label: record[0] });
        }
    }
    Ok(())
}

/// A `cifar-10-batches-bin` folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    /// From `batches.meta.txt` when present, else CIFAR-10's names.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Opens a data folder; reads the class names if `batches.meta.txt` is there.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(DataError::MissingFile { path: dir });
        }
        let meta = dir.join(META_FILE);
        let class_names =
            if meta.exists() { read_class_names(&meta)? } else { CLASS_NAMES.iter().map(|s| s.to_string()).collect() };
        Ok(Dataset { dir, class_names })
    }

    /// Opens the folder named by `flag`, else by [`DATA_DIR_ENV`], else [`DEFAULT_DATA_DIR`].
    pub fn locate(flag: Option<&Path>) -> Result<Self, DataError> {
        match resolve_data_dir(flag) {
            Some(dir) => Dataset::open(dir),
            None => Err(DataError::NoDataDir),
        }
    }

    /// The 10,000 test records (or however many the test file holds).
    pub fn test(&self) -> Result<Records, DataError> {
        Records::read_file(self.dir.join(TEST_FILE))
    }

    /// The 50,000 training records of the five training files, in file order.
    pub fn train(&self) -> Result<Records, DataError> {
        let paths: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| self.dir.join(f)).collect();
        Records::read_files(&paths)
    }

    /// Every file of the folder a command may read (the five training files, the test file
    /// and the class names), for the check that no output overwrites one of them.
    pub fn files(&self) -> Vec<PathBuf> {
        TRAIN_FILES.iter().chain([&TEST_FILE, &META_FILE]).map(|name| self.dir.join(name)).collect()
    }

    /// Fingerprint of the training and test files together, as stored in weights metadata.
    pub fn fingerprint(&self) -> Result<String, DataError> {
        let mut hash = Fnv1a64::default();
        let mut buf = vec![0u8; 1 << 20];
        for name in TRAIN_FILES.iter().chain(std::iter::once(&TEST_FILE)) {
            let path = self.dir.join(name);
            let io = |source| DataError::Io { path: path.clone(), source };
            let mut file = File::open(&path).map_err(io)?;
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
            }
        }
        Ok(hash.finish())
    }
}

/// The data folder to use: `flag` if given, else `$CIFAR10_DATA_DIR`, else
/// [`DEFAULT_DATA_DIR`] when it exists.
pub fn resolve_data_dir(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = flag {
        return Some(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let default = PathBuf::from(DEFAULT_DATA_DIR);
    default.is_dir().then_some(default)
}

fn read_class_names(path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != NUM_CLASSES {
        return Err(DataError::Meta {
            path: path.into(),
            problem: format!("{} class names, expected {NUM_CLASSES}", names.len()),
        });
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(labels: &[u8]) -> Vec<u8> {
        labels.iter().flat_map(|&l| std::iter::once(l).chain((0..IMAGE_LEN).map(|i| (i % 251) as u8))).collect()
    }

    #[test]
    fn endless_or_oversize_record_files_are_refused_unread() {
        let err = Records::read_file("/dev/zero").unwrap_err().to_string();
        assert_eq!(err, "/dev/zero: not a regular file");
        let dir = std::env::temp_dir().join(format!("cifar-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.bin");
        // Sparse: the size is announced without writing (or reading) the bytes.
        std::fs::File::create(&big).unwrap().set_len(MAX_RECORD_FILE_BYTES + RECORD_LEN as u64).unwrap();
        let err = Records::read_file(&big).unwrap_err().to_string();
        assert!(err.contains("more than the 67108864-byte limit"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_labels_and_planar_pixels() {
        let r = Records::from_bytes(records(&[3, 9, 0]), "mem").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r.label(0), r.label(1), r.label(2)), (3, 9, 0));
        assert_eq!(r.image(1).len(), IMAGE_LEN);
        assert_eq!(r.image(1)[1024], (1024 % 251) as u8);
    }

    #[test]
    fn a_bad_label_names_its_byte_offset() {
        let err = Records::from_bytes(records(&[1, 2, 10]), "x.bin").unwrap_err().to_string();
        assert_eq!(err, "x.bin: label 10 at byte offset 6146 is not a class 0-9 (corrupt record)");
    }

    #[test]
    fn a_short_file_is_a_size_error() {
        let mut bytes = records(&[1, 2]);
        bytes.pop();
        let err = Records::from_bytes(bytes, "short.bin").unwrap_err().to_string();
        assert!(err.starts_with("short.bin: 6145 bytes is not a whole number"), "{err}");
        assert!(Records::from_bytes(Vec::new(), "empty.bin").is_err());
    }

    #[test]
    fn reading_several_files_concatenates_them() {
        let dir = std::env::temp_dir().join(format!("cifar-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.bin");
        let b = dir.join("b.bin");
        std::fs::write(&a, records(&[1])).unwrap();
        std::fs::write(&b, records(&[2, 3])).unwrap();
        let r = Records::read_files(&[a, b.clone()]).unwrap();
        assert_eq!((r.len(), r.label(2)), (3, 3));
        let missing = Records::read_file(dir.join("c.bin")).unwrap_err();
        assert!(matches!(missing, DataError::MissingFile { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
