//! The IM service's domain: what a message, a conversation and a seq are,
//! the rules that decide (who may read, how a read position moves, how seqs
//! are reserved), and the ports that backends implement. Nothing here does
//! I/O; every rule is tested without a server.
//!
//! - [`ids`]: `UserId`, `ConversationId`, `Seq`, `MessageId`, `ClientMsgId`.
//! - [`message`]: messages as stored and as acknowledged.
//! - [`error`]: the boundary error codes (gRPC and client protocol).
//! - [`limits`]: input validation.
//! - [`seq`]: the ceiling-reserving seq block (DESIGN.md §4).
//! - [`user_status`]: whether a user is disabled, which of its tokens count.
//! - [`ports`]: `MessageStore`, `ReceiptStore`, `CeilingStore`, `UserStore`,
//!   `SeqAllocator`, `DedupCache`, `Bus`, `Registry`, `Pusher`, `OfflineStore`.

pub mod error;
pub mod group;
pub mod ids;
pub mod limits;
pub mod message;
pub mod ports;
pub mod seq;
pub mod user_status;

pub use error::{ErrorCode, ErrorReason, ImError};
pub use ids::{ClientMsgId, ConversationId, DeviceId, GatewayId, GroupId, MessageId, Seq, UserId};
pub use message::{Ack, AuditRecord, FirstSend, NewMessage, RequestDigest, StoredMessage};
pub use user_status::{StatusChange, UserStatus};
