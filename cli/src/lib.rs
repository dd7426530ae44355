//! The parts of the `cifar10` command that are worth testing on their own.
//!
//! - `fetch` (feature `fetch`): download, check and unpack the official CIFAR-10 release.

#[cfg(feature = "fetch")]
pub mod fetch;
