//! Download of the official CIFAR-10 binary release, as the TensorFlow tutorial's
//! `maybe_download_and_extract` does it, made safe to interrupt:
//!
//! 1. if `<dest>/cifar-10-batches-bin` already holds a valid copy, nothing is done;
//! 2. otherwise the archive is downloaded to `<dest>/.cifar-10-binary.tar.gz.part`; a `.part`
//!    left by an interrupted run is resumed with an HTTP `Range` request (or restarted from
//!    zero when the server answers 200 or 416);
//! 3. the MD5 of the whole archive is checked; a mismatch deletes the `.part` and fails;
//! 4. the verified archive is kept as `<dest>/cifar-10-binary.tar.gz` (a later run unpacks it
//!    again without downloading), unpacked into a temporary folder beside the destination,
//!    validated with the CIFAR-10 reader, then renamed into place in one step.
//!
//! ```no_run
//! use cifar10_cli::fetch::{fetch, Progress, OFFICIAL_MD5, OFFICIAL_URL};
//! let dir = fetch(OFFICIAL_URL, OFFICIAL_MD5, "data".as_ref(), Progress::Bar)?;
//! println!("CIFAR-10 is in {}", dir.display());
//! # Ok::<(), cifar10_cli::fetch::FetchError>(())
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::progress::Mode;
use flate2::read::GzDecoder;
use md5::{Digest, Md5};
use model_format::cifar::{DataError, Dataset, Records, META_FILE, TEST_FILE, TRAIN_FILES};

/// Where the official release is published.
pub const OFFICIAL_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the official `cifar-10-binary.tar.gz`, as published on the CIFAR-10 page.
pub const OFFICIAL_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The name the verified archive is kept under in the destination folder.
pub const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";
/// The folder the archive unpacks to (its top-level entry).
pub const EXTRACTED_DIR: &str = "cifar-10-batches-bin";

/// The download in progress (resumed by the next run if this one is interrupted).
const PART_NAME: &str = ".cifar-10-binary.tar.gz.part";
/// The unpacking in progress (cleared by the next run if this one crashed).
const UNPACK_NAME: &str = ".cifar-10-batches-bin.unpacking";
const CHUNK: usize = 64 * 1024;
/// A server that sends nothing for this long is given up on, so a run never hangs.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether to draw a progress bar (with bytes/s and ETA) on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Quiet,
}

