//! The parts of the `cifar10` command that are worth testing on their own.
//!
//! - `fetch` (feature `fetch`): download, check and unpack the official CIFAR-10 release;
//! - `plot`: the charts of `--plot` (confusion matrix, top-k bars) as PNG or SVG;
//! - `progress`: a progress bar on a terminal, plain lines in a log.

#[cfg(feature = "fetch")]
pub mod fetch;
pub mod plot;
pub mod progress;
