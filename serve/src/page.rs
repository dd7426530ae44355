//! The browser page (`GET /`) and the model card it shows (`GET /model-card`).
//!
//! The page is one HTML file with its CSS and JavaScript inline, compiled into the binary: no
//! build step, no CDN, works offline. It classifies through the plain image endpoint
//! (`POST /classify`), the same code path as every other client.

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use model_format::weights::Metadata;
use model_format::Model;

use super::ServeConfig;

/// The page, as served.
const INDEX_HTML: &str = include_str!("page/index.html");

/// Only this server's own resources: the page must work offline and load nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'";

/// What is known about the served weights, from their file's metadata: the page's model card.
///
/// ```
/// use model_format::weights::Metadata;
/// let metadata = Metadata { step: Some(21_351), precision_at_1: Some(0.8124), ..Metadata::default() };
/// let card = serve::ModelCard::from_metadata(&metadata, "models/cifar10.safetensors");
/// assert_eq!(card.step, Some(21_351));
/// assert_eq!(card.file.as_deref(), Some("cifar10.safetensors")); // the name, never the folder
///
/// // A loaded model's card also says which variant it is.
/// let model = model_format::Model::load("../models/cifar10-int8.safetensors")?;
/// let card = serve::ModelCard::for_model(&model, "models/cifar10-int8.safetensors");
/// assert_eq!(card.variant.as_deref(), Some("int8"));
/// # Ok::<(), model_format::WeightsError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelCard {
    /// The weights file's name, without its folder: the card is public, the server's
    /// layout is not.
    pub file: Option<String>,
    /// `"float32"` or `"int8"` ([`Model::variant`]), when the card was made from a model.
    pub variant: Option<String>,
    /// Training step the weights come from.
    pub step: Option<u64>,
    /// Precision@1 on the test set, measured when the file was written.
    pub precision_at_1: Option<f64>,
    /// Fingerprint of the data the weights were trained on.
    pub dataset_fingerprint: Option<String>,
    /// `"ema"` (moving average) or `"raw"`.
    pub weights_kind: Option<String>,
    /// Decay of the moving average, for averaged weights.
    pub ema_decay: Option<f64>,
    /// The digest the weights file stores, when the card was made from a model: it names the
    /// exact weights, also for a model built into the binary.
    pub weights_digest: Option<String>,
}

impl ModelCard {
    /// The card for weights with `metadata`, loaded from `file`.
    pub fn from_metadata(metadata: &Metadata, file: impl Into<String>) -> ModelCard {
        let file: String = file.into();
        let name = std::path::Path::new(&file).file_name().map_or(file.clone(), |n| n.to_string_lossy().into_owned());
        ModelCard {
            file: Some(name),
            step: metadata.step,
            precision_at_1: metadata.precision_at_1,
            dataset_fingerprint: metadata.dataset_fingerprint.clone(),
            weights_kind: metadata.weights_kind.map(|kind| kind.as_str().to_string()),
            ema_decay: metadata.ema_decay,
            variant: None,
            weights_digest: None,
        }
    }

    /// The card for a loaded `model` (its metadata and its variant), loaded from `file`.
    pub fn for_model(model: &Model, file: impl Into<String>) -> ModelCard {
        ModelCard {
            variant: Some(model.variant().to_string()),
            weights_digest: Some(model.digest()),
            ..ModelCard::from_metadata(model.metadata(), file)
        }
    }
}

/// The model card as JSON, built once at start-up (nothing in it changes while serving).
#[derive(Debug, Clone)]
pub struct Page {
    card_json: Bytes,
}

impl Page {
    /// The card for `config`, served by the engine called `backend`.
    pub fn new(config: &ServeConfig, backend: &str) -> Page {
        let card = json!({
            "model_name": config.model_name,
            "backend": backend,
            "weights": config.model_card,
            "class_names": config.class_names,
            "batching": {
                "max_batch": config.limits.max_batch,
                "max_wait_ms": config.max_wait.as_secs_f64() * 1e3,
                "engine_workers": config.engine_workers,
                "max_queued_images": config.limits.max_queued_images,
                "max_body_bytes": config.limits.max_body_bytes,
            },
        });
        Page { card_json: Bytes::from(card.to_string()) }
    }
}

/// `GET /`: the page.
pub async fn index() -> Response {
    let mut response = INDEX_HTML.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A new binary may serve a new page: let browsers revalidate instead of keeping a stale one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

impl Page {
    /// `GET /model-card`: model name, backend, the weights' metadata and the batch settings.
    pub fn model_card(&self) -> Response {
        let mut response = self.card_json.clone().into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["http://", "https://", "//cdn", "@import"] {
            assert!(!INDEX_HTML.contains(outside), "the page refers to {outside}");
        }
    }

    #[test]
    fn the_card_has_the_metadata_and_the_batch_settings() {
        let metadata = Metadata { step: Some(7), dataset_fingerprint: Some("abc".into()), ..Metadata::default() };
        let config = ServeConfig {
            model_card: Some(ModelCard::from_metadata(&metadata, "m.safetensors")),
            ..ServeConfig::default()
        };
        let card: serde_json::Value = serde_json::from_slice(&Page::new(&config, "cpu").card_json).unwrap();
        assert_eq!(card["weights"]["step"], 7);
        assert_eq!(card["weights"]["dataset_fingerprint"], "abc");
        assert_eq!(card["weights"]["file"], "m.safetensors");
        assert_eq!(card["backend"], "cpu");
        assert_eq!(card["batching"]["max_batch"], config.limits.max_batch);
        assert_eq!(card["batching"]["max_wait_ms"], 2.0);
    }
}
