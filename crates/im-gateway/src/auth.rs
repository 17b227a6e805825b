//! The handshake: who a connection acts as, decided before the upgrade.
//!
//! Identity comes only from a verified token (G7): the `Authorization:
//! Bearer <jwt>` header; or, because browsers cannot set headers on a
//! WebSocket, an offered subprotocol `im.token.<jwt>` (a header all the
//! same, so proxies do not log it as they log URLs), or `?token=<jwt>`.
//! Anything else in the request (a `user` query parameter, other headers)
//! is ignored. The token is never logged, and `im.token.*` is never the
//! subprotocol the gateway agrees to.

use std::fmt;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use im_auth::{Identity, Tokens};
use im_core::{DeviceId, ImError};

/// An accepted handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub identity: Identity,
    pub device: DeviceId,
}

/// Why a handshake is refused; answered with a plain-text HTTP error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    MissingToken,
    /// Malformed, expired, revoked or signed with another secret, or its
    /// user is disabled (the reason is one of `im_auth`'s fixed messages,
    /// never the token).
    BadToken(ImError),
    /// An admin or service credential is not a user and cannot chat.
    NotAUser,
    BadDevice,
}

impl HandshakeError {
    pub fn status(&self) -> StatusCode {
        match self {
            // A disabled user: known, but refused (401 would invite a new token).
            Self::BadToken(e) if e.code == im_core::ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            Self::MissingToken | Self::BadToken(_) => StatusCode::UNAUTHORIZED,
            Self::NotAUser => StatusCode::FORBIDDEN,
            Self::BadDevice => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingToken => {
                f.write_str("missing token: send `Authorization: Bearer <token>` or `?token=<token>`")
            }
            Self::BadToken(e) => f.write_str(&e.message),
            Self::NotAUser => f.write_str("an admin or service credential cannot open a chat connection"),
            Self::BadDevice => write!(f, "device must be 1 to {} characters of A-Z a-z 0-9 _ . -", DeviceId::MAX_LEN),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, self.to_string()).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Checks an upgrade request: the token first (a bad one stops everything),
/// then the optional `device` query parameter; without one a device id is
/// generated.
pub fn handshake(tokens: &Tokens, headers: &HeaderMap, query: Option<&str>) -> Result<Handshake, HandshakeError> {
    let identity = authenticate(tokens, headers, query)?;
    let device = match query_param(query, "device") {
        Some(raw) => parse_device(raw)?,
        None => generate_device(),
    };
    Ok(Handshake { identity, device })
}

fn authenticate(tokens: &Tokens, headers: &HeaderMap, query: Option<&str>) -> Result<Identity, HandshakeError> {
    let verified = if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| HandshakeError::BadToken(ImError::unauthenticated("authorization header is not ASCII")))?;
        tokens.verify_bearer(value)
    } else if let Some(token) = subprotocol_token(headers) {
        tokens.verify(token)
    } else if let Some(token) = query_param(query, "token") {
        tokens.verify(token)
    } else {
        return Err(HandshakeError::MissingToken);
    };
    let identity = verified.map_err(HandshakeError::BadToken)?;
    if !identity.is_user() {
        return Err(HandshakeError::NotAUser);
    }
    Ok(identity)
}

/// A client-chosen device id: 1..=64 bytes of `[A-Za-z0-9_.-]` (safe in
/// logs, keys and URLs without escaping).
pub fn parse_device(raw: &str) -> Result<DeviceId, HandshakeError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    if raw.is_empty() || raw.len() > DeviceId::MAX_LEN || !raw.bytes().all(allowed) {
        return Err(HandshakeError::BadDevice);
    }
    Ok(DeviceId(raw.to_owned()))
}

fn generate_device() -> DeviceId {
    DeviceId(format!("d-{:016x}", rand::random::<u64>()))
}

/// Offered subprotocols carrying a token start with this.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "im.token.";

/// The token of the first offered subprotocol `im.token.<jwt>`.
fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
}

