//! The embedded durable store: one SQLite file holds the message timeline,
//! read positions, seq ceilings and users.
//!
//! - `error`: sqlx errors to [`BackendError`].
//! - `columns`: domain values to and from SQLite columns.
//! - `multi_row`: multi-row statements in power-of-two chunks.
//! - `messages`, `receipts`, `ceilings`, `users`: one port each.
//!
//! Writes go through a pool of exactly one connection, so they never contend
//! for SQLite's single write lock inside this process and a batch needs no
//! retry loop; reads use their own pool, so a sync or a conversation list never
//! waits behind a commit (WAL lets readers run beside the writer). Every commit
//! is fsynced (`synchronous=FULL`): an ack means the message is on disk (G1).

mod ceilings;
mod columns;
mod error;
mod messages;
mod multi_row;
mod receipts;
mod users;

use std::path::Path;
use std::time::Duration;

use im_core::error::BackendError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use self::error::map_sqlx;
use self::messages::AppendStatements;

/// How long a statement waits for a lock held by another process (a backup,
/// an admin tool) before it fails as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call waits for a connection before it fails as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Readers beside the single writer; SQLite readers scale with cores, and
/// this machine class has few.
const READ_CONNECTIONS: u32 = 4;

/// Messages, receipts, seq ceilings and users in one SQLite file. Implements
/// `MessageStore`, `ReceiptStore`, `CeilingStore` and `UserStore`. Cheap to
/// clone: clones share the pools.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    append: std::sync::Arc<AppendStatements>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its
    /// schema up to date with the embedded migrations.
    pub async fn open(path: &Path) -> Result<Self, BackendError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // G1: every commit is fsynced before the call returns.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // The pool is the write queue: keep its one connection (and its
            // prepared statements) for the life of the store, and skip the
            // ping on every acquire.
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(map_sqlx)?;

        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| BackendError::other(format_args!("migrating {}: {e}", path.display())))?;

        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            // A read connection that tries to write is a bug in this module.
            .connect_with(options.pragma("query_only", "ON"))
            .await
            .map_err(map_sqlx)?;

        Ok(Self { writer, reader, append: std::sync::Arc::new(AppendStatements::new()) })
    }

    /// Closes both pools, waiting for statements in flight. Dropping the store
    /// is also safe: everything acknowledged is already durable.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
