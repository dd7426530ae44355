//! Admission of request bodies, before any byte of them is read: an announced body over
//! the limit is refused with 413 at once (so a client sending `Expect: 100-continue`
//! never gets "100 Continue"), and a large body is read only while holding one of a few
//! permits, so that the memory bodies and their parsing take has a fixed bound.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::api_error::ApiError;
use super::limits::{Limits, SMALL_BODY_BYTES};

/// The body limit and the permits for large bodies.
pub struct Admission {
    max_body_bytes: usize,
    large_bodies: Arc<Semaphore>,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Admission {
            max_body_bytes: limits.max_body_bytes,
            large_bodies: Arc::new(Semaphore::new(limits.max_large_bodies)),
        }
    }
}

/// The size a request announces for its body: `Some(0)` without one, `None` when unknown
/// (chunked).
fn announced_length(request: &Request) -> Option<u64> {
    let headers = request.headers();
    match headers.get(header::CONTENT_LENGTH) {
        // hyper has already refused a malformed Content-Length.
        Some(value) => value.to_str().ok().and_then(|v| v.trim().parse().ok()),
        None if headers.contains_key(header::TRANSFER_ENCODING) => None,
        None => Some(0),
    }
}

/// Refuses announced oversize bodies with 413; holds a permit while a large (or
/// unannounced) body is read, parsed and answered.
pub async fn admit(State(admission): State<Arc<Admission>>, request: Request, next: Next) -> Response {
    let length = announced_length(&request);
    if let Some(length) = length.filter(|&length| length > admission.max_body_bytes as u64) {
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "request body of {length} bytes is larger than the limit of {} bytes",
                admission.max_body_bytes
            ),
        }
        .into_response();
    }
    if length.is_some_and(|length| length <= SMALL_BODY_BYTES as u64) {
        return next.run(request).await;
    }
    let Ok(_permit) = Arc::clone(&admission.large_bodies).acquire_owned().await else {
        return ApiError::unavailable("server is shutting down").into_response();
    };
    next.run(request).await
}
