//! `cifar10_cli::fetch` against an HTTP server on 127.0.0.1 that each test starts, serving a small
//! tarball in the official layout that the test builds. Run with
//! `cargo test -p cifar10 --features fetch --test fetch`.
#![cfg(feature = "fetch")]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cifar10_cli::fetch::{fetch, FetchError, Progress, ARCHIVE_NAME, EXTRACTED_DIR};
use flate2::write::GzEncoder;
use md5::{Digest, Md5};
use model_format::arch::{CLASS_NAMES, IMAGE_LEN};
use model_format::cifar::{Dataset, META_FILE, TEST_FILE, TRAIN_FILES};

const ARCHIVE_PATH: &str = "/cifar-10-binary.tar.gz";
const RECORDS_PER_FILE: usize = 3;
/// The server gives up after this long, so a test that goes wrong still ends.
const SERVER_LIFETIME: Duration = Duration::from_secs(30);

// ---- the archive ----

fn records(seed: usize) -> Vec<u8> {
    (0..RECORDS_PER_FILE)
        .flat_map(|i| {
            let label = ((seed + i) % CLASS_NAMES.len()) as u8;
            std::iter::once(label).chain((0..IMAGE_LEN).map(move |p| ((p * 7 + seed + i) % 256) as u8))
        })
        .collect()
}

/// The official release's files: five training batches, the test batch, the class names
/// and the readme.
fn official_entries() -> Vec<(String, Vec<u8>)> {
    let dir = EXTRACTED_DIR;
    let mut entries: Vec<(String, Vec<u8>)> =
        TRAIN_FILES.iter().enumerate().map(|(i, name)| (format!("{dir}/{name}"), records(i))).collect();
    entries.push((format!("{dir}/{TEST_FILE}"), records(9)));
    entries.push((format!("{dir}/{META_FILE}"), format!("{}\n\n", CLASS_NAMES.join("\n")).into_bytes()));
    entries.push((format!("{dir}/readme.html"), b"<html>CIFAR-10</html>".to_vec()));
    entries
}

/// A `.tar.gz` holding a folder entry and `files`; names are written into the header as
/// given (bypassing the tar crate's own path checks, so unsafe names can be tested).
fn tarball(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    append(&mut builder, &format!("{EXTRACTED_DIR}/"), tar::EntryType::Directory, &[]);
    for (name, data) in files {
        append(&mut builder, name, tar::EntryType::Regular, data);
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn append(builder: &mut tar::Builder<GzEncoder<Vec<u8>>>, name: &str, kind: tar::EntryType, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
    header.set_mtime(0);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

// ---- the server ----

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Serves the archive, honouring `Range: bytes=N-`.
    Normal,
    /// Always answers 200 with the whole archive.
    IgnoresRange,
    /// The first response announces the whole length, sends this many bytes and hangs up;
    /// later ones are normal.
    CutsFirstAfter(usize),
    /// Serves the archive with one byte flipped.
    Corrupts,
    /// Answers 404 to everything.
    NotFound,
}

struct Server {
    url: String,
    /// The `Range` header of each request received, in order.
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(archive: Vec<u8>, behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}{ARCHIVE_PATH}", listener.local_addr().unwrap());
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (ranges.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(listener, &archive, behaviour, &log, &flag));
        Server { url, ranges, stop, thread: Some(thread) }
    }

    fn ranges(&self) -> Vec<Option<String>> {
        self.ranges.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    archive: &[u8],
    behaviour: Behaviour,
    log: &Mutex<Vec<Option<String>>>,
    stop: &AtomicBool,
) {
    let deadline = Instant::now() + SERVER_LIFETIME;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                let first = log.lock().unwrap().is_empty();
                let _ = answer(stream, archive, behaviour, first, log);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Reads one request and answers it, then closes the connection.
fn answer(
    mut stream: TcpStream,
    archive: &[u8],
    behaviour: Behaviour,
    first: bool,
    log: &Mutex<Vec<Option<String>>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let (path, range) = read_request(&mut stream)?;
    log.lock().unwrap().push(range.clone());
    let len = archive.len();
    if behaviour == Behaviour::NotFound || path != ARCHIVE_PATH {
        return respond(&mut stream, "404 Not Found", &[], b"not found");
    }
    let start = range.as_deref().and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok());
    match (behaviour, start) {
        (Behaviour::CutsFirstAfter(n), _) if first => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes())?;
            stream.write_all(&archive[..n])?;
            stream.flush()
        }
        (Behaviour::Corrupts, _) => {
            let mut body = archive.to_vec();
            body[len / 2] ^= 0xff;
            respond(&mut stream, "200 OK", &[], &body)
        }
        (Behaviour::IgnoresRange, _) | (_, None) => respond(&mut stream, "200 OK", &[], archive),
        (_, Some(from)) if from >= len => {
            respond(&mut stream, "416 Range Not Satisfiable", &[format!("Content-Range: bytes */{len}")], &[])
        }
        (_, Some(from)) => respond(
            &mut stream,
            "206 Partial Content",
            &[format!("Content-Range: bytes {from}-{}/{len}", len - 1)],
            &archive[from..],
        ),
    }
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, Option<String>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("").to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("range"))
        .map(|(_, value)| value.trim().to_string());
    Ok((path, range))
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[String], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

