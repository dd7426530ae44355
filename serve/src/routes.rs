//! The HTTP routes and their handlers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use model_format::NUM_CLASSES;

use super::admission::{self, Admission};
use super::api_error::ApiError;
use super::app::App;
use super::binary::HEADER_LENGTH;
use super::host_policy::{self, HostPolicy};
use super::inference::{decode_request, encode_response, preprocess_images};
use super::limits::SMALL_BODY_BYTES;
use super::observe;
use super::page;
use super::protocol::ModelMetadata;
use infer::image_input::decode_hwc;
use infer::prediction::Prediction;
use infer::InferError;

/// Classes returned by the image endpoint when `top_k` is not given.
const DEFAULT_TOP_K: usize = 5;

/// The router: KServe v2 routes, the image endpoint and `/metrics`, behind the host policy.
pub fn router(app: Arc<App>, hosts: HostPolicy) -> Router {
    let body_limit = app.limits.max_body_bytes;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_version_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_version_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/v2/models/{name}/classify", post(classify_model))
        .route("/classify", post(classify))
        .route("/metrics", get(metrics))
        .route("/", get(page::index))
        .route("/model-card", get(model_card))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Admission::new(&app.limits, app.stopping.subscribe())),
            admission::admit,
        ))
        // Names and origins are checked before any body is admitted.
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), host_policy::check))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), observe::observe))
        .with_state(app)
}

async fn model_card(State(app): State<Arc<App>>) -> Response {
    app.page.model_card()
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(json!({
        "name": "cifar10-serve",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification"],
    }))
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    let ready = app.ready.load(Ordering::Relaxed);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

async fn model_metadata(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let Path(name) = path.map_err(path_error)?;
    app.check_model(&name)?;
    Ok(Json(ModelMetadata::new(&app.model_name, app.backend)))
}

async fn model_version_metadata(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let Path((name, version)) = path.map_err(path_error)?;
    app.check_version(&name, &version)?;
    Ok(Json(ModelMetadata::new(&app.model_name, app.backend)))
}

async fn model_ready(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(path_error)?;
    app.check_model(&name)?;
    Ok(model_readiness(&app))
}

async fn model_version_ready(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, version)) = path.map_err(path_error)?;
    app.check_version(&name, &version)?;
    Ok(model_readiness(&app))
}

fn model_readiness(app: &App) -> Response {
    let ready = app.ready.load(Ordering::Relaxed);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "name": app.model_name, "ready": ready }))).into_response()
}

async fn infer(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(path_error)?;
    app.check_model(&name)?;
    run_inference(app, &headers, body.map_err(body_error)?).await
}

async fn infer_version(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path((name, version)) = path.map_err(path_error)?;
    app.check_version(&name, &version)?;
    run_inference(app, &headers, body.map_err(body_error)?).await
}

async fn run_inference(app: Arc<App>, headers: &HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("Inference-Header-Content-Length is not text"))?
                .to_string(),
        ),
    };
    let max_batch = app.limits.max_batch;
    // Larger bodies are parsed on a blocking thread, off the async workers.
    let inline = body.len() <= SMALL_BODY_BYTES;
    let decode = move || decode_request(&body, header_length.as_deref(), max_batch);
    let mut decoded = if inline { decode()? } else { off_runtime(decode).await? };
    let inputs = std::mem::take(&mut decoded.inputs);
    let logits = app.logits(inputs, decoded.images).await?;
    let encoded = encode_response(&app.model_name, &decoded, &logits, &app.class_names);
    let mut response = encoded.body.into_response();
    let headers = response.headers_mut();
    match encoded.header_length {
        Some(length) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(HEADER_LENGTH, HeaderValue::from(length));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(response)
}

/// Runs CPU-heavy `work` (parsing, decoding) on a blocking thread, off the async workers.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| Err(ApiError::internal("request parsing panicked")))
}

#[derive(Debug, Deserialize)]
struct ClassifyQuery {
    top_k: Option<usize>,
}

async fn classify_model(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ClassifyQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(name) = path.map_err(path_error)?;
    app.check_model(&name)?;
    classify_image(app, query, body).await
}

async fn classify(
    State(app): State<Arc<App>>,
    query: Result<Query<ClassifyQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    classify_image(app, query, body).await
}

/// The plain endpoint: a PNG or JPEG body in, the top-k classes out.
async fn classify_image(
    app: Arc<App>,
    query: Result<Query<ClassifyQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))?;
    let top_k = query.top_k.unwrap_or(DEFAULT_TOP_K);
    if !(1..=NUM_CLASSES).contains(&top_k) {
        return Err(ApiError::bad_request(format!("top_k must be between 1 and {NUM_CLASSES}, got {top_k}")));
    }
    let body = body.map_err(body_error)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty body: POST the bytes of a PNG or JPEG image"));
    }
    let decode = move || {
        decode_hwc(&body, "request body").map(|hwc| preprocess_images(&hwc, 1)).map_err(|e| match e {
            InferError::TooLarge(why) => ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, message: why },
            e => ApiError::bad_request(e.to_string()),
        })
    };
    let input = off_runtime(decode).await?;
    let logits = app.logits(input, 1).await?;
    let logits: [f32; NUM_CLASSES] = logits.as_slice().try_into().expect("one row of logits");
    let prediction = Prediction::from_logits(logits, Arc::clone(&app.class_names));
    let top: Vec<_> = prediction
        .top_k(top_k)
        .into_iter()
        .map(|r| json!({ "class": r.class, "label": r.label, "probability": r.probability }))
        .collect();
    Ok(Json(json!({
        "model_name": app.model_name,
        "class": prediction.class,
        "label": prediction.label,
        "predictions": top,
    })))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut response = app.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such route; see / (the page), /v2, /v2/models/{name}, /v2/models/{name}/infer, /classify, /metrics",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError { status: StatusCode::METHOD_NOT_ALLOWED, message: "method not allowed on this route".into() }
}

fn body_error(e: BytesRejection) -> ApiError {
    ApiError { status: e.status(), message: format!("cannot read the request body: {}", e.body_text()) }
}

fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(format!("bad path: {}", e.body_text()))
}
