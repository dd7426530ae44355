//! What every handler shares: the model's name and card, the limits, the batcher and the
//! metrics. Its own module, so that the routes and the middleware both use it without
//! importing each other.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::api_error::ApiError;
use super::batcher::{Batcher, SubmitError};
use super::inference::checked_logits;
use super::limits::Limits;
use super::metrics::Metrics;
use super::page::Page;
use super::protocol::MODEL_VERSION;

/// What every handler shares.
pub struct App {
    pub model_name: String,
    pub backend: &'static str,
    pub class_names: Arc<[String]>,
    pub limits: Limits,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub log_requests: bool,
    /// False once shutdown has begun.
    pub ready: AtomicBool,
    /// Set to true when shutdown begins: bodies still being read are abandoned at once (503)
    /// rather than holding the shutdown up until their timeout.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The browser page's model card.
    pub page: Page,
}

impl App {
    pub fn check_model(&self, name: &str) -> Result<(), ApiError> {
        if name == self.model_name {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("unknown model '{name}': this server serves '{}'", self.model_name)))
        }
    }

    pub fn check_version(&self, name: &str, version: &str) -> Result<(), ApiError> {
        self.check_model(name)?;
        if version == MODEL_VERSION {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("model '{name}' has no version '{version}' (only '{MODEL_VERSION}')")))
        }
    }

    /// Runs preprocessed inputs through the batcher; logits back.
    pub async fn logits(&self, inputs: Vec<f32>, images: usize) -> Result<Vec<f32>, ApiError> {
        let receiver = self.batcher.submit(inputs, images).map_err(|e| match e {
            SubmitError::TooLarge { .. } => ApiError::bad_request(e.to_string()),
            SubmitError::Overloaded { .. } | SubmitError::Closed => ApiError::unavailable(e.to_string()),
        })?;
        match receiver.await {
            Ok(Ok(logits)) => checked_logits(logits),
            Ok(Err(why)) => Err(ApiError::internal(why)),
            Err(_) => Err(ApiError::unavailable("the engine stopped before answering")),
        }
    }
}
