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
    if caller.is_admin() { Ok(()) } else { Err(ImError::denied("this call needs an admin credential")) }
}

#[cfg(test)]
mod tests {
    use im_backends::SqliteStore;
    use im_backends::memory::MemoryUserStatusBoard;
    use im_core::ErrorReason;
    use im_core::ports::UserStatusView;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    struct Setup {
        directory: UserDirectory,
        board: Arc<MemoryUserStatusBoard>,
        store: Arc<SqliteStore>,
        admin: Identity,
        _dir: tempfile::TempDir,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("im.db")).await.unwrap());
        let board = Arc::new(MemoryUserStatusBoard::default());
        let tokens = Tokens::new(SECRET).unwrap();
        let admin = tokens.verify(&tokens.issue_admin(Duration::from_secs(60))).unwrap();
        let directory =
            UserDirectory::new(store.clone(), store.clone(), board.clone(), tokens, Duration::from_secs(3600));
        Setup { directory, board, store, admin, _dir: dir }
    }

    #[tokio::test]
    async fn only_an_admin_changes_a_status_and_an_unknown_user_is_not_found() {
        let s = setup().await;
        let (alice, token) = s.directory.create_user(&s.admin, "alice").await.unwrap();
        let as_alice = s.directory.tokens().verify(&token).unwrap();
        let refused = s.directory.change_status(&as_alice, alice.id, StatusChange::Disable).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::PermissionDenied);
        assert!(!s.directory.user_by_id(alice.id).await.unwrap().status.disabled, "nothing changed");
        let missing = s.directory.change_status(&s.admin, UserId(999), StatusChange::Disable).await.unwrap_err();
        assert_eq!(missing.code, ErrorCode::NotFound);
    }

    #[tokio::test]
    async fn a_change_is_stored_spread_and_checked_by_the_directorys_own_tokens() {
        let s = setup().await;
        let (alice, token) = s.directory.create_user(&s.admin, "alice").await.unwrap();
        let user = s.directory.change_status(&s.admin, alice.id, StatusChange::Disable).await.unwrap();
        assert!(user.status.disabled);
        assert!(s.board.status(alice.id).disabled, "spread on the board");
        let refused = s.directory.tokens().verify(&token).unwrap_err();
        assert_eq!(refused.reason, Some(ErrorReason::UserDisabled));
        let no_token = s.directory.issue_token(&s.admin, alice.id, None).await.unwrap_err();
        assert_eq!(no_token.code, ErrorCode::FailedPrecondition);

        s.directory.change_status(&s.admin, alice.id, StatusChange::Enable).await.unwrap();
        s.directory.change_status(&s.admin, alice.id, StatusChange::RevokeTokens).await.unwrap();
        assert_eq!(s.directory.tokens().verify(&token).unwrap_err().reason, Some(ErrorReason::TokenRevoked));
        let fresh = s.directory.issue_token(&s.admin, alice.id, None).await.unwrap();
        assert_eq!(s.directory.tokens().verify(&fresh).unwrap().token_generation, 1);
    }

    #[tokio::test]
    async fn publishing_at_start_puts_every_stored_status_on_a_fresh_board() {
        let s = setup().await;
        let (alice, _) = s.directory.create_user(&s.admin, "alice").await.unwrap();
        let (bob, _) = s.directory.create_user(&s.admin, "bob").await.unwrap();
        s.directory.change_status(&s.admin, alice.id, StatusChange::Disable).await.unwrap();
        s.directory.change_status(&s.admin, bob.id, StatusChange::RevokeTokens).await.unwrap();

        // As after a restart against an etcd that lost its keys.
        let fresh = Arc::new(MemoryUserStatusBoard::default());
        let restarted = UserDirectory::new(
            s.store.clone(),
            s.store.clone(),
            fresh.clone(),
            Tokens::new(SECRET).unwrap(),
            Duration::from_secs(3600),
        );
        assert_eq!(restarted.publish_statuses().await.unwrap(), 2);
        assert!(fresh.status(alice.id).disabled);
        assert_eq!(fresh.status(bob.id).token_generation, 1);
    }
}
