//! Safe outputs, for every file the project writes:
//!
//! - atomic replacement ([`replace_with`], [`write_file`]): write beside the destination,
//!   flush to disk, then rename, so that a crash leaves either the old file or the new one;
//! - the temporary file is created new (`O_EXCL | O_NOFOLLOW`) at an unpredictable name, so
//!   a link planted in the folder is never followed;
//! - only regular files are replaced: a folder, a device node (`/dev/null`), a FIFO, a
//!   socket or a symbolic link at the destination is refused, not silently swapped for a file;
//! - [`check_output`], the check every command runs on every output path before any work:
//!   replaceable, and not the same file as any input ([`check_not_an_input`]);
//! - temporary files left by a killed write are removed by the next write into the same
//!   folder (see [`replace_with`] for the rule).

use std::collections::hash_map::RandomState;
use std::fs::{self, File, FileType, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Mixed into every temporary name, so that two draws in one process never repeat.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// How many names [`create_temp`] tries before giving up: a collision with a fresh random
/// name means someone is racing us on purpose.
const TEMP_ATTEMPTS: usize = 16;

/// A temporary file whose writer is known to be gone is removed once it has not been
/// modified for this long. The wait covers a writer this machine cannot see (another
/// container or host sharing the folder): no write of ours pauses for minutes.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);
/// Where a writer's liveness cannot be checked (no `/proc`), a temporary file is removed
/// only once it has not been modified for this long.
pub const STALE_AFTER_UNKNOWN_WRITER: Duration = Duration::from_secs(24 * 60 * 60);

/// A fresh temporary path for writing `dest`: same folder (so the rename stays on one file
/// system), named `.<file name>.<process id>.<16 random hex digits>.tmp`. The random part
/// comes from the standard library's randomly keyed hasher: another user of the folder
/// cannot predict the name and plant a link there beforehand.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(NEXT_TEMP.fetch_add(1, Ordering::Relaxed));
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    dest.with_file_name(format!(".{name}.{}.{:016x}.tmp", std::process::id(), hasher.finish()))
}

/// Creates a new temporary file beside `dest`: never opens an existing file or follows a
/// link (`O_CREAT | O_EXCL`, and `O_NOFOLLOW` besides), and draws another name when one is
/// taken.
fn create_temp(dest: &Path) -> io::Result<(PathBuf, File)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = temp_path_for(dest);
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name was free")))
}

/// Writes through `write` into a new temporary file beside `dest` (a fresh name, created exclusively, never through a link),
/// flushes it to disk, then renames it over `dest`. On any error the temporary file is
/// removed and `dest` is left untouched.
///
/// Refuses a `dest` that exists and is not a regular file, or is a link, see
/// [`check_replaceable`]. Before writing, removes stale temporary files of ours in the
/// folder: names exactly as [`temp_path_for`] makes them, regular files, whose writing
/// process is gone (no `/proc/<pid>`; never our own) and which were not modified for
/// [`STALE_AFTER`] ([`STALE_AFTER_UNKNOWN_WRITER`] where `/proc` is missing).
pub fn replace_with<E: From<io::Error>>(dest: &Path, write: impl FnOnce(&mut File) -> Result<(), E>) -> Result<(), E> {
    check_replaceable(dest)?;
    remove_stale_temps(dest);
    let (tmp, mut file) = create_temp(dest)?;
    let result = write(&mut file).and_then(|()| {
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dest)?;
        sync_parent(dest);
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `dest` atomically (see [`replace_with`]).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("atomic-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("hello.txt");
/// model_format::atomic::write_file(&path, b"hello").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// // A folder (or a device, or a FIFO) is never replaced:
/// let err = model_format::atomic::write_file(&dir, b"hello").unwrap_err();
/// assert_eq!(err.to_string(), "is a folder, not a regular file: refusing to replace it");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_file(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(dest, |file| file.write_all(bytes))
}

/// Ok when `dest` does not exist or is a regular file; an error of kind `InvalidInput` saying
/// what it is otherwise. A symbolic link is refused too, whatever it points to: the rename
/// would replace the link itself and leave its target as it was, which is never what the
/// user meant. The message does not repeat the path: callers wrap I/O errors with it.
pub fn check_replaceable(dest: &Path) -> io::Result<()> {
    let refuse = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.file_type().is_symlink() => {
            refuse("is a symbolic link: refusing to replace it; give the path of the file itself".into())
        }
        Ok(meta) if !meta.is_file() => {
            refuse(format!("is {}, not a regular file: refusing to replace it", kind_of(&meta.file_type())))
        }
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The one check of every output path of every command, before any work: `output` is not
/// one of the command's `inputs` ([`check_not_an_input`]) and may be replaced
/// ([`check_replaceable`]: absent or a regular file, never a link). Errors name `flag` and
/// the path, e.g. `--out m.onnx: is a folder, …`.
pub fn check_output(flag: &str, output: &Path, inputs: &[&Path]) -> io::Result<()> {
    let named = |kind: io::ErrorKind, why: String| io::Error::new(kind, format!("{flag} {}: {why}", output.display()));
    if let Some(input) = input_at(output, inputs).map_err(|e| named(e.kind(), e.to_string()))? {
        return Err(named(
            io::ErrorKind::InvalidInput,
            format!(
                "is the same file as the input {}: writing it would destroy the input; choose another path",
                input.display()
            ),
        ));
    }
    check_replaceable(output).map_err(|e| named(e.kind(), e.to_string()))
}

/// Refuses an `output` that is the same file as one of `inputs` (same device and inode,
/// whatever the spelling: `./m.onnx`, a link, `dir/../m.onnx`), naming both: writing it
/// would destroy an input. An output that does not exist yet is never an input.
///
/// ```
/// use std::path::Path;
/// use model_format::atomic::check_not_an_input;
/// let here = Path::new(env!("CARGO_MANIFEST_DIR"));
/// let input = here.join("Cargo.toml");
/// let err = check_not_an_input(&here.join("src/../Cargo.toml"), &[&input]).unwrap_err();
/// assert!(err.to_string().contains("is the same file as the input"), "{err}");
/// assert!(check_not_an_input(&here.join("new-output.onnx"), &[&input]).is_ok());
/// ```
pub fn check_not_an_input(output: &Path, inputs: &[&Path]) -> io::Result<()> {
    match input_at(output, inputs)? {
        Some(input) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "output {} is the same file as the input {}: writing it would destroy the input; choose another output path",
                output.display(),
                input.display()
            ),
        )),
        None => Ok(()),
    }
}

