//! Routing: after a commit, tell every online device of both sides — the
//! recipient's devices, and the sender's other devices — through the gateway
//! each is connected to, one push call per gateway per batch. The router
//! only splits: each gateway's share goes to that gateway's delivery lane
//! ([`crate::lanes`]), which pushes it (with [`RetryPolicy`]) without
//! holding up any other gateway. A message that reached no device of its
//! recipient (none registered, every gateway said offline, the push failed
//! `MAX_RETRY_ATTEMPTS` times, or its gateway's lane was full) is handed to
//! the offline queue ([`crate::offline`]) once every lane it went to has
//! reported.
//!
//! Group messages are not routed here: they are handed to the group queue,
//! published on `group_msg` and pushed to the members by the fan-out
//! ([`crate::fanout`]), which uses the same [`RetryPolicy`].
//!
//! Pushes are best effort by design: a device that misses one catches up by
//! sync (G4), because everything pushed is already stored.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use im_core::ports::{BackendResult, Event, OfflineEntry, PushEvent, PushReport, Pusher, Registry};
use im_core::{ErrorCode, GatewayId};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::lanes::Lanes;

use crate::fanout::{GroupMessage, GroupQueue};
use crate::metrics::Metrics;
use crate::offline::OfflineQueue;
use crate::outbox::{Settlement, Settlements};
use crate::pipeline::Committed;
use crate::publisher::Traced;
use crate::telemetry::MessageTrace;
use crate::telemetry::propagation::stage_spans;

/// Batches waiting for the router (each a committed batch or a few
/// receipts). The router only splits them, so this fills only when the
/// process is out of CPU; the pipeline then waits (back-pressure).
pub const ROUTE_QUEUE: usize = 1024;

/// How long the lanes may go on pushing what they hold once the router
/// stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the router is asked to deliver.
pub enum RouteWork {
    /// Newly stored messages, from the send pipeline, with the route outbox
    /// row their commit wrote (if any; [`crate::outbox`]).
    Messages { committed: Vec<Committed>, outbox: Option<u64> },
    /// Ready-made events (read receipts).
    Events(Vec<PushEvent>),
}

/// `MAX_RETRY_ATTEMPTS` × `RETRY_TIMEOUT` for each push call.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub timeout: Duration,
}

impl RetryPolicy {
    /// Makes `call` (a call to `gateway` carrying `items` events, `what` in
    /// the logs) up to `attempts` times, each bounded by `timeout`. `None`
    /// when every attempt failed: the devices catch up by sync.
    pub async fn call<T, F, Fut>(&self, gateway: &GatewayId, what: &'static str, items: usize, mut call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = BackendResult<T>>,
    {
        for attempt in 1..=self.attempts.max(1) {
            match tokio::time::timeout(self.timeout, call()).await {
                Ok(Ok(value)) => return Some(value),
                Ok(Err(e)) => tracing::warn!(%gateway, attempt, error = %e, "{what} failed"),
                Err(_) => tracing::warn!(%gateway, attempt, "{what} timed out"),
            }
        }
        tracing::error!(%gateway, items, "{what} gave up; devices will catch up by sync");
        None
    }
}

pub struct Router {
    pub registry: Arc<dyn Registry>,
    pub pusher: Arc<dyn Pusher>,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
    /// Where messages that reached none of their recipient's devices go;
    /// none when nothing consumes offline events (`app.rs` decides).
    pub offline: Option<OfflineQueue>,
    /// Where group messages go (published on `group_msg` for the fan-out);
    /// none when this process has no groups (their messages are then only
    /// synced, and counted as dropped).
    pub groups: Option<GroupQueue>,
    /// Where settled batches go to have their outbox rows settled; none
    /// when the commits write no outbox (offline entries off).
    pub settlements: Option<Settlements>,
}

/// One gateway's share of a batch. `addressed[i]` is the index, in the
/// routed batch, of the message whose recipient event `i` is for (counted in
/// metrics, and offline unless some gateway delivers it); `None` for a
/// courtesy copy to the actor's other devices, or a receipt.
#[derive(Default)]
struct GatewayBatch {
    events: Vec<PushEvent>,
    addressed: Vec<Option<usize>>,
    /// The sampled traces of the messages in it (usually none).
    traces: Vec<MessageTrace>,
}

impl GatewayBatch {
    /// Remembers `trace` if it is sampled and not already here (a message
    /// adds its recipient's and its sender's copies to one gateway).
    fn add_trace(&mut self, trace: &MessageTrace) {
        if trace.context().is_some() && !self.traces.iter().any(|known| known.is_same_span(trace)) {
            self.traces.push(trace.clone());
        }
    }
}

/// One gateway's share of a routed batch, for its lane.
pub struct Share {
    batch: GatewayBatch,
    outcome: Arc<Outcome>,
}

/// What became of one routed batch: which of its messages reached their
/// recipient, and how many lanes have still to report. The last to report
/// hands the rest to the offline queue.
struct Outcome {
    /// The private messages routed (none for receipts).
    messages: Vec<Committed>,
    /// The batch's route outbox row, settled with it.
    outbox: Option<u64>,
    reached: Vec<AtomicBool>,
    lanes_left: AtomicUsize,
    /// Fires once the batch is settled (tests wait on it).
    settled: parking_lot::Mutex<Option<oneshot::Sender<()>>>,
}

impl Outcome {
    fn new(messages: Vec<Committed>, outbox: Option<u64>, lanes: usize) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (settled, on_settled) = oneshot::channel();
        let reached = messages.iter().map(|_| AtomicBool::new(false)).collect();
        let outcome = Self {
            messages,
            outbox,
            reached,
            lanes_left: AtomicUsize::new(lanes),
            settled: parking_lot::Mutex::new(Some(settled)),
        };
        (Arc::new(outcome), on_settled)
    }

