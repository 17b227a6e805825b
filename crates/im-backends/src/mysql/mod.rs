//! The production durable store: the message timeline, read positions, seq
//! ceilings, allocator epochs, users, groups and the wrapped data keys of
//! envelope encryption in MySQL 8 or MariaDB 10.11 (InnoDB),
//! behind the same ports as the embedded `SqliteStore`, with the same tables,
//! keys and append semantics.
//!
//! - `options`: the `database.*` settings as sqlx pool and connect options.
//! - `error`: sqlx errors to [`BackendError`].
//! - `primary`: the pool, replaced when the server refuses writes as
//!   read-only, so a failover is followed without a restart.
//! - `replication`: what a promoted replica may lack (semi-sync settings),
//!   warned about at start.
//! - `columns`: domain values to and from MySQL columns.
//! - `members`: conversation membership rows, and which are already stored.
//! - `messages`, `receipts`, `ceilings`, `epochs`, `users`, `offline`, `groups`,
//!   `data_keys`: one port each.
//!
//! **Schema.** `connect` creates the database if it is missing and runs the
//! migrations in `migrations/mysql` (one SQL text for both servers: no
//! `RETURNING`, no `->>`, no `INSERT ... AS`, no functional indexes, no
//! MySQL-only collation) under a named lock of its own, so nodes starting
//! together on an empty database migrate one at a time. When every embedded
//! migration is already applied (read from `_sqlx_migrations`), `connect`
//! takes no lock and sends no DDL: a user with only SELECT, INSERT, UPDATE
//! and DELETE runs a database migrated beforehand ([`MysqlStore::migrate`],
//! `im-service migrate`; docs/operations.md).
//!
//! **Durability (G1).** Every write is one transaction, committed before the
//! call returns; an append is one transaction for the whole batch, written
//! with multi-row INSERTs (group commit). That a commit is on disk when it
//! returns is the server's side of the bargain: `innodb_flush_log_at_trx_commit
//! = 1` (the default on both servers) and, when the binary log is on,
//! `sync_binlog = 1`, so a replica promoted after a crash holds every
//! acknowledged message. [`MysqlStore::connect`] reads both and logs a warning
//! when they are weaker.
//!
//! **Resends.** `(sender, client_msg_id)` is a unique key, as in SQLite. An
//! append first tries plain INSERTs: neither `INSERT IGNORE` (which also turns
//! a seq clash, a too-long value or a bad type into a warning) nor `ON
//! DUPLICATE KEY UPDATE` (which fires on the `(conversation, seq)` key too) can
//! skip only the dedup key. If an INSERT meets any unique key, the transaction
//! is rolled back and the batch written again after a locking look-up of its
//! keys, inserting only the new messages: a resend then gets the first ack, and
//! a unique violation left can only be a seq clash, which fails the batch.
//!
//! **Pool.** One sqlx pool of `max_open_conns`, keeping `max_idle_conns` open
//! when idle and replacing each after `conn_max_lifetime`. sqlx pings each
//! connection as it comes back to the pool; this store pings it again before
//! a call only after a second idle (`options`), so a call costs one ping, not
//! two. `conn_timeout` bounds opening a connection and waiting for one from
//! the pool. sqlx has no socket timeouts, so `read_timeout` and
//! `write_timeout` bound each call as a whole (reads and writes of the
//! ports). Whatever cannot reach or wait for the server is
//! `BackendError::Unavailable`, which callers answer as UNAVAILABLE. A write
//! cut off by its timeout (or by a lost connection) may still commit: a
//! retried append then meets its own keys and answers with the first ack.
//! Such a late commit may also land after the next batch's, so a reader could
//! see a seq before a lower one; the pipeline's in-order commits hold for
//! commits that return, which a timeout of seconds makes the only kind in
//! practice.
//!
//! **Failover.** Reads and writes go to the one server `DB_HOST` leads to,
//! never to a replica (read-after-ack). Operators fail over by repointing
//! `DB_HOST` (DNS or a proxy); connections that break are replaced by sqlx,
//! and a server that refuses a write as read-only (a demoted primary still
//! alive) makes the store drop its whole pool and connect again (`primary`).

mod ceilings;
mod columns;
mod data_keys;
mod epochs;
mod error;
mod groups;
mod members;
mod messages;
mod offline;
mod options;
mod primary;
mod receipts;
mod replication;
mod reseal;
mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use im_config::DatabaseConfig;
use im_core::error::BackendError;
use im_core::ports::BackendResult;
use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};

use self::error::{in_context, map_migrate, map_sqlx};
use self::primary::PrimaryPool;
use crate::sql::KnownConversations;
use crate::telemetry::{DbOperation, WaitingForConnection, dependency_metrics};

