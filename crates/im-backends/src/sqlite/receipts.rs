//! `ReceiptStore` over the `receipts` table.

use async_trait::async_trait;
use im_core::ports::{BackendResult, ReceiptStore};
use im_core::{ConversationId, Seq, UserId};

use super::SqliteStore;
use super::columns::{from_column, seq_from_column, to_bound, to_column};
use super::error::map_sqlx;

#[async_trait]
impl ReceiptStore for SqliteStore {
    /// Moves `user`'s read position in `conversation` to `max(old, seq)` and
    /// returns the position after the call.
    async fn mark_read(&self, user: UserId, conversation: ConversationId, seq: Seq) -> BackendResult<Seq> {
        // `im_core::seq::advance_read_position`, done by SQLite inside the
        // upsert so two concurrent calls cannot move the position back.
        let (read_seq,): (i64,) = sqlx::query_as(
            "INSERT INTO receipts (user_id, conversation, read_seq) VALUES (?, ?, ?) \
             ON CONFLICT (user_id, conversation) DO UPDATE SET read_seq = MAX(read_seq, excluded.read_seq) \
             RETURNING read_seq",
        )
        .bind(to_column(user.0, "user id")?)
        .bind(conversation.to_string())
        .bind(to_column(seq.0, "seq")?)
        .fetch_one(&mut *self.writer.lock().await?)
        .await
        .map_err(map_sqlx)?;
        seq_from_column(read_seq)
    }

    /// The read position (`Seq::ZERO` if never read).
    async fn read_position(&self, user: UserId, conversation: ConversationId) -> BackendResult<Seq> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT read_seq FROM receipts WHERE user_id = ? AND conversation = ?")
                .bind(to_bound(user.0))
                .bind(conversation.to_string())
                .fetch_optional(&self.reader)
                .await
                .map_err(map_sqlx)?;
        row.map_or(Ok(Seq::ZERO), |(read_seq,)| seq_from_column(read_seq))
    }

    /// The users whose read position in `conversation` is at least `seq`,
    /// ascending by id, at most `limit` of them.
    async fn readers(&self, conversation: ConversationId, seq: Seq, limit: u32) -> BackendResult<Vec<UserId>> {
        // The (conversation, read_seq) index (migration 0004) finds the
        // readers without visiting every receipt of the conversation's
        // members; they are sorted by id afterwards.
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT user_id FROM receipts WHERE conversation = ? AND read_seq >= ? ORDER BY user_id LIMIT ?",
        )
        .bind(conversation.to_string())
        .bind(to_bound(seq.0))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.into_iter().map(|(user,)| Ok(UserId(from_column(user, "user id")?))).collect()
    }
}
