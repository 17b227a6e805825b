//! `OfflineStore` over the `offline_entries` and `route_outbox` tables: a
//! batch is recorded in one transaction of multi-row inserts that skip
//! entries already there, with the deletes of the outbox rows it settles.

use std::sync::LazyLock;

use async_trait::async_trait;
use im_core::ports::{BackendResult, OfflineEntry, OfflineStore, OutboxRow, PendingOffline};
use im_core::{ConversationId, Seq, UserId};

use super::SqliteStore;
use super::columns::{conversation_from_column, from_column, seq_from_column, to_bound, to_column};
use super::error::map_sqlx;
use crate::sql::{MultiRow, chunks, outbox};

/// The same text for every store, so built once per process.
static RECORD: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "INSERT INTO offline_entries (user_id, conversation, seq, msg_id, server_time_ms) VALUES",
        "(?,?,?,?,?)",
        ",",
        // The key is the entry: a redelivered one changes nothing.
        "ON CONFLICT (user_id, conversation, seq) DO NOTHING",
    )
});

static SETTLE: LazyLock<MultiRow> = LazyLock::new(outbox::delete_statement);

#[async_trait]
impl OfflineStore for SqliteStore {
    /// Records a batch in one write, committed durably before this returns
    /// (on error, none of it may be relied on). Idempotent: an entry whose
    /// `(user, conversation, seq)` is already recorded, or repeated within
    /// the batch, is stored once, so a batch redelivered after a crash adds
    /// nothing.
    async fn record_offline(&self, entries: &[OfflineEntry]) -> BackendResult<()> {
        self.settle_outbox(entries, &[]).await
    }

    /// Per conversation, the entries of `user` with a seq above their read
    /// position; latest entry first, at most `limit` conversations.
    async fn pending_offline(&self, user: UserId, limit: u32) -> BackendResult<Vec<PendingOffline>> {
        // A range scan of the user's entries (the primary key's prefix).
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT o.conversation, COUNT(*), MIN(o.seq), MAX(o.seq), MAX(o.server_time_ms) AS last_time \
             FROM offline_entries o \
             LEFT JOIN receipts r ON r.user_id = o.user_id AND r.conversation = o.conversation \
             WHERE o.user_id = ? AND o.seq > COALESCE(r.read_seq, 0) \
             GROUP BY o.conversation \
             ORDER BY last_time DESC, o.conversation \
             LIMIT ?",
        )
        .bind(to_bound(user.0))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.into_iter()
            .map(|(conversation, count, first_seq, last_seq, last_time_ms)| {
                Ok(PendingOffline {
                    conversation: conversation_from_column(&conversation)?,
                    count: from_column(count, "offline entry count")?,
                    first_seq: seq_from_column(first_seq)?,
                    last_seq: seq_from_column(last_seq)?,
                    last_time_ms,
                })
            })
            .collect()
    }

    /// Forgets the entries of `user` in `conversation` up to and including
    /// `up_to` (delivered or read); returns how many were removed.
    async fn clear_offline(&self, user: UserId, conversation: ConversationId, up_to: Seq) -> BackendResult<u64> {
        let done = sqlx::query("DELETE FROM offline_entries WHERE user_id = ? AND conversation = ? AND seq <= ?")
            .bind(to_bound(user.0))
            .bind(conversation.to_string())
            .bind(to_bound(up_to.0))
            .execute(&mut *self.writer.lock().await?)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }

    /// Settles route outbox rows: records `entries` (idempotently, as
    /// [`OfflineStore::record_offline`]) and deletes the rows `settled`, in
    /// one durable transaction. A row already gone is no error.
    async fn settle_outbox(&self, entries: &[OfflineEntry], settled: &[u64]) -> BackendResult<()> {
        if entries.is_empty() && settled.is_empty() {
            return Ok(());
        }
        let rows = entries
            .iter()
            .map(|e| {
                Ok((
                    to_column(e.user.0, "user id")?,
                    e.conversation.to_string(),
                    to_column(e.seq.0, "seq")?,
                    to_column(e.msg_id.0, "msg_id")?,
                    e.server_time_ms,
                ))
            })
            .collect::<BackendResult<Vec<_>>>()?;
        let settled = settled.iter().map(|&id| to_column(id, "outbox id")).collect::<BackendResult<Vec<i64>>>()?;
        // One transaction, committed and fsynced (synchronous=FULL) before
        // this returns.
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin_immediate().await?;
        for range in chunks(rows.len()) {
            let chunk = &rows[range];
            let mut insert = sqlx::query(RECORD.sql(chunk.len()));
            for (user, conversation, seq, msg_id, server_time_ms) in chunk {
                insert = insert.bind(*user).bind(conversation).bind(*seq).bind(*msg_id).bind(*server_time_ms);
            }
            insert.execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        for range in chunks(settled.len()) {
            let mut delete = sqlx::query(SETTLE.sql(range.len()));
            for id in &settled[range] {
                delete = delete.bind(*id);
            }
            delete.execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    /// Outbox rows created before `before_ms`, oldest first, at most `limit`.
    async fn abandoned_outbox(&self, before_ms: i64, limit: u32) -> BackendResult<Vec<OutboxRow>> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(outbox::ABANDONED)
            .bind(before_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_sqlx)?;
        rows.into_iter()
            .map(|(id, created_ms, entries)| {
                outbox::row_from_columns(from_column(id, "outbox id")?, created_ms, &entries)
            })
            .collect()
    }
}
