//! The composition root of an `im-gateway` process: clients connect over
//! WebSocket, their requests go to the IM Service over gRPC
//! (`IM_SERVICE_ADDR`), the IM Service pushes through this process's gRPC
//! push API, and every connected user is registered in etcd under this
//! gateway's push address (`GATEWAY_SERVICE_ADDR`), which is its gateway id.

use std::sync::Arc;

use anyhow::{Context, bail};
use im_backends::etcd::EtcdRegistry;
use im_config::{Config, RegistryBackend};
use im_core::GatewayId;
use im_core::ports::Registry;
use im_gateway::{Gateway, Hub, PushApi, Services};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bootstrap;
use crate::http::HttpState;
use crate::metrics::Metrics;
use crate::readiness::{Readiness, flag_probe, tcp_probe};
use crate::remote::{ActingUser, RemoteGroupService, RemoteMessaging, lazy_channel};
use crate::serve;
use crate::tls::CallTls;
use crate::user_statuses;

/// The sockets of a gateway process.
pub struct GatewayListeners {
    pub ws: TcpListener,
    pub push: TcpListener,
    pub http: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl GatewayListeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let push_port = serve::port_of(&config.services.gateway.addr, "services.gateway.addr (GATEWAY_SERVICE_ADDR)")?;
        Ok(Self {
            ws: serve::bind(config, config.server.ws_port, "server.ws_port (SERVER_WS_PORT)").await?,
            push: serve::bind(config, push_port, "services.gateway.addr (GATEWAY_SERVICE_ADDR)").await?,
            http: serve::bind(config, config.server.http_port, "server.http_port (SERVER_HTTP_PORT)").await?,
            metrics: serve::bind_metrics(config).await?,
        })
    }
}

/// Runs the gateway until `shutdown`, then deregisters its users (revokes
/// its lease) and closes client connections.
/// The caller holds the data directory ([`crate::bootstrap::data_dir`]), as
/// `cli` does before any port is bound.
pub async fn run(config: Config, listeners: GatewayListeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let gateway_addr = config.services.gateway.addr.clone();
    if gateway_addr.is_empty() {
        bail!("services.gateway.addr (GATEWAY_SERVICE_ADDR) must be this gateway's push address, host:port");
    }
    let im = &config.services.im;
    if im.addr.is_empty() {
        bail!("services.im.addr (IM_SERVICE_ADDR) must name the IM Service, host:port");
    }
    let RegistryBackend::Etcd { .. } = config.registry() else {
        bail!("etcd.endpoints (ETCD_ENDPOINTS) is required: the IM Service finds this gateway's users there");
    };

    let tokens = bootstrap::token_secret(config.jwt_key_source(), &config.server.jwt_secret_path())?;
    let etcd = Arc::new(
        EtcdRegistry::connect(&config.etcd, crate::app::etcd_options(&config))
            .await
            .context("connecting to etcd (ETCD_ENDPOINTS)")?,
    );
    let registry: Arc<dyn Registry> = etcd.clone();
    let mut readiness = Readiness::default();
    // Handshakes of disabled users and revoked tokens are refused, and the
    // connections of a user stopped later closed (`Gateway::with_hub`).
    let user_tokens = tokens.clone().with_statuses(user_statuses::board(&config, None, &mut readiness).await?);
    let node = lazy_channel(&im.addr, im.timeout, &CallTls::from_config(&config.tls)?)?;
    let acting = Arc::new(ActingUser::new(user_tokens.clone()));
    let directory = crate::sign_in::remote(&config, &tokens, &CallTls::from_config(&config.tls)?)?;
    let services = Services {
        messaging: Arc::new(RemoteMessaging::new(node.clone(), acting.clone(), im.timeout)),
        users: directory.users,
        groups: Arc::new(RemoteGroupService::new(node, acting)),
    };

    let hub = Arc::new(Hub::new(GatewayId(gateway_addr.clone())));
    let gateway = Gateway::with_hub(hub.clone(), services, registry, user_tokens, serve::gateway_limits(&config));

    // A gateway's core job is to reach a node; the registry only degrades
    // pushes to users who connect while it is away.
    readiness.add("im-service", tcp_probe(im.addr.clone()));
    let watched = etcd.clone();
    readiness.add_degrading("etcd", flag_probe(move || watched.is_watching(), "the registry watch is down"));
    let readiness = Arc::new(readiness);
    let metrics = Arc::new(Metrics::new());
    let guard = serve::connection_guard(&config, &metrics)?;
    let stats_gateway = gateway.clone();
    let http_state = HttpState {
        metrics,
        readiness: readiness.clone(),
        before_scrape: Arc::new(move |m: &Metrics| {
            m.observe_gateway(stats_gateway.stats().snapshot());
        }),
    };

    let ws_addr = listeners.ws.local_addr()?;
    let push_addr = listeners.push.local_addr()?;
    let http = serve::http(
        &guard,
        listeners.http,
        listeners.metrics,
        http_state,
        config.observability.metrics_enabled,
        shutdown.clone(),
    );
    let ws =
        axum::serve(guard.http1(listeners.ws), crate::sign_in::gateway_service(&gateway, directory.sign_in, &config))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let push = serve::grpc_server(serve::internal_only)
        .add_service(PushApi::new(hub, tokens).into_service())
        .serve_with_incoming_shutdown(serve::grpc_incoming(&guard, listeners.push), shutdown.clone().cancelled_owned());

    readiness.set_serving(true);
    tracing::info!(ws = %format!("ws://{ws_addr}/ws"), push = %push_addr, gateway_id = %gateway_addr, im_service = %im.addr, "im-gateway ready");
    let closing = {
        let (shutdown, readiness, gateway, etcd) = (shutdown.clone(), readiness.clone(), gateway.clone(), etcd.clone());
        async move {
            shutdown.cancelled().await;
            readiness.set_serving(false);
            // Users of a stopping gateway are gone from the registry at once,
            // not after the lease TTL: the IM Service stops pushing here.
            if let Err(e) = etcd.revoke().await {
                tracing::warn!(error = %e, "could not revoke the registry lease; it expires by itself");
            }
            gateway.close_all();
        }
    };
    let (http_result, ws_result, push_result, ()) = tokio::join!(http, ws, push, closing);
    http_result?;
    ws_result.context("WebSocket server")?;
    push_result.context("push API server")?;
    tracing::info!("im-gateway stopped");
    Ok(())
}
