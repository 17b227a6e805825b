//! The embedded durable store: one SQLite file holds the message timeline,
//! read positions, seq ceilings, users, groups and the wrapped data keys of
//! envelope encryption.
//!
//! - `error`: sqlx errors to [`BackendError`].
//! - `checkpointer`: WAL checkpoints off the commit path.
//! - `columns`: domain values to and from SQLite columns.
//! - `members`: conversation membership rows, and which are already stored.
//! - `messages`, `receipts`, `ceilings`, `epochs`, `users`, `offline`, `groups`,
//!   `data_keys`: one port each.
//!
//! Writes go through one connection held for the store's life (`writer`), so
//! they never contend for SQLite's single write lock inside this process and a
//! batch needs no retry loop; reads use a pool of their own, so a sync or a
//! conversation list never waits behind a commit (WAL lets readers run beside
//! the writer). Every commit is fsynced (`synchronous=FULL`): an ack means
//! the message is on disk (G1).

mod ceilings;
mod checkpointer;
mod columns;
mod data_keys;
mod epochs;
mod error;
mod groups;
mod members;
mod messages;
mod offline;
mod receipts;
mod reseal;
mod users;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use im_config::CacheConfig;
use im_core::error::BackendError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use self::checkpointer::{Checkpointer, WRITER_AUTOCHECKPOINT_PAGES};
use self::error::map_sqlx;
use self::messages::AppendStatements;
use self::writer::Writer;
use crate::sql::KnownConversations;

/// How long a statement waits for a lock held by another process (a backup,
/// an admin tool) before it fails as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call waits for a connection (the writer, or a reader) before it
/// fails as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Readers beside the single writer; SQLite readers scale with cores, and
/// this machine class has few.
const READ_CONNECTIONS: u32 = 4;

/// SQLite's `cache_size` for `bytes`: a negative value counts KiB.
fn cache_size(bytes: usize) -> String {
    format!("-{}", (bytes / 1024).max(1))
}

/// Messages, receipts, seq ceilings, users, offline entries, groups and data
/// keys in one SQLite file. Implements `MessageStore`, `ReceiptStore`,
/// `CeilingStore`, `EpochStore`, `UserStore`, `OfflineStore`, `GroupStore`,
/// `DataKeyStore` and `ResealStore`. Cheap to clone: clones share the writer
/// and the read pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: Arc<Writer>,
    reader: SqlitePool,
    append: Arc<AppendStatements>,
    known_conversations: Arc<KnownConversations>,
    /// Held, not read: background checkpoints run while a clone lives.
    _checkpointer: Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its
    /// schema up to date with the embedded migrations, with the default
    /// caches.
    pub async fn open(path: &Path) -> Result<Self, BackendError> {
        Self::open_with(path, &CacheConfig::default()).await
    }

    /// [`SqliteStore::open`] with the page caches `caches` allows
    /// (`sqlite_writer_bytes` for the connection that commits,
    /// `sqlite_readers_bytes` shared by the read connections).
    pub async fn open_with(path: &Path, caches: &CacheConfig) -> Result<Self, BackendError> {
        owner_only(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // 4 KiB pages (set when the file is created), not 1 KiB: B-tree
            // rebalancing parks a page under the number of SQLite's lock-byte
            // page (1 GiB / page size) for a moment, and every commit that
            // did so then scans the whole page-cache hash table
            // (`pcache1TruncateUnsafe`) until the file is larger than 1 GiB.
            // With random conversations nearly every commit rebalances, and
            // the scan costs one step per cached page: 22 % of the SQLite
            // thread's CPU with 1 KiB pages and a 64 MiB cache. Measured
            // 2026-11-27, 200 users to random peers: 19-22k -> 26-27k msgs/s
            // at saturation, p90 at 5,000/s 8-12 -> 4-6 ms.
            .page_size(4096)
            .journal_mode(SqliteJournalMode::Wal)
            // G1: every commit is fsynced before the call returns.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Temporary B-trees (sorting, statement journals) stay in memory.
            .pragma("temp_store", "MEMORY")
            // The writer's page cache; 32 MiB by default rather than SQLite's
            // 2: a batch spread over many conversations touches a leaf page
            // per conversation. Not larger: the scan described above grows
            // with it. The readers set their own below.
            .pragma("cache_size", cache_size(caches.sqlite_writer_bytes))
            // Checkpoints run beside the commits, on a connection of their
            // own (`checkpointer`); the writer's automatic checkpoint only
            // bounds the WAL. History: with the checkpoint on the commit path
            // at SQLite's default 1000 pages, p99 at 5000 msgs/s to random
            // peers was 9.4-13.7 ms (1 KiB pages, 2026-11-27) and 8.3-15.9 ms
            // (4 KiB pages, 2026-12-04); 3000 and 10000 pages were worse.
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES.to_string());

        let writer = Arc::new(Writer::open(options.clone(), ACQUIRE_TIMEOUT).await?);

        sqlx::migrate!("./migrations/sqlite")
            .run(&mut *writer.lock().await?)
            .await
            .map_err(|e| BackendError::other(format_args!("migrating {}: {e}", path.display())))?;

        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            // A read connection that tries to write is a bug in this module.
            .connect_with(
                options
                    .clone()
                    .pragma("query_only", "ON")
                    .pragma("cache_size", cache_size(caches.sqlite_readers_bytes / READ_CONNECTIONS as usize)),
            )
            .await
            .map_err(map_sqlx)?;

        let checkpointer = Checkpointer::start(&options, Arc::clone(&writer)).await?;

        Ok(Self {
            writer,
            reader,
            _checkpointer: checkpointer,
            append: Arc::new(AppendStatements::new()),
            known_conversations: Arc::new(KnownConversations::default()),
        })
    }

    /// Closes the writer and the readers, waiting for statements in flight.
    /// Dropping the store is also safe: everything acknowledged is already
    /// durable.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Makes the database file its owner's only (0600), creating it empty if
