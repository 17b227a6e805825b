//! `POST /login`: a name and a password for a token, on the gateway's HTTP
//! side (the port of `/ws`, so a browser page served there signs in on its
//! own origin).
//!
//! Request: `{"name": "alice", "password": "…"}` (JSON, at most
//! [`MAX_BODY`] bytes). Answer: `200 {"user_id": 7, "name": "alice",
//! "token": "…"}`, or an error `{"code", "reason", "message"}` with the
//! HTTP status of its code ([`http_status`]). The password is checked by the
//! user directory ([`SignIn`]), which makes an unknown name and a wrong
//! password cost the same and fail alike.
//!
//! Each client address has [`LoginLimits::attempts_per_address_per_minute`]
//! attempts (an IPv6 client its /64); past them the answer is `429`
//! `rate_limited` with `Retry-After`, given after about as long as a real
//! check takes, so the refusal tells no more than a failure. Behind reverse
//! proxies ([`LoginLimits::trusted_proxies`]) the client is the address
//! their `X-Forwarded-For` names ([`client_of`]); a header from anyone else
//! is ignored, so a client cannot pick the address it is counted under.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use im_auth::SignInAttempts;
use im_core::limits::client_source;
use im_core::ports::SignIn;
use im_core::{ErrorCode, ErrorReason, ImError};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The largest request body: a name and a password, with room to spare.
pub const MAX_BODY: usize = 4096;

/// Addresses whose attempts are counted at most (G10); past it, those quiet
/// for a minute are forgotten first, and new ones go uncounted while none is.
const MAX_COUNTED_ADDRESSES: usize = 100_000;

/// What the first refusals wait before any check was timed.
const FIRST_CHECK_ESTIMATE: Duration = Duration::from_millis(30);

/// `LIMIT_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE`, `AUTH_TRUSTED_PROXIES`.
#[derive(Clone, Debug)]
pub struct LoginLimits {
    pub attempts_per_address_per_minute: NonZeroU32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

struct Login {
    directory: Arc<dyn SignIn>,
    trusted_proxies: Vec<IpNet>,
    attempts: SignInAttempts<IpAddr>,
    /// How long a check takes, smoothed, in µs: what a refusal waits.
    check_micros: AtomicU64,
}

/// The client's address as the server's `ConnectInfo` gives it: serve the
/// router with `into_make_service_with_connect_info::<A>()`, `A` a
/// `SocketAddr` for a plain `TcpListener` or the listener's own type.
pub trait ClientAddress: Clone + Send + Sync + 'static {
    fn ip(&self) -> IpAddr;
}

impl ClientAddress for SocketAddr {
    fn ip(&self) -> IpAddr {
        SocketAddr::ip(self)
    }
}

/// `POST /login` over `directory`, its attempts counted per client address
/// (`A`, see [`ClientAddress`]).
pub fn router<A: ClientAddress>(directory: Arc<dyn SignIn>, limits: LoginLimits) -> Router {
    let login = Login {
        directory,
        trusted_proxies: limits.trusted_proxies,
        attempts: SignInAttempts::per_minute(limits.attempts_per_address_per_minute, MAX_COUNTED_ADDRESSES),
        check_micros: AtomicU64::new(FIRST_CHECK_ESTIMATE.as_micros() as u64),
    };
    Router::new()
        .route("/login", post(login_handler::<A>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(login))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    name: String,
    password: String,
}

#[derive(Serialize)]
struct LoginResponse {
    user_id: u64,
    name: String,
    token: String,
}

/// An error as the client reads it.
#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

async fn login_handler<A: ClientAddress>(
    State(login): State<Arc<Login>>,
    ConnectInfo(peer): ConnectInfo<A>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Response {
    let started = Instant::now();
    let client = client_of(peer.ip(), &headers, &login.trusted_proxies);
    if let Err(limited) = login.count_attempt(client) {
        // As long as a check would have taken: a refusal looks like a failure.
        tokio::time::sleep(login.check_estimate().saturating_sub(started.elapsed())).await;
        return error_response(&limited);
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return error_response(&ImError::invalid(format!(
                "the body must be JSON {{\"name\": \"…\", \"password\": \"…\"}}: {}",
                rejection.body_text()
            )));
        }
    };
    let result = login.directory.sign_in(&request.name, &request.password).await;
    login.observe_check(started.elapsed());
    match result {
        Ok((user, token)) => Json(LoginResponse { user_id: user.id.0, name: user.name, token }).into_response(),
        Err(error) => {
            tracing::debug!(code = %error.code, reason = ?error.reason, "sign-in refused");
            error_response(&error)
        }
    }
}

/// The client a request comes from: the TCP `peer`, unless the peer is a
/// trusted proxy; then the last address of `X-Forwarded-For` (each proxy
/// appends the address it heard from) that is not itself a trusted proxy.
/// A header that cannot be read leaves the peer: counting all of a proxy's
/// clients as one is safer than believing a garbled header.
pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else { return peer };
        for hop in value.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter().rev().find(|hop| !is_trusted(hop)).unwrap_or(peer)
}

impl Login {
    fn count_attempt(&self, client: IpAddr) -> Result<(), ImError> {
        self.attempts.count(&client_source(client)).map_err(|wait| {
            ImError::new(
                ErrorCode::ResourceExhausted,
                "too many sign-in attempts from this address: wait and try again",
            )
            .with_reason(ErrorReason::RateLimited)
            .with_retry_after(wait)
        })
    }

    fn check_estimate(&self) -> Duration {
        Duration::from_micros(self.check_micros.load(Relaxed))
    }

    /// Folds one check's duration into the estimate (an eighth at a time).
    fn observe_check(&self, took: Duration) {
        let took = took.as_micros().min(u128::from(u32::MAX)) as u64;
        let before = self.check_micros.load(Relaxed);
        self.check_micros.store(before - before / 8 + took / 8, Relaxed);
    }
}

/// The HTTP status of an error code.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal | ErrorCode::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(error: &ImError) -> Response {
    let body = ErrorBody {
        code: error.code.as_str(),
        reason: error.reason.map(ErrorReason::as_str),
        message: error.message.clone(),
        retry_after_ms: error.retry_after_ms(),
    };
    let mut response = (http_status(error.code), Json(body)).into_response();
    if let Some(wait) = error.retry_after {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

#[cfg(test)]
mod tests;
