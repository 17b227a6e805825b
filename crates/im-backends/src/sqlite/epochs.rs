//! `EpochStore` over the `allocator_epochs` table.

use async_trait::async_trait;
use im_core::ports::{BackendResult, EpochStore};

use super::SqliteStore;
use super::columns::{from_column, to_column};
use super::error::map_sqlx;

#[async_trait]
impl EpochStore for SqliteStore {
    /// The stored epoch of `scope`, 0 when never bumped.
    async fn current_epoch(&self, scope: &str) -> BackendResult<u64> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT epoch FROM allocator_epochs WHERE scope = ?")
            .bind(scope)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_sqlx)?;
        row.map_or(Ok(0), |(epoch,)| from_column(epoch, "epoch"))
    }

    /// Durably moves `scope`'s epoch past `seen` and returns the stored epoch:
    /// `max(stored, seen + 1)`. One statement on the single writer connection,
    /// committed (fsynced) before it returns.
    async fn bump_epoch(&self, scope: &str, seen: u64) -> BackendResult<u64> {
        let next = to_column(seen.saturating_add(1), "epoch")?;
        let (epoch,): (i64,) = sqlx::query_as(
            "INSERT INTO allocator_epochs (scope, epoch) VALUES (?, ?) \
             ON CONFLICT (scope) DO UPDATE SET epoch = MAX(epoch, excluded.epoch) RETURNING epoch",
        )
        .bind(scope)
        .bind(next)
        .fetch_one(&mut *self.writer.lock().await?)
        .await
        .map_err(map_sqlx)?;
        from_column(epoch, "epoch")
    }
}
