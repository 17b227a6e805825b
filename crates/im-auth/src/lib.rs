//! Tokens: the only source of identity (G7). A token is a JWT signed with
//! HS256 by a secret the services share; its subject is the user, and an
//! `adm` claim marks an admin credential. Nothing a client writes into a
//! request can change who it acts as.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use im_core::{ImError, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest secret accepted: 32 bytes, the HS256 key size.
pub const MIN_SECRET_LEN: usize = 32;

/// The user id of admin credentials; no real user has it.
pub const ADMIN_SUBJECT: UserId = UserId(0);

/// Who a verified token acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub name: String,
    pub admin: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    adm: bool,
    iat: u64,
    exp: u64,
}

/// Issues and verifies tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
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
        Ok(Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation })
    }

    /// A token for `user` valid for `ttl`.
    pub fn issue_user(&self, user: UserId, name: &str, ttl: Duration) -> String {
        self.issue(user, name, false, ttl)
    }

    /// An admin credential valid for `ttl`.
    pub fn issue_admin(&self, ttl: Duration) -> String {
        self.issue(ADMIN_SUBJECT, "admin", true, ttl)
    }

    fn issue(&self, user: UserId, name: &str, admin: bool, ttl: Duration) -> String {
        let now = unix_now();
        let claims =
            Claims { sub: user.0.to_string(), name: name.to_owned(), adm: admin, iat: now, exp: now + ttl.as_secs() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The identity a token acts as; `UNAUTHENTICATED` when it is malformed,
    /// signed with another secret or expired.
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
        let user = data
            .claims
            .sub
            .parse::<u64>()
            .map(UserId)
            .map_err(|_| ImError::unauthenticated("token subject is not a user id"))?;
        if !data.claims.adm && user == ADMIN_SUBJECT {
            return Err(ImError::unauthenticated("token subject is not a user id"));
        }
        Ok(Identity { user, name: data.claims.name, admin: data.claims.adm })
    }

    /// Verifies an `authorization` header value of the form `Bearer <token>`.
    pub fn verify_bearer(&self, header: &str) -> Result<Identity, ImError> {
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ImError::unauthenticated("expected `authorization: Bearer <token>`"))?;
        self.verify(token.trim())
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
        assert_eq!(id, Identity { user: UserId(42), name: "alice".into(), admin: false });
        assert_eq!(tokens.verify_bearer(&format!("Bearer {t}")).unwrap().user, UserId(42));
    }

    #[test]
    fn admin_token_is_marked_admin() {
        let tokens = Tokens::new(SECRET).unwrap();
        let id = tokens.verify(&tokens.issue_admin(Duration::from_secs(60))).unwrap();
        assert!(id.admin);
        assert_eq!(id.user, ADMIN_SUBJECT);
    }

    #[test]
    fn other_secret_expired_and_garbage_are_unauthenticated() {
        let tokens = Tokens::new(SECRET).unwrap();
        let other = Tokens::new(b"another-secret-another-secret-xx").unwrap();
        let foreign = other.issue_user(UserId(1), "a", Duration::from_secs(60));
        assert_eq!(tokens.verify(&foreign).unwrap_err().code, ErrorCode::Unauthenticated);

        let claims = Claims { sub: "1".into(), name: "a".into(), adm: false, iat: 1, exp: 100 };
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
}
