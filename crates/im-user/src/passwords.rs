//! Users' passwords: argon2id hashes in a [`PasswordStore`], and the checks
//! of a sign-in.
//!
//! What a sign-in must not tell an attacker, it does not: an unknown name, a
//! user without a password and a wrong password all cost one argon2id
//! verification (against a hash of a random password when there is no real
//! one) and give the same `invalid_credentials` error. Attempts are counted
//! per name (`LIMIT_LOGIN_ATTEMPTS_PER_MINUTE`); beyond the limit an attempt
//! is still verified, so it takes as long, and is refused as rate limited.
//!
//! Hashing is CPU and memory bound (~20-40 ms and `AUTH_PASSWORD_MEMORY_KIB`
//! each), so it runs on tokio's blocking pool, at most [`MAX_HASHING`] at
//! once: a flood of sign-ins costs a bounded amount of memory and leaves
//! the async workers free.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use im_auth::SignInAttempts;
use im_core::ports::{PasswordStore, User};
use im_core::{ErrorCode, ErrorReason, ImError, UserId, limits};
use tokio::sync::Semaphore;

/// Hashes computed at once; more wait their turn.
pub const MAX_HASHING: usize = 2;

/// How long a sign-in waits for its turn to hash before it is refused as
/// busy: under a flood, callers get an answer rather than a queue.
const HASHING_WAIT: Duration = Duration::from_secs(5);

/// Names whose attempts are counted at most; beyond, names that have been
/// quiet for a minute are forgotten first (G10).
const MAX_COUNTED_NAMES: usize = 100_000;

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest, in bytes: hashing reads all of it.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// argon2id's cost (`AUTH_PASSWORD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Sign-in attempts per name and minute.
    pub attempts_per_minute: u32,
}

impl PasswordParams {
    /// The cheapest argon2id allows: for tests only.
    pub fn for_tests() -> Self {
        Self { memory_kib: 8, iterations: 1, parallelism: 1, attempts_per_minute: 10 }
    }
}

/// Hashes, stores and checks passwords.
pub struct Passwords {
    store: Arc<dyn PasswordStore>,
    argon: Argon2<'static>,
    /// A hash of a random password, verified against when a sign-in has no
    /// real hash to check, so that it costs the same.
    decoy: String,
    hashing: Arc<Semaphore>,
    attempts: SignInAttempts<String>,
}

/// Is `password` acceptable to set? The message says what is wrong.
pub fn check_password(password: &str) -> Result<(), ImError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ImError::invalid(format!("a password has at most {MAX_PASSWORD_BYTES} bytes")));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ImError::invalid(format!("a password has at least {MIN_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

/// The one error of a sign-in that failed on its name or password.
pub fn invalid_credentials() -> ImError {
    ImError::unauthenticated("no user has this name and password").with_reason(ErrorReason::InvalidCredentials)
}

impl Passwords {
    /// Fails when `params` are outside what argon2id accepts.
    pub fn new(store: Arc<dyn PasswordStore>, params: PasswordParams) -> Result<Self, ImError> {
        let argon_params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| ImError::invalid(format!("argon2id parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let random = SaltString::generate(&mut OsRng);
        let decoy = hash_with(&argon, random.as_str())?;
        let per_minute = NonZeroU32::new(params.attempts_per_minute)
            .ok_or_else(|| ImError::invalid("sign-in attempts per minute must be at least 1"))?;
        Ok(Self {
            store,
            argon,
            decoy,
            hashing: Arc::new(Semaphore::new(MAX_HASHING)),
            attempts: SignInAttempts::per_minute(per_minute, MAX_COUNTED_NAMES),
        })
    }

    /// Sets `user`'s password. Not found when there is no such user.
    pub async fn set(&self, user: UserId, password: &str) -> Result<(), ImError> {
        check_password(password)?;
        let argon = self.argon.clone();
        let password = password.to_owned();
        let hash = self.blocking(move || hash_with(&argon, &password)).await??;
        if self.store.set_password_hash(user, &hash).await? {
            Ok(())
        } else {
            Err(ImError::not_found(format!("no user {user}")))
        }
    }

    /// Checks a sign-in as `name` (`user`: the user of that name, if any).
    /// Every failure costs one verification.
    pub async fn check(&self, name: &str, user: Option<&User>, password: &str) -> Result<(), ImError> {
        // Unknown names are counted too: a limit that only known names hit
        // would tell which names exist. A name no user can have is not.
        let allowed = match limits::check_user_name(name) {
            Ok(()) => self.count_attempt(name),
            Err(_) => Ok(()),
        };
        let stored = match user {
            Some(user) => self.store.password_hash(user.id).await?,
            None => None,
        };
        let has_hash = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.decoy.clone());
        // The password's bytes are bounded when set; a longer one cannot
        // match, but is checked as long as the limit to cost the same.
        let password: String = password.chars().take(MAX_PASSWORD_BYTES).collect();
        let argon = self.argon.clone();
        let matches = self.blocking(move || verify_with(&argon, &hash, &password)).await?;
        allowed?;
        if matches && has_hash { Ok(()) } else { Err(invalid_credentials()) }
    }

    /// Counts one attempt on `name` (unknown names too, so that the limit
    /// does not tell which names exist).
    fn count_attempt(&self, name: &str) -> Result<(), ImError> {
        self.attempts.count(&name.to_owned()).map_err(|wait| {
            ImError::new(ErrorCode::ResourceExhausted, "too many sign-in attempts for this name: wait and try again")
                .with_reason(ErrorReason::RateLimited)
                .with_retry_after(wait)
        })
    }

    /// Runs `work` on the blocking pool once one of [`MAX_HASHING`] turns is
    /// free.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ImError> {
        let busy = || ImError::new(ErrorCode::Unavailable, "too many sign-ins at once: try again in a moment");
        let turn = tokio::time::timeout(HASHING_WAIT, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            work()
        })
        .await
        .map_err(|e| ImError::internal(format!("password hashing failed: {e}")))
    }
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, ImError> {
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ImError::internal(format!("hashing a password failed: {e}")))
}

/// Whether `password` matches the PHC string `hash`, with the cost the hash
/// was made with (so hashes made under older parameters keep working).
fn verify_with(argon: &Argon2<'_>, hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon.verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash does not parse");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_too_short_or_too_long_are_refused() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password("ééééééé").is_err(), "counted in characters, not bytes");
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES)).is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn a_hash_verifies_its_password_only_and_carries_its_own_cost() {
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8, 1, 1, None).unwrap());
        let hash = hash_with(&argon, "correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{hash}");
        assert!(verify_with(&argon, &hash, "correct horse"));
        assert!(!verify_with(&argon, &hash, "correct horsE"));
        let costlier = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(16, 2, 1, None).unwrap());
        assert!(verify_with(&costlier, &hash, "correct horse"), "the hash's parameters are used");
        assert!(!verify_with(&argon, "not a hash", "correct horse"));
    }
}
