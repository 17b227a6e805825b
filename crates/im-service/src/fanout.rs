//! The group fan-out (DESIGN.md §3 "Group message", docs/groups.md): a group
//! message is stored once, published on `group_msg` keyed by its group, and
//! pushed from there to the group's online members; members who are offline
//! get it by sync.
//!
//! - [`GroupQueue`] and [`GroupPublisher`]: the router hands committed group
//!   messages to the queue without waiting; the publisher publishes them as
//!   `im.fanout.v1.GroupMessageEvent`, keyed by the group id (one group, one
//!   partition, one order). The same [`Publisher`] as the offline events: a
//!   bounded queue (full: dropped and counted, `im_group_messages_dropped_total`),
//!   concurrent publishes, retries with backoff until shutdown.
//! - [`FanOutWorker`]: members of the consumer group `kafka.group_id`
//!   (`KAFKA_GROUP_ID`) on every node. Each takes what is there (up to
//!   [`ConsumerSettings::poll_max`] records, without waiting for more: latency
//!   comes first), looks up each group's roster once per batch in the
//!   membership cache and its members' gateways in the registry, and builds
//!   one [`FanOut`] per (message, gateway) listing the members there who see
//!   the message (`Member::sees`: joined before it; the sender too, whose
//!   sending device is skipped). Each gateway gets **one**
//!   [`Pusher::fan_out`] call per batch, made by that gateway's delivery
//!   lane ([`crate::lanes`], the router's kind: one bounded queue and task
//!   per gateway, the router's [`RetryPolicy`]), so a gateway that hangs
//!   holds up only its own members; a full lane's share is refused and
//!   counted (`im_push_lane_full_total`). The last offset is committed once
//!   the batch is in the lanes: pushes are best effort, members sync what
//!   they missed (a node killed meanwhile loses those pushes, not messages).
//! - Failures: a record that does not decode, or whose group does not exist
//!   (`NOT_FOUND`), or whose roster the directory keeps refusing, is parked
//!   as it was on `{group_msg}.dlq` (`im_group_dead_letters_total{reason}`)
//!   before the offset moves past it — never skipped silently. A roster that
//!   cannot be had (the directory is down) is retried with backoff, the
//!   batch and its offset held (`im_group_roster_failures_total`, and the lag).
//!
//! The hot path allocates per (message, gateway), never per member: the
//! message is one `Arc` shared by every fan-out, and gateways are looked up
//! once per member per batch (not per message).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use im_config::{BusBackend, Config};
use im_core::ports::{Bus, BusConsumer, BusRecord, Event, FanOut, Pusher, Registry};
use im_core::{DeviceId, ErrorCode, GatewayId, GroupId, ImError, NewMessage};
use im_proto::convert::{decode_group_message_event, encode_group_message_event};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, warn};

use crate::clock::unix_ms;
use crate::consumer::{Consume, ConsumerSettings, REFUSED_ATTEMPTS};
use crate::encryption::BodyCipher;
use crate::groups::cache::{GroupView, MembershipCache};
use crate::lanes::Lanes;
use crate::messaging::open_sealed;
use crate::metrics::Metrics;
use crate::publisher::{DeadLetters, PublishCounters, PublishQueue, Publishable, Publisher, Stopped, Traced, pause};
use crate::router::RetryPolicy;
use crate::telemetry::MessageTrace;
use crate::telemetry::propagation::message_span;

/// Group messages waiting for the publisher. They carry their bodies, so
/// fewer than the offline queue holds; beyond it (the bus down for long under
/// load) messages are not published, and members get them by sync.
pub const GROUP_PUBLISH_QUEUE: usize = 16 * 1024;
/// Records taken per poll.
const POLL_MAX: usize = 256;
/// How long a poll waits when there is nothing: the stop signal is seen
/// within it.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Members per node on Kafka (the topic's partitions are shared among every
/// node's members). In process there is one: one topic partition, one order.
const KAFKA_MEMBERS: usize = 4;

// ---------------------------------------------------------------------------
// Publishing

/// A committed group message, on its way to `group_msg`.
#[derive(Clone, Debug)]
pub struct GroupMessage {
    pub message: Arc<NewMessage>,
    /// The device that sent it (it has the message already).
    pub device: DeviceId,
}

impl Publishable for GroupMessage {
    const WHAT: &'static str = "group messages";

