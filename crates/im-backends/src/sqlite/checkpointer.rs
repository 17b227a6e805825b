//! WAL checkpoints off the commit path.
//!
//! A checkpoint copies the pages written to the WAL back into the database
//! file and fsyncs it. Run by the writer (SQLite's automatic checkpoint after
//! the commit that crosses the threshold), every commit queued meanwhile waits
//! for it, and with random conversations a checkpoint of 1,000 pages was the
//! latency tail. Here a connection of its own runs a PASSIVE checkpoint every
//! [`INTERVAL`]: it takes no write lock, so commits go on beside it.
//!
//! A PASSIVE checkpoint under constant writes never finds the WAL fully copied
//! when the next write starts, and only then does SQLite restart the WAL from
//! its beginning: left alone the file grows without bound (1.8 GB in 10 s at
//! saturation). So when a background pass leaves a WAL of at least
//! [`RESTART_AT_PAGES`], it queues one more PASSIVE checkpoint on the writer's
//! own connection, in line with the commits: that one copies only what was
//! written while the background pass ran, finds the WAL fully copied, and the
//! next commit starts the WAL again from its beginning (overwriting blocks the
//! file already has, which an fsync does not have to allocate).
//!
//! The writer's automatic checkpoint stays as the bound for when the
//! background falls behind ([`WRITER_AUTOCHECKPOINT_PAGES`]). Before, at 4,000
//! pages, it fired every ~140 ms at 10,000 msgs/s, each time copying a few
//! hundred pages and fsyncing the database file inside the commit path.

use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use tracing::warn;

use super::error::map_sqlx;
use super::writer::Writer;
use im_core::error::BackendError;

/// Time between background checkpoints. Measured 2026-12-04 (5,000 msgs/s to
/// random peers, 200 users): p99 at 50, 100 and 250 ms intervals all within
/// 5.7-9.6 ms (14 runs), against 8.3-15.9 ms with the checkpoint on the
/// writer (12 runs, and one at 33.8 ms).
pub(super) const INTERVAL: Duration = Duration::from_millis(250);

/// WAL size (in pages) at which the writer checkpoints itself, bounding the
/// WAL at about 64 MiB with 4 KiB pages when the background passes fall
/// behind. Above what a pass leaves at saturation (~45 MB of WAL per
/// [`INTERVAL`]), so that in steady state only the passes checkpoint.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_000;

/// WAL size (in pages) from which a background pass has the writer finish the
/// checkpoint so that the WAL restarts: ~4 MiB. Smaller WALs are left to grow
/// until a later pass; at low rates the writer is then asked rarely.
pub(super) const RESTART_AT_PAGES: i64 = 1_000;

/// Keeps the background checkpoints running; they stop when the last clone
/// of the store holding it is dropped.
#[derive(Clone, Debug)]
pub(super) struct Checkpointer {
    _alive: Arc<()>,
}

impl Checkpointer {
    /// Opens the checkpointing connection and starts the background task;
    /// `writer` is the store's one writing connection, which finishes a
    /// checkpoint when the WAL should restart.
    pub(super) async fn start(options: &SqliteConnectOptions, writer: Arc<Writer>) -> Result<Self, BackendError> {
        let mut connection = options.connect().await.map_err(map_sqlx)?;
        let alive = Arc::new(());
        let store_alive = Arc::downgrade(&alive);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: nothing to copy yet.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if store_alive.strong_count() == 0 {
                    break;
                }
                if checkpoint(&mut connection).await.is_some_and(|wal_pages| wal_pages >= RESTART_AT_PAGES) {
                    finish_on_the_writer(&writer).await;
                }
            }
        });
        Ok(Self { _alive: alive })
    }
}

/// Copies what it can of the WAL without waiting for any lock; returns the
/// WAL's length in pages, or `None` if the checkpoint failed.
async fn checkpoint(connection: &mut SqliteConnection) -> Option<i64> {
    // PASSIVE: copies what no reader still needs, never waits for a lock.
    // A failure (disk full, I/O error) is logged and retried at the next
    // tick; the writer's own checkpoint still bounds the WAL.
    match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(connection).await {
        // (blocked, pages in the WAL, pages copied); -1 when not in WAL mode.
        Ok((_, wal_pages, _)) => Some(wal_pages),
        Err(error) => {
            warn!(error = %error, "background WAL checkpoint failed");
            None
        }
    }
}

/// Runs a PASSIVE checkpoint on the writer's connection, queued behind the
/// commits in flight like any write, so it never contends for the write lock:
/// it copies the frames committed since the background pass began, and the
/// next commit restarts the WAL.
async fn finish_on_the_writer(writer: &Writer) {
    // The store is closing: nothing to restart.
    if writer.is_closed() {
        return;
    }
    let checkpointed = async {
        let mut connection = writer.lock().await?;
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut *connection).await.map_err(map_sqlx)
    };
    if let Err(error) = checkpointed.await {
        warn!(error = %error, "WAL checkpoint on the writer failed");
    }
}
