//! The error a server answered with (a client-protocol error frame or a gRPC
//! status), kept apart from local failures so `main` prints it exactly as
//! `error: CODE: message`.

use std::fmt;

use im_proto::client;

/// An error reported by the server, with its protocol code name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError {
    /// Upper-case code name, e.g. `INVALID_ARGUMENT` or `ALREADY_EXISTS`.
    pub code: &'static str,
    pub message: String,
    /// The machine-readable reason, when the server gave one (e.g.
    /// `content_blocked`); empty otherwise.
    pub reason: String,
}

impl RemoteError {
    /// From a client-protocol error frame.
    pub fn from_frame(e: &client::Error) -> Self {
        Self { code: frame_code_name(e.code), message: e.message.clone(), reason: e.reason.clone() }
    }

    /// From a gRPC status.
    pub fn from_status(s: &tonic::Status) -> Self {
        let reason = im_proto::convert::from_status(s).reason.map(|r| r.as_str().to_owned()).unwrap_or_default();
        Self { code: grpc_code_name(s.code()), message: s.message().to_owned(), reason }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if !self.reason.is_empty() {
            write!(f, " (reason: {})", self.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

/// The name of a client-protocol error code; unknown numbers map to `UNKNOWN`.
pub fn frame_code_name(code: i32) -> &'static str {
    match client::ErrorCode::try_from(code) {
        Ok(client::ErrorCode::Unspecified) | Err(_) => "UNKNOWN",
        Ok(known) => known.as_str_name(),
    }
}

/// The canonical gRPC name of a status code (as in `grpc/status.proto`).
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_errors_print_code_then_message() {
        let e = client::Error {
            code: client::ErrorCode::NotFound as i32,
            message: "no user 9".into(),
            reason: "".into(),
            retry_after_ms: 0,
        };
        assert_eq!(RemoteError::from_frame(&e).to_string(), "NOT_FOUND: no user 9");
        let odd = client::Error { code: 99, message: "?".into(), reason: "".into(), retry_after_ms: 0 };
        assert_eq!(RemoteError::from_frame(&odd).code, "UNKNOWN");
        let blocked = client::Error {
            code: client::ErrorCode::FailedPrecondition as i32,
            message: "not allowed".into(),
            reason: "content_blocked".into(),
            retry_after_ms: 0,
        };
        assert_eq!(
            RemoteError::from_frame(&blocked).to_string(),
            "FAILED_PRECONDITION: not allowed (reason: content_blocked)"
        );
    }

    #[test]
    fn grpc_errors_use_canonical_names() {
        let s = tonic::Status::already_exists("name alice is taken");
        assert_eq!(RemoteError::from_status(&s).to_string(), "ALREADY_EXISTS: name alice is taken");
        assert_eq!(grpc_code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