    /// A lane is done with its share: `reached` are the messages (indexes)
    /// it delivered to their recipient.
    fn report(&self, router: &Router, reached: &[usize]) {
        for &message in reached {
            if let Some(flag) = self.reached.get(message) {
                flag.store(true, Ordering::Relaxed);
            }
        }
        // AcqRel: the last reporter sees every other lane's flags.
        if self.lanes_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settle(router);
        }
    }

    fn settle(&self, router: &Router) {
        let unreached = || {
            self.messages
                .iter()
                .zip(&self.reached)
                .filter(|(_, reached)| !reached.load(Ordering::Relaxed))
                .filter_map(|(committed, _)| Some((OfflineEntry::of(&committed.message)?, &committed.trace)))
        };
        if let (Some(settlements), Some(outbox)) = (&router.settlements, self.outbox) {
            settlements.settle(Settlement { outbox, unreached: unreached().map(|(entry, _)| entry).collect() });
        }
        if let Some(offline) = &router.offline {
            offline.enqueue(unreached().map(|(entry, trace)| Traced { item: entry, trace: trace.clone() }));
        }
        for committed in &self.messages {
            router.metrics.routing_latency.observe(committed.accepted_at.elapsed().as_secs_f64());
        }
        if let Some(settled) = self.settled.lock().take() {
            let _ = settled.send(());
        }
    }
}

impl Router {
    pub async fn run(self, mut work: mpsc::Receiver<RouteWork>) {
        let router = Arc::new(self);
        let mut lanes = router.lanes();
        while let Some(item) = work.recv().await {
            // Split and queued: the lanes deliver, the router moves on.
            let _settled = match item {
                RouteWork::Messages { committed, outbox } => router.route_messages(&mut lanes, committed, outbox),
                RouteWork::Events(events) => router.route_events(&mut lanes, events),
            };
        }
        lanes.close(SHUTDOWN_GRACE).await;
        tracing::info!("router stopped");
    }

    /// A lane per gateway, each pushing its shares with the retry policy.
    pub fn lanes(self: &Arc<Self>) -> Lanes<Share> {
        let router = self.clone();
        Lanes::new(Arc::new(move |gateway: GatewayId, share: Share| {
            let router = router.clone();
            async move {
                let reached = router.push_share(&gateway, share.batch).await;
                share.outcome.report(&router, &reached);
            }
            .boxed()
        }))
    }

    /// Ready-made events (receipts) to their users' gateways.
    fn route_events(self: &Arc<Self>, lanes: &mut Lanes<Share>, events: Vec<PushEvent>) -> oneshot::Receiver<()> {
        let mut per_gateway = HashMap::new();
        for event in events {
            self.add(&mut per_gateway, event, None, &MessageTrace::default());
        }
        self.hand_to_lanes(lanes, per_gateway, Vec::new(), None)
    }

