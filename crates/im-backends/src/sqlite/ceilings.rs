//! `CeilingStore` over the `seq_ceilings` table.

use async_trait::async_trait;
use im_core::ports::{BackendResult, CeilingStore};
use im_core::{ConversationId, Seq};

use super::SqliteStore;
use super::columns::{seq_from_column, to_column};
use super::error::map_sqlx;

#[async_trait]
impl CeilingStore for SqliteStore {
    /// The stored ceiling, `Seq::ZERO` if none.
    async fn load_ceiling(&self, conversation: ConversationId) -> BackendResult<Seq> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT ceiling FROM seq_ceilings WHERE conversation = ?")
            .bind(conversation.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_sqlx)?;
        row.map_or(Ok(Seq::ZERO), |(ceiling,)| seq_from_column(ceiling))
    }

    /// Raises the ceiling to `ceiling` durably. A lower value than the stored
    /// one leaves the stored one: ceilings never move down.
    async fn raise_ceiling(&self, conversation: ConversationId, ceiling: Seq) -> BackendResult<()> {
        // An autocommit statement on the writer: committed and fsynced
        // (synchronous=FULL) before it returns.
        sqlx::query(
            "INSERT INTO seq_ceilings (conversation, ceiling) VALUES (?, ?) \
             ON CONFLICT (conversation) DO UPDATE SET ceiling = MAX(ceiling, excluded.ceiling)",
        )
        .bind(conversation.to_string())
        .bind(to_column(ceiling.0, "ceiling")?)
        .execute(&self.writer)
        .await
        .map_err(map_sqlx)?;
        Ok(())
    }
}
