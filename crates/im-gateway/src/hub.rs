//! The local table user → connections, and push delivery.
//!
//! Pushes are the hot path of fan-out: an event is encoded once to `Bytes`
//! and the same buffer is queued to each device with `try_send`, under a read
//! lock of one shard, without awaiting anything. A full queue means the
//! client does not read fast enough: its connection is closed (it reconnects
//! and syncs; everything pushed is stored, so nothing is lost). A group
//! message comes as one fan-out naming many users: it too is encoded once,
//! for every device of every user listed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::Bytes;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, Event, FanOut, PushEvent, PushReport, Pusher};
use im_core::{DeviceId, GatewayId, UserId, UserStatus};

use crate::connection::{CloseReason, Owner, Shutdown, encode};
use crate::outbound::{Outbound, PushRefused};
use crate::stats::GatewayStats;

/// Shards of the table: attach/detach of one user only blocks pushes to the
/// users of the same shard. A power of two so a shift picks the shard.
const SHARD_BITS: u32 = 6;

/// One connection as the hub sees it.
struct Conn {
    id: u64,
    device: DeviceId,
    /// The generation of the token the connection was opened with.
    token_generation: u64,
    outbound: Outbound,
    shutdown: Arc<Shutdown>,
}

type Shard = RwLock<HashMap<UserId, Vec<Conn>>>;

/// An event's push frame, encoded on first use and then shared (`Bytes`
/// clones are reference counts): an event nobody is connected for is never
/// encoded, one for many devices is encoded once.
struct Frame<'a> {
    event: &'a Event,
    encoded: Option<Bytes>,
}

impl<'a> Frame<'a> {
    fn new(event: &'a Event) -> Self {
        Self { event, encoded: None }
    }

    fn bytes(&mut self) -> Bytes {
        self.encoded.get_or_insert_with(|| encode(&im_proto::convert::event_frame(self.event))).clone()
    }
}

/// The connections of this gateway, by user. Implements [`Pusher`].
pub struct Hub {
    id: GatewayId,
    /// Invariant: a user present in a shard has at least one connection.
    shards: Box<[Shard]>,
    next_conn_id: AtomicU64,
    stats: GatewayStats,
}

/// The user already has as many connections here as allowed.
#[derive(Debug)]
pub(crate) struct TooManyConnections;

/// A connection entered into the hub.
pub(crate) struct Attached {
    pub id: u64,
    /// The user had no other connection here: register it.
    pub first: bool,
}

impl Hub {
    pub fn new(id: GatewayId) -> Self {
        let shards = (0..1usize << SHARD_BITS).map(|_| RwLock::default()).collect();
        Self { id, shards, next_conn_id: AtomicU64::new(1), stats: GatewayStats::default() }
    }

    pub fn id(&self) -> &GatewayId {
        &self.id
    }

    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// Whether `user` has a connection on this gateway.
    pub fn is_online(&self, user: UserId) -> bool {
        self.read(user).contains_key(&user)
    }

    /// Devices of `user` connected here.
    pub fn devices_of(&self, user: UserId) -> Vec<DeviceId> {
        self.read(user).get(&user).map(|conns| conns.iter().map(|c| c.device.clone()).collect()).unwrap_or_default()
    }

    /// Delivers a batch to the local connections of its users. `offline`
    /// lists the events whose user has no connection here; every other event
    /// counts as delivered (also when its only device is `skip_device`).
    pub fn deliver(&self, batch: &[PushEvent]) -> PushReport {
        let mut report = PushReport::default();
        let mut queued = 0u64;
        for (index, event) in batch.iter().enumerate() {
            // Encoded at most once per event, and only if a device wants it.
            let mut frame = Frame::new(&event.event);
            match self.queue_to_user(event.user, event.skip_device.as_ref(), &mut frame) {
                Some(n) => {
                    report.delivered += 1;
                    queued += n;
                }
                None => report.offline.push(index as u32),
            }
        }
        self.stats.pushed(batch.len() as u64, queued);
        report
    }

    /// Delivers each fan-out to the local connections of its users, the
    /// sending device skipped; returns how many (event, user) pairs had a
    /// connection here (counted as for [`Hub::deliver`]: also when the only
    /// device was the skipped one). Each event is encoded once for all its
    /// users: a group message to thousands of members costs one encode.
    pub fn fan_out_local(&self, batch: &[FanOut]) -> u64 {
        let (mut pairs, mut delivered, mut queued) = (0u64, 0u64, 0u64);
        for fan_out in batch {
            let mut frame = Frame::new(&fan_out.event);
            for &user in &fan_out.users {
                pairs += 1;
                let skip = fan_out.skip.as_ref().filter(|(sender, _)| *sender == user).map(|(_, device)| device);
                if let Some(n) = self.queue_to_user(user, skip, &mut frame) {
                    delivered += 1;
                    queued += n;
                }
            }
        }
        self.stats.pushed(pairs, queued);
        delivered
    }

