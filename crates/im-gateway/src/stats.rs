//! Counters of the gateway, defined in one place. Plain atomics: the service
//! reads a [`StatsSnapshot`] at scrape time and exports it with its metrics
//! library, so this crate does not depend on one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters. Every counter only grows, except `connected` (a gauge).
#[derive(Debug, Default)]
pub struct GatewayStats {
    connected: AtomicU64,
    connections_opened: AtomicU64,
    connections_replaced: AtomicU64,
    connections_dropped_slow: AtomicU64,
    connections_stalled: AtomicU64,
    connections_refused_per_user: AtomicU64,
    connections_revoked: AtomicU64,
    handshakes_rejected: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bad_frames: AtomicU64,
    push_events: AtomicU64,
    pushes_delivered: AtomicU64,
    registry_errors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open now (gauge).
    pub connected: u64,
    /// Connections accepted since start (after a successful handshake).
    pub connections_opened: u64,
    /// Connections closed because the same (user, device) connected again.
    pub connections_replaced: u64,
    /// Connections closed because their outbound queue was full.
    pub connections_dropped_slow: u64,
    /// Connections closed because their socket took no bytes for the
    /// stall timeout (the client stopped reading).
    pub connections_stalled: u64,
    /// Connections refused because their user had
    /// `LIMIT_CONNECTIONS_PER_USER` here already.
    pub connections_refused_per_user: u64,
    /// Connections closed because their user was disabled or the token
    /// they were opened with was revoked.
    pub connections_revoked: u64,
    /// Upgrade requests refused (missing, bad or revoked token, disabled
    /// user, bad device id).
    pub handshakes_rejected: u64,
    /// WebSocket data frames received.
    pub frames_in: u64,
    /// WebSocket frames written (replies and pushes).
    pub frames_out: u64,
    /// Received frames that were text or did not decode.
    pub bad_frames: u64,
    /// Push events handled (one per event of a batch).
    pub push_events: u64,
    /// Push frames queued to a device (one per event and device).
    pub pushes_delivered: u64,
    /// Registry register/unregister calls that failed.
    pub registry_errors: u64,
}

impl GatewayStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connected: self.connected.load(Relaxed),
            connections_opened: self.connections_opened.load(Relaxed),
            connections_replaced: self.connections_replaced.load(Relaxed),
            connections_dropped_slow: self.connections_dropped_slow.load(Relaxed),
            connections_stalled: self.connections_stalled.load(Relaxed),
            connections_refused_per_user: self.connections_refused_per_user.load(Relaxed),
            connections_revoked: self.connections_revoked.load(Relaxed),
            handshakes_rejected: self.handshakes_rejected.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bad_frames: self.bad_frames.load(Relaxed),
            push_events: self.push_events.load(Relaxed),
            pushes_delivered: self.pushes_delivered.load(Relaxed),
            registry_errors: self.registry_errors.load(Relaxed),
        }
    }

    /// Connections open now.
    pub fn connected(&self) -> u64 {
        self.connected.load(Relaxed)
    }

    pub(crate) fn connection_opened(&self) {
        self.connected.fetch_add(1, Relaxed);
        self.connections_opened.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connected.fetch_sub(1, Relaxed);
    }

    pub(crate) fn connection_replaced(&self) {
        self.connections_replaced.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_dropped_slow(&self) {
        self.connections_dropped_slow.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_stalled(&self) {
        self.connections_stalled.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_refused_per_user(&self) {
        self.connections_refused_per_user.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_revoked(&self) {
        self.connections_revoked.fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_rejected(&self) {
        self.handshakes_rejected.fetch_add(1, Relaxed);
    }

    pub(crate) fn frame_in(&self) {
        self.frames_in.fetch_add(1, Relaxed);
    }

    pub(crate) fn frames_out(&self, n: u64) {
        self.frames_out.fetch_add(n, Relaxed);
    }

    pub(crate) fn bad_frame(&self) {
        self.bad_frames.fetch_add(1, Relaxed);
    }

    /// One batch: `events` handled, `delivered` frames queued to devices.
    pub(crate) fn pushed(&self, events: u64, delivered: u64) {
        self.push_events.fetch_add(events, Relaxed);
        self.pushes_delivered.fetch_add(delivered, Relaxed);
    }

    pub(crate) fn registry_error(&self) {
        self.registry_errors.fetch_add(1, Relaxed);
    }
}
