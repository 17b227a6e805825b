//! `EpochStore` over the `allocator_epochs` table.

use async_trait::async_trait;
use im_core::ports::{BackendResult, EpochStore};

use super::MysqlStore;
use super::error::map_sqlx;
use crate::telemetry::DbOperation;
use sqlx::Connection;

#[async_trait]
impl EpochStore for MysqlStore {
    /// The stored epoch of `scope`, 0 when never bumped.
    async fn current_epoch(&self, scope: &str) -> BackendResult<u64> {
        let row: Option<(u64,)> = self
            .reading(DbOperation::CurrentEpoch, async |conn| {
                sqlx::query_as("SELECT epoch FROM allocator_epochs WHERE scope = ?")
                    .bind(scope.as_bytes())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        Ok(row.map_or(0, |(epoch,)| epoch))
    }

    /// Durably moves `scope`'s epoch past `seen` and returns the stored epoch:
    /// `max(stored, seen + 1)`. One transaction, committed before it returns:
    /// the upsert, then the row read back under the lock the upsert holds.
    async fn bump_epoch(&self, scope: &str, seen: u64) -> BackendResult<u64> {
        let next = seen.saturating_add(1);
        self.writing(DbOperation::BumpEpoch, async |conn| {
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
            sqlx::query(
                "INSERT INTO allocator_epochs (scope, epoch) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE epoch = GREATEST(epoch, VALUES(epoch))",
            )
            .bind(scope.as_bytes())
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            let (epoch,): (u64,) = sqlx::query_as("SELECT epoch FROM allocator_epochs WHERE scope = ?")
                .bind(scope.as_bytes())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            tx.commit().await.map_err(map_sqlx)?;
            Ok(epoch)
        })
        .await
    }
}
