//! HTTP on `server.http_port`: `/health` and `/live` (the process is not
//! wedged: answered without touching any dependency), `/ready` (this process
//! can do its core job, from the background probes' kept state; JSON with one
//! entry per dependency) and `/metrics` (Prometheus text). With `observability.metrics_enabled`,
//! `/metrics` is also served alone on `observability.metrics_port` (the
//! guide's 9090, for a scraper that should not reach the probes).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::readiness::{Observer, Readiness};

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Refreshes gauges that are read from elsewhere at scrape time.
    pub before_scrape: Arc<dyn Fn(&Metrics) + Send + Sync>,
}

/// `/health`, `/live`, `/ready`, and `/metrics` unless metrics are disabled.
pub fn router(state: HttpState, metrics_enabled: bool) -> Router {
    let router = Router::new().route("/health", get(health)).route("/live", get(health)).route("/ready", get(ready));
    let router = if metrics_enabled { router.route("/metrics", get(metrics)) } else { router };
    router.with_state(state)
}

/// `/metrics` alone, for `observability.metrics_port`.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn health() -> &'static str {
    "ok\n"
}

/// From kept state only: answers at once whatever is down or hanging.
async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    let report = state.readiness.report();
    let code = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], report.to_json())
}

/// Runs the background probes until `shutdown`; each result also sets
/// `im_dependency_up`, so a scraper sees a dependency down even when nothing
/// calls `/ready` (systemd, compose).
pub async fn probe_dependencies(state: HttpState, shutdown: CancellationToken) {
    let metrics = state.metrics.clone();
    let observer: Observer = Arc::new(move |dependency, result| metrics.observe_dependency(dependency, result.is_ok()));
    state.readiness.clone().probe_until(observer, shutdown).await;
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (state.before_scrape)(&state.metrics);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}
