//! etcd-client errors as [`BackendError`]: what may pass (etcd unreachable, no
//! leader, a timeout) is `Unavailable`; a request etcd refuses (a bad key, a
//! lease it does not know) is `Other`.

use im_core::error::BackendError;

// gRPC status codes (fixed by the gRPC spec); `tonic` is not a direct
// dependency of this crate, so they are compared as numbers.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;
const ABORTED: i32 = 10;
const UNAVAILABLE: i32 = 14;

pub(super) fn map_etcd(e: etcd_client::Error) -> BackendError {
    let transient = match &e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // tonic reports a refused connection as `UNKNOWN` or `UNAVAILABLE` and
        // its own request timeout as `CANCELLED`.
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code() as i32,
            CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED | UNAVAILABLE
        ),
        // The client's own streams (watch, keep-alive) closed under it.
        etcd_client::Error::WatchError(_) => true,
        _ => false,
    };
    if transient { BackendError::unavailable(e) } else { BackendError::other(e) }
}

/// A request that did not finish within the configured request timeout.
pub(super) fn timed_out(what: &str) -> BackendError {
    BackendError::unavailable(format!("etcd {what} timed out"))
}

/// Whether etcd refused a request because the lease it names is gone: it
/// expired (no keep-alive reached etcd for a TTL) or was revoked.
pub(super) fn is_lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() as i32 == NOT_FOUND && status.message().contains("lease not found")
        }
        // What `lease_keep_alive` says when etcd answers with a TTL of 0.
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}
