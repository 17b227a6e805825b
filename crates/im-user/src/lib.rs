//! The User Service: the user directory behind `im.user.v1.UserService`,
//! and the group directory behind `im.user.v1.GroupDirectory`.
//!
//! - [`UserDirectory`]: the rules (names, admin-only creation, token issue)
//!   over a `UserStore` port; used in process by `im-service` in standalone
//!   mode.
//! - [`passwords`]: argon2id password hashes and the checks of a sign-in.
//! - [`grpc`]: the tonic service that exposes it.
//! - [`groups`]: groups over a `GroupStore` port, every change published on
//!   `membership_change`; in process in standalone mode, and its gRPC server.

pub mod groups;
pub mod grpc;
pub mod passwords;

use std::sync::Arc;
use std::time::Duration;

use im_auth::{Identity, Tokens};
use im_core::ports::{CreateUser, SignIn, User, UserStatusBoard, UserStatusStore, UserStore};
use im_core::{ErrorCode, ErrorReason, ImError, StatusChange, UserId, limits};

use crate::passwords::Passwords;

/// Users, their standing and their tokens.
#[derive(Clone)]
pub struct UserDirectory {
    store: Arc<dyn UserStore>,
    statuses: Arc<dyn UserStatusStore>,
    board: Arc<dyn UserStatusBoard>,
    passwords: Arc<Passwords>,
    tokens: Tokens,
    token_ttl: Duration,
}

impl UserDirectory {
    /// Users in `store`, their statuses in `statuses` and spread on `board`,
    /// their passwords in `passwords`; the tokens it issues and checks follow
    /// the board.
    pub fn new(
        store: Arc<dyn UserStore>,
        statuses: Arc<dyn UserStatusStore>,
        board: Arc<dyn UserStatusBoard>,
        passwords: Passwords,
        tokens: Tokens,
        token_ttl: Duration,
    ) -> Self {
        let tokens = tokens.with_statuses(board.clone());
        Self { store, statuses, board, passwords: Arc::new(passwords), tokens, token_ttl }
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
        self.create_user_with(caller, name, None).await
    }

