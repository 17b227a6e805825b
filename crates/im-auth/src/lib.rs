//! Tokens: the only source of identity (G7). A token is a JWT signed with
//! HS256 by a secret the services share; its subject is the user, an `adm`
//! claim marks an admin credential, and an `svc` claim a service credential
//! with the one API it may call ([`Scope`]). Nothing a client writes into a
//! request can change who it acts as.
//!
//! A signature cannot be taken back, so a user's standing is checked beside
//! it: [`Tokens::with_statuses`] gives the verifier this process's view of
//! who is disabled and which token generation each user is at
//! ([`im_core::UserStatus`]); a token carries the generation it was issued
//! at (`gen`, absent for 0). Admin and service credentials are no user:
//! the standing does not apply to them.

mod attempts;
mod identity;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use im_core::ports::UserStatusView;
use im_core::{ImError, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub use attempts::SignInAttempts;
pub use identity::{Identity, Role, Scope};

/// Shortest secret accepted: 32 bytes, the HS256 key size.
pub const MIN_SECRET_LEN: usize = 32;

/// The subject of admin and service credentials; no real user has it.
pub const ADMIN_SUBJECT: UserId = UserId(0);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    adm: bool,
    /// The scope of a service credential (`Scope::as_str`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    svc: Option<String>,
    /// The claim `gen` (a reserved word in Rust 2024).
    #[serde(rename = "gen", default, skip_serializing_if = "is_zero")]
    generation: u64,
    iat: u64,
    exp: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Issues and verifies tokens with one secret, and (once given a view of
/// users' standing) refuses those of disabled users and revoked tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    statuses: Option<Arc<dyn UserStatusView>>,
}

// The keys are secrets: never print them.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens(<secret>)")
    }
}

