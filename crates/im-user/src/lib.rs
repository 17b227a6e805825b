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
use im_core::ports::{CreateUser, User, UserStore};
use im_core::{ImError, UserId, limits};

/// Users and their tokens.
#[derive(Clone)]
pub struct UserDirectory {
    store: Arc<dyn UserStore>,
    tokens: Tokens,
    token_ttl: Duration,
}

impl UserDirectory {
    pub fn new(store: Arc<dyn UserStore>, tokens: Tokens, token_ttl: Duration) -> Self {
        Self { store, tokens, token_ttl }
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
                Err(ImError::new(im_core::ErrorCode::FailedPrecondition, format!("the user name {name:?} is taken")))
            }
        }
    }

    /// Admin only: a new token for an existing user.
    pub async fn issue_token(&self, caller: &Identity, user: UserId, ttl: Option<Duration>) -> Result<String, ImError> {
        require_admin(caller)?;
        let user = self.store.user_by_id(user).await?.ok_or_else(|| ImError::not_found(format!("no user {user}")))?;
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