/// How long `connect` waits while another node migrates the schema.
const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of parameters per statement: a quarter of the smallest default
/// `max_allowed_packet` (16 MiB on MariaDB, 64 MiB on MySQL 8), so a batch
/// of large bodies stays under it.
const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// Messages, receipts, seq ceilings, allocator epochs, users, offline
/// entries, groups and data keys in one MySQL or MariaDB database. Implements
/// `MessageStore`, `ReceiptStore`, `CeilingStore`, `EpochStore`, `UserStore`,
/// `OfflineStore`, `GroupStore`, `DataKeyStore` and `ResealStore`. Cheap to
/// clone: clones share the pool.
#[derive(Clone, Debug)]
pub struct MysqlStore {
    pool: Arc<PrimaryPool>,
    timeouts: CallTimeouts,
    known_conversations: Arc<KnownConversations>,
}

/// How long one call of a port may take in all.
#[derive(Clone, Copy, Debug)]
struct CallTimeouts {
    read: Duration,
    write: Duration,
}

impl MysqlStore {
    /// Connects to the server at `config.host` (`host` or `host:port`, port
    /// 3306 by default), creates the database `config.name` if it does not
    /// exist, and brings its schema up to date with the embedded migrations.
    /// A server that cannot be reached within `config.conn_timeout` is
    /// [`BackendError::Unavailable`].
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, BackendError> {
        let server = options::server_options(config)?;
        options::check_database_name(&config.name)?;
        prepare_database(&server, &config.name, config.conn_timeout).await?;
        let pool_options = options::pool_options(config)?;
        let connect = server.database(&config.name);
        let first = pool_options
            .clone()
            .connect_with(connect.clone())
            .await
            .map_err(|e| in_context(map_sqlx(e), &format!("connecting to database {}", config.name)))?;
        let pool = Arc::new(PrimaryPool::new(first, pool_options, connect));
        tracing::info!(host = %config.host, database = %config.name, "connected to mysql");
        Ok(Self {
            pool,
            timeouts: CallTimeouts { read: config.read_timeout, write: config.write_timeout },
            known_conversations: Arc::new(KnownConversations::default()),
        })
    }

    /// Brings the schema up to date (creating the database if it is missing)
    /// and returns, opening no pool: what `im-service migrate` runs, with a
    /// user allowed DDL, before nodes connect with one that is not.
    pub async fn migrate(config: &DatabaseConfig) -> Result<(), BackendError> {
        let server = options::server_options(config)?;
        options::check_database_name(&config.name)?;
        prepare_database(&server, &config.name, config.conn_timeout).await
    }

    /// Closes the pool, waiting for statements in flight. Dropping the store
    /// is also safe: everything acknowledged is already committed.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs a read under `read_timeout`, on a connection of the pool.
    async fn reading<T>(
        &self,
        op: DbOperation,
        work: impl AsyncFnOnce(&mut MySqlConnection) -> BackendResult<T>,
    ) -> BackendResult<T> {
        self.call(op, self.timeouts.read, "read", work).await
    }

    /// Runs a write under `write_timeout`, on a connection of the pool.
    async fn writing<T>(
        &self,
        op: DbOperation,
        work: impl AsyncFnOnce(&mut MySqlConnection) -> BackendResult<T>,
    ) -> BackendResult<T> {
        self.call(op, self.timeouts.write, "write", work).await
    }

    /// `work` on a connection, or `Unavailable` once `limit` has passed (the
    /// wait for a connection included). A read-only refusal on the way
    /// replaces the pool (`primary`). Dropping a sqlx future half way is
    /// safe: an open transaction is rolled back, and the connection is
    /// checked (pinged) as it goes back to the pool. Timed per
    /// operation, with the pool's state published after each call.
    async fn call<T>(
        &self,
        op: DbOperation,
        limit: Duration,
        what: &str,
        work: impl AsyncFnOnce(&mut MySqlConnection) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let started = Instant::now();
        let pool = self.pool.get();
        let done = self
            .pool
            .watch(tokio::time::timeout(limit, async {
                let mut conn = {
                    let _waiting = WaitingForConnection::start();
                    pool.acquire().await.map_err(map_sqlx)?
                };
                work(&mut conn).await
            }))
            .await
            .unwrap_or_else(|_| Err(BackendError::Unavailable(format!("a mysql {what} took longer than {limit:?}"))));
        let metrics = dependency_metrics();
        metrics.db_operation(op, started);
        let (size, idle) = (pool.size(), pool.num_idle());
        metrics.db_pool_state(size.saturating_sub(idle as u32), idle, pool.options().get_max_connections());
        done
    }
}

