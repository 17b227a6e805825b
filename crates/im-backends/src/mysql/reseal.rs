//! `ResealStore`: `imctl keys reencrypt`'s walk over the `messages` table.

use async_trait::async_trait;
use im_core::ports::{BackendResult, Reseal, ResealStore, StoredBody};
use sqlx::Connection;

use super::MysqlStore;
use super::columns::conversation_from_column;
use super::error::map_sqlx;
use super::messages::{MessageColumns, message_from_columns};
use crate::sql::reseal::WINDOW;
use crate::telemetry::DbOperation;

/// `WINDOW`'s columns: the storage position and the conversation, then the
/// columns `fetch` reads.
type WindowColumns = (u64, Vec<u8>, u64, u64, u64, Vec<u8>, Vec<u8>, Vec<u8>, i64, Option<u64>);

fn stored_body(columns: WindowColumns) -> BackendResult<StoredBody> {
    let (id, conversation, seq, msg_id, sender, client_msg_id, body, content_type, time, sealed_with) = columns;
    let message: MessageColumns = (seq, msg_id, sender, client_msg_id, body, content_type, time, sealed_with);
    Ok(StoredBody { position: id, message: message_from_columns(conversation_from_column(conversation)?, message)? })
}

#[async_trait]
impl ResealStore for MysqlStore {
    /// At most `limit` messages whose body is not sealed with `key`, in
    /// storage order after position `after`.
    async fn bodies_to_reseal(&self, key: u64, after: u64, limit: u32) -> BackendResult<Vec<StoredBody>> {
        // A plain (non-locking) read: appends go on meanwhile.
        let rows: Vec<WindowColumns> = self
            .reading(DbOperation::BodiesToReseal, async |conn| {
                sqlx::query_as(WINDOW).bind(after).bind(key).bind(limit).fetch_all(&mut *conn).await.map_err(map_sqlx)
            })
            .await?;
        rows.into_iter().map(stored_body).collect()
    }

    /// Replaces each row still sealed with its `expected` key, in one
    /// transaction.
    async fn reseal(&self, rows: &[Reseal]) -> BackendResult<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.writing(DbOperation::Reseal, async |conn| {
            // Row locks by primary key, on these rows only, held for one
            // short transaction: appends insert elsewhere.
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
            let mut replaced = 0;
            for row in rows {
                // `<=>` compares NULL with NULL as equal: a clear row is
                // matched by `expected = None`.
                replaced +=
                    sqlx::query("UPDATE messages SET body = ?, sealed_with = ? WHERE id = ? AND sealed_with <=> ?")
                        .bind(&row.body[..])
                        .bind(row.sealed_with)
                        .bind(row.position)
                        .bind(row.expected)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_sqlx)?
                        .rows_affected();
            }
            tx.commit().await.map_err(map_sqlx)?;
            Ok(replaced)
        })
        .await
    }
}
