//! Which board of users' standing a process uses (the composition roots
//! call [`board`]): etcd when the deployment has it, so what `im-user` (or a
//! node's built-in user directory) publishes reaches every node and gateway;
//! else in process, loaded from the store, because then the one process
//! that owns the users is the only one checking tokens.

use std::sync::Arc;

use anyhow::{Context, bail};
use im_backends::etcd::EtcdUserStatusBoard;
use im_backends::memory::MemoryUserStatusBoard;
use im_config::{Config, RegistryBackend};
use im_core::ports::{UserStatusBoard, UserStatusStore};

use crate::readiness::{Readiness, flag_probe};

/// The board of this process. `store` is the store's statuses when this
/// process owns the users (a node with the built-in directory, `im-user`);
/// `None` in a process that only checks tokens (a gateway, a node with a
/// user service), which must then reach the others through etcd.
pub async fn board(
    config: &Config,
    store: Option<&Arc<dyn UserStatusStore>>,
    readiness: &mut Readiness,
) -> anyhow::Result<Arc<dyn UserStatusBoard>> {
    match config.registry() {
        RegistryBackend::Etcd { .. } => {
            let board = Arc::new(
                EtcdUserStatusBoard::connect(&config.etcd, &crate::app::etcd_options(config))
                    .await
                    .context("loading users' statuses from etcd (ETCD_ENDPOINTS)")?,
            );
            // Degrading only: the last view holds while etcd is away (a
            // user stopped meanwhile is refused once it is back).
            let watched = board.clone();
            readiness.add_degrading(
                "user-status",
                flag_probe(move || watched.is_watching(), "the user status watch is down"),
            );
            Ok(board)
        }
        RegistryBackend::InProcess => {
            let Some(store) = store else {
                bail!(
                    "etcd.endpoints (ETCD_ENDPOINTS) must be set: users disabled or whose tokens are revoked at \
                     the user service are made known to every process through etcd"
                );
            };
            let statuses = store.changed_user_statuses().await.context("loading users' statuses from the store")?;
            Ok(Arc::new(MemoryUserStatusBoard::new(statuses)))
        }
    }
}
