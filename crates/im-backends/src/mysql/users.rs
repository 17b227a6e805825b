//! `UserStore` and `UserStatusStore` over the `users` table, `PasswordStore`
//! over `user_passwords`.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CreateUser, PasswordStore, User, UserStatusStore, UserStore};
use im_core::{StatusChange, UserId, UserStatus};

use super::MysqlStore;
use super::columns::text_from_column;
use super::error::map_sqlx;
use crate::telemetry::DbOperation;

/// The columns every user query reads, in [`UserRow`]'s order (a macro so
/// that each statement is one literal).
macro_rules! user_columns {
    () => {
        "id, name, created_at_ms, disabled, token_generation"
    };
}

type UserRow = (u64, Vec<u8>, i64, bool, u64);

fn user_from_columns((id, name, created_at_ms, disabled, token_generation): UserRow) -> BackendResult<User> {
    Ok(User {
        id: UserId(id),
        name: text_from_column(name, "user name")?,
        created_at_ms,
        status: UserStatus { disabled, token_generation },
    })
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
            Some(id) => CreateUser::Created(User {
                id: UserId(id),
                name: name.to_owned(),
                created_at_ms,
                status: UserStatus::default(),
            }),
            None => CreateUser::NameTaken,
        })
    }

    async fn user_by_id(&self, id: UserId) -> BackendResult<Option<User>> {
        let row: Option<UserRow> = self
            .reading(DbOperation::UserById, async |conn| {
                sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?"))
                    .bind(id.0)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        row.map(user_from_columns).transpose()
    }

    async fn user_by_name(&self, name: &str) -> BackendResult<Option<User>> {
        let row: Option<UserRow> = self
            .reading(DbOperation::UserByName, async |conn| {
                sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?"))
                    .bind(name.as_bytes())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        row.map(user_from_columns).transpose()
    }
}

/// The statement that applies a change (MariaDB has no `UPDATE … RETURNING`:
/// the new status is read back on the same connection).
fn change_statement(change: StatusChange) -> &'static str {
    match change {
        StatusChange::Disable => "UPDATE users SET disabled = TRUE WHERE id = ?",
        StatusChange::Enable => "UPDATE users SET disabled = FALSE WHERE id = ?",
        StatusChange::RevokeTokens => "UPDATE users SET token_generation = token_generation + 1 WHERE id = ?",
    }
}

#[async_trait]
impl UserStatusStore for MysqlStore {
    async fn change_user_status(&self, user: UserId, change: StatusChange) -> BackendResult<Option<UserStatus>> {
        let row: Option<(bool, u64)> = self
            .writing(DbOperation::ChangeUserStatus, async |conn| {
                sqlx::query(change_statement(change)).bind(user.0).execute(&mut *conn).await.map_err(map_sqlx)?;
                sqlx::query_as("SELECT disabled, token_generation FROM users WHERE id = ?")
                    .bind(user.0)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        Ok(row.map(|(disabled, token_generation)| UserStatus { disabled, token_generation }))
    }

    async fn changed_user_statuses(&self) -> BackendResult<Vec<(UserId, UserStatus)>> {
        let rows: Vec<(u64, bool, u64)> = self
            .reading(DbOperation::ChangedUserStatuses, async |conn| {
                sqlx::query_as(
                    "SELECT id, disabled, token_generation FROM users WHERE disabled OR token_generation <> 0",
                )
                .fetch_all(&mut *conn)
                .await
                .map_err(map_sqlx)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, disabled, token_generation)| (UserId(id), UserStatus { disabled, token_generation }))
            .collect())
    }
}

#[async_trait]
impl PasswordStore for MysqlStore {
    async fn set_password_hash(&self, user: UserId, hash: &str) -> BackendResult<bool> {
        let updated_ms = now_ms()?;
        self.writing(DbOperation::SetPasswordHash, async |conn| {
            // The SELECT yields no row for an unknown user: nothing is
            // inserted. MariaDB counts an updated row twice, an inserted one
            // once, an unchanged one zero times: that needs the very same
            // hash, salt included, which a fresh salt rules out.
            let stored = sqlx::query(
                "INSERT INTO user_passwords (user_id, hash, updated_ms) SELECT id, ?, ? FROM users WHERE id = ? \
                 ON DUPLICATE KEY UPDATE hash = VALUES(hash), updated_ms = VALUES(updated_ms)",
            )
            .bind(hash.as_bytes())
            .bind(updated_ms)
            .bind(user.0)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            Ok(stored.rows_affected() > 0)
        })
        .await
    }

    async fn password_hash(&self, user: UserId) -> BackendResult<Option<String>> {
        let hash: Option<Vec<u8>> = self
            .reading(DbOperation::PasswordHash, async |conn| {
                sqlx::query_scalar("SELECT hash FROM user_passwords WHERE user_id = ?")
                    .bind(user.0)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        hash.map(|hash| text_from_column(hash, "password hash")).transpose()
    }
}