/// Why a fetch failed; every variant names the URL, file or archive entry at fault.
#[derive(Debug)]
pub enum FetchError {
    /// The expected MD5 given is not 32 hexadecimal digits.
    BadDigest { given: String },
    /// The request could not be made or the server gave no usable answer.
    Request { url: String, source: ureq::Error },
    /// The server answered with an HTTP status other than 200, 206 or 416.
    Status { url: String, status: u16 },
    /// The connection broke mid-body; the `.part` file keeps what arrived.
    Interrupted { url: String, part: PathBuf, received: u64, total: Option<u64>, source: io::Error },
    /// The downloaded archive does not have the expected MD5 (the `.part` was deleted).
    Checksum { url: String, expected: String, actual: String },
    /// Reading or writing a local file failed.
    Io { path: PathBuf, source: io::Error },
    /// The archive is not a readable gzip-compressed tar file.
    Archive { path: PathBuf, source: io::Error },
    /// An archive entry that would land outside the unpacking folder, or is not a plain
    /// file or folder (links are refused).
    UnsafeEntry { archive: PathBuf, entry: String, why: &'static str },
    /// The unpacked files are not a valid CIFAR-10 binary release.
    Data(DataError),
    /// The destination already exists but is not a valid copy; it is left untouched.
    Occupied { path: PathBuf, problem: DataError },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::BadDigest { given } => write!(f, "expected MD5 {given:?} is not 32 hexadecimal digits"),
            FetchError::Request { url, source } => write!(f, "GET {url}: {source}"),
            FetchError::Status { url, status } => write!(f, "GET {url}: the server answered HTTP {status}"),
            FetchError::Interrupted { url, part, received, total, source } => {
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                write!(
                    f,
                    "download of {url} interrupted after {received}{of} bytes ({source}); {} keeps them: run again to resume",
                    part.display()
                )
            }
            FetchError::Checksum { url, expected, actual } => write!(
                f,
                "{url}: MD5 of the downloaded archive is {actual}, expected {expected} (corrupt or different file; the partial download was deleted, run again to restart)"
            ),
            FetchError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            FetchError::Archive { path, source } => {
                write!(f, "{}: not a readable .tar.gz archive: {source}", path.display())
            }
            FetchError::UnsafeEntry { archive, entry, why } => {
                write!(f, "{}: refusing archive entry {entry:?}: {why}", archive.display())
            }
            FetchError::Data(e) => write!(f, "the unpacked archive is not the CIFAR-10 binary release: {e}"),
            FetchError::Occupied { path, problem } => write!(
                f,
                "{} already exists but is not a valid CIFAR-10 copy ({problem}); move or delete it, then run again",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Request { source, .. } => Some(source),
            FetchError::Interrupted { source, .. }
            | FetchError::Io { source, .. }
            | FetchError::Archive { source, .. } => Some(source),
            FetchError::Data(e) | FetchError::Occupied { problem: e, .. } => Some(e),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

/// Makes sure `<dest_dir>/cifar-10-batches-bin` holds a valid copy of the archive at `url`
/// whose MD5 is `expected_md5`, and returns that folder's path.
///
/// Does nothing when a valid copy is already there; reuses a verified archive left in
/// `dest_dir`; resumes a download that an earlier run left unfinished. On any error the
/// destination folder is left as it was.
pub fn fetch(url: &str, expected_md5: &str, dest_dir: &Path, progress: Progress) -> Result<PathBuf, FetchError> {
    let expected = normalise_md5(expected_md5)?;
    let target = dest_dir.join(EXTRACTED_DIR);
    if target.exists() {
        validate(&target).map_err(|problem| FetchError::Occupied { path: target.clone(), problem })?;
        say(progress, &format!("{} already holds a valid copy", target.display()));
        return Ok(target);
    }
    fs::create_dir_all(dest_dir).map_err(io_error(dest_dir))?;
    let archive = dest_dir.join(ARCHIVE_NAME);
    if !(archive.is_file() && file_md5(&archive)? == expected) {
        let part = dest_dir.join(PART_NAME);
        download(url, &part, progress)?;
        say(progress, "checking MD5");
        let actual = file_md5(&part)?;
        if actual != expected {
            fs::remove_file(&part).map_err(io_error(&part))?;
            return Err(FetchError::Checksum { url: url.into(), expected, actual });
        }
        fs::rename(&part, &archive).map_err(io_error(&archive))?;
    }
    say(progress, &format!("unpacking {}", archive.display()));
    unpack_into_place(&archive, &target)?;
    Ok(target)
}

fn say(progress: Progress, message: &str) {
    if progress == Progress::Bar {
        eprintln!("{message}");
    }
}

fn normalise_md5(given: &str) -> Result<String, FetchError> {
    let digest = given.trim().to_ascii_lowercase();
    if digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest)
    } else {
        Err(FetchError::BadDigest { given: given.into() })
    }
}

/// The MD5 of a file as 32 lowercase hex digits.
///
/// ```
/// let path = std::env::temp_dir().join(format!("md5-doc-{}", std::process::id()));
/// std::fs::write(&path, b"abc").unwrap();
/// assert_eq!(cifar10_cli::fetch::file_md5(&path)?, "900150983cd24fb0d6963f7d28e17f72");
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), cifar10_cli::fetch::FetchError>(())
/// ```
pub fn file_md5(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Checks that `dir` holds the five training files, the test file and the class names,
/// all readable by the CIFAR-10 reader.
///
/// ```
/// let empty = std::env::temp_dir();
/// let err = cifar10_cli::fetch::validate(&empty).unwrap_err();
/// assert!(err.to_string().contains("batches.meta.txt: no such file"));
/// ```
pub fn validate(dir: &Path) -> Result<(), DataError> {
    let meta = dir.join(META_FILE);
    if !meta.is_file() {
        return Err(DataError::MissingFile { path: meta });
    }
    Dataset::open(dir)?;
    for name in TRAIN_FILES.iter().chain(std::iter::once(&TEST_FILE)) {
        Records::read_file(dir.join(name))?;
    }
    Ok(())
}

// ---- download ----

/// What to do with a server's answer.
enum Answer {
    /// Save the body at this offset of the `.part` file: 0 for a 200 (the whole archive,
    /// also when the server ignored the range), the resumed offset for a matching 206.
    SaveFrom(u64),
    /// A 416 or a 206 for another range: ask again from zero.
    Restart,
}

fn agent_for(url: &str) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // The archive is already compressed; a transparently decoded body would break
        // both the byte ranges and the MD5.
        .accept_encoding("identity")
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(STALL_TIMEOUT))
        .timeout_per_read(Some(STALL_TIMEOUT));
    if is_loopback(url) {
        // A proxy from the environment cannot reach this machine's own servers.
        config = config.proxy(None);
    }
    config.build().new_agent()
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| host == *h || host.starts_with(&format!("{h}:")))
}

