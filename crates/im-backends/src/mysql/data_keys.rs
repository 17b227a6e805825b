//! `DataKeyStore` over the `data_keys` and `active_data_key` tables.
//!
//! An activation is one transaction that first locks the one row of
//! `active_data_key` (`SELECT ... FOR UPDATE`): activations on every node
//! then run one at a time, and each reads the latest committed active key,
//! not an older snapshot. Only if its id is the one the caller expects does
//! the transaction insert the new key, retire the old one and swap the slot.
//! A losing activation writes nothing: its wrapped key is dropped, and it
//! answers with the key that won. An activation locks the slot row, then
//! `data_keys` rows; a rewrap locks one `data_keys` row alone and waits for
//! nothing else, so the two never deadlock.

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, DataKeyStore, MAX_MASTER_KEY_ID_BYTES, MAX_WRAPPED_DATA_KEY_BYTES, StoredDataKey};
use sqlx::Connection;

use super::MysqlStore;
use super::columns::text_from_column;
use super::error::map_sqlx;
use crate::telemetry::DbOperation;

/// A `data_keys` row: id, wrapped, master_key_id, created_ms, retired_ms.
type DataKeyColumns = (u64, Vec<u8>, Vec<u8>, i64, Option<i64>);

/// The active key, through the one-row `active_data_key`.
const SELECT_ACTIVE: &str = "SELECT k.id, k.wrapped, k.master_key_id, k.created_ms, k.retired_ms \
     FROM active_data_key a JOIN data_keys k ON k.id = a.dek_id WHERE a.slot = 1";

fn data_key_from_columns(
    (id, wrapped, master_key_id, created_ms, retired_ms): DataKeyColumns,
) -> BackendResult<StoredDataKey> {
    Ok(StoredDataKey {
        id,
        wrapped,
        master_key_id: text_from_column(master_key_id, "master key id")?,
        created_ms,
        retired_ms,
    })
}

/// Refuses what the columns cannot keep (a BLOB, VARBINARY(2048)) before the
/// server does, with the same words as the SQLite store.
fn check_sizes(wrapped: &[u8], master_key_id: &str) -> BackendResult<()> {
    if wrapped.len() > MAX_WRAPPED_DATA_KEY_BYTES {
        return Err(BackendError::Other(format!(
            "a wrapped data key of {} bytes is longer than the {MAX_WRAPPED_DATA_KEY_BYTES} a store keeps",
            wrapped.len()
        )));
    }
    if master_key_id.len() > MAX_MASTER_KEY_ID_BYTES {
        return Err(BackendError::Other(format!(
            "a master key id of {} bytes is longer than the {MAX_MASTER_KEY_ID_BYTES} a store keeps",
            master_key_id.len()
        )));
    }
    Ok(())
}

#[async_trait]
impl DataKeyStore for MysqlStore {
    /// The key new bodies are sealed with, if any.
    async fn active_data_key(&self) -> BackendResult<Option<StoredDataKey>> {
        let row: Option<DataKeyColumns> = self
            .reading(DbOperation::ActiveDataKey, async |conn| {
                sqlx::query_as(SELECT_ACTIVE).fetch_optional(&mut *conn).await.map_err(map_sqlx)
            })
            .await?;
        row.map(data_key_from_columns).transpose()
    }