impl Tokens {
    /// Fails when the secret is shorter than [`MIN_SECRET_LEN`].
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!("the token secret must be at least {MIN_SECRET_LEN} bytes, got {}", secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            statuses: None,
        })
    }

    /// These tokens, checked against `statuses` from now on: a user token is
    /// accepted only while its user is enabled and its generation is
    /// current, and new ones are issued at the current generation. Every
    /// process that serves users calls this once at start; without it (unit
    /// tests, the push API which takes service credentials only) the
    /// signature alone decides. Admin and service credentials are never
    /// checked against it: they are no user.
    pub fn with_statuses(self, statuses: Arc<dyn UserStatusView>) -> Self {
        Self { statuses: Some(statuses), ..self }
    }

    /// Whether a token of `user` issued at `token_generation` is still
    /// accepted (always, without a view of users' standing).
    pub fn admits(&self, user: UserId, token_generation: u64) -> Result<(), ImError> {
        match &self.statuses {
            Some(statuses) => statuses.status(user).admits(token_generation),
            None => Ok(()),
        }
    }

    /// Whether `user` may act now (not disabled), for a caller that
    /// authenticated the user itself and names them (the gateway's relay
    /// stream): the check a token of the current generation would pass.
    pub fn admits_user(&self, user: UserId) -> Result<(), ImError> {
        match &self.statuses {
            Some(statuses) => {
                let status = statuses.status(user);
                status.admits(status.token_generation)
            }
            None => Ok(()),
        }
    }

    /// Calls `listener` with each change of a user's standing this process
    /// learns of (a gateway closes the connections it refuses). Nothing
    /// happens without a view of users' standing.
    pub fn on_status_change(&self, listener: im_core::ports::StatusListener) {
        if let Some(statuses) = &self.statuses {
            statuses.on_change(listener);
        }
    }

    /// The generation `user`'s tokens are issued at now.
    pub fn token_generation(&self, user: UserId) -> u64 {
        self.statuses.as_ref().map_or(0, |statuses| statuses.status(user).token_generation)
    }

    /// A token for `user` valid for `ttl`.
    pub fn issue_user(&self, user: UserId, name: &str, ttl: Duration) -> String {
        self.issue(user, name, Role::User, ttl)
    }

    /// An admin credential valid for `ttl`.
    pub fn issue_admin(&self, ttl: Duration) -> String {
        self.issue(ADMIN_SUBJECT, "admin", Role::Admin, ttl)
    }

    /// A service credential for the API of `scope`, valid for `ttl`. Services
    /// keep these in memory and short-lived: one that leaks can call that one
    /// API until it expires, and nothing else.
    pub fn issue_service(&self, scope: Scope, ttl: Duration) -> String {
        self.issue(ADMIN_SUBJECT, &format!("service:{scope}"), Role::Service(scope), ttl)
    }

    fn issue(&self, user: UserId, name: &str, role: Role, ttl: Duration) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: user.0.to_string(),
            name: name.to_owned(),
            adm: role == Role::Admin,
            svc: match role {
                Role::Service(scope) => Some(scope.as_str().to_owned()),
                Role::User | Role::Admin => None,
            },
            generation: if role == Role::User { self.token_generation(user) } else { 0 },
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The identity a token acts as; `UNAUTHENTICATED` when it is malformed,
    /// signed with another secret, expired or revoked, `PERMISSION_DENIED`
    /// (reason `user_disabled`) when its user is disabled.
    pub fn verify(&self, token: &str) -> Result<Identity, ImError> {
        const MAX_TOKEN_LEN: usize = 4096;
        if token.len() > MAX_TOKEN_LEN {
            return Err(ImError::unauthenticated("token too long"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => ImError::unauthenticated("token expired"),
                ErrorKind::InvalidSignature => ImError::unauthenticated("token signature is not valid"),
                _ => ImError::unauthenticated("token is malformed"),
            }
        })?;
        let claims = data.claims;
        let user = claims
            .sub
            .parse::<u64>()
            .map(UserId)
            .map_err(|_| ImError::unauthenticated("token subject is not a user id"))?;
        let role = role(&claims)?;
        // A user's token names a real user; a service credential names none
        // (so nothing reads a user out of it by mistake).
        let subject_fits = match role {
            Role::User => user != ADMIN_SUBJECT,
            Role::Service(_) => user == ADMIN_SUBJECT,
            Role::Admin => true,
        };
        if !subject_fits {
            return Err(ImError::unauthenticated("token subject is not a user id"));
        }
        if role == Role::User {
            self.admits(user, claims.generation)?;
        }
        let token_generation = if role == Role::User { claims.generation } else { 0 };
        Ok(Identity { user, name: claims.name, role, token_generation })
    }

    /// Verifies an `authorization` header value of the form `Bearer <token>`.
    pub fn verify_bearer(&self, header: &str) -> Result<Identity, ImError> {
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ImError::unauthenticated("expected `authorization: Bearer <token>`"))?;
        self.verify(token.trim())
    }
}

