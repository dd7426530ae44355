//! Atomic file replacement: write beside the destination, flush to disk, then rename, so that
//! a crash leaves either the old file or the new one, never a half-written one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes concurrent writes of the same destination from one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary path for writing `dest`: same folder (so the rename stays on one file
/// system), name prefixed with `.`, suffixed with the process id, a per-process counter and `.tmp`.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Runs `write` on a temporary path beside `dest`, then renames the result over `dest`.
/// On any error the temporary file is removed and `dest` is left untouched.
pub fn replace_with<E: From<io::Error>>(dest: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let tmp = temp_path_for(dest);
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, dest)?;
        sync_parent(dest);
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Flushes the folder entry of the rename, so that it survives a power cut. Best effort:
/// some file systems cannot sync a folder, and the data itself is already on disk.
fn sync_parent(dest: &Path) {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Writes `bytes` to `dest` atomically (see [`replace_with`]).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("atomic-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("hello.txt");
/// model_format::atomic::write_file(&path, b"hello").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_file(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(dest, |tmp| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })
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
        let err = replace_with(&dest, |tmp| {
            fs::write(tmp, b"half")?;
            Err(io::Error::other("crash while writing"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["model.safetensors"], "a temporary file was left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