/// Downloads `url` into `part`, continuing from whatever `part` already holds.
fn download(url: &str, part: &Path, progress: Progress) -> Result<(), FetchError> {
    let agent = agent_for(url);
    let mut have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    // At most two requests: a resumed one that may turn into a restart, then a fresh one
    // (which `classify` never answers with a restart).
    for _ in 0..2 {
        let mut request = agent.get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = request.call().map_err(|source| FetchError::Request { url: url.into(), source })?;
        match classify(url, &response, have)? {
            Answer::Restart => {
                have = 0;
                continue;
            }
            Answer::SaveFrom(offset) => have = offset,
        }
        let total = response.body().content_length().map(|len| len + have);
        return save_body(url, response.into_body(), part, have, total, progress);
    }
    Err(FetchError::Status { url: url.into(), status: 416 })
}

fn classify(url: &str, response: &ureq::http::Response<ureq::Body>, have: u64) -> Result<Answer, FetchError> {
    match response.status().as_u16() {
        200 => Ok(Answer::SaveFrom(0)),
        206 if have > 0 && content_range_start(response) == Some(have) => Ok(Answer::SaveFrom(have)),
        206 if have > 0 => Ok(Answer::Restart),
        416 if have > 0 => Ok(Answer::Restart),
        status => Err(FetchError::Status { url: url.into(), status }),
    }
}

/// The first byte position of a `Content-Range: bytes FIRST-LAST/TOTAL` header.
fn content_range_start(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

/// Writes the body to `part`: appended after `have` bytes, or from zero when `have` is 0.
fn save_body(
    url: &str,
    body: ureq::Body,
    part: &Path,
    have: u64,
    total: Option<u64>,
    progress: Progress,
) -> Result<(), FetchError> {
    let mut file = open_part(part, have)?;
    let bar = progress_bar(progress, have, total);
    let mut reader = body.into_reader();
    let mut buf = vec![0u8; CHUNK];
    let mut received = have;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                bar.abandon();
                file.sync_all().map_err(io_error(part))?;
                return Err(FetchError::Interrupted { url: url.into(), part: part.into(), received, total, source });
            }
        };
        file.write_all(&buf[..n]).map_err(io_error(part))?;
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish();
    file.sync_all().map_err(io_error(part))
}

fn open_part(part: &Path, have: u64) -> Result<File, FetchError> {
    let mut options = OpenOptions::new();
    if have > 0 {
        options.append(true);
    } else {
        options.write(true).create(true).truncate(true);
    }
    options.open(part).map_err(io_error(part))
}

