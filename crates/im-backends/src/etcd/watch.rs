//! Keeps the [`Cache`] in step with etcd: list every registration at one
//! revision, then watch the prefix from the next revision, so no change is
//! missed between the two. When the watch fails (etcd restarted or
//! unreachable, the revision was compacted) list and watch again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use im_core::error::BackendError;
use im_core::ports::BackendResult;
use tokio::time::{sleep, timeout};
use tracing::{info, warn};

use super::cache::Cache;
use super::error::{map_etcd, timed_out};
use super::keys::{Keys, prefix_end};

/// Keys per listing request: bounds each response well under gRPC's 4 MiB.
const PAGE: i64 = 10_000;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub(super) struct Watcher {
    pub client: Client,
    pub keys: Keys,
    pub cache: Arc<Cache>,
    pub timeout: Duration,
    /// Whether a watch is established (for readiness).
    pub watching: Arc<AtomicBool>,
}

impl Watcher {
    /// Replaces the cache with every registration, read at one revision
    /// (page by page); returns that revision.
    pub async fn list(&self) -> BackendResult<i64> {
        let prefix = self.keys.users().as_bytes();
        let end = prefix_end(prefix);
        let mut from = prefix.to_vec();
        let mut revision = None;
        let mut entries = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_keys_only().with_limit(PAGE);
            if let Some(revision) = revision {
                options = options.with_revision(revision);
            }
            let response = match timeout(self.timeout, self.client.clone().get(from, Some(options))).await {
                Ok(response) => response.map_err(map_etcd)?,
                Err(_) => return Err(timed_out("list")),
            };
            let header = response.header().ok_or_else(|| BackendError::other("etcd range response without header"))?;
            let revision = *revision.get_or_insert(header.revision());
            entries.extend(response.kvs().iter().filter_map(|kv| self.keys.parse(kv.key())));
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => {
                    self.cache.replace_all(entries);
                    return Ok(revision);
                }
            }
        }
    }

    /// Watches from after `revision` until the watch fails, then lists and
    /// watches again; runs until aborted.
    pub async fn run(self, mut revision: i64) {
        let mut retry = RETRY_MIN;
        loop {
            let error = self.watch(revision, &mut retry).await;
            self.watching.store(false, Ordering::Relaxed);
            warn!(prefix = self.keys.users(), %error, "registry watch ended, listing again");
            loop {
                sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                match self.list().await {
                    Ok(listed) => {
                        revision = listed;
                        break;
                    }
                    Err(e) => warn!(prefix = self.keys.users(), error = %e, "registry listing failed"),
                }
            }
        }
    }

    /// Applies every change after `revision` to the cache; returns why it
    /// stopped. Resets `retry` once the watch is established.
    async fn watch(&self, revision: i64, retry: &mut Duration) -> BackendError {
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = match timeout(self.timeout, self.client.clone().watch(self.keys.users(), Some(options))).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return map_etcd(e),
            Err(_) => return timed_out("watch"),
        };
        loop {
            let response = match stream.message().await {
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
                info!(prefix = self.keys.users(), from = revision + 1, "registry watch established");
            }
            for event in response.events() {
                let Some((user, gateway)) = event.kv().and_then(|kv| self.keys.parse(kv.key())) else { continue };
                match event.event_type() {
                    EventType::Put => self.cache.add(user, gateway),
                    EventType::Delete => self.cache.remove(user, &gateway),
                }
            }
        }
    }
}
