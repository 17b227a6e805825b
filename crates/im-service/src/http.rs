//! HTTP on `server.http_port`: `/health` (the process is alive), `/ready`
//! (every dependency reachable; JSON with one entry per dependency) and
//! `/metrics` (Prometheus text). With `observability.metrics_enabled`,
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
use crate::readiness::Readiness;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Refreshes gauges that are read from elsewhere at scrape time.
    pub before_scrape: Arc<dyn Fn(&Metrics) + Send + Sync>,
}

/// `/health`, `/ready`, and `/metrics` unless metrics are disabled.
pub fn router(state: HttpState, metrics_enabled: bool) -> Router {
    let router = Router::new().route("/health", get(health)).route("/ready", get(ready));
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

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    let report = state.readiness.check().await;
    state.metrics.record_dependencies(&report);
    let code = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], report.to_json())
}

/// Probes every dependency each `every` until `shutdown`, for
/// `im_dependency_up`: a scraper sees a dependency down even when nothing
/// calls `/ready` (systemd, compose).
pub async fn probe_dependencies(state: HttpState, every: std::time::Duration, shutdown: CancellationToken) {
    loop {
        let report = state.readiness.check().await;
        state.metrics.record_dependencies(&report);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (state.before_scrape)(&state.metrics);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}
