//! Admission of request bodies, before any byte of them is read: an announced body over
//! the limit is refused with 413 at once (so a client sending `Expect: 100-continue`
//! never gets "100 Continue"), and a large body is read only while holding one of a few
//! permits, held until the body has been parsed or decoded and dropped, so that the
//! memory bodies and their parsing take has a fixed bound. A large body is gathered here
//! into one buffer of its announced size, so that it is never held twice (as chunks,
//! then as their concatenation).
//!
//! Every body, small or large, is read here under a stall timeout: a client that sends
//! nothing for `header_timeout` gets 408 and its connection is closed, so a stalled body
//! holds a large-body permit or a connection slot no longer than that (not the whole
//! request timeout). When shutdown begins, bodies still being read are abandoned with 503.

use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::api_error::ApiError;
use super::limits::{Limits, SMALL_BODY_BYTES};

/// The body limit and the permits for large bodies.
pub struct Admission {
    max_body_bytes: usize,
    large_bodies: Arc<Semaphore>,
    /// Longest wait for the next bytes of a body: the header timeout.
    stall_timeout: Duration,
    /// True once shutdown has begun.
    stopping: watch::Receiver<bool>,
}

impl Admission {
    pub fn new(limits: &Limits, stopping: watch::Receiver<bool>) -> Self {
        Admission {
            max_body_bytes: limits.max_body_bytes,
            large_bodies: Arc::new(Semaphore::new(limits.max_large_bodies)),
            stall_timeout: limits.header_timeout,
            stopping,
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
/// unannounced) body or an image is read and parsed or decoded.
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
    // Decoding an image may take `MAX_DECODE_BYTES` however small its file: images always
    // take a permit.
    let image = request.uri().path().ends_with("/classify");
    if length == Some(0) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    if !image && length.is_some_and(|length| length <= SMALL_BODY_BYTES as u64) {
        // Small bodies take no permit, but are read under the same stall timeout.
        return match gather(body, length, &admission).await {
            Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
            Err(e) => e.into_response(),
        };
    }
    let Ok(permit) = Arc::clone(&admission.large_bodies).acquire_owned().await else {
        return ApiError::unavailable("server is shutting down").into_response();
    };
    match gather(body, length, &admission).await {
        Ok(bytes) => {
            // The handler parses or decodes the body, then drops it, and the permit with it:
            // the wait for the engine that follows is not held against other bodies.
            let body = Bytes::from_owner(PermittedBody { bytes, _permit: permit });
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(e) => e.into_response(),
    }
}

/// A gathered body and the permit it was read under, released with the last reference
/// to the body (axum's `Bytes` extractor shares the buffer, never copies it).
struct PermittedBody {
    bytes: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for PermittedBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads a whole body into one buffer (sized from `length` when announced); 413 once it
/// passes the limit, 408 when no bytes come for the stall timeout, 503 when shutdown begins.
async fn gather(mut body: Body, length: Option<u64>, admission: &Admission) -> Result<Vec<u8>, ApiError> {
    let limit = admission.max_body_bytes;
    let mut stopping = admission.stopping.clone();
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("request body is larger than the limit of {limit} bytes"),
    };
    let capacity = length.map_or(SMALL_BODY_BYTES, |length| length as usize);
    let mut bytes = Vec::with_capacity(capacity);
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = tokio::select! {
            frame = tokio::time::timeout(admission.stall_timeout, next) => match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return Err(stalled(admission.stall_timeout)),
            },
            _ = stopping.wait_for(|stopping| *stopping) => {
                return Err(ApiError::unavailable("server is shutting down"));
            }
        };
        let frame = frame.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// 408 for a body that stopped arriving; the connection is closed after the answer.
fn stalled(timeout: Duration) -> ApiError {
    ApiError {
        status: StatusCode::REQUEST_TIMEOUT,
        message: format!("the request body stalled: no bytes for {} ms (--header-timeout-ms)", timeout.as_millis()),
    }
}
