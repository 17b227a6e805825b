//! `CeilingStore` over the `seq_ceilings` table: a batch's ceilings are
//! loaded with one multi-row select and raised in one transaction.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use im_core::ports::{BackendResult, CeilingStore};
use im_core::{ConversationId, Seq};

use super::SqliteStore;
use super::columns::{conversation_from_column, seq_from_column, to_column};
use super::error::map_sqlx;
use crate::sql::{MultiRow, chunks};

struct CeilingStatements {
    select: MultiRow,
    raise: MultiRow,
}

/// The same texts for every store, so built once per process.
static STATEMENTS: LazyLock<CeilingStatements> = LazyLock::new(|| CeilingStatements {
    select: MultiRow::new("SELECT conversation, ceiling FROM seq_ceilings WHERE conversation IN (", "?", ",", ")"),
    raise: MultiRow::new(
        "INSERT INTO seq_ceilings (conversation, ceiling) VALUES",
        "(?,?)",
        ",",
        "ON CONFLICT (conversation) DO UPDATE SET ceiling = MAX(ceiling, excluded.ceiling)",
    ),
});

#[async_trait]
impl CeilingStore for SqliteStore {
    /// The stored ceilings, in the order asked, `Seq::ZERO` where none.
    async fn load_ceilings(&self, conversations: &[ConversationId]) -> BackendResult<Vec<Seq>> {
        let keys: Vec<String> = conversations.iter().map(ToString::to_string).collect();
        let mut stored: HashMap<ConversationId, Seq> = HashMap::with_capacity(keys.len());
        for range in chunks(keys.len()) {
            let chunk = &keys[range];
            let mut select = sqlx::query_as::<_, (String, i64)>(STATEMENTS.select.sql(chunk.len()));
            for key in chunk {
                select = select.bind(key);
            }
            for (conversation, ceiling) in select.fetch_all(&self.reader).await.map_err(map_sqlx)? {
                stored.insert(conversation_from_column(&conversation)?, seq_from_column(ceiling)?);
            }
        }
        Ok(conversations.iter().map(|c| stored.get(c).copied().unwrap_or(Seq::ZERO)).collect())
    }

    /// Raises every listed ceiling durably, in one write: when this returns
    /// all of them are on disk (on error, none may be relied on). A value
    /// lower than the stored one leaves the stored one: ceilings never move
    /// down.
    async fn raise_ceilings(&self, raises: &[(ConversationId, Seq)]) -> BackendResult<()> {
        if raises.is_empty() {
            return Ok(());
        }
        let rows = raises
            .iter()
            .map(|(conversation, ceiling)| Ok((conversation.to_string(), to_column(ceiling.0, "ceiling")?)))
            .collect::<BackendResult<Vec<_>>>()?;
        // One transaction, committed and fsynced (synchronous=FULL) before
        // this returns.
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin_immediate().await?;
        for range in chunks(rows.len()) {
            let chunk = &rows[range];
            let mut insert = sqlx::query(STATEMENTS.raise.sql(chunk.len()));
            for (conversation, ceiling) in chunk {
                insert = insert.bind(conversation).bind(*ceiling);
            }
            insert.execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)
    }
}
