//! The error codes every boundary speaks (DESIGN.md G8). The gRPC server maps
//! them to `tonic::Code`, the gateway to the client protocol's `ErrorCode`.

use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    PermissionDenied,
    NotFound,
    /// Too big or too many.
    ResourceExhausted,
    /// Refused by a rule, e.g. a blocked word.
    FailedPrecondition,
    /// A dependency is down; retry later.
    Unavailable,
    Unauthenticated,
    Internal,
    /// Stored data that cannot be read back as written (an encrypted body
    /// whose ciphertext or data key was altered).
    DataLoss,
}

impl ErrorCode {
    /// Every code, e.g. for metric series that exist from the start.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidArgument,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::ResourceExhausted,
        ErrorCode::FailedPrecondition,
        ErrorCode::Unavailable,
        ErrorCode::Unauthenticated,
        ErrorCode::Internal,
        ErrorCode::DataLoss,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Unavailable => "UNAVAILABLE",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Internal => "INTERNAL",
            Self::DataLoss => "DATA_LOSS",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was refused, where a client program can act on more than
/// the code: a word a client matches on, carried beside the code in the
/// client protocol (`Error.reason`) and in gRPC (`google.rpc.ErrorInfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// The body contains an entry of the sensitive-word list and the filter
    /// blocks such messages: change the text and send again (the same
    /// client_msg_id may be reused; nothing was stored).
    ContentBlocked,
    /// A rate limit of the caller was reached (`RESOURCE_EXHAUSTED`): wait
    /// `retry_after` and send again, the same client_msg_id included.
    RateLimited,
    /// The client_msg_id was already used by this sender for another
    /// message (`FAILED_PRECONDITION`): nothing was stored; send it with a
    /// new client_msg_id.
    ClientMsgIdReused,
    /// The user was disabled by an admin (`PERMISSION_DENIED`): nothing it
    /// sends is served until an admin enables it again.
    UserDisabled,
    /// The token was issued before the user's tokens were revoked
    /// (`UNAUTHENTICATED`): ask for a new token.
    TokenRevoked,
    /// Sign-in failed (`UNAUTHENTICATED`): no user has this name and
    /// password. Which of the two was wrong is not said.
    InvalidCredentials,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 6] = [
        ErrorReason::ContentBlocked,
        ErrorReason::RateLimited,
        ErrorReason::ClientMsgIdReused,
        ErrorReason::UserDisabled,
        ErrorReason::TokenRevoked,
        ErrorReason::InvalidCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContentBlocked => "content_blocked",
            Self::RateLimited => "rate_limited",
            Self::ClientMsgIdReused => "client_msg_id_reused",
            Self::UserDisabled => "user_disabled",
            Self::TokenRevoked => "token_revoked",
            Self::InvalidCredentials => "invalid_credentials",
        }
    }

    /// The reason a peer named; `None` for one this version does not know.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a caller can act on: a code and a message written for a person.
/// Internal causes are logged where they happen, never put in `message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ImError {
    pub code: ErrorCode,
    pub message: String,
    /// What a program matches on, when the code alone is not enough.
    pub reason: Option<ErrorReason>,
    /// With `UNAVAILABLE` from a circuit breaker, or a rate limit's
    /// `RESOURCE_EXHAUSTED`: how long to wait before
    /// retrying (client protocol `Error.retry_after_ms`, gRPC
    /// `google.rpc.RetryInfo`).
    pub retry_after: Option<Duration>,
}

impl ImError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reason: None, retry_after: None }
    }
    pub fn with_reason(mut self, reason: ErrorReason) -> Self {
        self.reason = Some(reason);
        self
    }
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The wait hint in whole milliseconds, rounded up: a client that waits
    /// exactly this long must not be refused again for the fraction of a
    /// millisecond a cut would drop. `None` without a hint.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after.map(|after| u64::try_from(after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }
    /// The send was refused by the sensitive-word filter. The message never
    /// names the entry: the list is not for clients to read.
    /// A send whose client_msg_id this sender already used for another
    /// message.
    pub fn client_msg_id_reused() -> Self {
        Self::new(
            ErrorCode::FailedPrecondition,
            "this client_msg_id was already used for a different message (another recipient, content type or \
             body); nothing was stored: send this message with a new client_msg_id",
        )
        .with_reason(ErrorReason::ClientMsgIdReused)
    }

    pub fn content_blocked() -> Self {
        Self::new(
            ErrorCode::FailedPrecondition,
            "the message contains text that is not allowed here; change it and send again",
        )
        .with_reason(ErrorReason::ContentBlocked)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceExhausted, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn data_loss(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::DataLoss, message)
    }
}

/// A backend failure. Backends keep the cause for logs; the boundary turns it
/// into `UNAVAILABLE` (the dependency may come back) without the cause.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend is unreachable or timed out: retrying later may succeed.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, corrupt data, a failed migration.
    #[error("backend error: {0}")]
    Other(String),
}

impl BackendError {
    pub fn other(e: impl fmt::Display) -> Self {
        Self::Other(e.to_string())
    }
    pub fn unavailable(e: impl fmt::Display) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<BackendError> for ImError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable(_) => ImError::unavailable("a storage dependency is unavailable, retry later"),
            BackendError::Other(_) => ImError::internal("internal error"),
        }
    }
}
