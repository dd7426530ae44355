//! `cifar10 data fetch`: download, verify and unpack the official CIFAR-10 binary release.

//! Without the `fetch` feature (the default build, which keeps a TLS stack out) the command
//! exists and says how to get a build that has it.

#[cfg(feature = "fetch")]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
#[cfg(feature = "fetch")]
use cifar10_cli::fetch::{fetch, FetchError, Progress, OFFICIAL_MD5, OFFICIAL_URL};
#[cfg(feature = "fetch")]
use model_format::cifar::DEFAULT_DATA_DIR;

/// Get the CIFAR-10 data.
#[derive(FromArgs)]
#[argh(subcommand, name = "data")]
pub struct DataCommand {
    #[argh(subcommand)]
    pub action: DataAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum DataAction {
    Fetch(FetchCommand),
}

/// Download the official CIFAR-10 binary release, check its MD5 and unpack it.
#[derive(FromArgs)]
#[cfg_attr(not(feature = "fetch"), allow(dead_code))]
#[argh(
    subcommand,
    name = "fetch",
    note = "Like the TensorFlow tutorial's maybe_download_and_extract: does nothing if DEST/cifar-10-batches-bin already holds a valid copy. The archive (170 MB) is downloaded to DEST/.cifar-10-binary.tar.gz.part; an interrupted download resumes when the command is run again. The verified archive is kept as DEST/cifar-10-binary.tar.gz and unpacked into place in one step."
)]
pub struct FetchCommand {
    /// folder to unpack into (default: ../shared/cifar10, the parent of the folder the other
    /// commands read when given no --data-dir, so they find the data without flags)
    #[argh(option)]
    pub dest: Option<PathBuf>,
    /// where to download the archive from (default: the official
    /// https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz; a mirror must serve the same file)
    #[argh(option)]
    pub url: Option<String>,
    /// expected MD5 of the archive (default: the official release's
    /// c32a1d4ab5d03f1284b67883e8d87530)
    #[argh(option)]
    pub md5: Option<String>,
    /// no progress bar or messages on stderr
    #[argh(switch, short = 'q')]
    pub quiet: bool,
}

/// Runs a `data` subcommand; prints the data folder on stdout when done.
pub fn run(command: DataCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command.action {
        DataAction::Fetch(fetch_command) => run_fetch(fetch_command)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "fetch"))]
fn run_fetch(_: FetchCommand) -> Result<(), Box<dyn std::error::Error>> {
    Err(format!(
        "this cifar10 was built without the `fetch` feature (the HTTPS download needs a TLS stack, kept out of the \
         default build); run `{}` in this project's checkout",
        model_format::cifar::FETCH_COMMAND
    )
    .into())
}

#[cfg(feature = "fetch")]
fn run_fetch(command: FetchCommand) -> Result<(), FetchError> {
    let dest = command.dest.unwrap_or_else(default_dest);
    let url = command.url.as_deref().unwrap_or(OFFICIAL_URL);
    let md5 = command.md5.as_deref().unwrap_or(OFFICIAL_MD5);
    let progress = if command.quiet { Progress::Quiet } else { Progress::Bar };
    let dir = fetch(url, md5, &dest, progress)?;
    println!("{}", dir.display());
    Ok(())
}

#[cfg(feature = "fetch")]
/// The folder that holds [`DEFAULT_DATA_DIR`], so that a default fetch lands where the
/// other commands look by default.
fn default_dest() -> PathBuf {
    Path::new(DEFAULT_DATA_DIR).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(all(test, feature = "fetch"))]
mod tests {
    use super::*;

    #[test]
    fn the_default_destination_is_where_the_other_commands_look() {
        assert_eq!(default_dest().join(cifar10_cli::fetch::EXTRACTED_DIR), Path::new(DEFAULT_DATA_DIR));
    }
}