/// A bar on a terminal, plain lines in a log (see [`crate::progress`]), nothing when quiet.
fn progress_bar(progress: Progress, have: u64, total: Option<u64>) -> crate::progress::Progress {
    let mode = match progress {
        Progress::Bar => Mode::for_stderr(),
        Progress::Quiet => Mode::Quiet,
    };
    let bar = crate::progress::Progress::new(mode, "downloading", "bytes", total.unwrap_or(0));
    // Measure the speed from here, not from byte 0, when resuming.
    bar.resume_from(have);
    bar
}

// ---- unpacking ----

/// Unpacks `archive` beside `target`, validates the result, and renames it to `target`.
fn unpack_into_place(archive: &Path, target: &Path) -> Result<(), FetchError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let staging = parent.join(UNPACK_NAME);
    remove_dir_if_present(&staging)?;
    fs::create_dir(&staging).map_err(io_error(&staging))?;
    let result = unpack(archive, &staging).and_then(|()| {
        let unpacked = staging.join(EXTRACTED_DIR);
        validate(&unpacked).map_err(FetchError::Data)?;
        fs::rename(&unpacked, target).map_err(io_error(target))?;
        File::open(parent).and_then(|dir| dir.sync_all()).map_err(io_error(parent))
    });
    let cleanup = remove_dir_if_present(&staging);
    result.and(cleanup)
}

fn remove_dir_if_present(dir: &Path) -> Result<(), FetchError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FetchError::Io { path: dir.into(), source: e }),
        _ => Ok(()),
    }
}

/// Extracts the plain files and folders of a `.tar.gz` into `into`, refusing any entry
/// with an absolute path, a `..`, or a link type.
fn unpack(archive: &Path, into: &Path) -> Result<(), FetchError> {
    let file = File::open(archive).map_err(io_error(archive))?;
    let bad_archive = |source| FetchError::Archive { path: archive.into(), source };
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
    for entry in tar.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let refuse = |why| FetchError::UnsafeEntry { archive: archive.into(), entry: name.clone(), why };
        let relative = safe_relative_path(&name).map_err(refuse)?;
        let dest = into.join(&relative);
        if kind.is_dir() {
            fs::create_dir_all(&dest).map_err(io_error(&dest))?;
        } else if kind.is_file() || kind.is_contiguous() {
            if let Some(folder) = dest.parent() {
                fs::create_dir_all(folder).map_err(io_error(folder))?;
            }
            entry.unpack(&dest).map_err(bad_archive)?;
            File::open(&dest).and_then(|f| f.sync_all()).map_err(io_error(&dest))?;
        } else {
            return Err(refuse("only plain files and folders are unpacked (links and devices are refused)"));
        }
    }
    Ok(())
}

fn safe_relative_path(name: &str) -> Result<PathBuf, &'static str> {
    let mut relative = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("it contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path"),
        }
    }
    if relative.as_os_str().is_empty() {
        return Err("it has an empty path");
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_must_stay_inside() {
        assert_eq!(safe_relative_path("./cifar-10-batches-bin/x.bin"), Ok(PathBuf::from("cifar-10-batches-bin/x.bin")));
        assert!(safe_relative_path("../x.bin").is_err());
        assert!(safe_relative_path("a/../../x.bin").is_err());
        assert!(safe_relative_path("/etc/passwd").is_err());
        assert!(safe_relative_path("./").is_err());
    }

    #[test]
    fn digests_are_checked_and_normalised() {
        assert_eq!(normalise_md5(" C32A1D4AB5D03F1284B67883E8D87530\n").unwrap(), OFFICIAL_MD5);
        assert!(matches!(normalise_md5("c32a1d4a"), Err(FetchError::BadDigest { .. })));
        assert!(matches!(normalise_md5(&"g".repeat(32)), Err(FetchError::BadDigest { .. })));
    }

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback("http://127.0.0.1:8080/a.tar.gz"));
        assert!(is_loopback("http://localhost/a"));
        assert!(!is_loopback(OFFICIAL_URL));
        assert!(!is_loopback("http://127.0.0.1.example.com/a"));
    }
}
