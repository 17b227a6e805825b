//! `ResealStore`: `imctl keys reencrypt`'s walk over the `messages` table.

use async_trait::async_trait;
use im_core::ports::{BackendResult, Reseal, ResealStore, StoredBody};

use super::SqliteStore;
use super::columns::{conversation_from_column, from_column, to_bound, to_column};
use super::error::map_sqlx;
use super::messages::{MessageColumns, message_from_columns};
use crate::sql::reseal::WINDOW;

/// `WINDOW`'s columns: the storage position and the conversation, then the
/// columns `fetch` reads.
type WindowColumns = (i64, String, i64, i64, i64, String, Vec<u8>, String, i64, Option<i64>);

fn stored_body(columns: WindowColumns) -> BackendResult<StoredBody> {
    let (id, conversation, seq, msg_id, sender, client_msg_id, body, content_type, time, sealed_with) = columns;
    let message: MessageColumns = (seq, msg_id, sender, client_msg_id, body, content_type, time, sealed_with);
    Ok(StoredBody {
        position: from_column(id, "id")?,
        message: message_from_columns(conversation_from_column(&conversation)?, message)?,
    })
}

#[async_trait]
impl ResealStore for SqliteStore {
    /// At most `limit` messages whose body is not sealed with `key`, in
    /// storage order after position `after`.
    async fn bodies_to_reseal(&self, key: u64, after: u64, limit: u32) -> BackendResult<Vec<StoredBody>> {
        // A read beside the writer (WAL): appends go on meanwhile.
        let rows: Vec<WindowColumns> = sqlx::query_as(WINDOW)
            .bind(to_bound(after))
            .bind(to_bound(key))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_sqlx)?;
        rows.into_iter().map(stored_body).collect()
    }

    /// Replaces each row still sealed with its `expected` key, in one
    /// durable transaction.
    async fn reseal(&self, rows: &[Reseal]) -> BackendResult<u64> {
        let columns = rows
            .iter()
            .map(|row| {
                let expected = row.expected.map(|key| to_column(key, "sealed_with")).transpose()?;
                Ok((to_column(row.position, "id")?, expected, to_column(row.sealed_with, "sealed_with")?))
            })
            .collect::<BackendResult<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut replaced = 0;
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin_immediate().await?;
        for (row, (id, expected, sealed_with)) in rows.iter().zip(columns) {
            // `IS` compares NULL with NULL as equal: a clear row is matched
            // by `expected = None`.
            replaced += sqlx::query("UPDATE messages SET body = ?, sealed_with = ? WHERE id = ? AND sealed_with IS ?")
                .bind(&row.body[..])
                .bind(sealed_with)
                .bind(id)
                .bind(expected)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?
                .rows_affected();
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(replaced)
    }
}