    /// Compare-and-swap activation: stores the new wrapped key and makes it
    /// active only if the active key's id is still `expected` (None: no key
    /// active yet); the key it replaces gets `retired_ms = created_ms`.
    /// Returns the active key after the call: the new one, or, when another
    /// node won the race (or `expected` was stale), the winner's, and then
    /// nothing is stored: the losing wrapped key is dropped, never kept nor
    /// made active. Two nodes activating at once with the same `expected` end
    /// with ONE active key, both told the same one. `expected` naming a key
    /// while none is active is an error (`BackendError::Other`): there is no
    /// winner to return.
    async fn activate_data_key(
        &self,
        expected: Option<u64>,
        wrapped: &[u8],
        master_key_id: &str,
        created_ms: i64,
    ) -> BackendResult<StoredDataKey> {
        check_sizes(wrapped, master_key_id)?;
        self.writing(DbOperation::ActivateDataKey, async |conn| {
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
            // Locks the slot: a locking read sees the latest commit, so a
            // node that waited here sees the winner.
            let slot: Option<(Option<u64>,)> =
                sqlx::query_as("SELECT dek_id FROM active_data_key WHERE slot = 1 FOR UPDATE")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
            let Some((active,)) = slot else {
                return Err(BackendError::Other("the active_data_key row is missing".to_owned()));
            };
            if active != expected {
                // Lost (or stale): store nothing, answer with the winner. The
                // transaction's first consistent read, taken with the lock
                // held: it sees the winner's commit.
                let winner: Option<DataKeyColumns> =
                    sqlx::query_as(SELECT_ACTIVE).fetch_optional(&mut *tx).await.map_err(map_sqlx)?;
                tx.rollback().await.map_err(map_sqlx)?;
                let winner = winner.map(data_key_from_columns).transpose()?;
                return winner.ok_or_else(|| {
                    BackendError::Other(format!(
                        "activating a data key over key {expected:?}: no data key is active at all"
                    ))
                });
            }
            // No RETURNING on MySQL: the new id is the statement's
            // AUTO_INCREMENT value, which the server sends back.
            let id = sqlx::query("INSERT INTO data_keys (wrapped, master_key_id, created_ms) VALUES (?, ?, ?)")
                .bind(wrapped)
                .bind(master_key_id.as_bytes())
                .bind(created_ms)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?
                .last_insert_id();
            if let Some(old) = active {
                sqlx::query("UPDATE data_keys SET retired_ms = ? WHERE id = ?")
                    .bind(created_ms)
                    .bind(old)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
            }
            // Guarded as a compare-and-swap too, though the lock already rules
            // a change out: `<=>` compares NULL (no key yet) as a value.
            let swapped = sqlx::query("UPDATE active_data_key SET dek_id = ? WHERE slot = 1 AND dek_id <=> ?")
                .bind(id)
                .bind(active)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?
                .rows_affected();
            if swapped != 1 {
                return Err(BackendError::Other("the active data key changed under its lock".to_owned()));
            }
            tx.commit().await.map_err(map_sqlx)?;
            Ok(StoredDataKey {
                id,
                wrapped: wrapped.to_vec(),
                master_key_id: master_key_id.to_owned(),
                created_ms,
                retired_ms: None,
            })
        })
        .await
    }

    /// A key by id, active or retired (sealed bodies name their key's id).
    async fn data_key(&self, id: u64) -> BackendResult<Option<StoredDataKey>> {
        let row: Option<DataKeyColumns> = self
            .reading(DbOperation::DataKey, async |conn| {
                sqlx::query_as("SELECT id, wrapped, master_key_id, created_ms, retired_ms FROM data_keys WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        row.map(data_key_from_columns).transpose()
    }

    /// Every key, oldest first.
    async fn data_keys(&self) -> BackendResult<Vec<StoredDataKey>> {
        let rows: Vec<DataKeyColumns> = self
            .reading(DbOperation::DataKeys, async |conn| {
                sqlx::query_as("SELECT id, wrapped, master_key_id, created_ms, retired_ms FROM data_keys ORDER BY id")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        rows.into_iter().map(data_key_from_columns).collect()
    }

    /// Replaces key `id`'s wrapped form (re-wrapped under a new master key,
    /// `master_key_id`) if it is still `old_wrapped` (CAS); false if it
    /// changed meanwhile or there is no such key. One statement, committed
    /// before it returns; it counts the rows it matched (sqlx asks the server
    /// for found rows), so rewrapping to the same bytes is still true.
    async fn rewrap_data_key(
        &self,
        id: u64,
        old_wrapped: &[u8],
        new_wrapped: &[u8],
        master_key_id: &str,
    ) -> BackendResult<bool> {
        check_sizes(new_wrapped, master_key_id)?;
        let rewrapped = self
            .writing(DbOperation::RewrapDataKey, async |conn| {
                sqlx::query("UPDATE data_keys SET wrapped = ?, master_key_id = ? WHERE id = ? AND wrapped = ?")
                    .bind(new_wrapped)
                    .bind(master_key_id.as_bytes())
                    .bind(id)
                    .bind(old_wrapped)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?
            .rows_affected();
        Ok(rewrapped == 1)
    }
}