/// The kind of credential the claims describe.
fn role(claims: &Claims) -> Result<Role, ImError> {
    match (claims.adm, claims.svc.as_deref()) {
        (false, None) => Ok(Role::User),
        (true, None) => Ok(Role::Admin),
        (false, Some(scope)) => Scope::parse(scope)
            .map(Role::Service)
            .ok_or_else(|| ImError::unauthenticated("token names an unknown service scope")),
        // Never issued: a credential is one kind or the other.
        (true, Some(_)) => Err(ImError::unauthenticated("token is both admin and service")),
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::ErrorCode;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_token_verifies_as_its_user() {
        let tokens = Tokens::new(SECRET).unwrap();
        let t = tokens.issue_user(UserId(42), "alice", Duration::from_secs(60));
        let id = tokens.verify(&t).unwrap();
        assert_eq!(id, Identity { user: UserId(42), name: "alice".into(), role: Role::User, token_generation: 0 });
        assert!(id.is_user() && !id.is_admin() && id.service_scope().is_none());
        assert_eq!(tokens.verify_bearer(&format!("Bearer {t}")).unwrap().user, UserId(42));
    }

    #[test]
    fn admin_token_is_marked_admin() {
        let tokens = Tokens::new(SECRET).unwrap();
        let id = tokens.verify(&tokens.issue_admin(Duration::from_secs(60))).unwrap();
        assert!(id.is_admin() && !id.is_user());
        assert_eq!(id.service_scope(), None, "an admin credential is no service credential");
        assert_eq!(id.user, ADMIN_SUBJECT);
    }

    #[test]
    fn a_service_token_carries_its_scope_and_is_neither_admin_nor_user() {
        let tokens = Tokens::new(SECRET).unwrap();
        for scope in Scope::ALL {
            let id = tokens.verify(&tokens.issue_service(scope, Duration::from_secs(60))).unwrap();
            assert_eq!(id.role, Role::Service(scope));
            assert_eq!(id.service_scope(), Some(scope));
            assert!(!id.is_admin() && !id.is_user(), "{scope}");
            assert!(id.require_service(scope).is_ok());
        }
    }

    #[test]
    fn a_user_token_is_no_service_token() {
        let tokens = Tokens::new(SECRET).unwrap();
        let id = tokens.verify(&tokens.issue_user(UserId(5), "svc", Duration::from_secs(60))).unwrap();
        assert_eq!(id.service_scope(), None);
        assert_eq!(id.require_service(Scope::Push).unwrap_err().code, ErrorCode::PermissionDenied);
    }

    fn signed(claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn service_claims(scope: &str) -> Claims {
        let now = unix_now();
        Claims {
            sub: "0".into(),
            name: "service".into(),
            adm: false,
            svc: Some(scope.into()),
            generation: 0,
            iat: now,
            exp: now + 60,
        }
    }

    #[test]
    fn expired_unknown_mixed_and_user_naming_service_tokens_are_unauthenticated() {
        let tokens = Tokens::new(SECRET).unwrap();
        let expired = Claims { iat: 1, exp: 100, ..service_claims("push") };
        assert_eq!(tokens.verify(&signed(&expired)).unwrap_err().message, "token expired");
        let unknown = tokens.verify(&signed(&service_claims("everything"))).unwrap_err();
        assert_eq!(
            (unknown.code, unknown.message.as_str()),
            (ErrorCode::Unauthenticated, "token names an unknown service scope")
        );
        let both = Claims { adm: true, ..service_claims("push") };
        assert_eq!(tokens.verify(&signed(&both)).unwrap_err().code, ErrorCode::Unauthenticated);
        // A service credential never names a user: nothing could read one out of it.
        let as_user = Claims { sub: "7".into(), ..service_claims("push") };
        assert_eq!(tokens.verify(&signed(&as_user)).unwrap_err().code, ErrorCode::Unauthenticated);
        let foreign = Tokens::new(b"another-secret-another-secret-xx").unwrap();
        let forged = foreign.issue_service(Scope::Push, Duration::from_secs(60));
        assert_eq!(tokens.verify(&forged).unwrap_err().code, ErrorCode::Unauthenticated);
    }

    #[test]
    fn other_secret_expired_and_garbage_are_unauthenticated() {
        let tokens = Tokens::new(SECRET).unwrap();
        let other = Tokens::new(b"another-secret-another-secret-xx").unwrap();
        let foreign = other.issue_user(UserId(1), "a", Duration::from_secs(60));
        assert_eq!(tokens.verify(&foreign).unwrap_err().code, ErrorCode::Unauthenticated);

        let claims =
            Claims { sub: "1".into(), name: "a".into(), adm: false, svc: None, generation: 0, iat: 1, exp: 100 };
        let expired =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        let err = tokens.verify(&expired).unwrap_err();
        assert_eq!(err.message, "token expired");

        assert!(tokens.verify("not.a.jwt").is_err());
        assert!(tokens.verify_bearer("Basic abc").is_err());
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(Tokens::new(b"short").is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let tokens = Tokens::new(SECRET).unwrap();
        assert!(!format!("{tokens:?}").contains("0123"));
    }

    /// A view with some users changed, as a board would hold it.
    struct Statuses(parking_lot::Mutex<std::collections::HashMap<UserId, im_core::UserStatus>>);

    impl UserStatusView for Statuses {
        fn status(&self, user: UserId) -> im_core::UserStatus {
            self.0.lock().get(&user).copied().unwrap_or_default()
        }
        fn on_change(&self, _: im_core::ports::StatusListener) {}
    }

    fn with_statuses() -> (Tokens, Arc<Statuses>) {
        let statuses = Arc::new(Statuses(Default::default()));
        (Tokens::new(SECRET).unwrap().with_statuses(statuses.clone()), statuses)
    }

    #[test]
    fn a_disabled_users_tokens_are_refused_until_it_is_enabled() {
        use im_core::{ErrorReason, StatusChange, UserStatus};
        let (tokens, statuses) = with_statuses();
        let token = tokens.issue_user(UserId(9), "mallory", Duration::from_secs(60));
        statuses.0.lock().insert(UserId(9), UserStatus::default().after(StatusChange::Disable));
        let refused = tokens.verify(&token).unwrap_err();
        assert_eq!((refused.code, refused.reason), (ErrorCode::PermissionDenied, Some(ErrorReason::UserDisabled)));
        assert!(tokens.verify(&tokens.issue_user(UserId(10), "bob", Duration::from_secs(60))).is_ok());
        statuses.0.lock().insert(UserId(9), UserStatus::default());
        assert_eq!(tokens.verify(&token).unwrap().user, UserId(9));
    }

    #[test]
    fn a_user_named_by_its_gateway_may_act_unless_disabled() {
        use im_core::{ErrorReason, StatusChange, UserStatus};
        let (tokens, statuses) = with_statuses();
        assert!(tokens.admits_user(UserId(9)).is_ok());
        statuses.0.lock().insert(UserId(9), UserStatus::default().after(StatusChange::RevokeTokens));
        assert!(
            tokens.admits_user(UserId(9)).is_ok(),
            "a revocation is about tokens; the gateway closes their connections"
        );
        statuses.0.lock().insert(UserId(9), UserStatus::default().after(StatusChange::Disable));
        let refused = tokens.admits_user(UserId(9)).unwrap_err();
        assert_eq!((refused.code, refused.reason), (ErrorCode::PermissionDenied, Some(ErrorReason::UserDisabled)));
    }

    #[test]
    fn a_revocation_refuses_the_tokens_issued_before_it_and_new_ones_work() {
        use im_core::{ErrorReason, StatusChange, UserStatus};
        let (tokens, statuses) = with_statuses();
        let before = tokens.issue_user(UserId(9), "alice", Duration::from_secs(60));
        statuses.0.lock().insert(UserId(9), UserStatus::default().after(StatusChange::RevokeTokens));
        let refused = tokens.verify(&before).unwrap_err();
        assert_eq!((refused.code, refused.reason), (ErrorCode::Unauthenticated, Some(ErrorReason::TokenRevoked)));
        let after = tokens.issue_user(UserId(9), "alice", Duration::from_secs(60));
        assert_eq!(tokens.verify(&after).unwrap().token_generation, 1);
    }

    #[test]
    fn admin_credentials_are_not_user_statuses() {
        use im_core::{StatusChange, UserStatus};
        let (tokens, statuses) = with_statuses();
        statuses.0.lock().insert(ADMIN_SUBJECT, UserStatus::default().after(StatusChange::Disable));
        assert!(tokens.verify(&tokens.issue_admin(Duration::from_secs(60))).unwrap().is_admin());
    }

    #[test]
    fn service_credentials_are_not_user_statuses() {
        use im_core::{StatusChange, UserStatus};
        let (tokens, statuses) = with_statuses();
        let change = UserStatus::default().after(StatusChange::Disable).after(StatusChange::RevokeTokens);
        statuses.0.lock().insert(ADMIN_SUBJECT, change);
        let id = tokens.verify(&tokens.issue_service(Scope::Push, Duration::from_secs(60))).unwrap();
        assert_eq!((id.service_scope(), id.token_generation), (Some(Scope::Push), 0));
    }
}
