//! `UserStore` over the `users` table.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use im_core::UserId;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CreateUser, User, UserStore};

use super::MysqlStore;
use super::columns::text_from_column;
use super::error::map_sqlx;
use crate::telemetry::DbOperation;

fn user_from_columns((id, name, created_at_ms): (u64, Vec<u8>, i64)) -> BackendResult<User> {
    Ok(User { id: UserId(id), name: text_from_column(name, "user name")?, created_at_ms })
}

fn now_ms() -> BackendResult<i64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_err(BackendError::other)?;
    i64::try_from(since_epoch.as_millis()).map_err(BackendError::other)
}

#[async_trait]
impl UserStore for MysqlStore {
    /// Creates a user with a new id; a taken name is a typed outcome.
    async fn create_user(&self, name: &str) -> BackendResult<CreateUser> {
        let created_at_ms = now_ms()?;
        let created = self
            .writing(DbOperation::CreateUser, async |conn| {
                let result = sqlx::query("INSERT INTO users (name, created_at_ms) VALUES (?, ?)")
                    .bind(name.as_bytes())
                    .bind(created_at_ms)
                    .execute(&mut *conn)
                    .await;
                match result {
                    // No RETURNING on MySQL: the new id is the statement's
                    // AUTO_INCREMENT value, which the server sends back.
                    Ok(done) => Ok(Some(done.last_insert_id())),
                    // `name` is the only unique key a new row can collide on
                    // (ids come from AUTO_INCREMENT).
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
                    Err(e) => Err(map_sqlx(e)),
                }
            })
            .await?;
        Ok(match created {
            Some(id) => CreateUser::Created(User { id: UserId(id), name: name.to_owned(), created_at_ms }),
            None => CreateUser::NameTaken,
        })
    }

    async fn user_by_id(&self, id: UserId) -> BackendResult<Option<User>> {
        let row: Option<(u64, Vec<u8>, i64)> = self
            .reading(DbOperation::UserById, async |conn| {
                sqlx::query_as("SELECT id, name, created_at_ms FROM users WHERE id = ?")
                    .bind(id.0)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        row.map(user_from_columns).transpose()
    }

    async fn user_by_name(&self, name: &str) -> BackendResult<Option<User>> {
        let row: Option<(u64, Vec<u8>, i64)> = self
            .reading(DbOperation::UserByName, async |conn| {
                sqlx::query_as("SELECT id, name, created_at_ms FROM users WHERE name = ?")
                    .bind(name.as_bytes())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        row.map(user_from_columns).transpose()
    }
}
