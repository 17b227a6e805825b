//! The composition root of an `im-user` process: the user directory and the
//! group directory (`im.user.v1`) over the configured store, on the port of
//! `services.user.addr` (9096 by the guide). Group changes are published on
//! Kafka's `membership_change` for every im-service node.

use std::sync::Arc;

use anyhow::{Context, bail};
use im_config::{BusBackend, Config, KafkaConfig, RegistryBackend};
use im_user::UserDirectory;
use im_user::groups::GroupService;
use im_user::groups::grpc::GroupDirectoryGrpc;
use im_user::grpc::UserGrpc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bootstrap;
use crate::bus::kafka_bus;
use crate::http::HttpState;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::serve;
use crate::stores::Stores;
use crate::user_statuses;

/// The sockets of a user-service process.
pub struct UserListeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub metrics: Option<TcpListener>,
}

/// The bus im-user publishes group changes on. Only Kafka will do: an
/// in-process bus would keep them in this process, and the im-service nodes'
/// membership caches would never hear of them.
fn kafka(config: &Config) -> anyhow::Result<&KafkaConfig> {
    match config.bus() {
        BusBackend::Kafka(kafka) => Ok(kafka),
        BusBackend::InProcess => bail!(
            "kafka.brokers (KAFKA_BROKERS) must be set for im-user: it publishes group membership changes on \
             kafka.topics.membership_change, and without Kafka no im-service node would hear of them"
        ),
    }
}

/// im-user spreads users' statuses (disabled, tokens revoked) through etcd:
/// without it the nodes and gateways would never hear of them.
fn require_etcd(config: &Config) -> anyhow::Result<()> {
    match config.registry() {
        RegistryBackend::Etcd { .. } => Ok(()),
        RegistryBackend::InProcess => bail!(
            "etcd.endpoints (ETCD_ENDPOINTS) must be set for im-user: users disabled or whose tokens are revoked \
             are made known to every im-service node and im-gateway through etcd"
        ),
    }
}

impl UserListeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        // Refused before anything is bound, like every other bad setting.
        kafka(config)?;
        require_etcd(config)?;
        let addr = &config.services.user.addr;
        if addr.is_empty() {
            bail!("services.user.addr (USER_SERVICE_ADDR) must be this service's address, host:port");
        }
        let port = serve::port_of(addr, "services.user.addr (USER_SERVICE_ADDR)")?;
        Ok(Self {
            grpc: serve::bind(config, port, "services.user.addr (USER_SERVICE_ADDR)").await?,
            http: serve::bind(config, config.server.http_port, "server.http_port (SERVER_HTTP_PORT)").await?,
            metrics: serve::bind_metrics(config).await?,
        })
    }
}

/// What a scrape of im-user's `/metrics` reads from the group service.
fn scrape_groups(groups: Arc<GroupService>) -> Arc<dyn Fn(&Metrics) + Send + Sync> {
    Arc::new(move |metrics: &Metrics| {
        metrics.membership_unpublished.set(i64::try_from(groups.unpublished_changes()).unwrap_or(i64::MAX));
    })
}

