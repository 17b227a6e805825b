//! Channels to peer services.

use std::time::Duration;

use im_core::error::BackendError;
use tonic::transport::{Channel, Endpoint};

use crate::tls::CallTls;

/// How long establishing a connection may take, at most: a peer that is down
/// must fail a call fast, whatever its deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A channel to `addr` (`host:port`) that connects on first use and again
/// after a failure, in TLS when `tls` says so; every call on it fails after
/// `timeout`.
pub fn lazy_channel(addr: &str, timeout: Duration, tls: &CallTls) -> Result<Channel, BackendError> {
    let endpoint = Endpoint::from_shared(format!("{}://{addr}", tls.scheme()))
        .and_then(|endpoint| tls.apply(endpoint))
        .map_err(|e| BackendError::other(format_args!("service address {addr:?}: {e}")))?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT.min(timeout)).timeout(timeout).tcp_nodelay(true).connect_lazy())
}

/// A failed call as the ports report it: transport trouble and deadlines are
/// the peer being unavailable; anything else is the peer's own answer.
pub fn backend_error(what: &str, status: &tonic::Status) -> BackendError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => {
            BackendError::unavailable(format_args!("{what}: {}", status.message()))
        }
        code => BackendError::other(format_args!("{what}: {code:?}: {}", status.message())),
    }
}
