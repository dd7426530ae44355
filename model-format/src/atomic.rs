//! Atomic file replacement: write beside the destination, flush to disk, then rename, so that
//! a crash leaves either the old file or the new one, never a half-written one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary path used while `dest` is being written: same folder (so the rename stays
/// on one file system), name prefixed with `.` and suffixed with `.tmp` and the process id.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Runs `write` on a temporary path beside `dest`, then renames the result over `dest`.
/// On any error the temporary file is removed and `dest` is left untouched.
pub fn replace_with<E: From<io::Error>>(
    dest: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temp_path_for(dest);
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, dest)?;
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
        assert!(!temp_path_for(&dest).exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