    /// Admin only: creates a user, with `password` if given, and a token for
    /// it. A password that is refused creates no user.
    pub async fn create_user_with(
        &self,
        caller: &Identity,
        name: &str,
        password: Option<&str>,
    ) -> Result<(User, String), ImError> {
        require_admin(caller)?;
        limits::check_user_name(name)?;
        if let Some(password) = password {
            passwords::check_password(password)?;
        }
        match self.store.create_user(name).await? {
            CreateUser::Created(user) => {
                tracing::info!(user = %user.id, name = %user.name, "user created");
                if let Some(password) = password {
                    self.passwords.set(user.id, password).await.map_err(|e| {
                        ImError::new(
                            e.code,
                            format!("user {} was created, but its password was not set: {}", user.id, e.message),
                        )
                    })?;
                }
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

    /// Admin only: sets (or replaces) a user's password.
    pub async fn set_password(&self, caller: &Identity, user: UserId, password: &str) -> Result<User, ImError> {
        require_admin(caller)?;
        self.passwords.set(user, password).await?;
        tracing::info!(user = %user, "password set");
        self.user_by_id(user).await
    }

    /// Signs in: a token for the user named `name`, if `password` is its
    /// password. An unknown name, a user without a password and a wrong
    /// password fail alike ([`passwords::invalid_credentials`]), after the
    /// same work; a disabled user is told so only with the right password.
    pub async fn login(&self, name: &str, password: &str) -> Result<(User, String), ImError> {
        let user = match limits::check_user_name(name) {
            Ok(()) => self.store.user_by_name(name).await?,
            Err(_) => None,
        };
        self.passwords.check(name, user.as_ref(), password).await?;
        // A check that passed found this user's hash.
        let user = user.ok_or_else(passwords::invalid_credentials)?;
        if user.status.disabled {
            return Err(ImError::denied(format!("user {} is disabled", user.id)).with_reason(ErrorReason::UserDisabled));
        }
        tracing::info!(user = %user.id, "signed in with a password");
        let token = self.tokens.issue_user(user.id, &user.name, self.token_ttl);
        Ok((user, token))
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

#[async_trait::async_trait]
impl SignIn for UserDirectory {
    async fn sign_in(&self, name: &str, password: &str) -> Result<(User, String), ImError> {
        self.login(name, password).await
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
    const HOUR: Duration = Duration::from_secs(3600);

    fn passwords(store: &Arc<SqliteStore>) -> Passwords {
        Passwords::new(store.clone(), passwords::PasswordParams::for_tests()).unwrap()
    }

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
            UserDirectory::new(store.clone(), store.clone(), board.clone(), passwords(&store), tokens, HOUR);
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
            passwords(&s.store),
            Tokens::new(SECRET).unwrap(),
            Duration::from_secs(3600),
        );
        assert_eq!(restarted.publish_statuses().await.unwrap(), 2);
        assert!(fresh.status(alice.id).disabled);
        assert_eq!(fresh.status(bob.id).token_generation, 1);
    }

    #[tokio::test]
    async fn a_password_signs_in_and_wrong_ones_unknown_names_and_users_without_one_fail_alike() {
        let s = setup().await;
        let (alice, _) = s.directory.create_user(&s.admin, "alice").await.unwrap();
        s.directory.create_user(&s.admin, "bob").await.unwrap();
        s.directory.set_password(&s.admin, alice.id, "correct horse").await.unwrap();

        let (user, token) = s.directory.login("alice", "correct horse").await.unwrap();
        assert_eq!(user.id, alice.id);
        assert_eq!(s.directory.tokens().verify(&token).unwrap().user, alice.id);

        for (name, password) in [("alice", "wrong horse"), ("carol", "correct horse"), ("bob", "correct horse")] {
            let refused = s.directory.login(name, password).await.unwrap_err();
            assert_eq!(refused, passwords::invalid_credentials(), "{name}");
        }
        let bad_name = s.directory.login("<b>", "correct horse").await.unwrap_err();
        assert_eq!(bad_name, passwords::invalid_credentials());
    }

    #[tokio::test]
    async fn only_an_admin_sets_a_password_and_a_short_one_is_refused() {
        let s = setup().await;
        let (alice, token) = s.directory.create_user(&s.admin, "alice").await.unwrap();
        let as_alice = s.directory.tokens().verify(&token).unwrap();
        let refused = s.directory.set_password(&as_alice, alice.id, "correct horse").await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::PermissionDenied);
        let short = s.directory.set_password(&s.admin, alice.id, "short").await.unwrap_err();
        assert_eq!(short.code, ErrorCode::InvalidArgument);
        let nobody = s.directory.set_password(&s.admin, UserId(999), "correct horse").await.unwrap_err();
        assert_eq!(nobody.code, ErrorCode::NotFound);
        assert_eq!(s.directory.login("alice", "correct horse").await.unwrap_err(), passwords::invalid_credentials());
    }

    #[tokio::test]
    async fn attempts_past_the_limit_are_refused_as_rate_limited_for_known_and_unknown_names() {
        let s = setup().await;
        let (alice, _) = s.directory.create_user(&s.admin, "alice").await.unwrap();
        s.directory.set_password(&s.admin, alice.id, "correct horse").await.unwrap();
        let limit = passwords::PasswordParams::for_tests().attempts_per_minute;
        for name in ["alice", "zed"] {
            for _ in 0..limit {
                let refused = s.directory.login(name, "wrong horse").await.unwrap_err();
                assert_eq!(refused.reason, Some(ErrorReason::InvalidCredentials));
            }
            let limited = s.directory.login(name, "wrong horse").await.unwrap_err();
            assert_eq!((limited.code, limited.reason), (ErrorCode::ResourceExhausted, Some(ErrorReason::RateLimited)));
            assert!(limited.retry_after.is_some_and(|wait| wait > Duration::ZERO));
        }
        let right_but_limited = s.directory.login("alice", "correct horse").await.unwrap_err();
        assert_eq!(right_but_limited.reason, Some(ErrorReason::RateLimited), "the right password does not pass");
    }

    #[tokio::test]
    async fn a_disabled_user_is_told_so_only_with_its_password() {
        let s = setup().await;
        let (alice, _) = s.directory.create_user(&s.admin, "alice").await.unwrap();
        s.directory.set_password(&s.admin, alice.id, "correct horse").await.unwrap();
        s.directory.change_status(&s.admin, alice.id, StatusChange::Disable).await.unwrap();
        assert_eq!(s.directory.login("alice", "wrong horse").await.unwrap_err(), passwords::invalid_credentials());
        let disabled = s.directory.login("alice", "correct horse").await.unwrap_err();
        assert_eq!(disabled.reason, Some(ErrorReason::UserDisabled));
    }
}
