//! The composition root: the only place that turns configuration into
//! backends (`Arc<dyn Port>`) and wires them together. Listeners are passed
//! in, so tests can run a whole node on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use im_auth::Tokens;
use im_backends::etcd::{EtcdRegistry, EtcdRegistryOptions, NodeClaim};
use im_backends::memory::{MemoryBus, MemoryDedupCache, MemoryRegistry, MemorySeqAllocator};
use im_backends::{RedisConnection, RedisDedupCache, RedisSeqAllocator};
use im_config::{BusBackend, Config, RegistryBackend, SeqBackend, ServiceLink, StoreBackend};
use im_core::GatewayId;
use im_core::error::BackendError;
use im_core::ports::{
    Bus, DedupCache, GroupDirectory, Groups, Messaging, Pusher, Registry, SeqAllocator, SignIn, UserStore,
};
use im_gateway::{Gateway, Hub, Services};
use im_user::UserDirectory;
use im_user::grpc::UserGrpc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bootstrap;
use crate::breaker::{Breaker, BreakerSettings, SendBreakers};
use crate::bus::kafka_bus;
use crate::commit_window::CommitWindow;
use crate::consumer::{Consume, ConsumerSettings, Members};
use crate::encryption::BodyCipher;
use crate::encryption::keys_grpc::KeyGrpc;
use crate::fanout::{FanOutWorker, GROUP_PUBLISH_QUEUE, GroupPublisher};
use crate::filter::ContentFilter;
use crate::filter::audit::{AUDIT_PUBLISH_QUEUE, AuditGrpc, AuditPublisher};
use crate::groups::grpc::GroupGrpc;
use crate::groups::watcher::consumer_group;
use crate::groups::{GroupsService, MembershipCache, MembershipWatcher};
use crate::grpc::MessageGrpc;
use crate::http::HttpState;
use crate::known_users::KnownUsers;
use crate::messaging::MessagingService;
use crate::metrics::Metrics;
use crate::msg_id::MessageIdGenerator;
use crate::offline::{OfflinePublisher, OfflineWorker, PUBLISH_QUEUE};
use crate::outbox::Settler;
use crate::pipeline::Pipeline;
use crate::rate_limits::UserRateLimits;
use crate::readiness::{Probe, Readiness, flag_probe, tcp_probe};
use crate::relay::RelayGrpc;
use crate::remote::groups::RemoteGroups;
use crate::remote::{GrpcPusher, RemoteUsers};
use crate::retention::RetentionJob;
use crate::router::{RetryPolicy, Router};
use crate::serve;
use crate::stores::Stores;
use crate::tls::CallTls;
use crate::user_statuses;

/// Sends waiting for the writer. When full, senders wait: backpressure
/// reaches the sockets instead of growing memory.
const SEND_QUEUE: usize = 16 * 1024;
/// How long the dedup cache remembers a first ack (the count is
/// `cache.dedup_entries` in process; Redis bounds by time alone).
const DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a node id stays claimed after its node died without releasing
/// it: what a node restarted after `kill -9` may wait at start-up.
const NODE_CLAIM_TTL: Duration = Duration::from_secs(5);
/// How long shutdown waits for in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The sockets a node serves on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    /// The built-in gateway's WebSocket; none when the gateway is its own
    /// process (`services.gateway.addr`).
    pub ws: Option<TcpListener>,
    /// `observability.metrics_port`, when metrics are enabled.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured ports on `server.listen_host`.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            grpc: serve::bind(config, config.server.grpc_port, "server.grpc_port (SERVER_GRPC_PORT)").await?,
            http: serve::bind(config, config.server.http_port, "server.http_port (SERVER_HTTP_PORT)").await?,
            ws: match config.gateway() {
                ServiceLink::Builtin => {
                    Some(serve::bind(config, config.server.ws_port, "server.ws_port (SERVER_WS_PORT)").await?)
                }
                ServiceLink::Remote(_) => None,
            },
            metrics: serve::bind_metrics(config).await?,
        })
    }

    pub fn addrs(&self) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        Ok((self.grpc.local_addr()?, self.http.local_addr()?))
    }
}

