//! `UserStore` over the `users` table.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use im_core::UserId;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CreateUser, User, UserStore};

use super::SqliteStore;
use super::columns::{from_column, to_bound};
use super::error::map_sqlx;

fn user_from_columns((id, name, created_at_ms): (i64, String, i64)) -> BackendResult<User> {
    Ok(User { id: UserId(from_column(id, "user id")?), name, created_at_ms })
}

fn now_ms() -> BackendResult<i64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_err(BackendError::other)?;
    i64::try_from(since_epoch.as_millis()).map_err(BackendError::other)
}

#[async_trait]
impl UserStore for SqliteStore {
    /// Creates a user with a new id; a taken name is a typed outcome.
    async fn create_user(&self, name: &str) -> BackendResult<CreateUser> {
        let created: Result<(i64, String, i64), sqlx::Error> =
            sqlx::query_as("INSERT INTO users (name, created_at_ms) VALUES (?, ?) RETURNING id, name, created_at_ms")
                .bind(name)
                .bind(now_ms()?)
                .fetch_one(&self.writer)
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
        let row: Option<(i64, String, i64)> = sqlx::query_as("SELECT id, name, created_at_ms FROM users WHERE id = ?")
            .bind(to_bound(id.0))
            .fetch_optional(&self.reader)
            .await
            .map_err(map_sqlx)?;
        row.map(user_from_columns).transpose()
    }

    async fn user_by_name(&self, name: &str) -> BackendResult<Option<User>> {
        let row: Option<(i64, String, i64)> =
            sqlx::query_as("SELECT id, name, created_at_ms FROM users WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.reader)
                .await
                .map_err(map_sqlx)?;
        row.map(user_from_columns).transpose()
    }
}