    /// Each gateway's share to its lane; a full lane's share counts as not
    /// delivered. Returns what fires once every lane reported.
    fn hand_to_lanes(
        &self,
        lanes: &mut Lanes<Share>,
        per_gateway: HashMap<GatewayId, GatewayBatch>,
        messages: Vec<Committed>,
        outbox: Option<u64>,
    ) -> oneshot::Receiver<()> {
        let (outcome, settled) = Outcome::new(messages, outbox, per_gateway.len());
        if per_gateway.is_empty() {
            outcome.settle(self);
            return settled;
        }
        for (gateway, batch) in per_gateway {
            if let Err(refused) = lanes.send(&gateway, Share { batch, outcome: outcome.clone() }) {
                let events = refused.batch.events.len() as u64;
                self.metrics.push_lane_full.inc_by(events);
                tracing::warn!(%gateway, events, "the gateway's delivery lane is full; its users catch up by sync");
                refused.outcome.report(self, &[]);
            }
        }
        settled
    }

    /// Splits newly stored messages over the lanes (group messages to the
    /// group queue). Returns what fires once the batch is settled.
    pub fn route_messages(
        self: &Arc<Self>,
        lanes: &mut Lanes<Share>,
        mut batch: Vec<Committed>,
        outbox: Option<u64>,
    ) -> oneshot::Receiver<()> {
        if batch.iter().any(|c| c.message.conversation.group().is_some()) {
            let (groups, private): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|c| c.message.conversation.group().is_some());
            self.hand_over_group_messages(groups);
            batch = private;
        }
        let mut per_gateway: HashMap<GatewayId, GatewayBatch> = HashMap::new();
        for (index, committed) in batch.iter().enumerate() {
            let message = &committed.message;
            let Some(recipient) = message.recipient() else {
                tracing::error!(conversation = %message.conversation, sender = %message.sender,
                    "a private message whose sender is not in its conversation; not routed");
                continue;
            };
            let to_recipient = PushEvent { user: recipient, skip_device: None, event: Event::Message(message.clone()) };
            if !self.add(&mut per_gateway, to_recipient, Some(index), &committed.trace) {
                self.metrics.push_offline.inc();
            }
            let to_sender_devices = PushEvent {
                user: message.sender,
                skip_device: Some(committed.device.clone()),
                event: Event::Message(message.clone()),
            };
            self.add(&mut per_gateway, to_sender_devices, None, &committed.trace);
        }
        self.hand_to_lanes(lanes, per_gateway, batch, outbox)
    }

    /// Hands group messages to the group queue (never waiting), from which
    /// they are published for the fan-out.
    fn hand_over_group_messages(&self, committed: Vec<Committed>) {
        let messages = committed
            .into_iter()
            .map(|c| Traced { item: GroupMessage { message: c.message, device: c.device }, trace: c.trace });
        match &self.groups {
            Some(queue) => queue.enqueue(messages),
            None => {
                let dropped = messages.count() as u64;
                self.metrics.group_dropped.inc_by(dropped);
                tracing::warn!(dropped, "no group fan-out in this process; group messages reach members by sync");
            }
        }
    }

    /// Queues `event` for every gateway its user is on; false if none.
    fn add(
        &self,
        per_gateway: &mut HashMap<GatewayId, GatewayBatch>,
        event: PushEvent,
        addressed: Option<usize>,
        trace: &MessageTrace,
    ) -> bool {
        let gateways = self.registry.gateways_of(event.user);
        let Some((last, others)) = gateways.split_last() else {
            return false;
        };
        for gateway in others {
            let batch = per_gateway.entry(gateway.clone()).or_default();
            batch.events.push(event.clone());
            batch.addressed.push(addressed);
            batch.add_trace(trace);
        }
        let batch = per_gateway.entry(last.clone()).or_default();
        batch.events.push(event);
        batch.addressed.push(addressed);
        batch.add_trace(trace);
        true
    }

    /// Pushes one gateway's share (a lane's work). Returns the messages
    /// (indexes in the routed batch) it delivered to their recipient.
    async fn push_share(&self, gateway: &GatewayId, batch: GatewayBatch) -> Vec<usize> {
        let addressed = batch.addressed;
        let count = addressed.iter().flatten().count() as u64;
        // An `im.push` in the trace of each sampled message; the call
        // carries the first one's trace (a call has one parent), so the
        // gateway's side shows in that trace only.
        let spans = stage_spans!(batch.traces.iter(), "im.push", gateway = %gateway, events = batch.events.len());
        let call_span = spans.first().cloned().unwrap_or_else(tracing::Span::none);
        let pushed = self.push_with_retry(gateway, batch.events).instrument(call_span).await;
        drop(spans);
        match pushed {
            Ok(report) => {
                // A remote gateway's report is input: an index out of range,
                // or given twice, counts once or not at all.
                let offline: HashSet<usize> = report
                    .offline
                    .iter()
                    .map(|&i| i as usize)
                    .filter(|&i| addressed.get(i).is_some_and(Option::is_some))
                    .collect();
                self.metrics.pushed.inc_by(count.saturating_sub(offline.len() as u64));
                self.metrics.push_offline.inc_by(offline.len() as u64);
                addressed
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !offline.contains(i))
                    .filter_map(|(_, message)| *message)
                    .collect()
            }
            Err(()) => {
                self.metrics.fail_n(ErrorCode::Unavailable, count);
                Vec::new()
            }
        }
    }

    async fn push_with_retry(&self, gateway: &GatewayId, events: Vec<PushEvent>) -> Result<PushReport, ()> {
        self.retry.call(gateway, "push", events.len(), || self.pusher.push(gateway, &events)).await.ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use async_trait::async_trait;
    use bytes::Bytes;
    use im_core::error::BackendError;
    use im_core::ports::{BackendResult, OfflineStore};
    use im_core::{ClientMsgId, ConversationId, DeviceId, MessageId, NewMessage, Seq, UserId};

    use super::*;
    use crate::outbox::Settler;
    use crate::testkit::{FixedRegistry, RecordingPusher, gw};

    /// The outbox row the routed test batches are settled under.
    const OUTBOX_ROW: u64 = 4242;

    fn committed(from: u64, to: u64, seq: u64) -> Committed {
        committed_in(ConversationId::private(UserId(from), UserId(to)).unwrap(), from, seq)
    }

    fn group_committed(group: u64, from: u64, seq: u64) -> Committed {
        committed_in(ConversationId::Group(im_core::GroupId(group)), from, seq)
    }

    /// Message `seq` of `conversation` from `from`, sent from their phone.
    fn committed_in(conversation: ConversationId, from: u64, seq: u64) -> Committed {
        let message = NewMessage {
            msg_id: MessageId(seq),
            conversation,
            seq: Seq(seq),
            sender: UserId(from),
            client_msg_id: ClientMsgId::parse(&format!("c{seq}")).unwrap(),
            body: Bytes::from_static(b"hi"),
            content_type: String::new(),
            server_time_ms: 0,
            sealed_with: None,
        };
        Committed {
            message: Arc::new(message),
            device: DeviceId("phone".into()),
            accepted_at: Instant::now(),
            trace: MessageTrace::default(),
        }
    }

    /// Routes `batch` through lanes of its own and waits until every lane
    /// is done with it (and gone).
    async fn route(router: &Arc<Router>, batch: Vec<Committed>) {
        let mut lanes = router.lanes();
        router.route_messages(&mut lanes, batch, Some(OUTBOX_ROW)).await.expect("the batch settles");
        lanes.close(Duration::from_secs(5)).await;
    }

    fn router(registry: FixedRegistry, pusher: Arc<RecordingPusher>, attempts: u32) -> Arc<Router> {
        Arc::new(Router {
            registry: Arc::new(registry),
            pusher,
            metrics: Arc::new(Metrics::new()),
            retry: RetryPolicy { attempts, timeout: Duration::from_secs(1) },
            offline: None,
            groups: None,
            settlements: None,
        })
    }

    #[tokio::test]
    async fn one_call_per_gateway_carries_recipient_and_sender_copies() {
        // Alice (1) is on gateway a; Bob (2) on a and b; Carol (3) offline.
        let registry = FixedRegistry(HashMap::from([(UserId(1), vec![gw("a")]), (UserId(2), vec![gw("a"), gw("b")])]));
        let pusher = Arc::new(RecordingPusher::default());
        let router = router(registry, pusher.clone(), 3);
        route(&router, vec![committed(1, 2, 1), committed(1, 2, 2), committed(1, 3, 1)]).await;

        let mut calls = pusher.pushes.lock().unwrap().clone();
        calls.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(calls.len(), 2, "one push call per gateway for the whole batch");
        let users =
            |events: &[PushEvent]| events.iter().map(|e| (e.user.0, e.skip_device.is_some())).collect::<Vec<_>>();
        // Gateway a: bob's copy of each message, and alice's other devices
        // (skipping the sending device) for all three.
        assert_eq!(users(&calls[0].1), vec![(2, false), (1, true), (2, false), (1, true), (1, true)]);
        assert_eq!(users(&calls[1].1), vec![(2, false), (2, false)]);
        assert_eq!(router.metrics.pushed.get(), 4, "bob's copies on two gateways");
        assert_eq!(router.metrics.push_offline.get(), 1, "carol was offline");
    }

    #[tokio::test]
    async fn a_failing_gateway_is_retried_up_to_the_attempts() {
        let registry = FixedRegistry(HashMap::from([(UserId(2), vec![gw("a")])]));
        let pusher = Arc::new(RecordingPusher::default());
        *pusher.failures.lock().unwrap() = 2;
        let router_ok = router(registry, pusher.clone(), 3);
        route(&router_ok, vec![committed(1, 2, 1)]).await;
        assert_eq!(pusher.pushes.lock().unwrap().len(), 3, "two failures, then success");
        assert_eq!(router_ok.metrics.pushed.get(), 1);

        let registry = FixedRegistry(HashMap::from([(UserId(2), vec![gw("a")])]));
        let pusher = Arc::new(RecordingPusher::default());
        *pusher.failures.lock().unwrap() = 5;
        let router_down = router(registry, pusher.clone(), 2);
        route(&router_down, vec![committed(1, 2, 1)]).await;
        assert_eq!(pusher.pushes.lock().unwrap().len(), 2, "gives up after the attempts");
        assert_eq!(router_down.metrics.pushed.get(), 0);
        assert!(router_down.metrics.render().contains("im_messages_failed_total{code=\"UNAVAILABLE\"} 1"));
    }

    /// Reports the users in `offline` as having no device, and fails every
    /// push to the gateways in `down`.
    struct ScriptedPusher {
        offline: Vec<(GatewayId, UserId)>,
        down: Vec<GatewayId>,
    }

    #[async_trait]
    impl Pusher for ScriptedPusher {
        async fn push(&self, gateway: &GatewayId, batch: &[PushEvent]) -> BackendResult<PushReport> {
            if self.down.contains(gateway) {
                return Err(BackendError::unavailable("gateway down"));
            }
            let offline: Vec<u32> = (0..batch.len() as u32)
                .filter(|&i| self.offline.contains(&(gateway.clone(), batch[i as usize].user)))
                .collect();
            Ok(PushReport { delivered: batch.len() as u32 - offline.len() as u32, offline })
        }
    }

    #[tokio::test]
    async fn messages_that_reach_no_device_of_their_recipient_become_offline_events() {
        use im_backends::MemoryBus;
        use im_core::ports::{Bus, OfflineEntry};

        use crate::offline::OfflinePublisher;

        // Alice (1) sends from gateway a, which has none of her other
        // devices. Bob (2) is on a, which says he is offline; Carol (3) on no
        // gateway; Dave (4) on a (offline) and b (delivered); Erin (5) on c,
        // which is down.
        let registry = FixedRegistry(HashMap::from([
            (UserId(1), vec![gw("a")]),
            (UserId(2), vec![gw("a")]),
            (UserId(4), vec![gw("a"), gw("b")]),
            (UserId(5), vec![gw("c")]),
        ]));
        let pusher = ScriptedPusher {
            offline: vec![(gw("a"), UserId(1)), (gw("a"), UserId(2)), (gw("a"), UserId(4))],
            down: vec![gw("c")],
        };
        let bus = Arc::new(MemoryBus::new());
        let mut topic = bus.subscribe("offline", "test").await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let (publisher, queue) = OfflinePublisher::new(bus.clone(), "offline".into(), metrics.clone(), 100);
        // The same entries settle the batch's outbox row, in the store.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(im_backends::SqliteStore::open(&dir.path().join("im.db")).await.unwrap());
        let (settler, settlements, input) = Settler::new(store.clone(), metrics.clone(), Duration::from_secs(60));
        let router = Arc::new(Router {
            registry: Arc::new(registry),
            pusher: Arc::new(pusher),
            metrics: metrics.clone(),
            retry: RetryPolicy { attempts: 2, timeout: Duration::from_secs(1) },
            offline: Some(queue),
            groups: None,
            settlements: Some(settlements),
        });
        let batch: Vec<_> = (2..=5).map(|to| committed(1, to, 7)).collect();
        route(&router, batch).await;
        drop(router);
        publisher.run(tokio_util::sync::CancellationToken::new()).await;
        settler.run(input, tokio_util::sync::CancellationToken::new()).await;
        for user in [2, 3, 5] {
            let pending = store.pending_offline(UserId(user), 10).await.unwrap();
            assert_eq!(pending.len(), 1, "user {user} has an entry");
            assert_eq!((pending[0].count, pending[0].last_seq), (1, Seq(7)));
        }
        for user in [1, 4] {
            assert_eq!(store.pending_offline(UserId(user), 10).await.unwrap(), [], "user {user} was reached");
        }
        assert_eq!(metrics.outbox_settled.get(), 1, "one row for the batch");

        let records = topic.poll(10, Duration::ZERO).await.unwrap();
        let offline: Vec<OfflineEntry> =
            records.iter().map(|r| im_proto::convert::decode_offline_event(&r.payload).unwrap()).collect();
        let users: Vec<u64> = offline.iter().map(|e| e.user.0).collect();
        assert_eq!(users, [2, 3, 5], "bob (offline), carol (nowhere), erin (push failed); not dave, nor alice");
        let carol = &offline[1];
        assert_eq!(
            (carol.conversation, carol.seq, carol.msg_id),
            (ConversationId::private(UserId(1), UserId(3)).unwrap(), Seq(7), MessageId(7))
        );
        assert_eq!(records[1].key, Bytes::from(carol.conversation.to_string()), "keyed by conversation");
        assert_eq!(metrics.offline_published.get(), 3);
    }

    #[tokio::test]
    async fn group_messages_are_handed_to_the_fan_out_not_routed_as_private() {
        use im_backends::MemoryBus;
        use im_core::ports::Bus;

        use crate::fanout::GroupPublisher;
        use crate::offline::OfflinePublisher;

        let registry = FixedRegistry(HashMap::from([(UserId(1), vec![gw("a")]), (UserId(2), vec![gw("a")])]));
        let pusher = Arc::new(RecordingPusher::default());
        let bus = Arc::new(MemoryBus::new());
        let mut group_topic = bus.subscribe("group_msg", "test").await.unwrap();
        let mut offline_topic = bus.subscribe("offline", "test").await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let (offline, offline_queue) = OfflinePublisher::new(bus.clone(), "offline".into(), metrics.clone(), 100);
        let (groups, group_queue) = GroupPublisher::new(bus.clone(), "group_msg".into(), metrics.clone(), 100);
        let router = Arc::new(Router {
            registry: Arc::new(registry),
            pusher: pusher.clone(),
            metrics: metrics.clone(),
            retry: RetryPolicy { attempts: 1, timeout: Duration::from_secs(1) },
            offline: Some(offline_queue),
            groups: Some(group_queue),
            settlements: None,
        });
        // Group 7 (whose members 1 and 2 are online) between two private messages.
        route(&router, vec![committed(1, 2, 1), group_committed(7, 1, 3), committed(2, 1, 2)]).await;
        drop(router);
        offline.run(tokio_util::sync::CancellationToken::new()).await;
        groups.run(tokio_util::sync::CancellationToken::new()).await;

        let calls = pusher.pushes.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        let seqs: Vec<(u64, u64)> = calls[0]
            .1
            .iter()
            .map(|e| match &e.event {
                Event::Message(m) => (e.user.0, m.seq.0),
                Event::Receipt { .. } => panic!("a message"),
            })
            .collect();
        assert_eq!(seqs, [(2, 1), (1, 1), (1, 2), (2, 2)], "only the private messages are pushed by the router");

        let records = group_topic.poll(10, Duration::ZERO).await.unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key, Bytes::from_static(b"7"), "keyed by group");
        let (message, device) = im_proto::convert::decode_group_message_event(&records[0].payload).unwrap();
        assert_eq!((message.seq, device), (Seq(3), DeviceId("phone".into())));
        assert_eq!(offline_topic.poll(10, Duration::ZERO).await.unwrap(), [], "nothing offline");
        assert_eq!((metrics.group_published.get(), metrics.pushed.get()), (1, 2));
    }

    #[tokio::test]
    async fn without_a_group_queue_group_messages_are_counted_as_dropped() {
        let pusher = Arc::new(RecordingPusher::default());
        let router = router(FixedRegistry(HashMap::new()), pusher.clone(), 1);
        route(&router, vec![group_committed(7, 1, 1), group_committed(7, 1, 2)]).await;
        assert!(pusher.pushes.lock().unwrap().is_empty());
        assert_eq!(router.metrics.group_dropped.get(), 2);
    }

    /// Hangs every push to gateway "hung"; records the others.
    #[derive(Default)]
    struct HangingPusher {
        pushed: std::sync::Mutex<Vec<(GatewayId, Vec<u64>)>>,
    }

    #[async_trait]
    impl Pusher for HangingPusher {
        async fn push(&self, gateway: &GatewayId, batch: &[PushEvent]) -> BackendResult<PushReport> {
            if gateway.0 == "hung" {
                futures::future::pending::<()>().await;
            }
            let users = batch.iter().map(|e| e.user.0).collect();
            self.pushed.lock().unwrap().push((gateway.clone(), users));
            Ok(PushReport { delivered: batch.len() as u32, offline: Vec::new() })
        }
    }

    #[tokio::test]
    async fn a_hung_gateway_holds_only_its_own_lane_and_its_users_go_offline_once_it_is_full() {
        use im_backends::MemoryBus;
        use im_core::ports::Bus;

        use crate::lanes::LANE_QUEUE;
        use crate::offline::OfflinePublisher;

        // Bob (2) is on the hung gateway, Carol (3) on a.
        let registry = FixedRegistry(HashMap::from([(UserId(2), vec![gw("hung")]), (UserId(3), vec![gw("a")])]));
        let pusher = Arc::new(HangingPusher::default());
        let bus = Arc::new(MemoryBus::new());
        let mut topic = bus.subscribe("offline", "test").await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let (publisher, queue) = OfflinePublisher::new(bus.clone(), "offline".into(), metrics.clone(), 10_000);
        tokio::spawn(publisher.run(tokio_util::sync::CancellationToken::new()));
        let router = Arc::new(Router {
            registry: Arc::new(registry),
            pusher: pusher.clone(),
            metrics: metrics.clone(),
            // A push that hangs is not even timed out within the test.
            retry: RetryPolicy { attempts: 1, timeout: Duration::from_secs(600) },
            offline: Some(queue),
            groups: None,
            settlements: None,
        });
        let mut lanes = router.lanes();
        // Batch n: one message to bob, one to carol. The hung lane takes the
        // first batch and holds LANE_QUEUE more; the rest are refused.
        let batches = LANE_QUEUE as u64 + 11;
        let started = std::time::Instant::now();
        for n in 1..=batches {
            drop(router.route_messages(&mut lanes, vec![committed(1, 2, n), committed(1, 3, n)], None));
            tokio::task::yield_now().await;
        }
        // Carol's gateway got every batch, at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pusher.pushed.lock().unwrap().len() < batches as usize {
            assert!(std::time::Instant::now() < deadline, "lane a stalled behind the hung gateway");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pusher.pushed.lock().unwrap().iter().all(|(g, users)| g.0 == "a" && users == &[3]));
        eprintln!("{batches} batches to the healthy gateway in {:?}", started.elapsed());
        // Bob's messages beyond what the hung lane holds went offline.
        let refused = batches - 1 - LANE_QUEUE as u64;
        assert_eq!(metrics.push_lane_full.get(), refused, "one event per refused share");
        let mut offline = Vec::new();
        while (offline.len() as u64) < refused {
            let records = topic.poll(1000, Duration::from_secs(5)).await.unwrap();
            assert!(!records.is_empty(), "offline entries missing: {} of {refused}", offline.len());
            offline.extend(records.iter().map(|r| im_proto::convert::decode_offline_event(&r.payload).unwrap()));
        }
        assert!(offline.iter().all(|e| e.user == UserId(2)), "only bob's, on the hung gateway");
        let seqs: Vec<u64> = offline.iter().map(|e| e.seq.0).collect();
        assert_eq!(seqs, (LANE_QUEUE as u64 + 2..=batches).collect::<Vec<_>>());
    }
}
