//! Listening and serving, shared by the three service binaries: binding a
//! configured port (the error names the key), the HTTP probes and metrics,
//! gRPC servers that join their callers' traces, and gRPC connections with
//! TCP_NODELAY.

use futures::{Stream, TryStreamExt};
use im_config::Config;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::http::{self, HttpState};
use crate::telemetry;

/// Binds `server.listen_host:port`; `key` names the setting in the error.
pub async fn bind(config: &Config, port: u16, key: &str) -> anyhow::Result<TcpListener> {
    let addr = config.server.bind_addr(port);
    TcpListener::bind(&addr).await.map_err(|e| anyhow::anyhow!("binding {key} on {addr}: {e}"))
}

/// The port of a `host:port` setting.
pub fn port_of(addr: &str, key: &str) -> anyhow::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{key} must be host:port, not {addr:?}"))
}

/// The dedicated metrics listener (`observability.metrics_port`), when
/// metrics are enabled.
pub async fn bind_metrics(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    match config.observability.metrics_enabled {
        true => Ok(Some(
            bind(config, config.observability.metrics_port, "observability.metrics_port (METRICS_PORT)").await?,
        )),
        false => Ok(None),
    }
}

/// Accepted gRPC connections with TCP_NODELAY: without it a small answer
/// written while an earlier one is unacknowledged waits for the peer's
/// delayed ACK (measured as +20 ms on acks under a steady load).
pub fn grpc_incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map_ok(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        tcp
    })
}

/// A gRPC server whose calls run in the caller's trace
/// ([`telemetry::propagation::server_span`]); `starts_trace` names the
/// client-facing paths where a call without one may start a trace.
pub fn grpc_server(starts_trace: fn(&str) -> bool) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .trace_fn(move |request| telemetry::propagation::server_span(request, starts_trace))
}

/// Services that only other services call: a call outside a trace stays
/// untraced.
pub fn internal_only(_path: &str) -> bool {
    false
}

/// `/health`, `/live`, `/ready` and `/metrics` on `http`, and `/metrics`
/// alone on `metrics`, until `shutdown`; the readiness probes run meanwhile.
pub async fn http(
    http: TcpListener,
    metrics: Option<TcpListener>,
    state: HttpState,
    metrics_enabled: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics_server = {
        let router = http::metrics_router(state.clone());
        let stop = shutdown.clone();
        async move {
            match metrics {
                Some(listener) => axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await,
                None => Ok(()),
            }
        }
    };
    let prober = http::probe_dependencies(state.clone(), shutdown.clone());
    let http_server =
        axum::serve(http, http::router(state, metrics_enabled)).with_graceful_shutdown(shutdown.cancelled_owned());
    let (http_result, metrics_result, ()) = tokio::join!(http_server, metrics_server, prober);
    http_result.map_err(|e| anyhow::anyhow!("HTTP server: {e}"))?;
    metrics_result.map_err(|e| anyhow::anyhow!("metrics server: {e}"))
}
