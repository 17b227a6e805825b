//! What every gRPC client of imctl shares: opening a channel with the
//! timeouts of `--timeout`, and the bearer credential sent with each call.

use std::time::Duration;

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::error::RemoteError;
use crate::tls::{self, CaBundle};

/// Connects to `url` (TLS for `https://`, trusting `ca` or the system's
/// roots); `service` names what is there, for the error.
pub async fn channel(url: &str, timeout: Duration, ca: Option<&CaBundle>, service: &str) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid gRPC URL {url:?}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if url.starts_with("https://") {
        endpoint = endpoint.tls_config(tls::grpc(ca)).with_context(|| format!("TLS settings for {url}"))?;
    }
    endpoint.connect().await.with_context(|| format!("cannot reach the {service} at {url}"))
}

/// `Bearer <token>` as `authorization` metadata, marked sensitive so it is
/// never logged. `what` names the token in the error (never its value).
pub fn bearer(token: &str, what: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    let mut value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
        .map_err(|_| anyhow::anyhow!("{what} is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `message` with the `authorization` metadata set.
pub fn authorized<T>(message: T, authorization: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", authorization.clone());
    request
}

/// The answer of a call, or the server's status as a [`RemoteError`].
pub fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<T, RemoteError> {
    result.map(tonic::Response::into_inner).map_err(|s| RemoteError::from_status(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_sensitive_and_rejects_header_breaking_tokens() {
        let value = bearer("abc\n", "the token of --token").unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer abc");
        let err = bearer("a\u{1}b", "the token of --token").unwrap_err().to_string();
        assert_eq!(err, "the token of --token is not a valid header value");
    }

    #[test]
    fn status_becomes_a_remote_error() {
        let err = answer::<()>(Err(tonic::Status::permission_denied("not a member"))).unwrap_err();
        assert_eq!(err.to_string(), "PERMISSION_DENIED: not a member");
    }
}
