//! The composition root of an `im-user` process: the user directory
//! (`im.user.v1`) over the configured store, on the port of
//! `services.user.addr` (9096 by the guide).

use std::sync::Arc;

use anyhow::{Context, bail};
use im_config::Config;
use im_user::UserDirectory;
use im_user::grpc::UserGrpc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bootstrap;
use crate::http::HttpState;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::serve;
use crate::stores::Stores;

/// The sockets of a user-service process.
pub struct UserListeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl UserListeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
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

/// Runs the user service until `shutdown`.
pub async fn run(config: Config, listeners: UserListeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    bootstrap::data_dir(&config.server.data_dir)?;
    let tokens = bootstrap::token_secret(config.jwt_key_source(), &config.server.jwt_secret_path())?;
    let stores = Stores::open(&config).await?;
    let directory = UserDirectory::new(stores.users.clone(), tokens.clone(), config.auth.token_ttl);
    let admin_path = config.server.admin_credential_path();
    bootstrap::admin_credential(&tokens, &admin_path)?;

    let mut readiness = Readiness::default();
    readiness.add(stores.name, stores.probe());
    let readiness = Arc::new(readiness);
    let http_state =
        HttpState { metrics: Arc::new(Metrics::new()), readiness: readiness.clone(), before_scrape: Arc::new(|_| {}) };
    let grpc_addr = listeners.grpc.local_addr()?;
    let http = serve::http(
        listeners.http,
        listeners.metrics,
        http_state,
        config.observability.metrics_enabled,
        shutdown.clone(),
    );
    let grpc = tonic::transport::Server::builder()
        .add_service(UserGrpc::new(directory).into_server())
        .serve_with_incoming_shutdown(serve::grpc_incoming(listeners.grpc), shutdown.clone().cancelled_owned());

    readiness.set_serving(true);
    tracing::info!(grpc = %grpc_addr, store = stores.name, admin_credential = %admin_path.display(), "im-user ready");
    let (http_result, grpc_result) = tokio::join!(http, grpc);
    readiness.set_serving(false);
    http_result?;
    grpc_result.context("gRPC server")?;
    stores.close().await;
    tracing::info!("im-user stopped");
    Ok(())
}
