//! [`SentinelPrimary`]: the Redis primary that Sentinels name, and one
//! connection to it, asked again when the primary seems to have moved.
//!
//! Sentinels watch the primary and its replicas; when the primary fails they
//! promote a replica and name it from then on. A caller here holds a
//! [`Primary`] for one call; when that call fails in a way a failover
//! explains (the connection is refused or dropped, no reply, `READONLY` from
//! a demoted primary) it marks the primary [`stale`](SentinelPrimary::failed),
//! and the next call asks the Sentinels again before it runs. The same
//! address keeps its connection (which reconnects by itself); a new one gets
//! a new connection.
//!
//! Seqs stay safe across a promotion without anything here: the promoted
//! replica is another server process, so the allocator sees a new `run_id`
//! and bumps its epoch, exactly as after a restore from a snapshot
//! (`redis/mod.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{ConnectionAddr, RedisError};
use im_config::RedisConfig;
use im_core::error::BackendError;
use im_core::ports::BackendResult;
use parking_lot::RwLock;
use tracing::{info, warn};

use super::connection::parse_addr;
use crate::telemetry::dependency_metrics;

/// After a failed look-up, callers get its error without asking again for
/// this long: while the Sentinels still name a primary that is down, every
/// call would otherwise try it once more.
const LOOKUP_BACKOFF: Duration = Duration::from_millis(100);

/// The primary one call runs on.
pub(super) struct Primary {
    pub(super) manager: ConnectionManager,
    /// `host:port`, as the Sentinels name it.
    pub(super) addr: String,
    /// Set by a call that failed as if the primary had moved.
    stale: AtomicBool,
}

pub(super) struct SentinelPrimary {
    lookup: tokio::sync::Mutex<Lookup>,
    current: RwLock<Option<Arc<Primary>>>,
    manager_config: ConnectionManagerConfig,
    /// Bound on one look-up: the Sentinels' answers and the check that the
    /// primary they name says it is one (`ROLE`).
    lookup_timeout: Duration,
    master_name: String,
}

/// Held by the one caller that asks the Sentinels at a time.
struct Lookup {
    client: SentinelClient,
    last_failure: Option<(Instant, String)>,
}

impl SentinelPrimary {
    /// Prepares the look-up; nothing connects until the first call, so
    /// Sentinels that are down at start-up do not stop the process.
    pub(super) fn new(config: &RedisConfig, manager_config: ConnectionManagerConfig) -> BackendResult<Self> {
        let sentinels = config
            .sentinels
            .iter()
            .map(|sentinel| parse_addr(sentinel).map(|(host, port)| ConnectionAddr::Tcp(host, port)))
            .collect::<BackendResult<Vec<_>>>()?;
        let bad = |e: RedisError| BackendError::other(format!("redis.sentinels: {e}"));
        let mut builder = SentinelClientBuilder::new(sentinels, &config.master_name, SentinelServerType::Master)
            .map_err(bad)?
            .set_client_to_redis_db(i64::from(config.db));
        if !config.password.is_empty() {
            builder = builder.set_client_to_redis_password(config.password.expose());
        }
        if !config.sentinel_password.is_empty() {
            builder = builder.set_client_to_sentinel_password(config.sentinel_password.expose());
        }
        let client = builder.build().map_err(bad)?;
        Ok(Self {
            lookup: tokio::sync::Mutex::new(Lookup { client, last_failure: None }),
            current: RwLock::new(None),
            manager_config,
            lookup_timeout: config.dial_timeout,
            master_name: config.master_name.clone(),
        })
    }

    /// The primary to run the next call on: the one in use, or the one the
    /// Sentinels name now if there is none or it was marked stale.
    pub(super) async fn primary(&self) -> BackendResult<Arc<Primary>> {
        if let Some(primary) = self.fresh() {
            return Ok(primary);
        }
        let mut lookup = self.lookup.lock().await;
        // Another caller may have asked while this one waited for the lock.
        if let Some(primary) = self.fresh() {
            return Ok(primary);
        }
        if let Some((at, error)) = &lookup.last_failure
            && at.elapsed() < LOOKUP_BACKOFF
        {
            return Err(BackendError::unavailable(error.clone()));
        }
        let found = match tokio::time::timeout(self.lookup_timeout, lookup.client.async_get_client()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(format!("the redis sentinels name no reachable primary {:?}: {e}", self.master_name)),
            Err(_) => Err(format!(
                "the redis sentinels did not name a primary {:?} within {:?}",
                self.master_name, self.lookup_timeout
            )),
        };
        let client = match found {
            Ok(client) => client,
            Err(error) => {
                lookup.last_failure = Some((Instant::now(), error.clone()));
                return Err(BackendError::unavailable(error));
            }
        };
        lookup.last_failure = None;
        let addr = client.get_connection_info().addr().to_string();
        let mut current = self.current.write();
        if let Some(primary) = current.as_ref().filter(|primary| primary.addr == addr) {
            primary.stale.store(false, Ordering::Release);
            return Ok(primary.clone());
        }
        let manager = ConnectionManager::new_lazy_with_config(client, self.manager_config.clone())
            .map_err(|e| BackendError::other(format!("redis primary {addr}: {e}")))?;
        match current.as_ref() {
            Some(old) => {
                warn!(old = %old.addr, new = %addr, master = %self.master_name, "the redis primary moved");
                dependency_metrics().redis_primary_changes.inc();
            }
            None => info!(primary = %addr, master = %self.master_name, "redis primary named by the sentinels"),
        }
        let primary = Arc::new(Primary { manager, addr, stale: AtomicBool::new(false) });
        *current = Some(primary.clone());
        Ok(primary)
    }

    /// `primary` failed as if it were no longer the primary: the next call
    /// asks the Sentinels again.
    pub(super) fn failed(&self, primary: &Primary) {
        primary.stale.store(true, Ordering::Release);
    }

    fn fresh(&self) -> Option<Arc<Primary>> {
        self.current.read().as_ref().filter(|primary| !primary.stale.load(Ordering::Acquire)).cloned()
    }
}

impl Primary {
    /// A primary at a fixed address, never looked up again.
    pub(super) fn fixed(manager: ConnectionManager, addr: String) -> Self {
        Self { manager, addr, stale: AtomicBool::new(false) }
    }
}
