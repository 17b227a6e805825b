//! [`EtcdRegistry`]: the `Registry` port on etcd (v3 API), the production
//! column of DESIGN.md §1 — every `im-service` node sees which gateways each
//! user is connected to, and a gateway that dies drops out by itself.
//!
//! Key layout: `{prefix}/users/{user_id}/{gateway_id}`, value empty.
//!
//! - Reading (`gateways_of`, on every push) never goes to etcd: it reads a
//!   local cache that a watch keeps current (`watch`): list the prefix at one
//!   revision, watch from the next; when the watch fails, list and watch again.
//!   The cache is eventually consistent; this process's own writes are applied
//!   to it at once, other nodes' within the watch latency (milliseconds).
//!   While the watch is down, a user the view does not have is looked for on
//!   every gateway the view names (a user who connected during an etcd
//!   outage still gets pushes).
//! - Writing (`register`, `unregister`) puts and deletes keys under **one
//!   lease per process** (`lease`), granted on the first registration and kept
//!   alive by a task. A process that dies stops the keep-alives, and etcd
//!   deletes all its keys when the TTL runs out. A lease lost while the
//!   process lives (etcd away for longer than the TTL) is replaced and every
//!   key this process holds is put again. A registration or removal that
//!   failed for want of etcd is retried by the lease task once etcd answers
//!   again, so users who connect during an outage are registered when it
//!   ends. A process that only reads
//!   (`im-service`) never registers, so it never holds a lease.
//! - Several members (`etcd.endpoints`): every client talks to one member
//!   at a time and moves to the next when it is down, hangs or has no
//!   leader (`failover`). Losing one member of three costs a registration
//!   about an election (1-2 s after a leader died); losing the quorum
//!   degrades as an etcd outage does (above).
//!
//! Files: `connect` (client options from `etcd.*`: plain or TLS, for every
//! client here), `failover` (one member at a time, the next when it fails),
//! `cache` (the local view), `keys` (the layout), `lease` (the
//! registering side), `watch` (list + watch), `error` (etcd errors as
//! [`BackendError`](im_core::error::BackendError)), `claim` ([`NodeClaim`]:
//! a node's `NODE_ID` held under a lease, `{prefix}/nodes/{id}`),
//! `user_status` ([`EtcdUserStatusBoard`]: users' standing,
//! `{prefix}/user_status/{id}`, mirrored by the same list + watch).

mod cache;
mod claim;
mod connect;
mod error;
mod failover;
mod keys;
mod lease;
mod user_status;
mod watch;

pub use claim::NodeClaim;
pub use user_status::EtcdUserStatusBoard;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::Client;
use im_config::EtcdConfig;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, Registry};
use im_core::{GatewayId, UserId};
use tokio::task::JoinHandle;

use self::cache::Cache;
use self::keys::Keys;
use self::lease::Registrar;
use self::watch::Mirror;

/// How an [`EtcdRegistry`] uses etcd, beyond the endpoints.
#[derive(Clone, Debug)]
pub struct EtcdRegistryOptions {
    /// Every key starts with `{prefix}/users/`; deployments (or test cases)
    /// sharing an etcd cluster use different prefixes.
    pub prefix: String,
    /// How long the users of a gateway that died still look connected. Whole
    /// seconds, at least 1 (etcd may raise a very short TTL to its minimum).
    pub lease_ttl: Duration,
    /// Bound on each etcd request, and on waiting for a lease, so calls fail
    /// fast with `Unavailable` while etcd is down (G9).
    pub request_timeout: Duration,
}

impl Default for EtcdRegistryOptions {
    fn default() -> Self {
        Self { prefix: "/im".to_owned(), lease_ttl: Duration::from_secs(10), request_timeout: Duration::from_secs(3) }
    }
}

/// User → gateways in etcd: registrations under a lease this process keeps
/// alive, lookups from a watched local cache (see the [module docs](self)).
///
/// Dropping it stops the keep-alives without deleting anything: its keys
/// vanish after the lease TTL, as if the process had died. For a graceful
/// shutdown call [`EtcdRegistry::revoke`] first.
pub struct EtcdRegistry {
    registrations: Arc<Registrations>,
    registrar: Arc<Registrar>,
    watching: Arc<AtomicBool>,
    watch_task: JoinHandle<()>,
}

