//! The IM Service: send, sequence, dedup, store, route.
//!
//! - [`app`]: the composition root — config in, a running node out.
//! - [`gateway_app`], [`user_app`]: the same for the `im-gateway` and `im-user`
//!   binaries; [`cli`]: what the three binaries share (arguments, config,
//!   signals); [`serve`]: binding and serving; [`stores`]: the configured store.
//! - [`messaging`]: the API rules (validation, membership) in front of the
//!   pipeline; implements `im_core::ports::Messaging`.
//! - [`pipeline`]: dedup, seq allocation and group commit in one writer;
//!   [`commit_window`]: how long a small batch waits for company under load.
//! - [`router`]: pushes committed messages and receipts to gateways; what
//!   reaches no device of its addressee goes to [`offline`].
//! - [`offline`]: publishes offline events, and the offline worker that
//!   records them in the store.
//! - [`consumer`]: the consumer-group members the offline worker and the
//!   fan-out run; [`publisher`]: the publishing and dead letters they share.
//! - [`groups`]: the membership cache, its `membership_change` watcher, and
//!   the `im.v1.GroupService` front door (boundary stamping).
//! - [`fanout`]: group messages on `group_msg`, pushed to online members.
//! - [`encryption`]: encryption at rest of message bodies (the data keys,
//!   sealing before the commit, opening for sync and the fan-out).
//! - [`filter`]: the sensitive-word filter on the send path, its hot reload,
//!   and where its audit records go (`content_audit`, the admin API).
//! - [`retention`]: deletes messages older than `MESSAGE_RETENTION_DAYS`.
//! - [`grpc`]: the `im.v1.MessageService` server.
//! - [`relay`]: the `im.v1.RelayService` server, a gateway process's sends on
//!   one stream.
//! - [`remote`]: gRPC clients of the gateway, user and IM services when they
//!   run as their own processes.
//! - [`http`], [`readiness`], [`metrics`]: `/health` (`/live`), `/ready`
//!   (from background probes), `/metrics`; [`breaker`]: the circuit breaker
//!   that makes sends fail fast while the message store is down.
//! - [`bootstrap`]: standalone data directory, token secret, admin credential.
//! - [`bus`]: the Kafka bus as every process opens it (topics, `/ready`).
//! - [`msg_id`]: message id generation; [`clock`]: wall-clock Unix milliseconds.
//! - [`logging`]: `LOG_LEVEL` / `LOG_FORMAT`; [`telemetry`]: traces over OTLP
//!   (`OTEL_*`), their propagation over gRPC and the bus.

pub mod app;
pub mod bootstrap;
pub mod breaker;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod commit_window;
pub mod connection_limits;
pub mod consumer;
pub mod encryption;
pub mod fanout;
pub mod filter;
pub mod gateway_app;
pub mod groups;
pub mod grpc;
pub mod http;
pub mod known_users;
pub mod lanes;
pub mod logging;
pub mod messaging;
pub mod metrics;
pub mod msg_id;
pub mod offline;
pub mod outbox;
pub mod pipeline;
mod process_metrics;
pub mod publisher;
pub mod rate_limits;
pub mod readiness;
pub mod relay;
pub mod remote;
pub mod request_digest;
pub mod retention;
pub mod router;
pub mod serve;
pub mod sign_in;
pub mod stores;
pub mod telemetry;
#[cfg(test)]
mod testkit;
pub mod tls;
pub mod user_app;
pub mod user_statuses;
