//! The bounds that keep one client from hurting the others: body size, images per
//! request, queued images, and time per request.

use std::time::Duration;

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 64 FP32 inputs as JSON text take about 1.5 MB; leave room for pretty-printing.
            max_body_bytes: 16 << 20,
            max_batch: 64,
            max_queued_images: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}