// ---- helpers ----

/// A fresh, empty folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infer-fetch-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn part_path(dest: &Path) -> PathBuf {
    dest.join(format!(".{ARCHIVE_NAME}.part"))
}

/// Checks the unpacked folder holds exactly the test archive's records.
fn assert_valid_copy(dir: &Path) {
    assert_eq!(dir.file_name().unwrap(), EXTRACTED_DIR);
    let data = Dataset::open(dir).unwrap();
    assert_eq!(data.class_names, CLASS_NAMES);
    let test = data.test().unwrap();
    assert_eq!(test.as_bytes(), records(9).as_slice());
    assert_eq!(data.train().unwrap().len(), TRAIN_FILES.len() * RECORDS_PER_FILE);
}

// ---- tests ----

#[test]
fn a_fresh_download_is_verified_unpacked_and_then_left_alone() {
    let archive = tarball(&official_entries());
    let md5 = md5_hex(&archive);
    let server = Server::start(archive.clone(), Behaviour::Normal);
    let dest = scratch("fresh").join("data");

    let dir = fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap();
    assert_eq!(dir, dest.join(EXTRACTED_DIR));
    assert_valid_copy(&dir);
    let mut expected = [ARCHIVE_NAME, EXTRACTED_DIR];
    expected.sort();
    assert_eq!(listing(&dest), expected, "only the kept archive and the data");
    assert_eq!(fs::read(dest.join(ARCHIVE_NAME)).unwrap(), archive);
    assert_eq!(server.ranges(), [None]);

    // Like maybe_download_and_extract: a valid copy in place means no request at all.
    let again = fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap();
    assert_eq!(again, dir);
    assert_eq!(server.ranges().len(), 1);
    fs::remove_dir_all(dest.parent().unwrap()).unwrap();
}

