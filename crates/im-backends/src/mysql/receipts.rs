//! `ReceiptStore` over the `receipts` table.

use async_trait::async_trait;
use im_core::ports::{BackendResult, ReceiptStore};
use im_core::{ConversationId, Seq, UserId};

use super::MysqlStore;
use super::error::map_sqlx;
use crate::telemetry::DbOperation;
use sqlx::Connection;

#[async_trait]
impl ReceiptStore for MysqlStore {
    /// Moves `user`'s read position in `conversation` to `max(old, seq)` and
    /// returns the position after the call.
    async fn mark_read(&self, user: UserId, conversation: ConversationId, seq: Seq) -> BackendResult<Seq> {
        let conversation = conversation.to_string();
        self.writing(DbOperation::MarkRead, async |conn| {
            // `im_core::seq::advance_read_position`, done by the server inside
            // the upsert so two concurrent calls cannot move the position
            // back. No RETURNING on MySQL: the row is read back in the same
            // transaction, which holds its lock, so it is the upsert's result.
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
            sqlx::query(
                "INSERT INTO receipts (user_id, conversation, read_seq) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE read_seq = GREATEST(read_seq, VALUES(read_seq))",
            )
            .bind(user.0)
            .bind(&conversation)
            .bind(seq.0)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            let (read_seq,): (u64,) =
                sqlx::query_as("SELECT read_seq FROM receipts WHERE user_id = ? AND conversation = ?")
                    .bind(user.0)
                    .bind(&conversation)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
            tx.commit().await.map_err(map_sqlx)?;
            Ok(Seq(read_seq))
        })
        .await
    }

    /// The read position (`Seq::ZERO` if never read).
    async fn read_position(&self, user: UserId, conversation: ConversationId) -> BackendResult<Seq> {
        let row: Option<(u64,)> = self
            .reading(DbOperation::ReadPosition, async |conn| {
                sqlx::query_as("SELECT read_seq FROM receipts WHERE user_id = ? AND conversation = ?")
                    .bind(user.0)
                    .bind(conversation.to_string())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        Ok(row.map_or(Seq::ZERO, |(read_seq,)| Seq(read_seq)))
    }

    /// The users whose read position in `conversation` is at least `seq`,
    /// ascending by id, at most `limit` of them.
    async fn readers(&self, conversation: ConversationId, seq: Seq, limit: u32) -> BackendResult<Vec<UserId>> {
        // The (conversation, read_seq) index (migration 0003) finds the
        // readers without visiting every receipt of the conversation's
        // members; they are sorted by id afterwards.
        let rows: Vec<(u64,)> = self
            .reading(DbOperation::Readers, async |conn| {
                sqlx::query_as(
                    "SELECT user_id FROM receipts WHERE conversation = ? AND read_seq >= ? \
                     ORDER BY user_id LIMIT ?",
                )
                .bind(conversation.to_string())
                .bind(seq.0)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(map_sqlx)
            })
            .await?;
        Ok(rows.into_iter().map(|(user,)| UserId(user)).collect())
    }
}
