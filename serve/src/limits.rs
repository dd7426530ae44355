//! The bounds that keep one client from hurting the others: body size, images per
//! request, queued images, connections, concurrent large bodies, and time per request —
//! and the valid range of every setting, defined once here for the library and the CLI.
//!
//! Memory, per request and in total (defaults in brackets; the README states the same):
//! - a body is refused with 413 before it is read when its Content-Length is above
//!   `max_body_bytes` \[16 MiB\], and as soon as it grows past it otherwise;
//! - a body over [`SMALL_BODY_BYTES`] (32 KiB), and any image, is read only while holding
//!   one of `max_large_bodies` \[2\] permits, into one buffer of its size; parsing JSON then
//!   keeps at most `max_batch × 3,072` tensor values (12 KiB an image: tensor values go
//!   straight into `f32`s, never through `serde_json::Value`, and values beyond a full
//!   batch are only counted), and decoding an image takes at most
//!   `infer::image_input::MAX_DECODE_BYTES` (160 MiB) for its buffers, 192 MiB in all
//!   (a progressive JPEG also holds its coefficients; a 4096×4096 CMYK one measured 175 MiB);
//! - at most `max_connections` \[256\] connections are open, each holding at most a small
//!   body (twice, while it is gathered: 64 KiB) and hyper's read buffer for headers
//!   (at most 408 KiB), which must arrive within `header_timeout` \[10 s\]; a body whose
//!   bytes stop coming for as long gets 408 and its connection is closed.
//!
//! So the server's memory above its idle size stays below
//! `max_large_bodies × (max_body_bytes + max(max_batch × 24 KiB, 192 MiB)) +
//! max_connections × 472 KiB`: about 535 MiB with the defaults, of which 155 MiB without
//! image decoding, plus what the allocator keeps of freed buffers (measured: up to two
//! more bodies).

use std::time::Duration;

/// Bodies up to this size are read and parsed at once; larger ones wait for a permit.
pub const SMALL_BODY_BYTES: usize = 32 << 10;

/// Limits enforced by the server. Every one turns excess into a quick JSON error
/// (413, 400, 503, 504), never into unbounded memory or waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Most images in one engine batch, and so in one request (more: 400).
    pub max_batch: usize,
    /// Most images waiting for the engine; a request that would exceed it gets 503 at once.
    pub max_queued_images: usize,
    /// Longest a request may take, from its first byte to its answer (longer: 504).
    pub request_timeout: Duration,
    /// Longest a connection may take to send a request's headers (and so the longest an
    /// idle keep-alive connection stays open); the connection is closed after it.
    pub header_timeout: Duration,
    /// Most connections open at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Most requests with a body over [`SMALL_BODY_BYTES`] read and parsed at once;
    /// others wait (within the request timeout).
    pub max_large_bodies: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 64 FP32 inputs as JSON text take about 1.5 MB; leave room for pretty-printing.
            max_body_bytes: 16 << 20,
            max_batch: 64,
            max_queued_images: 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_large_bodies: 2,
        }
    }
}

/// The inclusive range a setting must lie in, with its names in [`crate::ServeConfig`]
/// and on the `cifar10 serve` command line, so that both give the same message.
///
/// ```
/// let err = serve::limits::MAX_QUEUED_IMAGES.check(0).unwrap_err();
/// assert!(err.contains("--max-queue") && err.contains("1..=1048576"), "{err}");
/// assert!(serve::limits::MAX_QUEUED_IMAGES.check(64).is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The field of `ServeConfig` / `Limits`.
    pub field: &'static str,
    /// The `cifar10 serve` flag.
    pub flag: &'static str,
    pub min: u64,
    pub max: u64,
}

impl Bound {
    /// `Ok` when `value` is in range, else a message naming the flag, the field, the
    /// range and the value.
    pub fn check(&self, value: u64) -> Result<(), String> {
        if (self.min..=self.max).contains(&value) {
            Ok(())
        } else {
            Err(format!("{} ({}) must be in {}..={}, got {value}", self.flag, self.field, self.min, self.max))
        }
    }
}

