//! `DataKeyStore` over the `data_keys` and `active_data_key` tables.
//!
//! An activation is one `BEGIN IMMEDIATE` transaction: it holds SQLite's
//! write lock from its first statement, so activations of this process (one
//! writer connection) and of any other process on the file run one at a time.
//! Under the lock it reads the active key, and only if its id is the one the
//! caller expects does it insert the new key, retire the old one and point
//! the one-row `active_data_key` at the new one. A losing activation writes
//! nothing: its wrapped key is dropped, and it answers with the key that won.

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, DataKeyStore, MAX_MASTER_KEY_ID_BYTES, MAX_WRAPPED_DATA_KEY_BYTES, StoredDataKey};

use super::SqliteStore;
use super::columns::from_column;
use super::error::map_sqlx;

/// A `data_keys` row: id, wrapped, master_key_id, created_ms, retired_ms.
type DataKeyColumns = (i64, Vec<u8>, String, i64, Option<i64>);

/// The active key, through the one-row `active_data_key`.
const SELECT_ACTIVE: &str = "SELECT k.id, k.wrapped, k.master_key_id, k.created_ms, k.retired_ms \
     FROM active_data_key a JOIN data_keys k ON k.id = a.dek_id WHERE a.slot = 1";

fn data_key_from_columns(
    (id, wrapped, master_key_id, created_ms, retired_ms): DataKeyColumns,
) -> BackendResult<StoredDataKey> {
    Ok(StoredDataKey { id: from_column(id, "data key id")?, wrapped, master_key_id, created_ms, retired_ms })
}

/// Refuses what the MySQL store cannot keep either, so both stores accept the
/// same keys.
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
impl DataKeyStore for SqliteStore {
    /// The key new bodies are sealed with, if any.
    async fn active_data_key(&self) -> BackendResult<Option<StoredDataKey>> {
        let row: Option<DataKeyColumns> =
            sqlx::query_as(SELECT_ACTIVE).fetch_optional(&self.reader).await.map_err(map_sqlx)?;
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
        // The write lock first: the active key read next cannot change until
        // this transaction ends.
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin_immediate().await?;
        let slot: Option<(Option<i64>,)> = sqlx::query_as("SELECT dek_id FROM active_data_key WHERE slot = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        let Some((active,)) = slot else {
            return Err(BackendError::Other("the active_data_key row is missing".to_owned()));
        };
        if active.map(|id| from_column(id, "data key id")).transpose()? != expected {
            // Lost (or stale): store nothing, answer with the winner.
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
        let (id,): (i64,) =
            sqlx::query_as("INSERT INTO data_keys (wrapped, master_key_id, created_ms) VALUES (?, ?, ?) RETURNING id")
                .bind(wrapped)
                .bind(master_key_id)
                .bind(created_ms)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        if let Some(old) = active {
            sqlx::query("UPDATE data_keys SET retired_ms = ? WHERE id = ?")
                .bind(created_ms)
                .bind(old)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        }
        // Guarded as a compare-and-swap too, though the lock already rules a
        // change out: `IS` compares NULL (no key yet) as a value.
        let swapped = sqlx::query("UPDATE active_data_key SET dek_id = ? WHERE slot = 1 AND dek_id IS ?")
            .bind(id)
            .bind(active)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
        if swapped != 1 {
            return Err(BackendError::Other("the active data key changed under the write lock".to_owned()));
        }
        // Committed and fsynced (synchronous=FULL) before this returns.
        tx.commit().await.map_err(map_sqlx)?;
        Ok(StoredDataKey {
            id: from_column(id, "data key id")?,
            wrapped: wrapped.to_vec(),
            master_key_id: master_key_id.to_owned(),
            created_ms,
            retired_ms: None,
        })
    }

    /// A key by id, active or retired (sealed bodies name their key's id).
    async fn data_key(&self, id: u64) -> BackendResult<Option<StoredDataKey>> {
        // An id past the column range names no stored key.
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let row: Option<DataKeyColumns> =
            sqlx::query_as("SELECT id, wrapped, master_key_id, created_ms, retired_ms FROM data_keys WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.reader)
                .await
                .map_err(map_sqlx)?;
        row.map(data_key_from_columns).transpose()
    }

    /// Every key, oldest first.
    async fn data_keys(&self) -> BackendResult<Vec<StoredDataKey>> {
        let rows: Vec<DataKeyColumns> =
            sqlx::query_as("SELECT id, wrapped, master_key_id, created_ms, retired_ms FROM data_keys ORDER BY id")
                .fetch_all(&self.reader)
                .await
                .map_err(map_sqlx)?;
        rows.into_iter().map(data_key_from_columns).collect()
    }

    /// Replaces key `id`'s wrapped form (re-wrapped under a new master key,
    /// `master_key_id`) if it is still `old_wrapped` (CAS); false if it
    /// changed meanwhile or there is no such key. One statement, committed
    /// before it returns.
    async fn rewrap_data_key(
        &self,
        id: u64,
        old_wrapped: &[u8],
        new_wrapped: &[u8],
        master_key_id: &str,
    ) -> BackendResult<bool> {
        check_sizes(new_wrapped, master_key_id)?;
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        let rewrapped = sqlx::query("UPDATE data_keys SET wrapped = ?, master_key_id = ? WHERE id = ? AND wrapped = ?")
            .bind(new_wrapped)
            .bind(master_key_id)
            .bind(id)
            .bind(old_wrapped)
            .execute(&mut *self.writer.lock().await?)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
        Ok(rewrapped == 1)
    }
}