    /// Queues `frame` to every connection of `user` here but `skip`; how many
    /// frames were queued, or `None` when the user has no connection here.
    /// A full queue closes its connection as too slow: the client reconnects
    /// and syncs, nothing is lost (everything pushed is stored).
    fn queue_to_user(&self, user: UserId, skip: Option<&DeviceId>, frame: &mut Frame<'_>) -> Option<u64> {
        let shard = self.read(user);
        let conns = shard.get(&user)?;
        let mut queued = 0;
        for conn in conns {
            if skip == Some(&conn.device) {
                continue;
            }
            match conn.outbound.try_push(frame.bytes()) {
                Ok(()) => queued += 1,
                Err(PushRefused::Full) => {
                    if conn.shutdown.trigger(CloseReason::TooSlow) {
                        self.stats.connection_dropped_slow();
                        tracing::info!(user = %user, device = %conn.device, "outbound queue full, closing slow connection");
                    }
                }
                // The connection is ending and will leave the table itself.
                Err(PushRefused::Closed) => {}
            }
        }
        Some(queued)
    }

    /// Asks every connection to close with `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            for conn in shard.values().flatten() {
                conn.shutdown.trigger(reason);
            }
        }
    }

    /// Closes the connections of `user` that `status` no longer admits:
    /// all of them when the user is disabled, those opened with a token of
    /// an older generation when its tokens were revoked. Returns how many.
    pub fn close_refused(&self, user: UserId, status: UserStatus) -> usize {
        let shard = self.read(user);
        let mut closed = 0;
        for conn in shard.get(&user).into_iter().flatten() {
            if status.admits(conn.token_generation).is_err() && conn.shutdown.trigger(CloseReason::Revoked) {
                self.stats.connection_revoked();
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::info!(user = %user, closed, disabled = status.disabled, "closed the connections of a stopped user");
        }
        closed
    }

    /// Whether [`Hub::attach`] would let `device` of `user` in with at most
    /// `max` connections of the user: a device already here is replaced,
    /// so it always has room.
    pub fn has_room(&self, user: UserId, device: &DeviceId, max: usize) -> bool {
        self.read(user).get(&user).is_none_or(|conns| conns.len() < max || conns.iter().any(|c| &c.device == device))
    }

    /// Enters a connection, unless `user` has `max` others here already. A
    /// connection of the same (user, device) is removed and told to close:
    /// the newer one wins (and does not count against `max`).
    pub(crate) fn attach(
        &self,
        owner: impl Into<Owner>,
        device: DeviceId,
        outbound: Outbound,
        shutdown: Arc<Shutdown>,
        max: usize,
    ) -> Result<Attached, TooManyConnections> {
        let owner = owner.into();
        let user = owner.user;
        let mut shard = self.write(user);
        let conns = shard.entry(user).or_default();
        let first = conns.is_empty();
        let replaced = conns.iter().position(|c| c.device == device);
        if replaced.is_none() && conns.len() >= max {
            self.stats.connection_refused_per_user();
            return Err(TooManyConnections);
        }
        let id = self.next_conn_id.fetch_add(1, Relaxed);
        if let Some(index) = replaced {
            let old = conns.swap_remove(index);
            if old.shutdown.trigger(CloseReason::Replaced) {
                self.stats.connection_replaced();
            }
        }
        conns.push(Conn { id, device, token_generation: owner.token_generation, outbound, shutdown });
        self.stats.connection_opened();
        Ok(Attached { id, first })
    }

    /// Removes connection `id` of `user`. True when that was the user's last
    /// connection here: unregister it. False too when the connection had
    /// already been replaced (its successor keeps the user online).
    pub(crate) fn detach(&self, user: UserId, id: u64) -> bool {
        self.stats.connection_closed();
        let mut shard = self.write(user);
        let Some(conns) = shard.get_mut(&user) else {
            return false;
        };
        let Some(index) = conns.iter().position(|c| c.id == id) else {
            return false;
        };
        conns.swap_remove(index);
        if conns.is_empty() {
            shard.remove(&user);
            return true;
        }
        false
    }

    /// A push meant for another gateway is a routing bug upstream: reporting
    /// everyone offline would hide it.
    fn check_gateway(&self, gateway: &GatewayId) -> BackendResult<()> {
        if gateway != &self.id {
            return Err(BackendError::Other(format!("push for gateway {gateway} reached gateway {}", self.id)));
        }
        Ok(())
    }

    fn shard(&self, user: UserId) -> &Shard {
        // Fibonacci hashing: user ids are often sequential, the multiply
        // spreads them over the high bits.
        let index = user.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARD_BITS);
        &self.shards[index as usize]
    }

    // No code panics while holding a shard lock, and the table stays
    // consistent between statements, so a poisoned lock is still usable.
    fn read(&self, user: UserId) -> RwLockReadGuard<'_, HashMap<UserId, Vec<Conn>>> {
        self.shard(user).read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, user: UserId) -> RwLockWriteGuard<'_, HashMap<UserId, Vec<Conn>>> {
        self.shard(user).write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Pusher for Hub {
    async fn push(&self, gateway: &GatewayId, batch: &[PushEvent]) -> BackendResult<PushReport> {
        self.check_gateway(gateway)?;
        Ok(self.deliver(batch))
    }

    async fn fan_out(&self, gateway: &GatewayId, batch: &[FanOut]) -> BackendResult<u64> {
        self.check_gateway(gateway)?;
        Ok(self.fan_out_local(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{OutboundQueue, outbound};
    use crate::testkit::{message_event, receipt_event};
    use im_core::{ConversationId, GroupId, NewMessage};
    use im_proto::client::server_frame::Body;
    use prost::Message as _;

    fn attach(hub: &Hub, user: u64, device: &str, queue: usize) -> (OutboundQueue, Arc<Shutdown>, Attached) {
        let (tx, rx) = outbound(queue, usize::MAX);
        let shutdown = Arc::new(Shutdown::default());
        let attached = hub.attach(UserId(user), DeviceId(device.into()), tx, shutdown.clone(), usize::MAX).unwrap();
        (rx, shutdown, attached)
    }

    fn decode(bytes: &Bytes) -> im_proto::client::ServerFrame {
        im_proto::client::ServerFrame::decode(bytes.clone()).unwrap()
    }

    #[tokio::test]
    async fn push_reaches_every_device_of_the_user_but_the_skipped_one() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        let (mut phone, ..) = attach(&hub, 2, "phone", 8);
        let (mut laptop, ..) = attach(&hub, 2, "laptop", 8);
        let (mut tablet, ..) = attach(&hub, 2, "tablet", 8);
        let (mut other_user, ..) = attach(&hub, 3, "phone", 8);

        let batch = vec![message_event(1, 2, Some("tablet")), receipt_event(2, 9, None), message_event(1, 4, None)];
        let report = hub.push(&GatewayId("gw-1".into()), &batch).await.unwrap();

        assert_eq!(report, PushReport { delivered: 2, offline: vec![2] });
        let (p1, l1) = (phone.try_recv().unwrap(), laptop.try_recv().unwrap());
        assert!(matches!(decode(&p1).body, Some(Body::Push(ref m)) if m.to_user == 2 && m.seq == 7));
        assert_eq!(decode(&p1).req_id, 0);
        // Encoded once: both devices got the very same buffer.
        assert_eq!(p1.as_ptr(), l1.as_ptr());
        assert!(matches!(decode(&tablet.try_recv().unwrap()).body, Some(Body::Receipt(ref r)) if r.reader == 9));
        assert!(matches!(decode(&phone.try_recv().unwrap()).body, Some(Body::Receipt(_))));
        assert!(tablet.try_recv().is_err(), "the skipped device got the message");
        assert!(other_user.try_recv().is_err());
        assert_eq!(hub.stats().snapshot().pushes_delivered, 5);
        assert_eq!(hub.stats().snapshot().push_events, 3);
    }

    #[tokio::test]
    async fn an_event_whose_only_device_is_skipped_is_not_offline() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        let (mut phone, ..) = attach(&hub, 2, "phone", 8);
        let report = hub.deliver(&[message_event(1, 2, Some("phone"))]);
        assert_eq!(report, PushReport { delivered: 1, offline: vec![] });
        assert!(phone.try_recv().is_err());
    }

    #[tokio::test]
    async fn push_for_another_gateway_is_an_error() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        assert!(hub.push(&GatewayId("gw-2".into()), &[]).await.is_err());
    }

    #[test]
    fn full_queue_closes_the_connection_once() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        let (_rx, shutdown, _) = attach(&hub, 2, "phone", 2);
        let batch: Vec<_> = (0..5).map(|_| message_event(1, 2, None)).collect();
        hub.deliver(&batch);
        assert_eq!(shutdown.reason(), Some(CloseReason::TooSlow));
        assert_eq!(hub.stats().snapshot().connections_dropped_slow, 1);
        assert_eq!(hub.stats().snapshot().pushes_delivered, 2);
    }

    fn group_fan_out(users: &[u64], skip: Option<(u64, &str)>) -> FanOut {
        let message =
            NewMessage { conversation: ConversationId::Group(GroupId(4)), ..crate::testkit::message(1, 2, 9) };
        FanOut {
            event: Event::Message(Arc::new(message)),
            users: users.iter().copied().map(UserId).collect(),
            skip: skip.map(|(user, device)| (UserId(user), DeviceId(device.into()))),
        }
    }

    #[tokio::test]
    async fn a_fan_out_is_encoded_once_for_every_device_of_every_listed_user() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        let (mut sender_phone, ..) = attach(&hub, 1, "phone", 8);
        let (mut sender_laptop, ..) = attach(&hub, 1, "laptop", 8);
        let (mut member_phone, ..) = attach(&hub, 2, "phone", 8);
        let (mut member_tablet, ..) = attach(&hub, 3, "tablet", 8);
        let (mut not_listed, ..) = attach(&hub, 5, "phone", 8);

        // User 4 is listed but not connected here: not counted.
        let batch = [group_fan_out(&[1, 2, 3, 4], Some((1, "phone")))];
        let delivered = hub.fan_out(&GatewayId("gw-1".into()), &batch).await.unwrap();

        assert_eq!(delivered, 3);
        let frames =
            [sender_laptop.try_recv().unwrap(), member_phone.try_recv().unwrap(), member_tablet.try_recv().unwrap()];
        assert!(frames.iter().all(|f| f.as_ptr() == frames[0].as_ptr()), "one encode for all devices");
        assert!(
            matches!(decode(&frames[0]).body, Some(Body::Push(ref m)) if m.conversation_id == "g:4" && m.to_user == 0)
        );
        assert!(sender_phone.try_recv().is_err(), "the sending device got its own message back");
        assert!(not_listed.try_recv().is_err());
        assert_eq!(hub.stats().snapshot().pushes_delivered, 3);
        assert_eq!(hub.stats().snapshot().push_events, 4);
    }

    #[tokio::test]
    async fn a_fan_out_skips_the_device_only_for_its_sender() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        let (mut sender, ..) = attach(&hub, 1, "phone", 8);
        let (mut other, ..) = attach(&hub, 2, "phone", 8);
        // Another user's device of the same name still gets it; the sender
        // with only the sending device online counts as reached, as in push.
        let delivered = hub.fan_out_local(&[group_fan_out(&[1, 2], Some((1, "phone")))]);
        assert_eq!(delivered, 2);
        assert!(sender.try_recv().is_err());
        assert!(other.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_fan_out_to_nobody_online_is_zero_and_never_encoded() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        assert_eq!(hub.fan_out_local(&[group_fan_out(&[7, 8], None), group_fan_out(&[], None)]), 0);
        assert_eq!(hub.stats().snapshot().pushes_delivered, 0);
        assert!(hub.fan_out(&GatewayId("gw-2".into()), &[]).await.is_err(), "fan-out for another gateway");
    }

    #[test]
    fn a_fan_out_closes_a_full_queue_like_a_push() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        let (_rx, slow, _) = attach(&hub, 2, "phone", 1);
        let (mut fast, ..) = attach(&hub, 3, "phone", 8);
        let batch: Vec<_> = (0..3).map(|_| group_fan_out(&[2, 3], None)).collect();
        assert_eq!(hub.fan_out_local(&batch), 6);
        assert_eq!(slow.reason(), Some(CloseReason::TooSlow));
        assert_eq!(hub.stats().snapshot().connections_dropped_slow, 1);
        for _ in 0..3 {
            assert!(fast.try_recv().is_ok(), "one slow member holds nobody else up");
        }
    }

    #[test]
    fn same_device_replaces_and_last_detach_reports_offline() {
        let hub = Hub::new(GatewayId("gw-1".into()));
        let (_a, old, first) = attach(&hub, 2, "phone", 2);
        assert!(first.first);
        let (_b, _, second) = attach(&hub, 2, "phone", 2);
        assert!(!second.first);
        assert_eq!(old.reason(), Some(CloseReason::Replaced));
        assert_eq!(hub.devices_of(UserId(2)), vec![DeviceId("phone".into())]);
        // The replaced connection leaving does not take the user offline.
        assert!(!hub.detach(UserId(2), first.id));
        assert!(hub.is_online(UserId(2)));
        assert!(hub.detach(UserId(2), second.id));
        assert!(!hub.is_online(UserId(2)));
        assert_eq!(hub.stats().connected(), 0);
    }
}
