//! The rule for every file a command writes: the path is refused when it is a link, a folder
//! or another non-regular file, or when it is one of the command's inputs (compared as files,
//! device and inode, so another name or a link to an input is caught too).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Checks that `path`, given by `flag`, may be replaced by a command that reads `inputs`.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("output-path-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let model = dir.join("model.safetensors");
/// std::fs::write(&model, b"x")?;
/// assert!(cifar10_cli::output_path::check("--out", &dir.join("new.bin"), &[&model]).is_ok());
/// assert!(cifar10_cli::output_path::check("--out", &model, &[&model]).is_err());
/// assert!(cifar10_cli::output_path::check("--out", &dir, &[&model]).is_err());
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn check(flag: &str, path: &Path, inputs: &[&Path]) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(format!(
            "{flag} {}: is a symbolic link; give the file itself (outputs never follow links)",
            path.display()
        )),
        Ok(meta) if !meta.file_type().is_file() => {
            Err(format!("{flag} {}: not a regular file (a folder or device is never replaced)", path.display()))
        }
        Ok(_) => match inputs.iter().find(|input| same_file(path, input)) {
            Some(input) => {
                Err(format!("{flag} {}: is the input {}; writing it would destroy it", path.display(), input.display()))
            }
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{flag} {}: {e}", path.display())),
    }
}

/// Whether both paths name one existing file (links followed).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
