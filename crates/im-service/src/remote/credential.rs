//! The credential one service presents to another: a service token of the
//! one scope the called API accepts ([`Scope`]), never an admin token. It
//! lives in memory only and for minutes, so one that leaks (a log, a dump)
//! calls one API, briefly.

use std::time::{Duration, Instant};

use im_auth::{Scope, Tokens};
use parking_lot::Mutex;
use tonic::metadata::MetadataValue;

/// Lifetime of a service token; it is re-issued at half its life, so a token
/// in flight never expires mid-call (calls have deadlines of seconds).
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

/// A service token of one scope, signed with the shared secret, as
/// `authorization` metadata.
pub struct ServiceCredential {
    tokens: Tokens,
    scope: Scope,
    current: Mutex<(Instant, MetadataValue<tonic::metadata::Ascii>)>,
}

impl ServiceCredential {
    /// Each remote client makes its own, of the scope of the API it calls.
    pub fn new(tokens: Tokens, scope: Scope) -> Self {
        let current = Mutex::new(Self::issue(&tokens, scope));
        Self { tokens, scope, current }
    }

    fn issue(tokens: &Tokens, scope: Scope) -> (Instant, MetadataValue<tonic::metadata::Ascii>) {
        (Instant::now(), bearer(&tokens.issue_service(scope, SERVICE_TOKEN_TTL)))
    }

    /// The scope its tokens carry.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The `authorization` value to send now.
    pub fn header(&self) -> MetadataValue<tonic::metadata::Ascii> {
        let mut current = self.current.lock();
        if current.0.elapsed() > SERVICE_TOKEN_TTL / 2 {
            *current = Self::issue(&self.tokens, self.scope);
        }
        current.1.clone()
    }

    /// `request` with this credential attached, and the trace context of
    /// the current span (every call between services is made here).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.header());
        crate::telemetry::propagation::inject_grpc(request.metadata_mut());
        request
    }
}

/// `token` as an `authorization` metadata value.
pub(super) fn bearer(token: &str) -> MetadataValue<tonic::metadata::Ascii> {
    // A JWT is base64url and dots: always valid ASCII metadata.
    format!("Bearer {token}").parse().expect("a bearer token is valid metadata")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use im_auth::{Identity, Role};

    use super::*;
    use crate::remote::groups::RemoteGroups;
    use crate::remote::{GrpcPusher, RemoteUsers};
    use crate::tls::CallTls;

    const SECRET: &[u8] = b"credential-test-secret-012345678";

    fn tokens() -> Tokens {
        Tokens::new(SECRET).unwrap()
    }

    /// Who the credential's current header says it is.
    fn presented(credential: &ServiceCredential) -> Identity {
        tokens().verify_bearer(credential.header().to_str().unwrap()).unwrap()
    }

    #[test]
    fn a_credential_is_a_short_lived_service_token_of_its_scope_and_no_admin() {
        for scope in Scope::ALL {
            let credential = ServiceCredential::new(tokens(), scope);
            let identity = presented(&credential);
            assert_eq!(identity.role, Role::Service(scope));
            assert!(!identity.is_admin() && !identity.is_user());
        }
        assert!(SERVICE_TOKEN_TTL <= Duration::from_secs(5 * 60), "service tokens stay short-lived");
    }

    #[test]
    fn the_header_is_kept_until_half_its_life_then_reissued() {
        let credential = ServiceCredential::new(tokens(), Scope::Push);
        let first = credential.header();
        assert_eq!(credential.header(), first, "the same token while young");
        // As if just over half the lifetime had passed.
        let Some(aged) = Instant::now().checked_sub(SERVICE_TOKEN_TTL / 2 + Duration::from_secs(1)) else {
            return; // a clock younger than that (a fresh boot): nothing to age
        };
        credential.current.lock().0 = aged;
        credential.header();
        assert!(credential.current.lock().0.elapsed() < Duration::from_secs(60), "re-issued");
        assert_eq!(presented(&credential).service_scope(), Some(Scope::Push));
    }

    #[tokio::test]
    async fn each_remote_client_presents_the_scope_of_the_api_it_calls() {
        let timeout = Duration::from_secs(1);
        let tls = CallTls::none();
        let pusher = GrpcPusher::new(tokens(), timeout, tls.clone());
        let users = RemoteUsers::new("127.0.0.1:1", timeout, &tls, tokens()).unwrap();
        let groups = RemoteGroups::new("127.0.0.1:1", timeout, &tls, tokens()).unwrap();
        for (credential, scope) in [
            (pusher.credential(), Scope::Push),
            (users.credential(), Scope::Users),
            (groups.credential(), Scope::Groups),
        ] {
            assert_eq!(credential.scope(), scope);
            assert_eq!(presented(credential).service_scope(), Some(scope));
        }
    }
}