#[test]
fn a_kept_archive_is_unpacked_again_without_downloading() {
    let archive = tarball(&official_entries());
    let md5 = md5_hex(&archive);
    let dest = scratch("kept");
    let server = Server::start(archive.clone(), Behaviour::Normal);
    let dir = fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap();
    fs::remove_dir_all(&dir).unwrap();

    let gone = Server::start(archive, Behaviour::NotFound);
    assert_valid_copy(&fetch(&gone.url, &md5, &dest, Progress::Quiet).unwrap());
    assert!(gone.ranges().is_empty());
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn an_interrupted_download_is_resumed_with_a_range_request() {
    let archive = tarball(&official_entries());
    let md5 = md5_hex(&archive);
    let cut = archive.len() / 3;
    let server = Server::start(archive.clone(), Behaviour::CutsFirstAfter(cut));
    let dest = scratch("resume");

    // The bar is drawn only when stderr is a terminal, but its set-up runs either way.
    let err = fetch(&server.url, &md5, &dest, Progress::Bar).unwrap_err();
    assert!(matches!(err, FetchError::Interrupted { received, .. } if received == cut as u64), "{err}");
    assert!(err.to_string().contains("run again to resume"), "{err}");
    assert_eq!(fs::read(part_path(&dest)).unwrap(), &archive[..cut], "the .part keeps what arrived");
    assert!(!dest.join(EXTRACTED_DIR).exists());

    assert_valid_copy(&fetch(&server.url, &md5, &dest, Progress::Bar).unwrap());
    assert_eq!(server.ranges(), [None, Some(format!("bytes={cut}-"))]);
    assert!(!part_path(&dest).exists());
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn a_server_that_ignores_ranges_makes_the_download_restart_from_zero() {
    let archive = tarball(&official_entries());
    let md5 = md5_hex(&archive);
    let server = Server::start(archive, Behaviour::IgnoresRange);
    let dest = scratch("ignores-range");
    // A stale .part whose bytes must not end up in the archive.
    fs::write(part_path(&dest), vec![0xAA; 100]).unwrap();

    assert_valid_copy(&fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap());
    assert_eq!(server.ranges(), [Some("bytes=100-".to_string())], "one request, answered 200 and used whole");
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn a_part_longer_than_the_archive_gets_416_and_restarts() {
    let archive = tarball(&official_entries());
    let md5 = md5_hex(&archive);
    let too_long = archive.len() + 10;
    let server = Server::start(archive, Behaviour::Normal);
    let dest = scratch("416");
    fs::write(part_path(&dest), vec![0u8; too_long]).unwrap();

    assert_valid_copy(&fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap());
    assert_eq!(server.ranges(), [Some(format!("bytes={too_long}-")), None]);
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn a_corrupt_download_fails_the_md5_check_and_leaves_nothing() {
    let archive = tarball(&official_entries());
    let md5 = md5_hex(&archive);
    let mut corrupt = archive.clone();
    corrupt[archive.len() / 2] ^= 0xff;
    let server = Server::start(archive, Behaviour::Corrupts);
    let dest = scratch("corrupt");

    let err = fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, FetchError::Checksum { .. }), "{message}");
    assert!(message.contains(&md5) && message.contains(&md5_hex(&corrupt)), "names both digests: {message}");
    assert!(listing(&dest).is_empty(), "left behind: {:?}", listing(&dest));
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn a_404_is_a_clear_error() {
    let server = Server::start(Vec::new(), Behaviour::NotFound);
    let dest = scratch("404");

    let err = fetch(&server.url, "c32a1d4ab5d03f1284b67883e8d87530", &dest, Progress::Quiet).unwrap_err();
    assert!(matches!(err, FetchError::Status { status: 404, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&server.url) && message.contains("404"), "{message}");
    assert!(listing(&dest).is_empty(), "left behind: {:?}", listing(&dest));
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn entries_escaping_the_folder_are_refused() {
    let dest = scratch("unsafe").join("data");
    for evil in ["../escaped.bin", "/tmp/infer-fetch-absolute.bin", "cifar-10-batches-bin/../../escaped.bin"] {
        let mut entries = official_entries();
        entries.insert(0, (evil.to_string(), b"gotcha".to_vec()));
        let archive = tarball(&entries);
        let md5 = md5_hex(&archive);
        let server = Server::start(archive, Behaviour::Normal);

        let err = fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap_err();
        assert!(matches!(&err, FetchError::UnsafeEntry { entry, .. } if entry == evil), "{evil}: {err}");
        assert!(!dest.join(EXTRACTED_DIR).exists());
        assert!(!dest.parent().unwrap().join("escaped.bin").exists());
        assert!(!Path::new("/tmp/infer-fetch-absolute.bin").exists());
        assert_eq!(listing(&dest), [ARCHIVE_NAME], "only the verified archive stays");
    }
    fs::remove_dir_all(dest.parent().unwrap()).unwrap();
}

#[test]
fn an_archive_missing_a_file_is_rejected_by_name() {
    let entries: Vec<_> = official_entries().into_iter().filter(|(name, _)| !name.ends_with(TEST_FILE)).collect();
    let archive = tarball(&entries);
    let md5 = md5_hex(&archive);
    let server = Server::start(archive, Behaviour::Normal);
    let dest = scratch("missing");

    let err = fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap_err();
    assert!(matches!(err, FetchError::Data(_)), "{err}");
    assert!(err.to_string().contains(TEST_FILE), "{err}");
    assert_eq!(listing(&dest), [ARCHIVE_NAME], "no half-unpacked folder");
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn an_invalid_folder_at_the_destination_is_left_untouched() {
    let archive = tarball(&official_entries());
    let md5 = md5_hex(&archive);
    let server = Server::start(archive, Behaviour::Normal);
    let dest = scratch("occupied");
    let existing = dest.join(EXTRACTED_DIR);
    fs::create_dir(&existing).unwrap();
    fs::write(existing.join("notes.txt"), "mine").unwrap();

    let err = fetch(&server.url, &md5, &dest, Progress::Quiet).unwrap_err();
    assert!(matches!(err, FetchError::Occupied { .. }), "{err}");
    assert!(err.to_string().contains(&existing.display().to_string()), "{err}");
    assert_eq!(listing(&existing), ["notes.txt"]);
    assert!(server.ranges().is_empty(), "nothing downloaded");
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn a_malformed_digest_is_refused_before_any_request() {
    let server = Server::start(Vec::new(), Behaviour::Normal);
    let dest = scratch("digest");
    let err = fetch(&server.url, "not-an-md5", &dest, Progress::Quiet).unwrap_err();
    assert!(matches!(err, FetchError::BadDigest { .. }), "{err}");
    assert!(server.ranges().is_empty());
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn the_cli_fetches_into_dest_and_reports_errors() {
    let archive = tarball(&official_entries());
    let md5 = md5_hex(&archive);
    let server = Server::start(archive, Behaviour::Normal);
    let dest = scratch("cli");
    let run = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cifar10"))
            .args(["data", "fetch", "--quiet", "--url", url, "--md5", &md5, "--dest"])
            .arg(&dest)
            .output()
            .unwrap()
    };

    let done = run(&server.url);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let printed = String::from_utf8(done.stdout).unwrap();
    assert_eq!(Path::new(printed.trim()), dest.join(EXTRACTED_DIR));
    assert_valid_copy(&dest.join(EXTRACTED_DIR));

    fs::remove_dir_all(&dest).unwrap();
    let missing = run(&server.url.replace(ARCHIVE_PATH, "/nothing-here.tar.gz"));
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("404") && stderr.contains("nothing-here.tar.gz"), "{stderr}");
    assert!(!dest.join(EXTRACTED_DIR).exists());
    fs::remove_dir_all(&dest).unwrap();
}

// ---- the hint that missing data prints ----

/// The command in the first pair of backticks after "run " in `text`.
fn hinted_command(text: &str) -> &str {
    let start = text.find("run `").unwrap_or_else(|| panic!("no `run` hint in: {text}")) + "run `".len();
    let len = text[start..].find('`').unwrap();
    &text[start..start + len]
}

/// Checks that `cargo run --release -p PACKAGE --features FEATURE -- ARGS…` names the
/// `cifar10` package and a feature of it, and returns ARGS.
fn args_of_cargo_run(command: &str) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let (cargo, args) = words.split_at(words.iter().position(|w| *w == "--").expect("`--` before the arguments"));
    let [run, release, p, package, features, feature] = cargo[1..] else { panic!("unexpected form: {command}") };
    assert_eq!((cargo[0], run, release, p, features), ("cargo", "run", "--release", "-p", "--features"), "{command}");
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(manifest.contains(&format!("name = \"{package}\"")), "the hint names package {package}, not cifar10");
    let features_table = manifest.split("[features]").nth(1).expect("cli/Cargo.toml has features");
    assert!(features_table.lines().any(|l| l.starts_with(&format!("{feature} ="))), "no feature {feature}");
    args[1..].iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_missing_data_hint_is_a_command_that_gets_the_data_where_eval_looks() {
    // A clone with nothing beside it: no ../shared, no CIFAR10_DATA_DIR.
    let root = scratch("hint");
    let clone = root.join("clone");
    fs::create_dir_all(&clone).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cifar10.safetensors");
    let eval = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cifar10"));
        command.current_dir(&clone).env_remove(model_format::cifar::DATA_DIR_ENV).env("CI", "true");
        command.args(["eval", "--json", "--model"]).arg(&model);
        command.output().unwrap()
    };
    let refused = eval();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr).into_owned();
    let args = args_of_cargo_run(hinted_command(&message));

    // The hint, run as printed (the package's binary is this test's own build of it, which has
    // the feature), against a loopback mirror through the URL override.
    let archive = tarball(&official_entries());
    let server = Server::start(archive.clone(), Behaviour::Normal);
    let fetched = Command::new(env!("CARGO_BIN_EXE_cifar10"))
        .current_dir(&clone)
        .args(&args)
        .args(["--quiet", "--url", &server.url, "--md5", &md5_hex(&archive)])
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    assert_valid_copy(&root.join("shared/cifar10").join(EXTRACTED_DIR));

    let counted = eval();
    assert!(counted.status.success(), "{}", String::from_utf8_lossy(&counted.stderr));
    let report: serde_json::Value = serde_json::from_slice(&counted.stdout).unwrap();
    assert_eq!(report["total"], RECORDS_PER_FILE, "eval counts the fetched test file");
    fs::remove_dir_all(&root).unwrap();
}
