//! `OfflineStore` over the `offline_entries` table: a batch is recorded in
//! one transaction of multi-row inserts that leave entries already there.

use std::sync::LazyLock;

use async_trait::async_trait;
use im_core::ports::{BackendResult, OfflineEntry, OfflineStore, OutboxRow, PendingOffline};
use im_core::{ConversationId, Seq, UserId};

use super::MysqlStore;
use super::columns::{conversation_from_column, count_from_column};
use super::error::map_sqlx;
use crate::sql::{MultiRow, chunks, outbox};
use crate::telemetry::DbOperation;
use sqlx::Connection;

/// The same text for every store, so built once per process.
static RECORD: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "INSERT INTO offline_entries (user_id, conversation, seq, msg_id, server_time_ms) VALUES",
        "(?,?,?,?,?)",
        ",",
        // The primary key is the table's only unique key and is the entry
        // itself: a duplicate is a redelivery, left as it is. Not `INSERT
        // IGNORE`, which would also turn a bad value into a warning.
        "ON DUPLICATE KEY UPDATE user_id = user_id",
    )
});

static SETTLE: LazyLock<MultiRow> = LazyLock::new(outbox::delete_statement);

impl MysqlStore {
    /// Records `entries` and deletes the outbox rows `settled` in one
    /// transaction, committed before this returns.
    async fn write_entries(&self, op: DbOperation, entries: &[OfflineEntry], settled: &[u64]) -> BackendResult<()> {
        if entries.is_empty() && settled.is_empty() {
            return Ok(());
        }
        // Sorted by key, so workers recording overlapping batches (a
        // redelivery beside the first delivery) lock rows in one order and do
        // not deadlock each other.
        let mut rows: Vec<(u64, String, u64, u64, i64)> = entries
            .iter()
            .map(|e| (e.user.0, e.conversation.to_string(), e.seq.0, e.msg_id.0, e.server_time_ms))
            .collect();
        rows.sort_unstable();
        self.writing(op, async |conn| {
            // One transaction, committed before this returns.
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
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
        })
        .await
    }
}

#[async_trait]
impl OfflineStore for MysqlStore {
    /// Records a batch in one write, committed durably before this returns
    /// (on error, none of it may be relied on). Idempotent: an entry whose
    /// `(user, conversation, seq)` is already recorded, or repeated within
    /// the batch, is stored once, so a batch redelivered after a crash adds
    /// nothing.
    async fn record_offline(&self, entries: &[OfflineEntry]) -> BackendResult<()> {
        self.write_entries(DbOperation::RecordOffline, entries, &[]).await
    }

    /// Per conversation, the entries of `user` with a seq above their read
    /// position; latest entry first, at most `limit` conversations.
    async fn pending_offline(&self, user: UserId, limit: u32) -> BackendResult<Vec<PendingOffline>> {
        let rows: Vec<(Vec<u8>, i64, u64, u64, i64)> = self
            .reading(DbOperation::PendingOffline, async |conn| {
                // A range scan of the user's entries (the primary key's prefix).
                sqlx::query_as(
                    "SELECT o.conversation, COUNT(*), MIN(o.seq), MAX(o.seq), MAX(o.server_time_ms) AS last_time \
                     FROM offline_entries o \
                     LEFT JOIN receipts r ON r.user_id = o.user_id AND r.conversation = o.conversation \
                     WHERE o.user_id = ? AND o.seq > COALESCE(r.read_seq, 0) \
                     GROUP BY o.conversation \
                     ORDER BY last_time DESC, o.conversation \
                     LIMIT ?",
                )
                .bind(user.0)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(map_sqlx)
            })
            .await?;
        rows.into_iter()
            .map(|(conversation, count, first_seq, last_seq, last_time_ms)| {
                Ok(PendingOffline {
                    conversation: conversation_from_column(conversation)?,
                    count: count_from_column(count, "offline entry count")?,
                    first_seq: Seq(first_seq),
                    last_seq: Seq(last_seq),
                    last_time_ms,
                })
            })
            .collect()
    }

    /// Forgets the entries of `user` in `conversation` up to and including
    /// `up_to` (delivered or read); returns how many were removed.
    async fn clear_offline(&self, user: UserId, conversation: ConversationId, up_to: Seq) -> BackendResult<u64> {
        let conversation = conversation.to_string();
        self.writing(DbOperation::ClearOffline, async |conn| {
            let done = sqlx::query("DELETE FROM offline_entries WHERE user_id = ? AND conversation = ? AND seq <= ?")
                .bind(user.0)
                .bind(&conversation)
                .bind(up_to.0)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
            Ok(done.rows_affected())
        })
        .await
    }

    /// Settles route outbox rows: records `entries` (idempotently, as
    /// [`OfflineStore::record_offline`]) and deletes the rows `settled`, in
    /// one durable transaction. A row already gone is no error.
    async fn settle_outbox(&self, entries: &[OfflineEntry], settled: &[u64]) -> BackendResult<()> {
        self.write_entries(DbOperation::SettleOutbox, entries, settled).await
    }

    /// Outbox rows created before `before_ms`, oldest first, at most `limit`.
    async fn abandoned_outbox(&self, before_ms: i64, limit: u32) -> BackendResult<Vec<OutboxRow>> {
        let rows: Vec<(u64, i64, Vec<u8>)> = self
            .reading(DbOperation::AbandonedOutbox, async |conn| {
                sqlx::query_as(outbox::ABANDONED)
                    .bind(before_ms)
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        rows.into_iter()
            .map(|(id, created_ms, entries)| {
                let entries = String::from_utf8(entries)
                    .map_err(|_| im_core::error::BackendError::other("route_outbox entries are not UTF-8"))?;
                outbox::row_from_columns(id, created_ms, &entries)
            })
            .collect()
    }
}