/// missing: it holds every message. SQLite creates the `-wal` and `-shm`
/// files with the database file's mode; those that exist already are set
/// too (a file created by an older version kept the umask's 0644).
fn owner_only(path: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |e: std::io::Error| BackendError::Other(format!("setting the mode of {}: {e}", path.display()));
    if path == Path::new(":memory:") {
        return Ok(());
    }
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map_err(failed)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pragma<'c>(executor: impl sqlx::SqliteExecutor<'c>, name: &str) -> String {
        let value: sqlx::sqlite::SqliteRow = sqlx::query(&format!("PRAGMA {name}")).fetch_one(executor).await.unwrap();
        use sqlx::Row;
        // Some pragmas answer with a number, some with a word.
        value.try_get::<i64, _>(0).map(|n| n.to_string()).or_else(|_| value.try_get::<String, _>(0)).unwrap()
    }

    async fn writer_pragma(store: &SqliteStore, name: &str) -> String {
        pragma(&mut *store.writer.lock().await.unwrap(), name).await
    }

    #[tokio::test]
    async fn connections_are_configured_for_durability() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("im.db")).await.unwrap();
        assert_eq!(writer_pragma(&store, "journal_mode").await, "wal");
        // 2 is FULL: the WAL is fsynced at every commit (G1).
        assert_eq!(writer_pragma(&store, "synchronous").await, "2");
        assert_eq!(writer_pragma(&store, "foreign_keys").await, "1");
        assert_eq!(writer_pragma(&store, "busy_timeout").await, BUSY_TIMEOUT.as_millis().to_string());
        assert_eq!(pragma(&store.reader, "query_only").await, "1");
        assert_eq!(writer_pragma(&store, "wal_autocheckpoint").await, WRITER_AUTOCHECKPOINT_PAGES.to_string());
        store.close().await;
    }

    #[tokio::test]
    async fn page_caches_are_the_configured_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let caches = CacheConfig {
            sqlite_writer_bytes: 8 * 1024 * 1024,
            sqlite_readers_bytes: 2 * 1024 * 1024,
            ..CacheConfig::default()
        };
        let store = SqliteStore::open_with(&dir.path().join("im.db"), &caches).await.unwrap();
        // Negative: KiB. The readers share theirs.
        assert_eq!(writer_pragma(&store, "cache_size").await, "-8192");
        assert_eq!(pragma(&store.reader, "cache_size").await, (-2048 / READ_CONNECTIONS as i64).to_string());
        store.close().await;
    }

    #[tokio::test]
    async fn the_database_files_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;

        use im_core::ports::UserStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("im.db");
        // A file an older version left with the umask's mode.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_user("alice").await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn the_wal_restarts_under_constant_writes_below_the_writers_own_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("im.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let wal_pages = || std::fs::metadata(format!("{}-wal", path.display())).unwrap().len() / 4096;
        sqlx::query("CREATE TABLE filler (b BLOB NOT NULL)")
            .execute(&mut *store.writer.lock().await.unwrap())
            .await
            .unwrap();
        // Commits of ten one-page rows, ~2 ms apart through several
        // background passes, so that no pass finds the WAL fully copied and
        // each leaves more than RESTART_AT_PAGES. Without a restart the WAL
        // holds every page written (all far below the writer's own
        // threshold); with one, a pass or two of them. Paced, so that the
        // page cap is not reached before the passes (the writer commits ten
        // pages in well under a millisecond).
        let (most, least) = (12_000, 6_000);
        assert!(WRITER_AUTOCHECKPOINT_PAGES > most, "the writer's own checkpoint would restart the WAL");
        let started = tokio::time::Instant::now();
        let mut pages_written = 0;
        while pages_written < most && (pages_written < least || started.elapsed() < checkpointer::INTERVAL * 6) {
            sqlx::query(
                "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) \
                 INSERT INTO filler (b) SELECT randomblob(3000) FROM n",
            )
            .execute(&mut *store.writer.lock().await.unwrap())
            .await
            .unwrap();
            pages_written += 10;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let pages = wal_pages();
        assert!(pages * 2 < u64::from(pages_written), "a WAL of {pages} pages after {pages_written} written");
        store.close().await;
    }

    #[tokio::test]
    async fn the_wal_is_copied_into_the_database_file_in_the_background() {
        use im_core::ports::UserStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("im.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let file_size = || std::fs::metadata(&path).unwrap().len();
        let before = file_size();
        // Far below the writer's own threshold (WRITER_AUTOCHECKPOINT_PAGES): only the
        // background checkpoint moves these pages out of the WAL.
        for i in 0..200 {
            store.create_user(&format!("user-{i}")).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + checkpointer::INTERVAL * 20;
        while file_size() == before {
            assert!(tokio::time::Instant::now() < deadline, "no checkpoint within {:?}", checkpointer::INTERVAL * 20);
            tokio::time::sleep(checkpointer::INTERVAL / 4).await;
        }
        store.close().await;
    }
}