    /// The group id, in decimal.
    fn key(&self) -> Bytes {
        match self.message.conversation.group() {
            Some(group) => Bytes::from(group.to_string()),
            // Not a group message: the router hands over only group ones.
            None => Bytes::from(self.message.conversation.to_string()),
        }
    }

    fn payload(&self) -> Bytes {
        encode_group_message_event(&self.message, &self.device)
    }

    fn counters(metrics: &Metrics) -> PublishCounters {
        PublishCounters {
            published: metrics.group_published.clone(),
            failures: metrics.group_publish_failures.clone(),
            dropped: metrics.group_dropped.clone(),
        }
    }
}

/// The router's handle on the group publisher.
pub type GroupQueue = PublishQueue<Traced<GroupMessage>>;

/// Publishes group messages on `group_msg`, keyed by group; see [`Publisher`].
pub type GroupPublisher = Publisher<Traced<GroupMessage>>;

// ---------------------------------------------------------------------------
// Fanning out

impl ConsumerSettings {
    /// The fan-out's: `kafka.topics.group_msg` in `kafka.group_id`
    /// (`KAFKA_GROUP_ID`), [`POLL_MAX`] records a poll without waiting for
    /// more (latency comes first), [`KAFKA_MEMBERS`] members on Kafka.
    pub fn group_fan_out(config: &Config) -> Self {
        let concurrency = match config.bus() {
            BusBackend::InProcess => 1,
            BusBackend::Kafka(_) => KAFKA_MEMBERS,
        };
        Self::new(
            config.kafka.topics.group_msg.clone(),
            config.kafka.group_id.clone(),
            POLL_MAX,
            POLL_WAIT,
            concurrency,
        )
    }
}

/// The group fan-out; see the [module docs](self).
pub struct FanOutWorker {
    /// Where dead letters are published.
    pub bus: Arc<dyn Bus>,
    pub cache: Arc<MembershipCache>,
    pub registry: Arc<dyn Registry>,
    pub pusher: Arc<dyn Pusher>,
    pub metrics: Arc<Metrics>,
    /// The router's: `MAX_RETRY_ATTEMPTS` × `RETRY_TIMEOUT` per push call.
    pub retry: RetryPolicy,
    pub settings: ConsumerSettings,
    /// Opens sealed bodies (encryption at rest): `group_msg` carries them as
    /// stored.
    pub cipher: Option<Arc<BodyCipher>>,
}

/// A decoded record of a batch.
struct Decoded {
    group: GroupId,
    message: Arc<NewMessage>,
    device: DeviceId,
    /// Its index in the polled batch.
    record: usize,
    /// The trace the record carries, if sampled.
    trace: MessageTrace,
}

/// What came of looking up a group's roster, retries included.
enum Lookup {
    Found(Arc<GroupView>),
    /// Parked with this reason: no such group, or the directory kept
    /// refusing (not merely unavailable).
    Park(&'static str, ImError),
}

impl Consume for FanOutWorker {
    const WHAT: &'static str = "group fan-out";
    type Scratch = Scratch;