/// The first of `inputs` that is the same file as `output` (same device and inode).
fn input_at<'a>(output: &Path, inputs: &[&'a Path]) -> io::Result<Option<&'a Path>> {
    let out = match fs::metadata(output) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", output.display()))),
    };
    Ok(inputs.iter().copied().find(|input| fs::metadata(input).is_ok_and(|meta| same_file(&out, &meta, output, input))))
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata, _: &Path, _: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &fs::Metadata, _: &fs::Metadata, a: &Path, b: &Path) -> bool {
    matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

/// What a file type is, in words, for error messages: "a folder", "a FIFO", ….
pub fn kind_of(file_type: &FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        } else if file_type.is_char_device() {
            return "a character device";
        } else if file_type.is_block_device() {
            return "a block device";
        } else if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a folder"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Flushes the folder entry of the rename, so that it survives a power cut. Best effort:
/// some file systems cannot sync a folder, and the data itself is already on disk.
fn sync_parent(dest: &Path) {
    if let Ok(dir) = File::open(parent_of(dest)) {
        let _ = dir.sync_all();
    }
}

fn parent_of(dest: &Path) -> &Path {
    dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Removes the stale temporary files of ours in `dest`'s folder (rule: [`replace_with`]).
/// Best effort: a file that cannot be removed is left for the next write.
fn remove_stale_temps(dest: &Path) {
    let Ok(entries) = fs::read_dir(parent_of(dest)) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(writer) = name.to_str().and_then(temp_writer) else { continue };
        if is_stale(&entry.path(), writer) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The writer's process id, when `file_name` is exactly of [`temp_path_for`]'s form
/// `.<name>.<pid>.<hex digits>.tmp` (older writers put a decimal counter there).
fn temp_writer(file_name: &str) -> Option<u32> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    let (token, pid, name) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if name.is_empty() || !hex(token) || !digits(pid) {
        return None;
    }
    pid.parse().ok()
}

fn is_stale(path: &Path, writer: u32) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else { return false };
    let Some(age) = meta.modified().ok().and_then(|t| t.elapsed().ok()) else { return false };
    if !meta.file_type().is_file() || writer == std::process::id() {
        return false;
    }
    match process_alive(writer) {
        Some(true) => false,
        Some(false) => age >= STALE_AFTER,
        None => age >= STALE_AFTER_UNKNOWN_WRITER,
    }
}

/// Whether process `pid` runs on this machine, where `/proc` says; `None` without `/proc`.
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    proc.join("self").exists().then(|| proc.join(pid.to_string()).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = std::env::temp_dir().join(format!("atomic-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("model.safetensors");
        write_file(&dest, b"old").unwrap();
        let err = replace_with(&dest, |file| {
            file.write_all(b"half")?;
            Err(io::Error::other("crash while writing"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["model.safetensors"], "a temporary file was left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_names_of_temp_path_for_s_form_are_temporaries() {
        let ours = temp_path_for(Path::new("dir/model.v1.safetensors"));
        let name = ours.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_writer(name), Some(std::process::id()));
        for other in [
            ".model.tmp",
            "model.1.2.tmp",
            ".model.x.2.tmp",
            "..1.2.tmp",
            ".model.1.2.tmpx",
            ".m.1.-2.tmp",
            ".m.1.2G.tmp",
        ] {
            assert_eq!(temp_writer(other), None, "{other}");
        }
    }

    #[test]
    fn this_process_is_alive_and_an_impossible_pid_is_not() {
        assert_eq!(process_alive(std::process::id()), Some(true));
        // Linux caps process ids at 2^22.
        assert_eq!(process_alive(u32::MAX), Some(false));
    }
}
