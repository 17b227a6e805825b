//! `UserStore` and `UserStatusStore` over the `users` table, `PasswordStore`
//! over `user_passwords`.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CreateUser, PasswordStore, User, UserStatusStore, UserStore};
use im_core::{StatusChange, UserId, UserStatus};

use super::SqliteStore;
use super::columns::{from_column, to_bound};
use super::error::map_sqlx;

/// The columns every user query reads, in [`UserRow`]'s order (a macro so
/// that each statement is one literal).
macro_rules! user_columns {
    () => {
        "id, name, created_at_ms, disabled, token_generation"
    };
}

type UserRow = (i64, String, i64, bool, i64);

fn user_from_columns((id, name, created_at_ms, disabled, token_generation): UserRow) -> BackendResult<User> {
    Ok(User {
        id: UserId(from_column(id, "user id")?),
        name,
        created_at_ms,
        status: status_from_columns(disabled, token_generation)?,
    })
}

fn status_from_columns(disabled: bool, token_generation: i64) -> BackendResult<UserStatus> {
    Ok(UserStatus { disabled, token_generation: from_column(token_generation, "token generation")? })
}

fn now_ms() -> BackendResult<i64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_err(BackendError::other)?;
    i64::try_from(since_epoch.as_millis()).map_err(BackendError::other)
}

#[async_trait]
impl UserStore for SqliteStore {
    /// Creates a user with a new id; a taken name is a typed outcome.
    async fn create_user(&self, name: &str) -> BackendResult<CreateUser> {
        let created: Result<UserRow, sqlx::Error> = sqlx::query_as(concat!(
            "INSERT INTO users (name, created_at_ms) VALUES (?, ?) RETURNING ",
            user_columns!()
        ))
        .bind(name)
        .bind(now_ms()?)
        .fetch_one(&mut *self.writer.lock().await?)
        .await;
        match created {
            Ok(columns) => Ok(CreateUser::Created(user_from_columns(columns)?)),
            // `name` is the only unique key a new row can collide on (ids come
            // from AUTOINCREMENT).
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(CreateUser::NameTaken),
            Err(e) => Err(map_sqlx(e)),
        }
    }

    async fn user_by_id(&self, id: UserId) -> BackendResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?"))
            .bind(to_bound(id.0))
            .fetch_optional(&self.reader)
            .await
            .map_err(map_sqlx)?;
        row.map(user_from_columns).transpose()
    }

    async fn user_by_name(&self, name: &str) -> BackendResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_sqlx)?;
        row.map(user_from_columns).transpose()
    }
}

/// The statement that applies a change, returning the new status.
fn change_statement(change: StatusChange) -> &'static str {
    match change {
        StatusChange::Disable => "UPDATE users SET disabled = 1 WHERE id = ? RETURNING disabled, token_generation",
        StatusChange::Enable => "UPDATE users SET disabled = 0 WHERE id = ? RETURNING disabled, token_generation",
        StatusChange::RevokeTokens => {
            "UPDATE users SET token_generation = token_generation + 1 WHERE id = ? \
             RETURNING disabled, token_generation"
        }
    }
}

#[async_trait]
impl UserStatusStore for SqliteStore {
    async fn change_user_status(&self, user: UserId, change: StatusChange) -> BackendResult<Option<UserStatus>> {
        let row: Option<(bool, i64)> = sqlx::query_as(change_statement(change))
            .bind(to_bound(user.0))
            .fetch_optional(&mut *self.writer.lock().await?)
            .await
            .map_err(map_sqlx)?;
        row.map(|(disabled, generation)| status_from_columns(disabled, generation)).transpose()
    }

    async fn changed_user_statuses(&self) -> BackendResult<Vec<(UserId, UserStatus)>> {
        let rows: Vec<(i64, bool, i64)> = sqlx::query_as(
            "SELECT id, disabled, token_generation FROM users WHERE disabled <> 0 OR token_generation <> 0",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.into_iter()
            .map(|(id, disabled, generation)| {
                Ok((UserId(from_column(id, "user id")?), status_from_columns(disabled, generation)?))
            })
            .collect()
    }
}

#[async_trait]
impl PasswordStore for SqliteStore {
    async fn set_password_hash(&self, user: UserId, hash: &str) -> BackendResult<bool> {
        // The SELECT yields no row for an unknown user: nothing is inserted.
        let stored = sqlx::query(
            "INSERT INTO user_passwords (user_id, hash, updated_ms) SELECT id, ?, ? FROM users WHERE id = ? \
             ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, updated_ms = excluded.updated_ms",
        )
        .bind(hash)
        .bind(now_ms()?)
        .bind(to_bound(user.0))
        .execute(&mut *self.writer.lock().await?)
        .await
        .map_err(map_sqlx)?;
        Ok(stored.rows_affected() > 0)
    }

    async fn password_hash(&self, user: UserId) -> BackendResult<Option<String>> {
        sqlx::query_scalar("SELECT hash FROM user_passwords WHERE user_id = ?")
            .bind(to_bound(user.0))
            .fetch_optional(&self.reader)
            .await
            .map_err(map_sqlx)
    }
}