    fn settings(&self) -> &ConsumerSettings {
        &self.settings
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Fans out a polled batch, parks what cannot be fanned out, and then
    /// commits the last record. `Stopped` (nothing committed) when `stop`
    /// came while waiting for a roster or the dead-letter topic.
    async fn handle(
        &self,
        consumer: &mut dyn BusConsumer,
        records: Vec<BusRecord>,
        scratch: &mut Scratch,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let Some(last) = records.last() else { return Ok(()) };
        let mut decoded = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let decoded_event = match decode_group_message_event(&record.payload) {
                Ok((mut message, device)) => match self.open(&mut message, stop).await? {
                    Ok(()) => Ok((message, device)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match decoded_event {
                Ok((message, device)) => {
                    let group = message.conversation.group().expect("the decoder accepts group messages only");
                    let message = Arc::new(message);
                    let trace = MessageTrace::from_headers(&record.headers);
                    decoded.push(Decoded { group, message, device, record: index, trace });
                }
                Err(e) => self.dead_letters().park(record, "undecodable", &e.message, stop).await?,
            }
        }
        // A `fanout.deliver` span in the trace of each sampled message, from
        // its roster to its pushes; the calls carry the first one's trace.
        let spans: Vec<Span> = decoded
            .iter()
            .filter(|d| d.trace.context().is_some())
            .map(|d| {
                let (msg_id, conversation) = (d.message.msg_id.0, &d.message.conversation);
                message_span!(&d.trace, "fanout.deliver", msg_id, conversation = %conversation)
            })
            .collect();
        let call_span = spans.first().cloned().unwrap_or_else(Span::none);
        // Each group's messages together, in record order (a stable sort):
        // one roster lookup and one registry pass per group.
        decoded.sort_by_key(|d| d.group);
        let groups: Vec<GroupId> = decoded.chunk_by(|a, b| a.group == b.group).map(|chunk| chunk[0].group).collect();
        let lookups = futures::future::join_all(groups.iter().map(|&group| self.roster(group, stop))).await;
        let lookups = lookups.into_iter().collect::<Result<Vec<_>, Stopped>>()?;

        let mut fanned_out = 0u64;
        for (messages, lookup) in decoded.chunk_by_mut(|a, b| a.group == b.group).zip(&lookups) {
            let Lookup::Found(view) = lookup else { continue };
            let newest = messages.iter().map(|d| d.message.seq).max().expect("a chunk has a message");
            scratch.index_online(&*self.registry, view, newest);
            for item in messages.iter() {
                scratch.add_message(view, &item.message, &item.device);
            }
            fanned_out += messages.len() as u64;
        }
        self.hand_to_lanes(scratch, call_span);
        drop(spans);
        self.metrics.group_fanned_out.inc_by(fanned_out);
        scratch.slots.clear();

        for (messages, lookup) in decoded.chunk_by(|a, b| a.group == b.group).zip(&lookups) {
            let Lookup::Park(reason, e) = lookup else { continue };
            for item in messages {
                self.dead_letters().park(&records[item.record], reason, &e.message, stop).await?;
            }
        }
        // Everything up to `last` is in the lanes (or refused by a full one)
        // or parked. A failed commit is covered by the next one; if none
        // comes, the records are pushed again (at least once: a client knows a
        // message by its conversation and seq).
        if let Err(e) = consumer.commit(last).await {
            warn!(topic = %self.settings.topic, offset = last.offset, error = %e, "group fan-out commit failed");
        }
        Ok(())
    }
}

/// One gateway's fan-outs of a batch, for its lane.
pub(crate) struct FanOutShare {
    fan_outs: Vec<FanOut>,
    /// The span of the batch's first sampled message, if any.
    span: Span,
}

impl FanOutShare {
    /// (message, member) pairs it carries.
    fn pairs(&self) -> usize {
        self.fan_outs.iter().map(|f| f.users.len()).sum()
    }
}

impl FanOutWorker {
    /// Gives every gateway's call of the batch to that gateway's lane; a
    /// full lane's is refused at once (its members sync).
    fn hand_to_lanes(&self, scratch: &mut Scratch, span: Span) {
        let Scratch { calls, lanes, .. } = scratch;
        let lanes = lanes.get_or_insert_with(|| self.lanes());
        for (gateway, fan_outs) in calls.drain(..) {
            if let Err(refused) = lanes.send(&gateway, FanOutShare { fan_outs, span: span.clone() }) {
                let pairs = refused.pairs() as u64;
                self.metrics.push_lane_full.inc_by(pairs);
                self.metrics.fail_n(ErrorCode::Unavailable, pairs);
                warn!(%gateway, pairs, "the gateway's delivery lane is full; its group members catch up by sync");
            }
        }
    }

    /// A lane per gateway, each making its fan-out calls with the router's
    /// retry policy.
    fn lanes(&self) -> Lanes<FanOutShare> {
        let (pusher, metrics, retry) = (self.pusher.clone(), self.metrics.clone(), self.retry);
        Lanes::new(Arc::new(move |gateway: GatewayId, share: FanOutShare| {
            let (pusher, metrics) = (pusher.clone(), metrics.clone());
            async move {
                let pairs = share.pairs();
                let call = retry.call(&gateway, "fan-out", pairs, || pusher.fan_out(&gateway, &share.fan_outs));
                match call.instrument(share.span.clone()).await {
                    Some(delivered) => {
                        metrics.group_fanout_deliveries.inc_by(delivered);
                    }
                    None => metrics.fail_n(ErrorCode::Unavailable, pairs as u64),
                }
                let now_ms = unix_ms();
                for fan_out in &share.fan_outs {
                    if let Event::Message(message) = &fan_out.event {
                        let latency_ms = (now_ms - message.server_time_ms).max(0);
                        metrics.group_fanout_latency.observe(latency_ms as f64 / 1000.0);
                    }
                }
            }
            .boxed()
        }))
    }

    /// The group's roster from the cache. Unavailable is retried with
    /// backoff for as long as it takes (until `stop`); `NOT_FOUND` is final;
    /// another refusal is tried [`REFUSED_ATTEMPTS`] times in all.
    async fn roster(&self, group: GroupId, stop: &CancellationToken) -> Result<Lookup, Stopped> {
        let (mut failures, mut refusals) = (0, 0);
        loop {
            let e = match self.cache.view(group).await {
                Ok(view) => return Ok(Lookup::Found(view)),
                Err(e) if e.code == ErrorCode::NotFound => return Ok(Lookup::Park("no_group", e)),
                Err(e) => e,
            };
            self.metrics.group_roster_failures.inc();
            failures += 1;
            if e.code == ErrorCode::Unavailable {
                warn!(%group, attempt = failures, error = %e, "group roster unavailable; fan-out waits");
            } else {
                refusals += 1;
                warn!(%group, attempt = refusals, error = %e, "group roster refused");
                if refusals >= REFUSED_ATTEMPTS {
                    return Ok(Lookup::Park("roster_refused", e));
                }
            }
            pause(self.settings.backoff.delay(failures), stop).await?;
        }
    }

    /// Opens a sealed body, waiting (with backoff) while its key cannot be
    /// had (the KMS down and the key not in cache). A body that cannot be
    /// opened at all (altered) is the caller's to park.
    async fn open(&self, message: &mut NewMessage, stop: &CancellationToken) -> Result<Result<(), ImError>, Stopped> {
        let mut failures = 0;
        loop {
            match open_sealed(self.cipher.as_deref(), std::slice::from_mut(message)).await {
                Err(e) if e.code == ErrorCode::Unavailable => {
                    failures += 1;
                    warn!(msg_id = message.msg_id.0, attempt = failures, error = %e, "a group message's key is unavailable; fan-out waits");
                    pause(self.settings.backoff.delay(failures), stop).await?;
                }
                opened => return Ok(opened),
            }
        }
    }

    fn dead_letters(&self) -> DeadLetters<'_> {
        self.settings.dead_letters(&*self.bus, &self.metrics.group_dead_letters, "group message")
    }
}

/// One member's state from batch to batch: its delivery lanes (started with
/// its first batch) and the batch being built.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The gateways of this batch, and where each is in `calls`.
    slots: HashMap<GatewayId, usize>,
    /// Per gateway of this batch, its fan-outs: each group's in record order.
    calls: Vec<(GatewayId, Vec<FanOut>)>,
    /// The online members of one group as (slot, index in the roster),
    /// sorted: each gateway's members together.
    online: Vec<(usize, usize)>,
    /// This member's lanes. Dropped with the member: each lane delivers what
    /// it holds, then ends.
    lanes: Option<Lanes<FanOutShare>>,
}

impl Scratch {
    /// Finds where the members of `view` who see messages up to `newest`
    /// are connected: one registry lookup per member.
    fn index_online(&mut self, registry: &dyn Registry, view: &GroupView, newest: im_core::Seq) {
        self.online.clear();
        for (index, member) in view.members().iter().enumerate() {
            if !member.sees(newest) {
                continue;
            }
            for gateway in registry.gateways_of(member.user) {
                let slot = self.slot(gateway);
                self.online.push((slot, index));
            }
        }
        self.online.sort_unstable();
    }

    /// The slot of `gateway` in this batch's calls.
    fn slot(&mut self, gateway: GatewayId) -> usize {
        let Self { slots, calls, .. } = self;
        *slots.entry(gateway).or_insert_with_key(|gateway| {
            calls.push((gateway.clone(), Vec::new()));
            calls.len() - 1
        })
    }

    /// Adds one fan-out of `message` per gateway of the group's online
    /// members who see it (as indexed by [`Scratch::index_online`]).
    fn add_message(&mut self, view: &GroupView, message: &Arc<NewMessage>, device: &DeviceId) {
        let members = view.members();
        let mut start = 0;
        while start < self.online.len() {
            let slot = self.online[start].0;
            let end = start + self.online[start..].iter().take_while(|&&(s, _)| s == slot).count();
            let mut users = Vec::with_capacity(end - start);
            users.extend(
                self.online[start..end]
                    .iter()
                    .map(|&(_, index)| &members[index])
                    .filter(|member| member.sees(message.seq))
                    .map(|member| member.user),
            );
            if !users.is_empty() {
                let skip = Some((message.sender, device.clone()));
                self.calls[slot].1.push(FanOut { event: Event::Message(message.clone()), users, skip });
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests;
