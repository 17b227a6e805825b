//! The store's one writing connection, held for the store's life.
//!
//! Every write takes [`Writer::lock`], a fair queue: writes never contend for
//! SQLite's single write lock inside this process, and a batch needs no retry
//! loop.
//!
//! Why not a sqlx pool of one connection (as before): a pooled connection goes
//! back to the pool through a spawned task that first pings it, a full round
//! trip to the connection's worker thread, and only then can the next caller
//! have it. Every commit paid that second hand-off between a tokio worker and
//! the SQLite thread, and the next commit waited for it: without it, at
//! 10,000 messages a second, the median latency fell by about a quarter and
//! the CPU per message by ~5 % (BENCHMARKS.md, "The writer without a pool").

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use im_core::error::BackendError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Sqlite, Transaction};
use tokio::sync::{Mutex, MutexGuard};
use tracing::warn;

use super::error::map_sqlx;

/// The connection, or why there is none.
#[derive(Debug)]
enum State {
    Open(SqliteConnection),
    /// Dropped after a failure that may have left it mid-transaction; the
    /// next [`Writer::lock`] opens a new one.
    Broken,
    /// [`Writer::close`] ran: every later write fails.
    Closed,
}

/// The one writing connection behind a fair lock.
#[derive(Debug)]
pub(super) struct Writer {
    options: SqliteConnectOptions,
    /// How long a write waits for the connection before it fails as
    /// unavailable (a stuck commit, a long migration).
    wait: Duration,
    state: Mutex<State>,
    /// Set by [`Writer::close`], read without waiting for the lock.
    closed: AtomicBool,
}

/// A locked writer: the connection, for as long as the guard lives.
pub(super) struct WriterGuard<'a>(MutexGuard<'a, State>);

impl Writer {
    /// Opens the connection with `options`.
    pub async fn open(options: SqliteConnectOptions, wait: Duration) -> Result<Self, BackendError> {
        let connection = connect(&options).await?;
        Ok(Self { options, wait, state: Mutex::new(State::Open(connection)), closed: AtomicBool::new(false) })
    }

    /// Waits (at most the configured wait, in arrival order) for the
    /// connection; reopens it if a failure dropped it.
    pub async fn lock(&self) -> Result<WriterGuard<'_>, BackendError> {
        let mut state = tokio::time::timeout(self.wait, self.state.lock())
            .await
            .map_err(|_| map_sqlx(sqlx::Error::PoolTimedOut))?;
        match &*state {
            State::Open(_) => {}
            State::Closed => return Err(map_sqlx(sqlx::Error::PoolClosed)),
            State::Broken => *state = State::Open(connect(&self.options).await?),
        }
        Ok(WriterGuard(state))
    }

    /// Waits for the write in flight, then closes the connection; later
    /// writes fail as unavailable.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut state = self.state.lock().await;
        if let State::Open(connection) = std::mem::replace(&mut *state, State::Closed)
            && let Err(error) = connection.close().await
        {
            warn!(error = %error, "closing the SQLite writer failed");
        }
    }

    /// Whether [`Writer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl WriterGuard<'_> {
    /// Begins a transaction that takes SQLite's write lock up front: a
    /// deferred one that upgrades later fails at once, without waiting, if
    /// another process writes meanwhile. Dropping it rolls back.
    pub async fn begin_immediate(&mut self) -> Result<Transaction<'_, Sqlite>, BackendError> {
        (**self).begin_with("BEGIN IMMEDIATE").await.map_err(map_sqlx)
    }

    /// Drops the connection (it may be left mid-transaction); the next lock
    /// opens a new one.
    pub fn discard(mut self) {
        *self.0 = State::Broken;
    }
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match &*self.0 {
            State::Open(connection) => connection,
            // `lock` hands out a guard only over an open connection, and
            // `discard` consumes the guard.
            State::Broken | State::Closed => unreachable!("a writer guard without a connection"),
        }
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match &mut *self.0 {
            State::Open(connection) => connection,
            State::Broken | State::Closed => unreachable!("a writer guard without a connection"),
        }
    }
}

/// Opens a writing connection: `options`, and the guard table of the
/// one-round-trip append (messages.rs), a row that fails its CHECK when an
/// insert stored fewer rows than given.
async fn connect(options: &SqliteConnectOptions) -> Result<SqliteConnection, BackendError> {
    let mut connection = options.connect().await.map_err(map_sqlx)?;
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS append_guard \
         (stored INTEGER NOT NULL, expected INTEGER NOT NULL, CHECK (stored = expected))",
    )
    .execute(&mut connection)
    .await
    .map_err(map_sqlx)?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn writer(dir: &tempfile::TempDir) -> Writer {
        let options = SqliteConnectOptions::new().filename(dir.path().join("w.db")).create_if_missing(true);
        Writer::open(options, Duration::from_millis(200)).await.unwrap()
    }

    #[tokio::test]
    async fn a_second_write_waits_for_the_first_then_fails_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        let held = writer.lock().await.unwrap();
        assert!(matches!(writer.lock().await.err(), Some(BackendError::Unavailable(_))));
        drop(held);
        assert!(writer.lock().await.is_ok());
    }

    #[tokio::test]
    async fn a_discarded_connection_is_replaced_and_its_transaction_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        let mut conn = writer.lock().await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&mut *conn).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)").execute(&mut *conn).await.unwrap();
        conn.discard();
        let mut conn = writer.lock().await.unwrap();
        // A new connection: not inside the old transaction, whose row is gone.
        sqlx::query("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT").execute(&mut *conn).await.unwrap();
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(rows, 1);
        // The new connection has the append guard too.
        sqlx::query("INSERT INTO temp.append_guard VALUES (1, 1)").execute(&mut *conn).await.unwrap();
    }

    #[tokio::test]
    async fn writes_after_close_fail_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        writer.close().await;
        assert!(matches!(writer.lock().await.err(), Some(BackendError::Unavailable(_))));
    }
}