impl EtcdRegistry {
    /// Connects to etcd and loads every registration under `options.prefix`
    /// into the local view, then keeps it current with a watch. Fails with
    /// `Unavailable` when etcd cannot be reached within the request timeout.
    /// No lease is taken until the first [`Registry::register`].
    pub async fn connect(config: &EtcdConfig, options: EtcdRegistryOptions) -> BackendResult<Self> {
        if options.lease_ttl < Duration::from_secs(1) {
            return Err(BackendError::other("the etcd lease TTL must be at least one second"));
        }
        let client = connect_client(config, options.request_timeout).await?;

        let registrations = Arc::new(Registrations { keys: Keys::new(&options.prefix), cache: Cache::new() });
        let (watching, watch_task) =
            watch::mirror(client.clone(), registrations.clone(), options.request_timeout).await?;
        let registrar = Arc::new(Registrar::new(client, options.lease_ttl, options.request_timeout));
        Ok(Self { registrations, registrar, watching, watch_task })
    }

    /// Whether the local view is being kept current by a live watch (for
    /// `/ready`): false while etcd is unreachable and the view may be stale.
    pub fn is_watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// Deregisters every user this process registered, at once, by revoking
    /// its lease (graceful shutdown). A later `register` takes a new lease.
    pub async fn revoke(&self) -> BackendResult<()> {
        self.registrar.revoke().await
    }
}

impl Drop for EtcdRegistry {
    fn drop(&mut self) {
        self.watch_task.abort();
        self.registrar.stop();
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    /// Records that `user` has a device on `gateway`.
    async fn register(&self, user: UserId, gateway: &GatewayId) -> BackendResult<()> {
        self.registrar.put(self.registrations.keys.registration(user, gateway)).await?;
        self.registrations.cache.add(user, gateway.clone());
        Ok(())
    }

    /// Removes the record for `user` on `gateway` (its last device left).
    async fn unregister(&self, user: UserId, gateway: &GatewayId) -> BackendResult<()> {
        self.registrar.delete(&self.registrations.keys.registration(user, gateway)).await?;
        self.registrations.cache.remove(user, gateway);
        Ok(())
    }

    /// The gateways `user` is connected to, from a local view (no round trip
    /// per message in production: a watched cache).
    fn gateways_of(&self, user: UserId) -> Vec<GatewayId> {
        let cache = &self.registrations.cache;
        let gateways = cache.gateways_of(user);
        if gateways.is_empty() && !self.is_watching() {
            // The view cannot be kept current (etcd away): the user may have
            // connected since. Every gateway the last view named is asked;
            // those the user is not on answer "offline", as for anyone.
            return cache.gateways();
        }
        gateways
    }
}

/// A client for watching and writing: connects within `request_timeout`.
async fn connect_client(config: &EtcdConfig, request_timeout: Duration) -> BackendResult<Client> {
    let options = connect::base_options(config)?
        .with_connect_timeout(request_timeout)
        // HTTP/2 pings: a watch on a connection that died silently fails
        // within this bound instead of waiting forever.
        .with_keep_alive(Duration::from_secs(5), request_timeout)
        // A member cut off from its cluster's leader refuses requests (and
        // ends watches) instead of serving stale data.
        .with_require_leader(true);
    connect::connect(config, options, request_timeout).await
}

/// The registrations under `{prefix}/users/`, mirrored into the cache.
struct Registrations {
    keys: Keys,
    cache: Cache,
}

impl Mirror for Registrations {
    type Entry = (UserId, GatewayId);
    const KEYS_ONLY: bool = true;

    fn prefix(&self) -> &str {
        self.keys.users()
    }

    fn parse(&self, key: &[u8], _value: &[u8]) -> Option<Self::Entry> {
        self.keys.parse(key)
    }

    fn replace_all(&self, entries: Vec<Self::Entry>) {
        self.cache.replace_all(entries);
    }

    fn put(&self, (user, gateway): Self::Entry) {
        self.cache.add(user, gateway);
    }

    fn delete(&self, key: &[u8]) {
        if let Some((user, gateway)) = self.keys.parse(key) {
            self.cache.remove(user, &gateway);
        }
    }
}
