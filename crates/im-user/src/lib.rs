//! The User Service: the user directory behind `im.user.v1.UserService`,
//! and the group directory behind `im.user.v1.GroupDirectory`.
//!
//! - [`UserDirectory`]: the rules (names, admin-only creation, token issue)
//!   over a `UserStore` port; used in process by `im-service` in standalone
//!   mode.
//! - [`grpc`]: the tonic service that exposes it.
//! - [`groups`]: groups over a `GroupStore` port, every change published on
//!   `membership_change`; in process in standalone mode, and its gRPC server.

pub mod groups;
pub mod grpc;

use std::sync::Arc;
use std::time::Duration;

use im_auth::{Identity, Tokens};
use im_core::ports::{CreateUser, User, UserStatusBoard, UserStatusStore, UserStore};
use im_core::{ErrorCode, ImError, StatusChange, UserId, limits};

/// Users, their standing and their tokens.
#[derive(Clone)]
pub struct UserDirectory {
    store: Arc<dyn UserStore>,
    statuses: Arc<dyn UserStatusStore>,
    board: Arc<dyn UserStatusBoard>,
    tokens: Tokens,
    token_ttl: Duration,
}

impl UserDirectory {
    /// Users in `store`, their statuses in `statuses` and spread on `board`;
    /// the tokens it issues and checks follow the board.
    pub fn new(
        store: Arc<dyn UserStore>,
        statuses: Arc<dyn UserStatusStore>,
        board: Arc<dyn UserStatusBoard>,
        tokens: Tokens,
        token_ttl: Duration,
    ) -> Self {
        let tokens = tokens.with_statuses(board.clone());
        Self { store, statuses, board, tokens, token_ttl }
    }

    /// Puts every stored status on the board again: run at start, so a
    /// board that lost its state (an etcd restored empty, a status stored
    /// but never spread because etcd was away) converges on the store.
    /// Returns how many users were published.
    pub async fn publish_statuses(&self) -> Result<usize, ImError> {
        let changed = self.statuses.changed_user_statuses().await?;
        for &(user, status) in &changed {
            self.board.publish(user, status).await?;
        }
        Ok(changed.len())
    }

    /// Admin only: disables, enables a user or revokes its tokens; stored
    /// first, then spread to every process. When the store took the change
    /// but the board did not, the error says so and the same call may be
    /// made again (changes are idempotent but a revocation, which counts
    /// once more: harmless, every earlier token is refused either way).
    pub async fn change_status(&self, caller: &Identity, user: UserId, change: StatusChange) -> Result<User, ImError> {
        require_admin(caller)?;
        let status = self
            .statuses
            .change_user_status(user, change)
            .await?
            .ok_or_else(|| ImError::not_found(format!("no user {user}")))?;
        self.board.publish(user, status).await.map_err(|e| {
            tracing::warn!(user = %user, error = %e, "user status stored but not spread");
            ImError::new(
                ErrorCode::Unavailable,
                "the change is stored but could not be spread to every node and gateway yet; make the call again",
            )
        })?;
        tracing::info!(user = %user, ?change, disabled = status.disabled, token_generation = status.token_generation,
            "user status changed");
        self.user_by_id(user).await
    }

    /// Admin only: creates a user and a token for it.
    pub async fn create_user(&self, caller: &Identity, name: &str) -> Result<(User, String), ImError> {
        require_admin(caller)?;
        limits::check_user_name(name)?;
        match self.store.create_user(name).await? {
            CreateUser::Created(user) => {
                tracing::info!(user = %user.id, name = %user.name, "user created");
                let token = self.tokens.issue_user(user.id, &user.name, self.token_ttl);
                Ok((user, token))
            }
            CreateUser::NameTaken => {
                Err(ImError::new(ErrorCode::FailedPrecondition, format!("the user name {name:?} is taken")))
            }
        }
    }

    /// Admin only: a new token for an existing user.
    pub async fn issue_token(&self, caller: &Identity, user: UserId, ttl: Option<Duration>) -> Result<String, ImError> {
        require_admin(caller)?;
        let user = self.store.user_by_id(user).await?.ok_or_else(|| ImError::not_found(format!("no user {user}")))?;
        if user.status.disabled {
            return Err(ImError::new(
                ErrorCode::FailedPrecondition,
                format!("user {} is disabled: enable it before issuing a token", user.id),
            ));
        }
        Ok(self.tokens.issue_user(user.id, &user.name, ttl.unwrap_or(self.token_ttl)))
    }

    pub async fn user_by_id(&self, id: UserId) -> Result<User, ImError> {
        self.store.user_by_id(id).await?.ok_or_else(|| ImError::not_found(format!("no user {id}")))
    }

    pub async fn user_by_name(&self, name: &str) -> Result<User, ImError> {
        limits::check_user_name(name)?;
        self.store.user_by_name(name).await?.ok_or_else(|| ImError::not_found(format!("no user named {name:?}")))
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

fn require_admin(caller: &Identity) -> Result<(), ImError> {
    if caller.admin { Ok(()) } else { Err(ImError::denied("this call needs an admin credential")) }
}
