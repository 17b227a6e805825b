//! Listening and serving, shared by the three service binaries: binding a
//! configured port (the error names the key), the HTTP probes and metrics,
//! gRPC servers that join their callers' traces, and every accepted
//! connection bounded by the process's [`ConnectionGuard`].

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use im_config::Config;
use im_gateway::GatewayLimits;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::connection_limits::{ConnectionGuard, GuardedStream};
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::telemetry;
use crate::tls::ServerTls;

/// How often a gRPC server pings a connection that has been quiet, and how
/// long it waits for the answer before closing it: a peer that vanished
/// without a FIN gives its connection back.
const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Calls one gRPC connection may have open at once; more wait in the
/// client (HTTP/2 flow control), they are not refused.
const GRPC_MAX_CONCURRENT_STREAMS: u32 = 4096;

/// The connection budget of this process, for all its listeners, which
/// speak TLS when `tls.cert_file` is set (the pair is read again every
/// `tls.reload_interval` while the guard lives).
pub fn connection_guard(config: &Config, metrics: &Metrics) -> anyhow::Result<Arc<ConnectionGuard>> {
    let tls = ServerTls::from_config(&config.tls)?;
    if let Some(tls) = &tls {
        ServerTls::spawn_reloads(tls, config.tls.reload_interval, metrics.connections.tls_reloads.clone());
    }
    Ok(ConnectionGuard::with_tls(&config.limits, metrics.connections.clone(), metrics.rate_limited.clone(), tls))
}

/// The built-in or standalone gateway's limits, from the configuration.
pub fn gateway_limits(config: &Config) -> GatewayLimits {
    let (server, limits) = (&config.server, &config.limits);
    GatewayLimits {
        max_message_size: server.max_message_size,
        outbound_bytes: limits.outbound_bytes,
        sync_reply_bytes: GatewayLimits::sync_reply_bytes(server.sync_page_max_bytes, server.max_message_size),
        connections_per_user: limits.connections_per_user,
        ping_interval: limits.ws_ping_interval,
        write_stall_timeout: limits.idle_timeout,
        ..GatewayLimits::default()
    }
}

/// Connections the kernel queues for `accept`. tokio's default, 1,024, is
/// filled by a burst of connects while the process is busy; then the
/// kernel drops SYNs, and every client, honest ones too, waits out a 1 s
/// retransmission. The kernel caps it at `net.core.somaxconn` (4,096 on
/// current Linux).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `server.listen_host:port`; `key` names the setting in the error.
pub async fn bind(config: &Config, port: u16, key: &str) -> anyhow::Result<TcpListener> {
    let addr = config.server.bind_addr(port);
    let listener = listen(&addr).await.map_err(|e| anyhow::anyhow!("binding {key} on {addr}: {e}"))?;
    if let Ok(local) = listener.local_addr()
        && exposed(local)
        && !config.tls.serves_tls()
    {
        tracing::warn!(
            listener = key,
            addr = %local,
            "listening beyond loopback without TLS: tokens, messages and admin calls travel in clear; set \
             TLS_CERT_FILE and TLS_KEY_FILE, or terminate TLS in front of this port (a proxy, the platform's ingress)"
        );
    }
    Ok(listener)
}

/// Whether a listener on `addr` is reachable from other machines (the
/// unspecified address, 0.0.0.0 or ::, listens on every interface).
fn exposed(addr: std::net::SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // As TcpListener::bind does: a restarted process rebinds at once.
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")))
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

/// Accepted gRPC connections, admitted by `guard`.
pub fn grpc_incoming(
    guard: &Arc<ConnectionGuard>,
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<GuardedStream>> {
    guard.grpc(listener).incoming()
}

/// A gRPC server whose calls run in the caller's trace
/// ([`telemetry::propagation::server_span`]); `starts_trace` names the
/// client-facing paths where a call without one may start a trace.
pub fn grpc_server(starts_trace: fn(&str) -> bool) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(GRPC_MAX_CONCURRENT_STREAMS))
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
    guard: &Arc<ConnectionGuard>,
    http: TcpListener,
    metrics: Option<TcpListener>,
    state: HttpState,
    metrics_enabled: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics_server = {
        let router = http::metrics_router(state.clone());
        let stop = shutdown.clone();
        let metrics = metrics.map(|listener| guard.http1(listener));
        async move {
            match metrics {
                Some(listener) => axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await,
                None => Ok(()),
            }
        }
    };
    let prober = http::probe_dependencies(state.clone(), shutdown.clone());
    let http_server = axum::serve(guard.http1(http), http::router(state, metrics_enabled))
        .with_graceful_shutdown(shutdown.cancelled_owned());
    let (http_result, metrics_result, ()) = tokio::join!(http_server, metrics_server, prober);
    http_result.map_err(|e| anyhow::anyhow!("HTTP server: {e}"))?;
    metrics_result.map_err(|e| anyhow::anyhow!("metrics server: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listeners_are_not_exposed() {
        for (addr, expected) in
            [("127.0.0.1:1", false), ("127.0.0.2:1", false), ("[::1]:1", false), ("0.0.0.0:1", true), ("[::]:1", true)]
        {
            assert_eq!(exposed(addr.parse().unwrap()), expected, "{addr}");
        }
        assert!(exposed("10.0.0.7:9094".parse().unwrap()));
    }
}