/// Refuses configurations a node cannot serve, naming the key: a word list
/// that does not load, a gateway process without the registry it needs.
/// Called before anything binds (`cli::main`: exit 2).
pub fn refuse_unsupported(config: &Config) -> Result<(), String> {
    // A word list that does not load is bad configuration: refused here,
    // before anything binds, like the rest.
    crate::filter::check_config(&config.filter)?;
    if matches!(config.gateway(), ServiceLink::Remote(_)) && !matches!(config.registry(), RegistryBackend::Etcd { .. })
    {
        return Err("services.gateway.addr (GATEWAY_SERVICE_ADDR) needs etcd.endpoints (ETCD_ENDPOINTS): gateways \
                    register their users there"
            .to_owned());
    }
    Ok(())
}

/// The sensitive-word filter, when enabled, with its list loaded (on a
/// blocking thread: a long list takes a while to compile) and watched for
/// changes.
async fn load_filter(
    config: &Config,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Arc<ContentFilter>>> {
    let (filter_config, loading_metrics) = (config.filter.clone(), metrics.clone());
    let loaded = tokio::task::spawn_blocking(move || ContentFilter::load(&filter_config, loading_metrics))
        .await
        .context("loading the sensitive-word list")?
        .context("filter.wordlist_path (FILTER_WORDLIST_PATH)")?;
    let Some(filter) = loaded.map(Arc::new) else { return Ok(None) };
    crate::filter::reload::spawn(filter.clone(), tracker, shutdown.clone())?;
    tracing::info!(
        action = %filter.action(),
        entries = metrics.filter_wordlist_entries.get(),
        path = %filter.path().display(),
        "sensitive-word filter on"
    );
    Ok(Some(filter))
}

/// The body cipher of encryption at rest, when enabled: the master key
/// opened, a data key active, its rotation watched. The master key shows on
/// `/ready` as `kms`, degrading only: with it down, sends and reads go on
/// with the keys in memory.
async fn body_cipher(
    config: &Config,
    stores: &Stores,
    metrics: &Arc<Metrics>,
    readiness: &mut Readiness,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Arc<BodyCipher>>> {
    let Some(master) = crate::encryption::master_key(config, metrics).await? else { return Ok(None) };
    if master.1 == crate::encryption::Mode::OpenOnly {
        tracing::warn!("encryption at rest is off; its master key is still configured, so sealed bodies stay readable");
    }
    let encryption = &config.encryption;
    let cipher = BodyCipher::start(
        master,
        stores.data_keys.clone(),
        encryption.dek_cache_ttl,
        encryption.key_rotation_days,
        metrics.clone(),
    )
    .await
    .context("encryption at rest (ENCRYPTION_ENABLED): activating a data key")?;
    readiness
        .add_degrading("kms", probe(cipher.clone(), |cipher| Box::pin(async move { cipher.check_master_key().await })));
    tracker.spawn(cipher.clone().run_rotation(shutdown.clone()));
    Ok(Some(cipher))
}

/// A probe from a closure over `dependency`.
fn probe<T: Send + Sync + 'static>(
    dependency: Arc<T>,
    check: impl Fn(Arc<T>) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
) -> Probe {
    Box::new(move || check(dependency.clone()))
}

/// The seq allocator and the dedup cache: Redis when `redis.addr` or
/// `redis.sentinels` is set, else in process.
async fn seqs_and_dedup(
    config: &Config,
    stores: &Stores,
    readiness: &mut Readiness,
) -> anyhow::Result<(Arc<dyn SeqAllocator>, Arc<dyn DedupCache>)> {
    match config.seq() {
        SeqBackend::InProcess => Ok((
            Arc::new(MemorySeqAllocator::new(stores.ceilings.clone(), config.sequence.snapshot_interval)),
            Arc::new(MemoryDedupCache::new(config.cache.dedup_entries, DEDUP_TTL)),
        )),
        SeqBackend::Redis(redis) => {
            let connection =
                RedisConnection::open(redis).context("redis.addr (REDIS_ADDR) or redis.sentinels (REDIS_SENTINELS)")?;
            match connection.check_version().await {
                Err(BackendError::Unavailable(reason)) => {
                    tracing::warn!(%reason, "redis is not reachable at start; its version is not checked")
                }
                checked => checked.context("checking the Redis version")?,
            }
            readiness.add(
                "redis",
                probe(Arc::new(connection.clone()), |c| {
                    Box::pin(async move { c.ping().await.map_err(|e| e.to_string()) })
                }),
            );
            let seqs = RedisSeqAllocator::new(
                connection.clone(),
                stores.ceilings.clone(),
                stores.epochs.clone(),
                config.sequence.snapshot_interval,
                format!("{}:seq", config.server.cluster),
            )
            .await
            .context("starting the Redis seq allocator")?;
            let dedup = RedisDedupCache::new(connection, DEDUP_TTL, format!("{}:dedup", config.server.cluster));
            Ok((Arc::new(seqs), Arc::new(dedup)))
        }
    }
}

/// How this deployment uses etcd: its keys under `/{cluster}`.
pub fn etcd_options(config: &Config) -> EtcdRegistryOptions {
    EtcdRegistryOptions { prefix: format!("/{}", config.server.cluster), ..EtcdRegistryOptions::default() }
}

/// Where users are connected, and how pushes reach them: the built-in
/// gateway, or gateway processes found in etcd.
async fn registry_and_pusher(
    config: &Config,
    hub: &Arc<Hub>,
    tokens: &Tokens,
    call_tls: &CallTls,
    readiness: &mut Readiness,
) -> anyhow::Result<(Arc<dyn Registry>, Arc<dyn Pusher>)> {
    let registry: Arc<dyn Registry> = match config.registry() {
        RegistryBackend::InProcess => Arc::new(MemoryRegistry::new()),
        RegistryBackend::Etcd { .. } => {
            let options = etcd_options(config);
            let etcd = Arc::new(
                EtcdRegistry::connect(&config.etcd, options).await.context("connecting to etcd (ETCD_ENDPOINTS)")?,
            );
            // Degrading only: pushes wait for the watch to come back (the
            // messages are stored and reach devices by sync meanwhile).
            let watched = etcd.clone();
            readiness.add_degrading("etcd", flag_probe(move || watched.is_watching(), "the registry watch is down"));
            etcd
        }
    };
    let pusher: Arc<dyn Pusher> = match config.gateway() {
        ServiceLink::Builtin => hub.clone(),
        // No readiness probe: pushes go to whichever gateways the registry
        // names, so one gateway being down is not this node being unready;
        // its users get their messages by sync when they reconnect.
        ServiceLink::Remote(gateway) => Arc::new(GrpcPusher::new(tokens.clone(), gateway.timeout, call_tls.clone())),
    };
    Ok((registry, pusher))
}

/// The message bus, and how its consumer groups are joined: in process, or
/// Kafka, where the topics (and the offline dead-letter topic) are created at
/// start-up when missing.
async fn bus(config: &Config, readiness: &mut Readiness) -> anyhow::Result<(Arc<dyn Bus>, Arc<dyn Members>)> {
    match config.bus() {
        BusBackend::InProcess => {
            let bus = Arc::new(MemoryBus::new());
            Ok((bus.clone(), bus))
        }
        BusBackend::Kafka(kafka) => {
            let bus = kafka_bus(kafka, readiness).await?;
            Ok((bus.clone(), bus))
        }
    }
}

/// The user directory: the store's users, or the `im-user` process.
fn user_store(
    config: &Config,
    stores: &Stores,
    tokens: &Tokens,
    call_tls: &CallTls,
    readiness: &mut Readiness,
) -> anyhow::Result<Arc<dyn UserStore>> {
    match config.user_service() {
        ServiceLink::Builtin => Ok(stores.users.clone()),
        ServiceLink::Remote(user) => {
            // Degrading only: recipients already known, and groups whose
            // roster is cached, are served without it.
            readiness.add_degrading("user-service", tcp_probe(user.addr.clone()));
            Ok(Arc::new(
                RemoteUsers::new(&user.addr, user.timeout, call_tls, tokens.clone())
                    .context("services.user.addr (USER_SERVICE_ADDR)")?,
            ))
        }
    }
}

/// The group directory: in process over the store (publishing changes on
/// this process's bus), or the `im-user` process.
fn group_directory(
    config: &Config,
    stores: &Stores,
    bus: &Arc<dyn Bus>,
    tokens: &Tokens,
    call_tls: &CallTls,
) -> anyhow::Result<Arc<dyn GroupDirectory>> {
    match config.user_service() {
        ServiceLink::Builtin => Ok(Arc::new(im_user::groups::GroupService::new(
            stores.groups.clone(),
            bus.clone(),
            config.kafka.topics.membership_change.clone(),
            config.group.max_members,
        ))),
        ServiceLink::Remote(user) => Ok(Arc::new(
            RemoteGroups::new(&user.addr, user.timeout, call_tls, tokens.clone())
                .context("services.user.addr (USER_SERVICE_ADDR)")?,
        )),
    }
}

/// Puts every stored user status on the board (see
/// [`UserDirectory::publish_statuses`]); a failure is logged, not fatal: the
/// statuses already on the board stand, and the next start tries again.
pub async fn publish_statuses(directory: &UserDirectory) {
    match directory.publish_statuses().await {
        Ok(0) => {}
        Ok(users) => tracing::info!(users, "published the stored user statuses"),
        Err(e) => {
            tracing::warn!(error = %e, "could not publish the stored user statuses; they stand as last published")
        }
    }
}

/// Whether a gRPC call without a trace context starts a trace here: a
/// client calling im.v1 directly (not through a gateway) starts its
/// message's trace at the node. The relay stream does not: it outlives any
/// message, and each relayed send carries its own context.
fn starts_trace(path: &str) -> bool {
    path.starts_with("/im.v1.") && !path.starts_with("/im.v1.RelayService/")
}

/// Runs a node until `shutdown` is cancelled, then stops in order: not ready,
/// stop accepting, close client connections, drain the pipeline, stop.
/// The caller holds the data directory ([`crate::bootstrap::data_dir`]), as
/// `cli` does before any port is bound.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    // The data directory exists and is this process's: `cli` locked it.
    let data_dir = &config.server.data_dir;
    let tokens = bootstrap::token_secret(config.jwt_key_source(), &config.server.jwt_secret_path())?;

    let mut readiness = Readiness::default();
    let stores = Stores::open(&config).await?;
    readiness.add(stores.name, stores.probe(&config));
    // The users' statuses are the store's when this node owns the users.
    let owns_users = matches!(config.user_service(), ServiceLink::Builtin);
    let statuses = user_statuses::board(&config, owns_users.then_some(&stores.statuses), &mut readiness).await?;
    // Every user token this node checks (gRPC, the built-in gateway) is
    // refused once its user is disabled or the token revoked.
    let tokens = tokens.with_statuses(statuses.clone());
    let (seqs, dedup) = seqs_and_dedup(&config, &stores, &mut readiness).await?;
    let hub = Arc::new(Hub::new(GatewayId(format!("local-{}", config.server.node_id))));
    // How this node calls the gateways and im-user: read once.
    let call_tls = CallTls::from_config(&config.tls)?;
    let (registry, pusher) = registry_and_pusher(&config, &hub, &tokens, &call_tls, &mut readiness).await?;
    // Every message id carries the node id: two live nodes must not share one.
    let node_claim = match config.registry() {
        RegistryBackend::Etcd { .. } => Some(
            NodeClaim::acquire(
                &config.etcd,
                &etcd_options(&config).prefix,
                config.server.node_id,
                NODE_CLAIM_TTL,
                Duration::from_secs(5),
            )
            .await
            .context("claiming server.node_id (NODE_ID) in etcd")?,
        ),
        RegistryBackend::InProcess => None,
    };
    let user_store = user_store(&config, &stores, &tokens, &call_tls, &mut readiness)?;
    let (bus, members) = bus(&config, &mut readiness).await?;
    let metrics = Arc::new(Metrics::new());
    // Sends fail fast while the store is down; its readiness probe opens
    // and closes the breaker (the half-open trial costs no client anything).
    let store_breaker = Arc::new(Breaker::new(stores.name, BreakerSettings::default(), metrics.breakers.clone()));
    readiness.observe(stores.name, {
        let breaker = store_breaker.clone();
        move |result| breaker.probed(result)
    });
    // The same for Redis, when seqs and dedup live there.
    let seq_breaker = matches!(config.seq(), SeqBackend::Redis(_)).then(|| {
        let breaker = Arc::new(Breaker::new("redis", BreakerSettings::default(), metrics.breakers.clone()));
        readiness.observe("redis", {
            let breaker = breaker.clone();
            move |result| breaker.probed(result)
        });
        breaker
    });
    let breakers = SendBreakers { store: store_breaker, seqs: seq_breaker };

    let tracker = TaskTracker::new();
    let cipher = body_cipher(&config, &stores, &metrics, &mut readiness, &tracker, &shutdown).await?;
    // Offline events are published whenever something consumes them: on
    // Kafka always (OFFLINE_WORKER_ENABLED=false keeps the worker out of this
    // process only; other nodes consume), in process only to this process's
    // own worker.
    let publish_offline = config.offline_worker.enabled || !matches!(config.bus(), BusBackend::InProcess);
    let offline_queue = publish_offline.then(|| {
        let topic = config.kafka.topics.offline_msg.clone();
        let (publisher, queue) = OfflinePublisher::new(bus.clone(), topic, metrics.clone(), PUBLISH_QUEUE);
        tracker.spawn(publisher.run(shutdown.clone()));
        queue
    });
    // The worker stops last (see the end of this function), on its own token.
    let workers = TaskTracker::new();
    let workers_stop = CancellationToken::new();
    // Wherever offline entries are recorded, each commit keeps its own in
    // the route outbox until the router has settled it: a node killed in
    // between leaves the rows for the sweep (outbox.rs).
    let settlements = publish_offline.then(|| {
        let grace = config.offline_worker.outbox_grace;
        let (settler, settlements, input) = Settler::new(stores.offline.clone(), metrics.clone(), grace);
        // Drains until the router drops its handle; stopped with the workers.
        tracker.spawn(settler.run(input, workers_stop.clone()));
        settlements
    });
    if config.offline_worker.enabled {
        let worker = OfflineWorker {
            bus: bus.clone(),
            store: stores.offline.clone(),
            metrics: metrics.clone(),
            settings: ConsumerSettings::offline_worker(&config),
        };
        worker.start(&*members, &workers, workers_stop.clone()).await.context("starting the offline worker")?;
    }
    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel(SEND_QUEUE);
    let (routes_tx, routes_rx) = tokio::sync::mpsc::channel(crate::router::ROUTE_QUEUE);
    let filter = load_filter(&config, &metrics, &tracker, &shutdown).await?;
    // Audit records go to content_audit on Kafka, for a compliance tool; in
    // process nothing would consume them (the table keeps them either way).
    let audit_queue = (filter.is_some() && matches!(config.bus(), BusBackend::Kafka(_))).then(|| {
        let topic = config.kafka.topics.content_audit.clone();
        let (publisher, queue) = AuditPublisher::new(bus.clone(), topic, metrics.clone(), AUDIT_PUBLISH_QUEUE);
        tracker.spawn(publisher.run(shutdown.clone()));
        queue
    });
    let pipeline = Pipeline {
        store: stores.messages.clone(),
        seqs: seqs.clone(),
        dedup,
        ids: Arc::new(MessageIdGenerator::new(config.server.node_id)),
        metrics: metrics.clone(),
        audits: audit_queue,
        cipher: cipher.clone().filter(|cipher| cipher.seals()),
        breakers: breakers.clone(),
        outbox: settlements.is_some(),
        skip_recordings: Default::default(),
        window: CommitWindow(config.server.commit_window),
    };
    tracker.spawn(pipeline.run(jobs_rx, routes_tx.clone()));
    // Group messages go to group_msg, which every node's fan-out consumes
    // (this one's included, so also in process).
    let (group_publisher, group_queue) =
        GroupPublisher::new(bus.clone(), config.kafka.topics.group_msg.clone(), metrics.clone(), GROUP_PUBLISH_QUEUE);
    tracker.spawn(group_publisher.run(shutdown.clone()));
    let retry = RetryPolicy { attempts: config.server.max_retry_attempts, timeout: config.server.retry_timeout };
    let router = Router {
        registry: registry.clone(),
        pusher: pusher.clone(),
        metrics: metrics.clone(),
        retry,
        offline: offline_queue,
        groups: Some(group_queue),
        settlements,
    };
    tracker.spawn(router.run(routes_rx));
    // MESSAGE_RETENTION_DAYS: every node that owns the message store walks
    // it; concurrent walks are safe (see retention.rs).
    if let Some(retention) =
        RetentionJob::from_days(config.database.message_retention_days, stores.messages.clone(), metrics.clone())
    {
        tracker.spawn(retention.run(shutdown.clone()));
    }

    let directory = group_directory(&config, &stores, &bus, &tokens, &call_tls)?;
    let group_cache = Arc::new(MembershipCache::new(directory.clone(), config.cache.group_members));
    // Joined before serving: no change made from now on is missed.
    MembershipWatcher { cache: group_cache.clone(), metrics: metrics.clone() }
        .start(
            &*members,
            &config.kafka.topics.membership_change,
            &consumer_group(&config.kafka.group_id, config.server.node_id),
            &workers,
            workers_stop.clone(),
        )
        .await
        .context("joining kafka.topics.membership_change")?;
    FanOutWorker {
        bus: bus.clone(),
        cache: group_cache.clone(),
        registry: registry.clone(),
        pusher,
        metrics: metrics.clone(),
        retry,
        settings: ConsumerSettings::group_fan_out(&config),
        cipher: cipher.clone(),
    }
    .start(&*members, &workers, workers_stop.clone())
    .await
    .context("starting the group fan-out (kafka.topics.group_msg, kafka.group_id)")?;
    let rate_limits = UserRateLimits::new(&config.limits, metrics.rate_limited.clone());
    rate_limits.spawn_cleanup(shutdown.clone());
    let groups: Arc<dyn Groups> = Arc::new(GroupsService {
        rate_limits: rate_limits.clone(),
        directory: directory.clone(),
        cache: group_cache.clone(),
        seqs: seqs.clone(),
        store: stores.messages.clone(),
        receipts: stores.receipts.clone(),
        read_receipt_details_max: config.group.read_receipt_details_max,
    });

    let messaging: Arc<dyn Messaging> = Arc::new(MessagingService {
        rate_limits,
        jobs: jobs_tx,
        routes: routes_tx,
        store: stores.messages.clone(),
        receipts: stores.receipts.clone(),
        offline: stores.offline.clone(),
        users: KnownUsers::new(user_store.clone(), stores.messages.clone()),
        groups: group_cache,
        directory,
        metrics: metrics.clone(),
        max_message_size: config.server.max_message_size,
        // On SQLite this process is the store's only writer (the data dir is
        // locked) and commits each batch whole before the next gets seqs: a
        // gap a reader sees is permanent at once (a restart's skipped range,
        // a failed send). Only a shared store can show a seq another node
        // has still to commit.
        sync_gap_grace: match config.store() {
            StoreBackend::Sqlite => Duration::ZERO,
            StoreBackend::MySql(_) => config.server.sync_gap_grace,
        },
        sync_page_max_bytes: config.server.sync_page_max_bytes,
        filter,
        cipher: cipher.clone(),
        breakers,
    });
    // The built-in gateway serves only when no gateway process is configured.
    let gateway = listeners.ws.is_some().then(|| {
        let services = Services { messaging: messaging.clone(), users: user_store.clone(), groups: groups.clone() };
        Gateway::with_hub(hub, services, registry, tokens.clone(), serve::gateway_limits(&config))
    });
    // The built-in user directory is served here only when no user service
    // process is configured; the built-in gateway signs users in with it, or
    // with the user service's `Login`.
    let (user_grpc, directory): (_, Arc<dyn SignIn>) = if owns_users {
        let directory = UserDirectory::new(
            user_store,
            stores.statuses.clone(),
            statuses,
            crate::stores::passwords(&config, &stores)?,
            tokens.clone(),
            config.auth.token_ttl,
        );
        publish_statuses(&directory).await;
        (Some(UserGrpc::new(directory.clone()).into_server()), Arc::new(directory))
    } else {
        (None, crate::sign_in::remote(&config, &tokens, &call_tls)?.sign_in)
    };
    let admin_path = config.server.admin_credential_path();
    bootstrap::admin_credential(&tokens, &admin_path)?;

    let readiness = Arc::new(readiness);
    let stats_gateway = gateway.clone();
    let http_state = HttpState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        before_scrape: Arc::new(move |m: &Metrics| {
            if let Some(gateway) = &stats_gateway {
                m.observe_gateway(gateway.stats().snapshot());
            }
        }),
    };

    let (grpc_addr, http_addr) = listeners.addrs()?;
    let ws_addr = listeners.ws.as_ref().map(TcpListener::local_addr).transpose()?;
    let guard = serve::connection_guard(&config, &metrics)?;
    let http = serve::http(
        &guard,
        listeners.http,
        listeners.metrics,
        http_state,
        config.observability.metrics_enabled,
        shutdown.clone(),
    );
    let ws_server = {
        let (listener, stop) = (listeners.ws.map(|l| guard.http1(l)), shutdown.clone());
        let service = gateway.as_ref().map(|gateway| crate::sign_in::gateway_service(gateway, directory, &config));
        async move {
            let (Some(listener), Some(service)) = (listener, service) else { return Ok(()) };
            axum::serve(listener, service).with_graceful_shutdown(stop.cancelled_owned()).await
        }
    };
    let grpc_server = serve::grpc_server(starts_trace)
        .add_service(RelayGrpc::server(messaging.clone(), tokens.clone(), shutdown.clone()))
        .add_service(MessageGrpc::server(messaging, tokens.clone()))
        .add_service(GroupGrpc::server(groups, tokens.clone()))
        .add_service(AuditGrpc::server(stores.messages.clone(), tokens.clone()))
        .add_service(KeyGrpc::server(cipher, stores.messages.clone(), stores.reseal.clone(), tokens.clone()))
        .add_optional_service(user_grpc)
        .serve_with_incoming_shutdown(serve::grpc_incoming(&guard, listeners.grpc), shutdown.clone().cancelled_owned());

    readiness.set_serving(true);
    tracing::info!(
        ws = %ws_addr.map_or_else(|| format!("gateway process at {}", config.services.gateway.addr), |a| format!("ws://{a}/ws")),
        grpc = %grpc_addr,
        http = %http_addr,
        store = stores.name,
        data_dir = %data_dir.display(),
        admin_credential = %admin_path.display(),
        "im-service ready"
    );

    let closing = {
        let (shutdown, readiness, gateway) = (shutdown.clone(), readiness.clone(), gateway.clone());
        async move {
            shutdown.cancelled().await;
            readiness.set_serving(false);
            if let Some(gateway) = gateway {
                gateway.close_all();
            }
        }
    };
    let (http_result, ws_result, grpc_result, ()) = tokio::join!(http, ws_server, grpc_server, closing);
    http_result?;
    ws_result.context("WebSocket server")?;
    grpc_result.context("gRPC server")?;

    // Every sender handle is gone with the servers: the pipeline drains what
    // is queued, answers it, and stops; then the router, then the offline
    // publisher. The offline worker last, so it records what was published
    // until the end: it finishes its batch, commits, and leaves its group.
    drop(gateway);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
        tracing::warn!("workers did not stop within {SHUTDOWN_GRACE:?}");
    }
    workers_stop.cancel();
    workers.close();
    if tokio::time::timeout_at(deadline, workers.wait()).await.is_err() {
        tracing::warn!("the bus consumers (offline worker, fan-out) did not stop within {SHUTDOWN_GRACE:?}");
    }
    stores.close().await;
    if let Some(claim) = node_claim {
        claim.release().await;
    }
    tracing::info!("im-service stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The deployment guide's own config.yaml (the im-config fixture), with
    /// the secrets it reads from the environment.
    fn guide_config(wordlist: &std::path::Path) -> Config {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../im-config/tests/fixtures/guide-config.yaml");
        let env: HashMap<String, String> = [
            ("DB_PASSWORD", "db-pass"),
            ("REDIS_PASSWORD", "redis-pass"),
            ("KMS_KEY_ID", "key-42"),
            ("JWT_SECRET", "a-shared-key-of-at-least-32-bytes!"),
            ("ETCD_ENDPOINTS", "etcd-1:2379,etcd-2:2379,etcd-3:2379"),
            ("FILTER_WORDLIST_PATH", wordlist.to_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        im_config::load(Some(std::path::Path::new(fixture)), &env).expect("the guide's config loads")
    }

    /// The guide turns the filter and encryption on: with its word list in
    /// place, nothing is refused before binding.
    #[test]
    fn the_guide_config_passes_the_checks_before_binding() {
        let dir = tempfile::tempdir().unwrap();
        let wordlist = dir.path().join("wordlist.txt");
        std::fs::write(&wordlist, "# the guide's list\nbad\n").unwrap();
        let config = guide_config(&wordlist);
        assert!(config.filter.enabled && config.encryption.enabled);
        assert_eq!(refuse_unsupported(&config), Ok(()));

        let refusal = refuse_unsupported(&guide_config(&dir.path().join("missing.txt"))).unwrap_err();
        assert!(refusal.starts_with("filter.wordlist_path (FILTER_WORDLIST_PATH)"), "{refusal}");
    }
}
