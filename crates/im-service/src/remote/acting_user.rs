//! [`ActingUser`]: how a gateway process's unary calls to the IM service act
//! as one of its users.
//!
//! The IM service takes the acting user of a unary call from the
//! `authorization` metadata only, so every such call carries a token of the
//! user the gateway authenticated at the WebSocket handshake, signed with
//! the shared secret. Tokens are cached per user and re-issued before they
//! expire, or as soon as the user's token generation moved (a revocation:
//! the node would refuse the older one; the gateway closes the connections
//! opened with revoked tokens itself). The device rides in `x-im-device`: it
//! only decides which of the user's own devices a push skips, so it is not
//! identity.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use im_auth::Tokens;
use im_core::{DeviceId, UserId};
use parking_lot::Mutex;
use tonic::metadata::{Ascii, MetadataValue};

use super::credential::bearer;
use crate::grpc::DEVICE_METADATA;

/// Lifetime of a forwarding token; re-issued at half its life.
const USER_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Forwarding tokens kept; past this the cache starts over (tokens are cheap
/// to sign, a few µs).
const MAX_CACHED_TOKENS: usize = 100_000;

/// A forwarding token: when it was issued, at which generation, the header.
struct CachedToken {
    issued: Instant,
    generation: u64,
    header: MetadataValue<Ascii>,
}

/// Signs (and remembers) the tokens a gateway's calls carry for its users.
pub struct ActingUser {
    tokens: Tokens,
    cache: Mutex<HashMap<UserId, CachedToken>>,
}

impl ActingUser {
    pub fn new(tokens: Tokens) -> Self {
        Self { tokens, cache: Mutex::new(HashMap::new()) }
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    fn authorization(&self, user: UserId) -> MetadataValue<Ascii> {
        let generation = self.tokens.token_generation(user);
        let mut cache = self.cache.lock();
        if let Some(cached) = cache.get(&user)
            && cached.issued.elapsed() < USER_TOKEN_TTL / 2
            && cached.generation == generation
        {
            return cached.header.clone();
        }
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.clear();
        }
        // The name claim is informational; the service reads the subject.
        let token = self.tokens.issue_user(user, "", USER_TOKEN_TTL);
        let header = bearer(&token);
        cache.insert(user, CachedToken { issued: Instant::now(), generation, header: header.clone() });
        header
    }

    /// A call of `user` (from `device`, when it matters which).
    pub fn request<T>(&self, user: UserId, device: Option<&DeviceId>, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization(user));
        if let Some(device) = device.and_then(|d| d.0.parse::<MetadataValue<Ascii>>().ok()) {
            request.metadata_mut().insert(DEVICE_METADATA, device);
        }
        // The gateway's `gateway.frame` span: the node's spans join it.
        crate::telemetry::propagation::inject_grpc(request.metadata_mut());
        request
    }
}
