//! The middleware around every request: the request timeout, one log line on stderr,
//! and the request metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_error::ApiError;
use super::app::App;
use super::connection;

/// Route templates used as metric labels (a bounded set, whatever paths clients send).
const ROUTES: [&str; 14] = [
    "/",
    "/model-card",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{name}",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/versions/{version}/ready",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
    "/v2/models/{name}/classify",
    "/classify",
    "/metrics",
];

/// Times the request out after the configured limit (504), then logs and counts it.
pub async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_label(request.uri().path());
    // The method and path are kept only for the log line.
    let logged = app.log_requests.then(|| (request.method().clone(), request.uri().path().to_string()));
    let _in_flight = InFlight::enter(&app);
    // The headers are in: stop the connection's header clock until this is answered.
    let _answered = connection::headers_received(&request);
    let timeout = app.limits.request_timeout;
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!("request timed out after {} ms", timeout.as_millis()),
        }
        .into_response(),
    };
    let latency = start.elapsed();
    let status = response.status().as_u16();
    app.metrics.record_request(route, status, latency);
    if let Some((method, path)) = logged {
        eprintln!("{method} {path} {status} {:.3} ms", latency.as_secs_f64() * 1e3);
    }
    response
}

/// Counts a request in flight until dropped, so that a request whose client hangs up (and
/// whose future is dropped mid-way) still leaves the gauge.
struct InFlight<'a>(&'a App);

impl<'a> InFlight<'a> {
    fn enter(app: &'a App) -> Self {
        app.metrics.add_in_flight(1);
        InFlight(app)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.add_in_flight(-1);
    }
}

/// The route template a path matches, or `"unmatched"`.
fn route_label(path: &str) -> &'static str {
    ROUTES.iter().copied().find(|route| matches_template(route, path)).unwrap_or("unmatched")
}

/// Whether `path` has the segments of `template`, where a `{…}` segment matches any one
/// (walked side by side: nothing is allocated on a request's way).
fn matches_template(template: &str, path: &str) -> bool {
    let (mut pattern, mut segments) = (template.split('/'), path.split('/'));
    loop {
        match (pattern.next(), segments.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p.starts_with('{') || p == s => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn paths_map_to_their_templates() {
        assert_eq!(route_label("/v2/models/cifar10/infer"), "/v2/models/{name}/infer");
        assert_eq!(route_label("/v2/models/x/versions/1"), "/v2/models/{name}/versions/{version}");
        assert_eq!(route_label("/v2/health/live"), "/v2/health/live");
        assert_eq!(route_label("/nope/at/all"), "unmatched");
        assert_eq!(route_label("/v2/models/x/infer/more"), "unmatched");
        assert_eq!(route_label("/v2/models"), "unmatched");
    }
}
