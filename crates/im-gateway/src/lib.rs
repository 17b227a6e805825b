//! The Gateway Service: the WebSocket edge clients connect to, and the push
//! side the IM service calls to reach them.
//!
//! - [`auth`]: the handshake — identity only from the token, device id from
//!   the query; rejected before the upgrade.
//! - [`connection`]: one connection's loop — decode, run requests
//!   concurrently (bounded), write pre-encoded frames in batches.
//! - [`framing`]: binary protobuf frames, or proto3 JSON in text frames
//!   (subprotocol `im.v1.json`, for browsers).
//! - [`hub`]: the local table user → connections, and push delivery
//!   ([`Hub`] implements `im_core::ports::Pusher`).
//! - [`server`]: the axum router (`GET /ws`, and [`web`]: the browser app at `/`).
//! - [`login`]: `POST /login`, a name and password for a token.
//! - [`user_names`]: the `users` request (names for ids, ids for names);
//!   `group_requests`: the group requests, over the `Groups` port.
//! - [`push_api`]: `im.gateway.v1.PushService` over the same push path.
//! - [`stats`]: counters the service exports as metrics.
//!
//! A connection is one task (the one axum spawns for the upgrade): requests
//! of a connection run concurrently inside it, never one task per message.

pub mod auth;
pub mod connection;
pub mod framing;
mod group_requests;
pub mod hub;
pub mod login;
mod outbound;
pub mod push_api;
pub mod server;
pub mod stats;
pub mod trace_sampling;
pub mod unserved;
pub mod user_names;
pub mod web;

#[cfg(test)]
mod testkit;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use im_core::GatewayId;
use im_core::ports::{BackendResult, FanOut, Groups, Messaging, PushEvent, PushReport, Pusher, Registry, UserStore};
use user_names::UserNames;

pub use auth::{Handshake, HandshakeError};
pub use connection::CloseReason;
pub use hub::Hub;
pub use push_api::PushApi;
pub use stats::{GatewayStats, StatsSnapshot};

/// Limits of the WebSocket edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayLimits {
    /// `MAX_MESSAGE_SIZE`: the largest message body. Frames may exceed it by
    /// [`server::FRAME_OVERHEAD`] so that an oversize body reaches the service
    /// and gets a typed `RESOURCE_EXHAUSTED` instead of a dropped connection.
    pub max_message_size: usize,
    /// Requests of one connection served at the same time; when reached the
    /// gateway stops reading from that socket (backpressure).
    pub max_in_flight_per_connection: usize,
    /// Frames queued for one connection; a push that finds it full closes the
    /// connection as too slow.
    pub outbound_queue: usize,
    /// `LIMIT_OUTBOUND_BYTES`: bytes queued for one connection, for pushes
    /// and for replies each (see `outbound.rs`).
    pub outbound_bytes: usize,
    /// Room a sync reserves for its reply before it runs: the largest page
    /// (`SYNC_PAGE_MAX_BYTES` of bodies, one body over it, and the frame
    /// around each message).
    pub sync_reply_bytes: usize,
    /// `LIMIT_CONNECTIONS_PER_USER`: connections of one user here.
    pub connections_per_user: usize,
    /// `LIMIT_WS_PING_INTERVAL`: how often each connection is pinged.
    pub ping_interval: Duration,
    /// `LIMIT_IDLE_TIMEOUT`, used for writes: a connection whose socket
    /// takes no bytes for this long is closed (the client stopped reading).
    pub write_stall_timeout: Duration,
}

/// Protobuf framing around one message of a sync page, at most (ids,
/// content type, timestamps, tags); the body is counted apart.
const SYNC_MESSAGE_FRAMING: usize = 192;

impl GatewayLimits {
    /// [`GatewayLimits::sync_reply_bytes`] for these settings.
    pub fn sync_reply_bytes(sync_page_max_bytes: usize, max_message_size: usize) -> usize {
        sync_page_max_bytes + max_message_size + im_core::limits::MAX_SYNC_LIMIT as usize * SYNC_MESSAGE_FRAMING
    }
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            max_message_size: im_core::limits::DEFAULT_MAX_MESSAGE_SIZE,
            max_in_flight_per_connection: 128,
            outbound_queue: 4096,
            outbound_bytes: 8 * 1024 * 1024,
            sync_reply_bytes: Self::sync_reply_bytes(1024 * 1024, im_core::limits::DEFAULT_MAX_MESSAGE_SIZE),
            connections_per_user: 64,
            ping_interval: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(90),
        }
    }
}

