//! The IM Service: send, sequence, dedup, store, route.
//!
//! - [`app`]: the composition root — config in, a running node out.
//! - [`messaging`]: the API rules (validation, membership) in front of the
//!   pipeline; implements `im_core::ports::Messaging`.
//! - [`pipeline`]: dedup, seq allocation and group commit in one writer.
//! - [`router`]: pushes committed messages and receipts to gateways.
//! - [`grpc`]: the `im.v1.MessageService` server.
//! - [`http`], [`readiness`], [`metrics`]: `/health`, `/ready`, `/metrics`.
//! - [`bootstrap`]: standalone data directory, token secret, admin credential.
//! - [`msg_id`]: message id generation.
//! - [`logging`]: `LOG_LEVEL` / `LOG_FORMAT`.

pub mod app;
pub mod bootstrap;
pub mod grpc;
pub mod http;
pub mod logging;
pub mod messaging;
pub mod metrics;
pub mod msg_id;
pub mod pipeline;
pub mod readiness;
pub mod router;
