//! [`EtcdUserStatusBoard`]: users' standing spread through etcd, so a user
//! disabled (or its tokens revoked) at `im-user` is refused by every node
//! and gateway within the watch latency.
//!
//! Key layout: `{prefix}/user_status/{user_id}`, value `{disabled}:{token
//! generation}` (`1:0` is disabled, `0:3` has its tokens revoked three
//! times), put without a lease: the keys outlive every process. Only users
//! whose status is not the default have a key. The store (`users` table)
//! stays the truth; `im-user` writes it there first and puts every changed
//! user again at each start, so a lost etcd keyspace heals.
//!
//! Every reader keeps the whole prefix in memory (a [`StatusTable`]) with
//! the same list-then-watch as the registry: a token check never waits on
//! etcd, and while etcd is away the last view holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::Client;
use im_config::EtcdConfig;
use im_core::ports::{BackendResult, StatusListener, UserStatusBoard, UserStatusView};
use im_core::{UserId, UserStatus};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::EtcdRegistryOptions;
use super::error::{map_etcd, timed_out};
use super::watch::Mirror;
use crate::memory::user_status::StatusTable;

/// Users' statuses from etcd, kept current by a watch; publishing puts the
/// key and applies it here at once.
pub struct EtcdUserStatusBoard {
    client: Client,
    statuses: Arc<Statuses>,
    watching: Arc<AtomicBool>,
    request_timeout: Duration,
    watch_task: JoinHandle<()>,
}

impl EtcdUserStatusBoard {
    /// Connects, loads every status under `options.prefix`, then watches.
    /// Fails with `Unavailable` when etcd cannot be reached in time.
    pub async fn connect(config: &EtcdConfig, options: &EtcdRegistryOptions) -> BackendResult<Self> {
        let client = super::connect_client(config, options.request_timeout).await?;
        let statuses = Arc::new(Statuses::new(&options.prefix));
        let (watching, watch_task) =
            super::watch::mirror(client.clone(), statuses.clone(), options.request_timeout).await?;
        Ok(Self { client, statuses, watching, request_timeout: options.request_timeout, watch_task })
    }

    /// Whether the view is kept current by a live watch (for `/ready`).
    pub fn is_watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }
}

impl Drop for EtcdUserStatusBoard {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

impl UserStatusView for EtcdUserStatusBoard {
    fn status(&self, user: UserId) -> UserStatus {
        self.statuses.table.status(user)
    }

    fn on_change(&self, listener: StatusListener) {
        self.statuses.table.on_change(listener);
    }
}

#[async_trait]
impl UserStatusBoard for EtcdUserStatusBoard {
    /// Puts (or, for the default status, deletes) the user's key.
    async fn publish(&self, user: UserId, status: UserStatus) -> BackendResult<()> {
        let key = self.statuses.key(user);
        let mut client = self.client.clone();
        let written = if status.is_default() {
            timeout(self.request_timeout, async { client.delete(key, None).await.map(drop) }).await
        } else {
            timeout(self.request_timeout, async { client.put(key, encode(status), None).await.map(drop) }).await
        };
        written.map_err(|_| timed_out("user status"))?.map_err(map_etcd)?;
        self.statuses.table.apply(user, status);
        Ok(())
    }
}

/// The keys under `{prefix}/user_status/`, mirrored into a table.
struct Statuses {
    prefix: String,
    table: StatusTable,
}

impl Statuses {
    fn new(prefix: &str) -> Self {
        Self { prefix: format!("{}/user_status/", prefix.trim_end_matches('/')), table: StatusTable::default() }
    }

    fn key(&self, user: UserId) -> String {
        format!("{}{user}", self.prefix)
    }

    fn user(&self, key: &[u8]) -> Option<UserId> {
        let rest = std::str::from_utf8(key.strip_prefix(self.prefix.as_bytes())?).ok()?;
        rest.parse().ok().map(UserId)
    }
}

fn encode(status: UserStatus) -> String {
    format!("{}:{}", u8::from(status.disabled), status.token_generation)
}

fn decode(value: &[u8]) -> Option<UserStatus> {
    let (disabled, generation) = std::str::from_utf8(value).ok()?.split_once(':')?;
    let disabled = match disabled {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    Some(UserStatus { disabled, token_generation: generation.parse().ok()? })
}

impl Mirror for Statuses {
    type Entry = (UserId, UserStatus);
    const KEYS_ONLY: bool = false;

    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn parse(&self, key: &[u8], value: &[u8]) -> Option<Self::Entry> {
        let user = self.user(key)?;
        match decode(value) {
            Some(status) => Some((user, status)),
            None => {
                tracing::warn!(user = %user, "ignoring a user status in etcd that does not parse");
                None
            }
        }
    }

    fn replace_all(&self, entries: Vec<Self::Entry>) {
        self.table.replace_all(entries);
    }

    fn put(&self, (user, status): Self::Entry) {
        self.table.apply(user, status);
    }

    fn delete(&self, key: &[u8]) {
        if let Some(user) = self.user(key) {
            self.table.apply(user, UserStatus::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_through_its_value_and_bad_values_are_refused() {
        for status in
            [UserStatus { disabled: true, token_generation: 0 }, UserStatus { disabled: false, token_generation: 12 }]
        {
            assert_eq!(decode(encode(status).as_bytes()), Some(status));
        }
        for bad in ["", "1", "2:0", "1:-1", "true:0", "1:0:0"] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn keys_name_their_user_and_foreign_keys_are_skipped() {
        let statuses = Statuses::new("/im/");
        assert_eq!(statuses.key(UserId(42)), "/im/user_status/42");
        assert_eq!(statuses.user(b"/im/user_status/42"), Some(UserId(42)));
        assert_eq!(statuses.user(b"/im/user_status/x"), None);
        assert_eq!(statuses.parse(b"/im/user_status/42", b"nonsense"), None);
    }
}
