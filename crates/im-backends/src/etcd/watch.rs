//! Keeps a local mirror of one etcd prefix in step with etcd: list every
//! key at one revision, then watch the prefix from the next revision, so no
//! change is missed between the two. When the watch fails (etcd restarted or
//! unreachable, the revision was compacted, or its member has no leader:
//! checked every second) list and watch again. The
//! registry's user → gateways cache and the users' statuses are mirrors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use im_core::error::BackendError;
use im_core::ports::BackendResult;
use tokio::time::{sleep, timeout};
use tracing::{info, warn};

use super::error::{map_etcd, timed_out};
use super::keys::prefix_end;

/// Keys per listing request: bounds each response well under gRPC's 4 MiB.
const PAGE: i64 = 10_000;
const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest pause between listings while etcd is away: how long the view
/// may stay stale (and `/ready` say etcd down) after etcd is back.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How often a live watch asks its member whether it still has a leader.
/// A member that lost its cluster's quorum ends its watches itself only
/// after several election timeouts (about 5 s measured with etcd 3.4's
/// defaults); meanwhile the view cannot change, and users who connect are
/// neither in it nor found by the fallback of a view known to be stale.
const LEADER_CHECK: Duration = Duration::from_secs(1);

/// A local view of the keys under one prefix.
pub(super) trait Mirror: Send + Sync + 'static {
    /// One key (and value) as the view holds it.
    type Entry: Send;
    /// Whether the view needs only the keys (listings then skip values).
    const KEYS_ONLY: bool;

    /// The prefix mirrored; every key starts with it.
    fn prefix(&self) -> &str;
    /// What a key under the prefix means; `None` for one written by
    /// something else (skipped).
    fn parse(&self, key: &[u8], value: &[u8]) -> Option<Self::Entry>;
    /// Replaces the whole view with a fresh listing.
    fn replace_all(&self, entries: Vec<Self::Entry>);
    /// A key was put (or put again: applying twice changes nothing).
    fn put(&self, entry: Self::Entry);
    /// A key was deleted.
    fn delete(&self, key: &[u8]);
}

/// Loads `mirror` from etcd, then keeps it current with a task; returns the
/// flag telling whether a watch is established (for readiness) and the task
/// (aborted by the owner when dropped). Fails when the first listing does.
pub(super) async fn mirror<M: Mirror>(
    client: Client,
    mirror: Arc<M>,
    timeout: Duration,
) -> BackendResult<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)> {
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = Watcher { client, mirror, timeout, watching: watching.clone() };
    let revision = watcher.list().await?;
    Ok((watching, tokio::spawn(watcher.run(revision))))
}

struct Watcher<M: Mirror> {
    client: Client,
    mirror: Arc<M>,
    timeout: Duration,
    /// Whether a watch is established (for readiness).
    watching: Arc<AtomicBool>,
}

impl<M: Mirror> Watcher<M> {
    /// Replaces the mirror with every key, read at one revision (page by
    /// page); returns that revision.
    async fn list(&self) -> BackendResult<i64> {
        let prefix = self.mirror.prefix().as_bytes();
        let end = prefix_end(prefix);
        let mut from = prefix.to_vec();
        let mut revision = None;
        let mut entries = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if M::KEYS_ONLY {
                options = options.with_keys_only();
            }
            if let Some(revision) = revision {
                options = options.with_revision(revision);
            }
            let response = match timeout(self.timeout, self.client.clone().get(from, Some(options))).await {
                Ok(response) => response.map_err(map_etcd)?,
                Err(_) => return Err(timed_out("list")),
            };
            let header = response.header().ok_or_else(|| BackendError::other("etcd range response without header"))?;
            let revision = *revision.get_or_insert(header.revision());
            entries.extend(response.kvs().iter().filter_map(|kv| self.mirror.parse(kv.key(), kv.value())));
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => {
                    self.mirror.replace_all(entries);
                    return Ok(revision);
                }
            }
        }
    }

    /// Watches from after `revision` until the watch fails, then lists and
    /// watches again; runs until aborted.
    async fn run(self, mut revision: i64) {
        let mut retry = RETRY_MIN;
        loop {
            let error = self.watch(revision, &mut retry).await;
            self.watching.store(false, Ordering::Relaxed);
            warn!(prefix = self.mirror.prefix(), %error, "etcd watch ended, listing again");
            loop {
                sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                match self.list().await {
                    Ok(listed) => {
                        revision = listed;
                        break;
                    }
                    Err(e) => warn!(prefix = self.mirror.prefix(), error = %e, "etcd listing failed"),
                }
            }
        }
    }

    /// A read of one key of the prefix, served by the member itself
    /// (serializable), which the client's require-leader flag makes a member
    /// without a leader refuse.
    async fn check_leader(&self) -> BackendResult<()> {
        let options = GetOptions::new().with_prefix().with_keys_only().with_limit(1).with_serializable();
        match timeout(self.timeout, self.client.clone().get(self.mirror.prefix(), Some(options))).await {
            Ok(result) => result.map(drop).map_err(map_etcd),
            Err(_) => Err(timed_out("leader check")),
        }
    }

    /// Applies every change after `revision` to the mirror; returns why it
    /// stopped. Resets `retry` once the watch is established.
    async fn watch(&self, revision: i64, retry: &mut Duration) -> BackendError {
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream =
            match timeout(self.timeout, self.client.clone().watch(self.mirror.prefix(), Some(options))).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return map_etcd(e),
                Err(_) => return timed_out("watch"),
            };
        let mut checks = tokio::time::interval(LEADER_CHECK);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = checks.tick() => match self.check_leader().await {
                    Ok(()) => continue,
                    Err(error) => return error,
                },
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return BackendError::unavailable("etcd closed the watch"),
                Err(e) => return map_etcd(e),
            };
            if response.canceled() {
                return BackendError::unavailable(format!(
                    "etcd cancelled the watch (compacted at {}): {}",
                    response.compact_revision(),
                    response.cancel_reason()
                ));
            }
            if response.created() {
                *retry = RETRY_MIN;
                self.watching.store(true, Ordering::Relaxed);
                info!(prefix = self.mirror.prefix(), from = revision + 1, "etcd watch established");
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => {
                        if let Some(entry) = self.mirror.parse(kv.key(), kv.value()) {
                            self.mirror.put(entry);
                        }
                    }
                    EventType::Delete => self.mirror.delete(kv.key()),
                }
            }
        }
    }
}