/// Runs the user service until `shutdown`.
/// The caller holds the data directory ([`crate::bootstrap::data_dir`]), as
/// `cli` does before any port is bound.
pub async fn run(config: Config, listeners: UserListeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let kafka = kafka(&config)?;
    require_etcd(&config)?;
    let tokens = bootstrap::token_secret(config.jwt_key_source(), &config.server.jwt_secret_path())?;
    let stores = Stores::open(&config).await?;
    let mut readiness = Readiness::default();
    readiness.add(stores.name, stores.probe(&config));
    let statuses = user_statuses::board(&config, Some(&stores.statuses), &mut readiness).await?;
    let directory = UserDirectory::new(
        stores.users.clone(),
        stores.statuses.clone(),
        statuses,
        crate::stores::passwords(&config, &stores)?,
        tokens.clone(),
        config.auth.token_ttl,
    );
    crate::app::publish_statuses(&directory).await;
    let admin_path = config.server.admin_credential_path();
    bootstrap::admin_credential(&tokens, &admin_path)?;

    let bus = kafka_bus(kafka, &mut readiness).await?;
    let groups = Arc::new(GroupService::new(
        stores.groups.clone(),
        bus,
        kafka.topics.membership_change.clone(),
        config.group.max_members,
    ));
    let readiness = Arc::new(readiness);
    let metrics = Arc::new(Metrics::new());
    let guard = serve::connection_guard(&config, &metrics)?;
    let http_state = HttpState { metrics, readiness: readiness.clone(), before_scrape: scrape_groups(groups.clone()) };
    let grpc_addr = listeners.grpc.local_addr()?;
    let http = serve::http(
        &guard,
        listeners.http,
        listeners.metrics,
        http_state,
        config.observability.metrics_enabled,
        shutdown.clone(),
    );
    let grpc = serve::grpc_server(serve::internal_only)
        .add_service(UserGrpc::new(directory).into_server())
        .add_service(GroupDirectoryGrpc::new(groups, tokens.clone()).into_server())
        .serve_with_incoming_shutdown(serve::grpc_incoming(&guard, listeners.grpc), shutdown.clone().cancelled_owned());

    readiness.set_serving(true);
    tracing::info!(
        grpc = %grpc_addr,
        store = stores.name,
        membership_change = %kafka.topics.membership_change,
        admin_credential = %admin_path.display(),
        "im-user ready"
    );
    let (http_result, grpc_result) = tokio::join!(http, grpc);
    readiness.set_serving(false);
    http_result?;
    grpc_result.context("gRPC server")?;
    stores.close().await;
    tracing::info!("im-user stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use bytes::Bytes;
    use im_backends::sqlite::SqliteStore;
    use im_core::error::BackendError;
    use im_core::group::NewGroup;
    use im_core::ports::{BackendResult, Bus, BusConsumer, CreateUser, GroupDirectory, RecordHeaders, UserStore};

    use super::*;

    /// A broker that is down for good.
    struct DownBus;

    #[async_trait]
    impl Bus for DownBus {
        async fn publish_with_headers(&self, _: &str, _: Bytes, _: Bytes, _: RecordHeaders) -> BackendResult<()> {
            Err(BackendError::unavailable("broker down"))
        }
        async fn subscribe(&self, _: &str, _: &str) -> BackendResult<Box<dyn BusConsumer>> {
            Err(BackendError::unavailable("broker down"))
        }
    }

    #[tokio::test]
    async fn im_user_without_etcd_is_refused_before_binding_anything() {
        let env: std::collections::HashMap<String, String> = [
            ("KAFKA_BROKERS", "127.0.0.1:9092"),
            ("USER_SERVICE_ADDR", "127.0.0.1:1"),
            ("JWT_SECRET", "a-shared-key-of-at-least-32-bytes!"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = im_config::load(None, &env).unwrap();
        let refusal = UserListeners::bind(&config).await.err().expect("refused").to_string();
        assert!(refusal.contains("ETCD_ENDPOINTS"), "{refusal}");
    }

    #[tokio::test]
    async fn a_change_that_was_never_published_shows_on_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("im.db")).await.unwrap());
        let mut users = Vec::new();
        for name in ["owner", "member"] {
            let CreateUser::Created(user) = store.create_user(name).await.unwrap() else { panic!("{name} taken") };
            users.push(user.id);
        }
        let groups = Arc::new(GroupService::new(store, Arc::new(DownBus), "membership_change".into(), 10));
        let metrics = Metrics::new();
        let scrape = scrape_groups(groups.clone());

        scrape(&metrics);
        assert!(metrics.render().contains("im_membership_unpublished 0"), "{}", metrics.render());

        let group = NewGroup {
            name: "ops".into(),
            owner: users[0],
            members: vec![users[1]],
            history_visible: false,
            created_at_ms: 1,
        };
        groups.create_group(group).await.expect("stored although the broker is down");
        scrape(&metrics);
        assert!(metrics.render().contains("im_membership_unpublished 1"), "{}", metrics.render());
    }
}