/// The first value of `key` in a raw query string. Tokens (base64url and
/// dots) and device ids need no percent-decoding; anything encoded simply
/// fails validation.
fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::SECRET;
    use im_core::UserId;
    use std::time::Duration;

    fn tokens() -> Tokens {
        Tokens::new(SECRET).unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn identity_comes_from_the_header_or_the_query_token() {
        let tokens = tokens();
        let token = tokens.issue_user(UserId(7), "alice", Duration::from_secs(60));
        let by_header = handshake(&tokens, &bearer(&token), Some("device=phone")).unwrap();
        assert_eq!(by_header.identity.user, UserId(7));
        assert_eq!(by_header.device, DeviceId("phone".into()));

        let query = format!("user=99&token={token}");
        let by_query = handshake(&tokens, &HeaderMap::new(), Some(&query)).unwrap();
        assert_eq!(by_query.identity.user, UserId(7));
        assert!(by_query.device.0.starts_with("d-") && by_query.device.0.len() == 18, "{:?}", by_query.device);
    }

    #[test]
    fn a_browser_may_offer_its_token_as_a_subprotocol() {
        let tokens = tokens();
        let token = tokens.issue_user(UserId(7), "alice", Duration::from_secs(60));
        let mut headers = HeaderMap::new();
        let offered = format!("im.v1.json, {TOKEN_SUBPROTOCOL_PREFIX}{token}");
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, offered.parse().unwrap());
        assert_eq!(handshake(&tokens, &headers, None).unwrap().identity.user, UserId(7));
        // A bad one is refused, not passed over for the query's.
        let mut forged = HeaderMap::new();
        forged.insert(header::SEC_WEBSOCKET_PROTOCOL, format!("{TOKEN_SUBPROTOCOL_PREFIX}garbage").parse().unwrap());
        let query = format!("token={token}");
        assert!(matches!(handshake(&tokens, &forged, Some(&query)), Err(HandshakeError::BadToken(_))));
    }

    #[test]
    fn missing_bad_admin_and_service_tokens_are_refused() {
        let tokens = tokens();
        assert_eq!(handshake(&tokens, &HeaderMap::new(), None), Err(HandshakeError::MissingToken));
        assert_eq!(handshake(&tokens, &HeaderMap::new(), Some("device=x")), Err(HandshakeError::MissingToken));
        let err = handshake(&tokens, &bearer("not.a.jwt"), None).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        let err = handshake(&tokens, &HeaderMap::new(), Some("token=abc")).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        let admin = tokens.issue_admin(Duration::from_secs(60));
        assert_eq!(handshake(&tokens, &bearer(&admin), None), Err(HandshakeError::NotAUser));
        for scope in im_auth::Scope::ALL {
            let service = tokens.issue_service(scope, Duration::from_secs(60));
            assert_eq!(handshake(&tokens, &bearer(&service), None), Err(HandshakeError::NotAUser), "{scope}");
            let query = format!("token={service}");
            assert_eq!(handshake(&tokens, &HeaderMap::new(), Some(&query)), Err(HandshakeError::NotAUser));
        }
    }

    #[test]
    fn a_bad_header_is_not_rescued_by_a_good_query_token() {
        let tokens = tokens();
        let token = tokens.issue_user(UserId(7), "alice", Duration::from_secs(60));
        let query = format!("token={token}");
        assert!(handshake(&tokens, &bearer("garbage"), Some(&query)).is_err());
    }

    #[test]
    fn device_ids_are_checked() {
        assert!(parse_device("phone-1.a_b").is_ok());
        assert!(parse_device(&"x".repeat(64)).is_ok());
        for bad in ["", "a b", "a%20b", "ü", "a/b"] {
            assert_eq!(parse_device(bad), Err(HandshakeError::BadDevice), "{bad:?}");
        }
        assert!(parse_device(&"x".repeat(65)).is_err());
        let tokens = tokens();
        let token = tokens.issue_user(UserId(7), "alice", Duration::from_secs(60));
        assert_eq!(handshake(&tokens, &bearer(&token), Some("device=")), Err(HandshakeError::BadDevice));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&b=2"), "b"), Some("2"));
        assert_eq!(query_param(Some("a=1&a=2"), "a"), Some("1"));
        assert_eq!(query_param(Some("ab=1"), "a"), None);
        assert_eq!(query_param(Some("a"), "a"), Some(""));
        assert_eq!(query_param(None, "a"), None);
    }
}