/// Readies the database over one short-lived connection that names none:
/// creates it if missing, migrates it, and checks the server's durability
/// settings. Closing the connection ends its session, so the migration lock
/// is released however this ends.
async fn prepare_database(
    server: &MySqlConnectOptions,
    name: &str,
    conn_timeout: Duration,
) -> Result<(), BackendError> {
    let doing = format!("preparing database {name}");
    let mut conn = tokio::time::timeout(conn_timeout, MySqlConnection::connect_with(server))
        .await
        .map_err(|_| BackendError::Unavailable(format!("{doing}: no connection within {conn_timeout:?}")))?
        .map_err(|e| in_context(map_sqlx(e), &doing))?;
    let prepared = async {
        create_database_if_missing(&mut conn, name).await?;
        // `USE` has no prepared form: the text protocol, with the name that
        // passed `check_database_name`.
        sqlx::raw_sql(&format!("USE `{name}`")).execute(&mut conn).await.map_err(map_sqlx)?;
        migrate(&mut conn).await?;
        warn_about_weak_durability(&mut conn).await
    }
    .await;
    // Best effort: the server ends the session anyway when the socket closes.
    let _ = conn.close().await;
    prepared.map_err(|e| in_context(e, &doing))
}

/// Creates the database only when it is missing: a user with rights on its
/// own database alone may not run `CREATE DATABASE` at all.
async fn create_database_if_missing(conn: &mut MySqlConnection, name: &str) -> Result<(), BackendError> {
    let (found,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    if found == 0 {
        // An identifier cannot be a parameter: `name` passed
        // `check_database_name`, so quoting it is enough. IF NOT EXISTS:
        // another node may be creating it too.
        let create = format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin");
        sqlx::raw_sql(&create).execute(&mut *conn).await.map_err(map_sqlx)?;
        tracing::info!(database = %name, "created mysql database");
    }
    Ok(())
}

/// Runs the embedded migrations under a named lock, so nodes starting
/// together migrate one at a time. sqlx's own lock is `GET_LOCK(name, -1)`,
/// which MySQL reads as "wait forever" but MariaDB as "do not wait" (it
/// answers NULL at once): two nodes would both migrate, and one would fail on
/// the other's half-applied migration.
async fn migrate(conn: &mut MySqlConnection) -> Result<(), BackendError> {
    let mut migrator = sqlx::migrate!("./migrations/mysql");
    if all_applied(conn, &migrator).await? {
        return Ok(());
    }
    let (locked,): (Option<i64>,) = sqlx::query_as("SELECT GET_LOCK(CONCAT('im_migrate:', SHA1(DATABASE())), ?)")
        .bind(MIGRATION_LOCK_TIMEOUT.as_secs())
        .fetch_one(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    match locked {
        Some(1) => {}
        Some(_) => {
            return Err(BackendError::Unavailable(format!(
                "another node has been migrating the schema for over {MIGRATION_LOCK_TIMEOUT:?}"
            )));
        }
        None => return Err(BackendError::other("the server did not grant the migration lock")),
    }
    migrator.set_locking(false);
    migrator.run_direct(conn).await.map_err(map_migrate)
}

/// Whether `_sqlx_migrations` holds exactly the embedded migrations, each
/// applied successfully with the same checksum. Anything else (no table, a
/// migration missing, failed or changed, one this binary does not know) is
/// left to the migrator, which applies or reports it. Plain reads: no DDL
/// right needed.
async fn all_applied(conn: &mut MySqlConnection, migrator: &sqlx::migrate::Migrator) -> Result<bool, BackendError> {
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if tables == 0 {
        return Ok(false);
    }
    let applied: Vec<(i64, bool, Vec<u8>)> =
        sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    let embedded: Vec<(i64, bool, Vec<u8>)> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, true, m.checksum.to_vec()))
        .collect();
    Ok(applied == embedded)
}

/// G1 rests on server settings this store cannot set: say so when they are
/// weaker than a durable commit needs, on this server and across a failover
/// to a replica (`replication`). Also warns when `max_allowed_packet`
/// is smaller than the multi-row statements this store sends.
async fn warn_about_weak_durability(conn: &mut MySqlConnection) -> Result<(), BackendError> {
    // CAST: the variables' own types differ between MySQL and MariaDB.
    let (flush_log_at_commit, log_bin, sync_binlog, max_allowed_packet): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(@@innodb_flush_log_at_trx_commit AS SIGNED), CAST(@@log_bin AS SIGNED), \
                CAST(@@sync_binlog AS SIGNED), CAST(@@max_allowed_packet AS SIGNED)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if flush_log_at_commit != 1 {
        tracing::warn!(
            innodb_flush_log_at_trx_commit = flush_log_at_commit,
            "mysql does not flush its redo log at every commit: acknowledged messages may be lost in a crash (set it to 1)"
        );
    }
    if log_bin != 0 && sync_binlog != 1 {
        tracing::warn!(
            sync_binlog,
            "mysql does not sync its binary log at every commit: a replica may miss acknowledged messages (set it to 1)"
        );
    }
    if usize::try_from(max_allowed_packet).is_ok_and(|packet| packet < 2 * MAX_STATEMENT_BYTES) {
        tracing::warn!(
            max_allowed_packet,
            statement_bytes = MAX_STATEMENT_BYTES,
            "mysql max_allowed_packet is small for this store's batched statements: large batches will fail"
        );
    }
    if log_bin != 0 {
        replication::warn_about_async_replication(conn).await;
    }
    Ok(())
}