/// What a connection's requests are served by.
pub struct Services {
    /// Sends, syncs, read positions, the conversation list.
    pub messaging: Arc<dyn Messaging>,
    /// The `users` request: names for ids and ids for names.
    pub users: Arc<dyn UserStore>,
    /// The group requests, as `im.v1.GroupService` serves them.
    pub groups: Arc<dyn Groups>,
}

/// The gateway: accepts connections, serves their requests through
/// [`Services`], and delivers pushes to them. Shared as `Arc<Gateway>`.
pub struct Gateway {
    hub: Arc<Hub>,
    messaging: Arc<dyn Messaging>,
    users: UserNames,
    groups: Arc<dyn Groups>,
    registry: Arc<dyn Registry>,
    tokens: im_auth::Tokens,
    limits: GatewayLimits,
}

impl Gateway {
    /// A gateway with its own [`Hub`].
    pub fn new(
        id: GatewayId,
        services: Services,
        registry: Arc<dyn Registry>,
        tokens: im_auth::Tokens,
        limits: GatewayLimits,
    ) -> Arc<Self> {
        Self::with_hub(Arc::new(Hub::new(id)), services, registry, tokens, limits)
    }

    /// A gateway over an existing hub. In one process the IM service needs a
    /// `Pusher` before the gateway can get its `Messaging`: build the hub
    /// first, give it to the service as its pusher, then build the gateway.
    pub fn with_hub(
        hub: Arc<Hub>,
        services: Services,
        registry: Arc<dyn Registry>,
        tokens: im_auth::Tokens,
        limits: GatewayLimits,
    ) -> Arc<Self> {
        let limits = GatewayLimits {
            // Zero would never read a frame, or never queue one.
            max_in_flight_per_connection: limits.max_in_flight_per_connection.max(1),
            outbound_queue: limits.outbound_queue.max(1),
            connections_per_user: limits.connections_per_user.max(1),
            ..limits
        };
        // Connections of a user an admin stops are closed as the news
        // arrives. Weak: the view outlives gateways in tests.
        let closing = Arc::downgrade(&hub);
        tokens.on_status_change(Box::new(move |user, status| {
            if let Some(hub) = closing.upgrade() {
                hub.close_refused(user, status);
            }
        }));
        let Services { messaging, users, groups } = services;
        Arc::new(Self { hub, messaging, users: UserNames::new(users), groups, registry, tokens, limits })
    }

    pub fn id(&self) -> &GatewayId {
        self.hub.id()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn limits(&self) -> &GatewayLimits {
        &self.limits
    }

    /// Live counters (connected clients, frames, pushes, slow drops).
    pub fn stats(&self) -> &GatewayStats {
        self.hub.stats()
    }

    /// Closes every connection with 1001 "going away" so clients reconnect
    /// elsewhere; part of a graceful shutdown, after the gateway stopped
    /// accepting new connections.
    pub fn close_all(&self) {
        self.hub.close_all(CloseReason::GoingAway);
    }

    /// Brings the registry in line with the local table for `user`: it
    /// records `(user, this gateway)` exactly while the user has a connection
    /// here. Called on a user's first connection and after its last one;
    /// re-checks after each call because a connect and a disconnect of the
    /// same user may race, and the last call to finish must not leave the
    /// opposite of the truth.
    async fn sync_registry(&self, user: im_core::UserId) {
        loop {
            let online = self.hub.is_online(user);
            let result = if online {
                self.registry.register(user, self.id()).await
            } else {
                self.registry.unregister(user, self.id()).await
            };
            if let Err(error) = result {
                self.stats().registry_error();
                // Degraded, not down: the connection keeps working; pushes
                // to it may be missed and the client catches up by sync.
                tracing::warn!(user = %user, online, %error, "registry update failed");
                return;
            }
            if self.hub.is_online(user) == online {
                return;
            }
        }
    }
}

/// In one process the service pushes straight into the gateway.
#[async_trait]
impl Pusher for Gateway {
    async fn push(&self, gateway: &GatewayId, batch: &[PushEvent]) -> BackendResult<PushReport> {
        self.hub.push(gateway, batch).await
    }

    async fn fan_out(&self, gateway: &GatewayId, batch: &[FanOut]) -> BackendResult<u64> {
        self.hub.fan_out(gateway, batch).await
    }
}