/// `max_body_bytes`: 1 KiB (a small image) to 256 MiB.
pub const MAX_BODY_BYTES: Bound =
    Bound { field: "max_body_bytes", flag: "--max-body-bytes", min: 1 << 10, max: 256 << 20 };
/// `max_batch`: small enough that the batch-size histogram's power-of-two buckets cannot
/// overflow, and far beyond any useful batch.
pub const MAX_BATCH: Bound = Bound { field: "max_batch", flag: "--max-batch", min: 1, max: 1 << 16 };
/// `max_queued_images`; it must also be at least `max_batch`, or full batches would be
/// refused.
pub const MAX_QUEUED_IMAGES: Bound = Bound { field: "max_queued_images", flag: "--max-queue", min: 1, max: 1 << 20 };
/// `request_timeout`, in milliseconds: up to an hour.
pub const REQUEST_TIMEOUT_MS: Bound = Bound { field: "request_timeout", flag: "--timeout-ms", min: 1, max: 3_600_000 };
/// `header_timeout`, in milliseconds.
pub const HEADER_TIMEOUT_MS: Bound =
    Bound { field: "header_timeout", flag: "--header-timeout-ms", min: 1, max: 3_600_000 };
/// `max_connections`.
pub const MAX_CONNECTIONS: Bound = Bound { field: "max_connections", flag: "--max-connections", min: 1, max: 65_536 };
/// `max_large_bodies`.
pub const MAX_LARGE_BODIES: Bound = Bound { field: "max_large_bodies", flag: "--max-large-bodies", min: 1, max: 1024 };
/// `max_wait`, in milliseconds; it must also be below `request_timeout`, or every partial
/// batch would time out.
pub const MAX_WAIT_MS: Bound = Bound { field: "max_wait", flag: "--max-wait-ms", min: 0, max: 60_000 };
/// `engine_workers`.
pub const ENGINE_WORKERS: Bound =
    Bound { field: "engine_workers", flag: "--workers", min: 1, max: infer::error::MAX_THREADS as u64 };
/// `http_threads`.
pub const HTTP_THREADS: Bound =
    Bound { field: "http_threads", flag: "--http-threads", min: 1, max: infer::error::MAX_THREADS as u64 };

impl Limits {
    /// Checks every limit against its [`Bound`] and the limits against each other.
    pub fn validate(&self) -> Result<(), String> {
        MAX_BODY_BYTES.check(self.max_body_bytes as u64)?;
        MAX_BATCH.check(self.max_batch as u64)?;
        MAX_QUEUED_IMAGES.check(self.max_queued_images as u64)?;
        REQUEST_TIMEOUT_MS.check(millis(self.request_timeout))?;
        HEADER_TIMEOUT_MS.check(millis(self.header_timeout))?;
        MAX_CONNECTIONS.check(self.max_connections as u64)?;
        MAX_LARGE_BODIES.check(self.max_large_bodies as u64)?;
        if self.max_queued_images < self.max_batch {
            return Err(format!(
                "{} ({}) must be at least {} ({}), {}, or full batches could never be queued; got {}",
                MAX_QUEUED_IMAGES.flag,
                MAX_QUEUED_IMAGES.field,
                MAX_BATCH.flag,
                MAX_BATCH.field,
                self.max_batch,
                self.max_queued_images
            ));
        }
        Ok(())
    }
}

/// A duration in whole milliseconds (saturating), as the bounds state them.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Limits::default().validate().unwrap();
    }

    #[test]
    fn every_limit_is_checked() {
        let cases: [(Limits, &str); 5] = [
            (Limits { max_queued_images: 0, ..Limits::default() }, "--max-queue (max_queued_images) must be in 1..="),
            (Limits { max_queued_images: 8, ..Limits::default() }, "must be at least --max-batch (max_batch), 64"),
            (Limits { max_batch: 0, ..Limits::default() }, "--max-batch (max_batch) must be in 1..=65536, got 0"),
            (Limits { header_timeout: Duration::ZERO, ..Limits::default() }, "--header-timeout-ms"),
            (Limits { max_large_bodies: 0, ..Limits::default() }, "--max-large-bodies"),
        ];
        for (limits, needle) in cases {
            let err = limits.validate().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
