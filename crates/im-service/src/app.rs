//! The composition root: the only place that turns configuration into
//! backends (`Arc<dyn Port>`) and wires them together. Listeners are passed
//! in, so tests can run a whole node on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use futures::TryStreamExt;
use im_backends::memory::{MemoryDedupCache, MemoryRegistry, MemorySeqAllocator};
use im_backends::sqlite::SqliteStore;
use im_config::{BusBackend, Config, KeySource, RegistryBackend, SeqBackend, ServiceLink, StoreBackend};
use im_core::GatewayId;
use im_core::ports::{CeilingStore, MessageStore, Messaging, Pusher, ReceiptStore, Registry, UserStore};
use im_gateway::{Gateway, GatewayLimits, Hub};
use im_user::UserDirectory;
use im_user::grpc::UserGrpc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bootstrap;
use crate::grpc::MessageGrpc;
use crate::http::{self, HttpState};
use crate::messaging::{KnownUsers, MessagingService};
use crate::metrics::Metrics;
use crate::msg_id::MessageIdGenerator;
use crate::pipeline::Pipeline;
use crate::readiness::Readiness;
use crate::router::{RetryPolicy, Router};

/// Sends waiting for the writer. When full, senders wait: backpressure
/// reaches the sockets instead of growing memory.
const SEND_QUEUE: usize = 16 * 1024;
/// First acks remembered by the in-process dedup cache, and for how long.
const DEDUP_CAPACITY: usize = 1_000_000;
const DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long shutdown waits for in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The sockets a node serves on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub ws: TcpListener,
    /// `observability.metrics_port`, when metrics are enabled.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured ports on `server.listen_host`.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let host = &config.server.listen_host;
        let bind = |port: u16, key: &'static str| async move {
            let addr = format!("{host}:{port}");
            TcpListener::bind(&addr).await.with_context(|| format!("binding {key} on {addr}"))
        };
        Ok(Self {
            grpc: bind(config.server.grpc_port, "server.grpc_port (SERVER_GRPC_PORT)").await?,
            http: bind(config.server.http_port, "server.http_port (SERVER_HTTP_PORT)").await?,
            ws: bind(config.server.ws_port, "server.ws_port (SERVER_WS_PORT)").await?,
            metrics: match config.observability.metrics_enabled {
                true => {
                    Some(bind(config.observability.metrics_port, "observability.metrics_port (METRICS_PORT)").await?)
                }
                false => None,
            },
        })
    }

    pub fn addrs(&self) -> anyhow::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        Ok((self.grpc.local_addr()?, self.http.local_addr()?, self.ws.local_addr()?))
    }
}

/// Refuses configurations this version cannot serve yet, naming the key, so
/// nobody believes they run on MySQL while writing to SQLite.
fn check_supported(config: &Config) -> anyhow::Result<()> {
    let mut unsupported = Vec::new();
    if let StoreBackend::MySql(_) = config.store() {
        unsupported.push("database.host (DB_HOST): the MySQL store");
    }
    if let SeqBackend::Redis(_) = config.seq() {
        unsupported.push("redis.addr (REDIS_ADDR): the Redis seq allocator and dedup");
    }
    if let BusBackend::Kafka(_) = config.bus() {
        unsupported.push("kafka.brokers (KAFKA_BROKERS): the Kafka bus");
    }
    if let RegistryBackend::Etcd { .. } = config.registry() {
        unsupported.push("etcd.endpoints (ETCD_ENDPOINTS): the etcd registry");
    }
    if let ServiceLink::Remote(_) = config.gateway() {
        unsupported.push("services.gateway.addr (GATEWAY_SERVICE_ADDR): a remote gateway");
    }
    if let ServiceLink::Remote(_) = config.user_service() {
        unsupported.push("services.user.addr (USER_SERVICE_ADDR): a remote user service");
    }
    if config.filter.enabled {
        unsupported.push("filter.enabled (FILTER_ENABLED): the sensitive-word filter");
    }
    if !matches!(config.key_source(), KeySource::Disabled) {
        unsupported.push("encryption.enabled (ENCRYPTION_ENABLED): body encryption");
    }
    if !unsupported.is_empty() {
        bail!(
            "this build runs the embedded mode only; not available yet:\n  - {}\nunset these to run embedded",
            unsupported.join("\n  - ")
        );
    }
    Ok(())
}

