//! The connection pool to the primary, replaced when the server behind
//! `DB_HOST` refuses writes as read-only: the pool follows a failover without
//! a restart.
//!
//! Operators fail over by repointing `DB_HOST` (DNS, or a proxy such as
//! ProxySQL, HAProxy or a Kubernetes Service) at the promoted replica. A proxy
//! that closes its relayed connections needs nothing more: the calls on them
//! fail (`Unavailable`), sqlx drops broken connections, and new ones reach the
//! new primary. But connections that stay open still lead to the old server,
//! and sqlx keeps a pooled connection until it breaks or reaches
//! `conn_max_lifetime`; its ping (as each call ends) succeeds on a demoted
//! primary that is still alive. So when a statement is refused because the
//! server is read-only (`ER_OPTION_PREVENTS_STATEMENT`, `ER_READ_ONLY_MODE`:
//! a demoted primary, a replica), the pool is swapped for a new one built
//! from the same options, whose connections look `DB_HOST` up and dial it
//! again, and the old pool is closed in the background (closing waits for the
//! connections in use: the calls on them end, `Unavailable`, and retry).
//!
//! At most one swap per [`RESET_INTERVAL`]: while `DB_HOST` still leads to
//! the read-only server, every new pool meets the same refusal, and the
//! readiness probe (a write) keeps finding it even without traffic. Each
//! swap counts in `im_db_pool_resets_total`.
//!
//! The refusal is classified in `error::map_sqlx`, which every statement's
//! error goes through but which has no store at hand: [`PrimaryPool::watch`]
//! scopes a task-local flag around one call, which [`note_read_only`] raises.

use std::cell::Cell;
use std::fmt;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::telemetry::dependency_metrics;

/// The shortest time between two swaps of the pool.
pub(super) const RESET_INTERVAL: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// Raised when the server refused a statement of the watched call as
    /// read-only.
    static REFUSED_AS_READ_ONLY: Cell<bool>;
}

/// Records that the server refused a statement as read-only. Outside
/// [`PrimaryPool::watch`] (preparing the database at start), it does nothing.
pub(super) fn note_read_only() {
    let _ = REFUSED_AS_READ_ONLY.try_with(|refused| refused.set(true));
}

/// The pool of connections to the server `DB_HOST` leads to now.
pub(super) struct PrimaryPool {
    current: RwLock<MySqlPool>,
    /// What a replacement is built from.
    options: MySqlPoolOptions,
    /// Holds the password: never printed (see the `Debug` impl).
    connect: MySqlConnectOptions,
    last_reset: Mutex<Option<Instant>>,
}

impl PrimaryPool {
    /// A pool of `options` to `connect`, connected already (`first`) so that
    /// the start fails when the server cannot be reached.
    pub(super) fn new(first: MySqlPool, options: MySqlPoolOptions, connect: MySqlConnectOptions) -> Self {
        PrimaryPool { current: RwLock::new(first), options, connect, last_reset: Mutex::new(None) }
    }

    /// The pool to use now. Cheap: pools are shared handles.
    pub(super) fn get(&self) -> MySqlPool {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `call`; when the server refused one of its statements as
    /// read-only, swaps the pool (rate-limited) before returning its result.
    pub(super) async fn watch<T>(&self, call: impl Future<Output = T>) -> T {
        let (output, refused) = REFUSED_AS_READ_ONLY
            .scope(Cell::new(false), async {
                let output = call.await;
                (output, REFUSED_AS_READ_ONLY.with(Cell::get))
            })
            .await;
        if refused {
            self.reset(Instant::now());
        }
        output
    }

    /// Swaps in a new pool unless the last swap was under [`RESET_INTERVAL`]
    /// ago; returns whether it did.
    fn reset(&self, now: Instant) -> bool {
        {
            let mut last = self.last_reset.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|last| now.duration_since(last) < RESET_INTERVAL) {
                return false;
            }
            *last = Some(now);
        }
        // Lazy: no connection is opened here (this runs on a failing call);
        // the next call opens one, to wherever DB_HOST leads then.
        let fresh = self.options.clone().connect_lazy_with(self.connect.clone());
        let old = std::mem::replace(&mut *self.current.write().unwrap_or_else(PoisonError::into_inner), fresh);
        tracing::warn!(
            "mysql refused a write as read-only (a demoted primary or a replica): \
             dropping every pooled connection and connecting to database.host again"
        );
        dependency_metrics().db_pool_resets.inc();
        tokio::spawn(async move { old.close().await });
        true
    }

    /// Closes the current pool, waiting for statements in flight.
    pub(super) async fn close(&self) {
        self.get().close().await;
    }
}

impl fmt::Debug for PrimaryPool {
    /// Without the connect options: they hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrimaryPool").field("current", &self.get()).field("options", &self.options).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool that never connects: nothing listens on port 1 and no
    /// connection is opened before a call.
    fn unreachable() -> PrimaryPool {
        let options = MySqlPoolOptions::new().max_connections(1);
        let connect = MySqlConnectOptions::new().host("127.0.0.1").port(1).password("secret-password");
        PrimaryPool::new(options.clone().connect_lazy_with(connect.clone()), options, connect)
    }

    /// Lets the task that closes a replaced pool run.
    async fn closed_in_the_background(pool: &MySqlPool) -> bool {
        for _ in 0..100 {
            if pool.is_closed() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_read_only_refusal_swaps_the_pool_and_closes_the_old_one() {
        let primary = unreachable();
        let old = primary.get();
        let answer = primary
            .watch(async {
                note_read_only();
                7
            })
            .await;
        assert_eq!(answer, 7);
        assert!(closed_in_the_background(&old).await, "the old pool was not closed");
        assert!(!primary.get().is_closed(), "the pool in use is the new one");
    }

    #[tokio::test]
    async fn other_calls_keep_the_pool() {
        let primary = unreachable();
        let old = primary.get();
        primary.watch(async {}).await;
        // Outside a watched call the note goes nowhere.
        note_read_only();
        assert!(!closed_in_the_background(&old).await);
    }

    #[tokio::test]
    async fn swaps_are_rate_limited() {
        let primary = unreachable();
        let start = Instant::now();
        assert!(primary.reset(start));
        assert!(!primary.reset(start + RESET_INTERVAL / 2));
        assert!(primary.reset(start + RESET_INTERVAL));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let shown = tokio::runtime::Runtime::new().unwrap().block_on(async { format!("{:?}", unreachable()) });
        assert!(!shown.contains("secret-password"), "{shown}");
    }
}
