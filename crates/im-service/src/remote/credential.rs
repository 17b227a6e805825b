//! The credential one service presents to another.

use std::time::{Duration, Instant};

use im_auth::Tokens;
use parking_lot::Mutex;
use tonic::metadata::MetadataValue;

/// Lifetime of a service token; it is re-issued at half its life, so a token
/// in flight never expires mid-call.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// An admin token signed with the shared secret, as `authorization` metadata.
pub struct ServiceCredential {
    tokens: Tokens,
    current: Mutex<(Instant, MetadataValue<tonic::metadata::Ascii>)>,
}

impl ServiceCredential {
    pub fn new(tokens: Tokens) -> Self {
        let current = Mutex::new(Self::issue(&tokens));
        Self { tokens, current }
    }

    fn issue(tokens: &Tokens) -> (Instant, MetadataValue<tonic::metadata::Ascii>) {
        (Instant::now(), bearer(&tokens.issue_admin(SERVICE_TOKEN_TTL)))
    }

    /// The `authorization` value to send now.
    pub fn header(&self) -> MetadataValue<tonic::metadata::Ascii> {
        let mut current = self.current.lock();
        if current.0.elapsed() > SERVICE_TOKEN_TTL / 2 {
            *current = Self::issue(&self.tokens);
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