/// Runs a node until `shutdown` is cancelled, then stops in order: not ready,
/// stop accepting, close client connections, drain the pipeline, stop.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    check_supported(&config)?;
    let data_dir = &config.server.data_dir;
    bootstrap::data_dir(data_dir)?;
    let tokens = bootstrap::token_secret(config.jwt_key_source(), &config.server.jwt_secret_path())?;

    let db_path = config.server.sqlite_path();
    let sqlite =
        Arc::new(SqliteStore::open(&db_path).await.map_err(|e| anyhow::anyhow!("opening {}: {e}", db_path.display()))?);
    let store: Arc<dyn MessageStore> = sqlite.clone();
    let receipts: Arc<dyn ReceiptStore> = sqlite.clone();
    let ceilings: Arc<dyn CeilingStore> = sqlite.clone();
    let user_store: Arc<dyn UserStore> = sqlite.clone();
    let seqs = Arc::new(MemorySeqAllocator::new(ceilings, config.sequence.snapshot_interval));
    let dedup = Arc::new(MemoryDedupCache::new(DEDUP_CAPACITY, DEDUP_TTL));
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let metrics = Arc::new(Metrics::new());

    let hub = Arc::new(Hub::new(GatewayId(format!("local-{}", config.server.node_id))));
    let pusher: Arc<dyn Pusher> = hub.clone();

    let tracker = TaskTracker::new();
    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel(SEND_QUEUE);
    let (routes_tx, routes_rx) = tokio::sync::mpsc::unbounded_channel();
    let pipeline = Pipeline {
        store: store.clone(),
        seqs,
        dedup,
        ids: Arc::new(MessageIdGenerator::new(config.server.node_id)),
        metrics: metrics.clone(),
    };
    tracker.spawn(pipeline.run(jobs_rx, routes_tx.clone()));
    let router = Router {
        registry: registry.clone(),
        pusher,
        metrics: metrics.clone(),
        retry: RetryPolicy { attempts: config.server.max_retry_attempts, timeout: config.server.retry_timeout },
    };
    tracker.spawn(router.run(routes_rx));

    let messaging: Arc<dyn Messaging> = Arc::new(MessagingService {
        jobs: jobs_tx,
        routes: routes_tx,
        store: store.clone(),
        receipts,
        users: KnownUsers::new(user_store.clone()),
        metrics: metrics.clone(),
        max_message_size: config.server.max_message_size,
    });
    let limits = GatewayLimits { max_message_size: config.server.max_message_size, ..GatewayLimits::default() };
    let gateway = Gateway::with_hub(hub, messaging.clone(), registry, tokens.clone(), limits);

    let directory = UserDirectory::new(user_store, tokens.clone(), config.auth.token_ttl);
    let admin_path = config.server.admin_credential_path();
    bootstrap::admin_credential(&tokens, &admin_path)?;

    let mut readiness = Readiness::default();
    {
        let store = store.clone();
        readiness.add(
            "sqlite",
            Box::new(move || {
                let store = store.clone();
                Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
            }),
        );
    }
    let readiness = Arc::new(readiness);
    let stats_gateway = gateway.clone();
    let http_state = HttpState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        before_scrape: Arc::new(move |m: &Metrics| {
            m.connected_clients.set(stats_gateway.stats().connected() as i64);
        }),
    };

    let (grpc_addr, http_addr, ws_addr) = listeners.addrs()?;
    let stop = shutdown.clone();
    let metrics_server = {
        let stop = shutdown.clone();
        let listener = listeners.metrics;
        let router = http::metrics_router(http_state.clone());
        async move {
            match listener {
                Some(listener) => axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await,
                None => Ok(()),
            }
        }
    };
    let http_server = axum::serve(listeners.http, http::router(http_state, config.observability.metrics_enabled))
        .with_graceful_shutdown(async move { stop.cancelled().await });
    let stop = shutdown.clone();
    // Without TCP_NODELAY a small ack written while a push to the same
    // client is unacknowledged waits for the client's delayed ACK (Nagle):
    // measured as +20 ms on acks under a steady load.
    let ws_listener = listeners.ws.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let ws_server =
        axum::serve(ws_listener, gateway.router()).with_graceful_shutdown(async move { stop.cancelled().await });
    let stop = shutdown.clone();
    let grpc_server = tonic::transport::Server::builder()
        .add_service(MessageGrpc::server(messaging, tokens.clone()))
        .add_service(UserGrpc::new(directory).into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc).map_ok(|tcp| {
                let _ = tcp.set_nodelay(true);
                tcp
            }),
            async move { stop.cancelled().await },
        );

    readiness.set_serving(true);
    tracing::info!(
        ws = %format!("ws://{ws_addr}/ws"),
        grpc = %grpc_addr,
        http = %http_addr,
        data_dir = %data_dir.display(),
        admin_credential = %admin_path.display(),
        "im-service ready (embedded mode)"
    );

    let closing = {
        let shutdown = shutdown.clone();
        let readiness = readiness.clone();
        let gateway = gateway.clone();
        async move {
            shutdown.cancelled().await;
            readiness.set_serving(false);
            gateway.close_all();
        }
    };
    let (http_result, metrics_result, ws_result, grpc_result, ()) =
        tokio::join!(http_server, metrics_server, ws_server, grpc_server, closing);
    http_result.context("HTTP server")?;
    metrics_result.context("metrics server")?;
    ws_result.context("WebSocket server")?;
    grpc_result.context("gRPC server")?;

    // Every sender handle is gone with the servers: the pipeline drains what
    // is queued, answers it, and stops; then the router.
    drop(gateway);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("workers did not stop within {SHUTDOWN_GRACE:?}");
    }
    sqlite.close().await;
    tracing::info!("im-service stopped");
    Ok(())
}
