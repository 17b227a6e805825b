//! [`KafkaConsumer`]: one member of a consumer group on one topic, with
//! commits that follow the port (everything handed out up to a record) and
//! the lag of its partitions.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use im_core::ports::{BackendResult, BusConsumer, BusRecord, RecordHeaders};
use parking_lot::Mutex;
use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::error::{join_failed, map_kafka};
use super::logs::{self, Logs};
use crate::telemetry::dependency_metrics;

type Member = StreamConsumer<MemberContext>;

/// A member of `group` on one topic. Records come in partition order (one
/// key, one partition, so per-key order); [`BusConsumer::commit`] commits,
/// for every partition, the records handed out up to and including the one
/// given.
///
/// Dropping it leaves the group on a blocking thread (librdkafka's close
/// waits for the broker) and returns at once; [`KafkaConsumer::close`]
/// leaves and waits. Close before another member of the same group joins
/// from this process: a join that reaches the broker before this member's
/// leave starts a rebalance this member is still part of (tansu 0.6 then
/// names the departed member leader of the next generation, and the group
/// never settles).
pub struct KafkaConsumer {
    topic: String,
    group: String,
    /// `None` only once dropped or closed.
    member: Option<Arc<Member>>,
    /// The settings it was made with (`group.id` included), to make it again.
    config: ClientConfig,
    delivered: Arc<Mutex<Delivered>>,
    /// Fetches of a topic the broker no longer has, seen by the member's
    /// librdkafka (see [`StaleFetches`]).
    stale: Arc<Mutex<StaleFetches>>,
    /// The member the lag probes read, replaced with it.
    probed: Arc<parking_lot::RwLock<Weak<Member>>>,
    /// Asks the brokers for watermarks (see [`LagProbe`]).
    watermarks: FutureProducer<Logs>,
    timeout: Duration,
}

/// What this member handed out and has not committed, in delivery order
/// (partition, offset and key of each; a member that never commits keeps
/// growing it). Partitions taken away by a rebalance are forgotten: their
/// records go to the new owner from the group's last commit, and this member
/// may no longer commit them.
#[derive(Debug, Default)]
struct Delivered {
    records: VecDeque<DeliveredRecord>,
}

#[derive(Debug)]
struct DeliveredRecord {
    partition: i32,
    offset: i64,
    key: Bytes,
}

impl Delivered {
    /// The offsets to commit (next offset per partition) so that `record`
    /// and everything handed out before it are done; `None` when `record` is
    /// not among the records held (already committed, or its partition was
    /// revoked).
    fn commit_point(&self, record: &BusRecord) -> Option<BTreeMap<i32, i64>> {
        let offset = i64::try_from(record.offset).ok()?;
        // The key tells partitions apart: one key is always in one partition.
        let last = self.records.iter().position(|r| r.offset == offset && r.key == record.key)?;
        let mut next = BTreeMap::new();
        for r in self.records.range(..=last) {
            let entry = next.entry(r.partition).or_insert(r.offset + 1);
            *entry = (*entry).max(r.offset + 1);
        }
        Some(next)
    }

    fn forget_committed(&mut self, next: &BTreeMap<i32, i64>) {
        self.records.retain(|r| next.get(&r.partition).is_none_or(|&next| r.offset >= next));
    }
}

impl KafkaConsumer {
    /// Joins `group` on `topic` with `config` (brokers and consumer settings).
    pub(super) fn join(
        config: &ClientConfig,
        topic: &str,
        group: &str,
        watermarks: FutureProducer<Logs>,
        timeout: Duration,
    ) -> BackendResult<Self> {
        let mut config = config.clone();
        config.set("group.id", group);
        let delivered = Arc::new(Mutex::new(Delivered::default()));
        let stale = Arc::new(Mutex::new(StaleFetches::default()));
        let member = Arc::new(make_member(&config, topic, group, &delivered, &stale)?);
        Ok(Self {
            topic: topic.to_owned(),
            group: group.to_owned(),
            probed: Arc::new(parking_lot::RwLock::new(Arc::downgrade(&member))),
            member: Some(member),
            config,
            delivered,
            stale,
            watermarks,
            timeout,
        })
    }

    /// Replaces the member with a new one, when librdkafka has kept
    /// fetching a topic the broker no longer has for [`RENEW_STALE_AFTER`]:
    /// after a broker restarted empty, a member can hold on to the old
    /// incarnation of a recreated topic (its id unknown), and its fetches
    /// are answered with leader hints it cannot apply, forever — its
    /// partitions' records were never handed out. The new member subscribes
    /// afresh and resumes from the group's commits; what the old one handed
    /// out and did not commit comes again (handling is idempotent).
    fn renew_if_stale(&mut self) -> BackendResult<()> {
        let stuck_for = self.stale.lock().stuck_for(Instant::now());
        if stuck_for < RENEW_STALE_AFTER {
            return Ok(());
        }
        warn!(topic = %self.topic, group = %self.group, ?stuck_for, "kafka consumer stuck on a topic the broker lost; renewing it");
        dependency_metrics().kafka_consumer_renewed(&self.topic);
        self.delivered.lock().records.clear();
        self.stale = Arc::new(Mutex::new(StaleFetches::default()));
        let fresh = Arc::new(make_member(&self.config, &self.topic, &self.group, &self.delivered, &self.stale)?);
        *self.probed.write() = Arc::downgrade(&fresh);
        if let Some(old) = self.member.replace(fresh) {
            // Its close waits for the broker: not on the reactor.
            drop(tokio::task::spawn_blocking(move || drop(old)));
        }
        Ok(())
    }

    fn member(&self) -> &Arc<Member> {
        self.member.as_ref().expect("the member is taken only when the consumer goes away")
    }

    /// A handle that reads this member's lag while the consumer itself is
    /// busy polling (for a metrics task).
    pub fn lag_probe(&self) -> LagProbe {
        LagProbe { member: self.probed.clone(), watermarks: self.watermarks.clone(), timeout: self.timeout }
    }

    /// The lag of every partition assigned to this member; see [`LagProbe::lag`].
    pub async fn lag(&self) -> BackendResult<Vec<PartitionLag>> {
        self.lag_probe().lag().await
    }

    /// Leaves the group and waits until the broker knows (a graceful
    /// shutdown: commit first, what is not committed goes to the others).
    pub async fn close(mut self) -> BackendResult<()> {
        let member = self.member.take().expect("not yet closed");
        tokio::task::spawn_blocking(move || drop(member)).await.map_err(join_failed)
    }

    /// A consumer error: logged and counted; `Err` only when it is fatal
    /// (the member cannot go on, see [`BusConsumer::poll`]).
    fn pass_over(&self, error: KafkaError) -> BackendResult<()> {
        dependency_metrics().kafka_consumer_error(&self.topic);
        if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
            warn!(topic = %self.topic, group = %self.group, %error, "kafka consumer failed");
            return Err(map_kafka(error));
        }
        debug!(topic = %self.topic, group = %self.group, %error, "kafka consumer error (librdkafka recovers)");
        Ok(())
    }

    fn hand_out(&self, message: &BorrowedMessage<'_>) -> BusRecord {
        let key = message.key().map(Bytes::copy_from_slice).unwrap_or_default();
        let payload = message.payload().map(Bytes::copy_from_slice).unwrap_or_default();
        let headers = record_headers(message);
        let (partition, offset) = (message.partition(), message.offset());
        self.delivered.lock().records.push_back(DeliveredRecord { partition, offset, key: key.clone() });
        BusRecord { key, payload, headers, offset: offset as u64 }
    }
}

/// The record headers of `message`; a header without a value is skipped
/// (nothing this service publishes has one).
fn record_headers(message: &BorrowedMessage<'_>) -> RecordHeaders {
    let mut headers = RecordHeaders::default();
    if let Some(kafka_headers) = message.headers() {
        for header in kafka_headers.iter() {
            if let Some(value) = header.value {
                headers.insert(header.key, Bytes::copy_from_slice(value));
            }
        }
    }
    headers
}

#[async_trait]
impl BusConsumer for KafkaConsumer {
    /// Waits up to `timeout` for up to `max` records after the group's
    /// committed position (or what this consumer already received).
    ///
    /// librdkafka's consumer errors are news, not failures: it reconnects,
    /// rejoins and resubscribes by itself, and a topic that vanished with a
    /// broker that restarted empty yields one error per partition, queued.
    /// They are logged, counted (`im_kafka_consumer_errors_total`) and
    /// passed over within the same wait; only a fatal one fails the poll.
    /// Returning each as a failure made the caller back off between polls
    /// (up to seconds per stale error), and a member that does not poll
    /// does not answer its rebalances either: its group stalled.
    async fn poll(&mut self, max: usize, timeout: Duration) -> BackendResult<Vec<BusRecord>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.renew_if_stale()?;
        let member = self.member().clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let first = loop {
            match tokio::time::timeout_at(deadline, member.recv()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(Err(error)) => self.pass_over(error)?,
                Ok(Ok(message)) => break self.hand_out(&message),
            }
        };
        let mut records = vec![first];
        // Then whatever librdkafka has already fetched, without waiting.
        while records.len() < max {
            match member.recv().now_or_never() {
                Some(Ok(message)) => records.push(self.hand_out(&message)),
                // Records already handed out must reach the caller.
                Some(Err(error)) => {
                    // A fatal error fails the next poll too: not lost.
                    let _ = self.pass_over(error);
                    break;
                }
                None => break,
            }
        }
        Ok(records)
    }

    /// Marks everything up to and including `record` as done for the group. A
    /// consumer that restarts resumes after the last commit.
    async fn commit(&mut self, record: &BusRecord) -> BackendResult<()> {
        let Some(next) = self.delivered.lock().commit_point(record) else {
            // Committed already, or its partition moved to another member,
            // which gets it again from the group's last commit.
            debug!(topic = %self.topic, group = %self.group, offset = record.offset, "nothing to commit");
            return Ok(());
        };
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &next {
            offsets.add_partition_offset(&self.topic, partition, Offset::Offset(offset)).map_err(map_kafka)?;
        }
        // Asynchronous: the offsets are queued to the broker and this returns
        // at once. A synchronous commit is a broker round trip per batch,
        // which held the fan-out's members to a few batches a second on tansu
        // (its latency grew to seconds at 20 msg/s). Nothing is lost if it
        // fails: commits are cumulative, the next one covers this one, and
        // without any a restarted member gets the records again (handling is
        // idempotent or at least once everywhere).
        self.member().commit(&offsets, CommitMode::Async).map_err(map_kafka)?;
        self.delivered.lock().forget_committed(&next);
        Ok(())
    }

    /// Leaves the group and waits for the broker's answer (see
    /// [`KafkaConsumer::close`]).
    async fn close(self: Box<Self>) -> BackendResult<()> {
        KafkaConsumer::close(*self).await
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        let Some(member) = self.member.take() else { return };
        // librdkafka's close (revoke, leave the group) blocks: not on the reactor.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(member))),
            Err(_) => drop(member),
        }
    }
}

/// The lag of one partition: records after the group's last commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub lag: u64,
}

/// Reads the lag of a [`KafkaConsumer`]'s partitions; cheap to clone, and
/// answers nothing once the consumer is gone.
#[derive(Clone)]
pub struct LagProbe {
    member: Arc<parking_lot::RwLock<Weak<Member>>>,
    /// Another client's connection for the watermarks: on the member's own,
    /// the request waits behind its fetch long-poll (`fetch.wait.max.ms`).
    watermarks: FutureProducer<Logs>,
    timeout: Duration,
}

impl LagProbe {
    /// For every partition assigned to the member: the high watermark minus
    /// the group's committed offset (minus the low watermark when the group
    /// never committed there: every record kept is still to do). Committed,
    /// not fetched: a commit follows durable handling, so this counts the
    /// records not yet handled. One broker round trip for the commits, one
    /// per partition for its watermarks.
    pub async fn lag(&self) -> BackendResult<Vec<PartitionLag>> {
        let Some(member) = self.member.read().upgrade() else { return Ok(Vec::new()) };
        let (watermarks, timeout) = (self.watermarks.clone(), self.timeout);
        let lag = tokio::task::spawn_blocking(move || lag_of(&member, watermarks.client(), timeout));
        lag.await.map_err(join_failed)?.map_err(map_kafka)
    }
}

fn lag_of<C: ClientContext>(
    member: &Member,
    watermarks: &Client<C>,
    timeout: Duration,
) -> KafkaResult<Vec<PartitionLag>> {
    let assignment = member.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = member.committed_offsets(assignment, timeout)?;
    committed
        .elements()
        .iter()
        .map(|partition| {
            let (low, high) = watermarks.fetch_watermarks(partition.topic(), partition.partition(), timeout)?;
            let done = match partition.offset() {
                Offset::Offset(offset) => offset,
                _ => low,
            };
            let lag = u64::try_from(high - done).unwrap_or(0);
            Ok(PartitionLag { topic: partition.topic().to_owned(), partition: partition.partition(), lag })
        })
        .collect()
}

/// How long a member may keep fetching a topic the broker no longer has
/// before it is replaced (see [`KafkaConsumer::renew_if_stale`]).
const RENEW_STALE_AFTER: Duration = Duration::from_secs(5);

/// What the patched librdkafka logs (facility `METADATAUPDATE`) when a fetch
/// answer hints at leaders of a topic it names by neither id nor name
/// (`vendor/rdkafka-sys/PATCHED.md`): the member fetches a topic instance
/// the broker no longer has. It comes with every fetch (every
/// `fetch.wait.max.ms`) for as long as that lasts.
const STALE_TOPIC_LOG: &str = "Leader update for a topic without id or name ignored";

/// The current run of [`STALE_TOPIC_LOG`] lines: when it began and when the
/// last came. A pause of a second ends a run.
#[derive(Debug, Default)]
struct StaleFetches {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl StaleFetches {
    const GAP: Duration = Duration::from_secs(1);

    fn seen(&mut self, now: Instant) {
        if self.last.is_none_or(|last| now.saturating_duration_since(last) > Self::GAP) {
            self.first = Some(now);
        }
        self.last = Some(now);
    }

    /// How long the current run has lasted (zero when there is none).
    fn stuck_for(&self, now: Instant) -> Duration {
        match (self.first, self.last) {
            (Some(first), Some(last)) if now.saturating_duration_since(last) <= Self::GAP => {
                now.saturating_duration_since(first)
            }
            _ => Duration::ZERO,
        }
    }
}

/// A member of `config`'s group on `topic`, subscribed.
fn make_member(
    config: &ClientConfig,
    topic: &str,
    group: &str,
    delivered: &Arc<Mutex<Delivered>>,
    stale: &Arc<Mutex<StaleFetches>>,
) -> BackendResult<Member> {
    let context = MemberContext {
        topic: topic.to_owned(),
        group: group.to_owned(),
        delivered: delivered.clone(),
        stale: stale.clone(),
    };
    let member: Member = config.create_with_context(context).map_err(map_kafka)?;
    member.subscribe(&[topic]).map_err(map_kafka)?;
    Ok(member)
}

/// The member's callbacks, run by librdkafka inside `recv` (and at close;
/// `log` on its own threads).
struct MemberContext {
    topic: String,
    group: String,
    delivered: Arc<Mutex<Delivered>>,
    stale: Arc<Mutex<StaleFetches>>,
}

impl ClientContext for MemberContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if facility == "METADATAUPDATE" && message.contains(STALE_TOPIC_LOG) {
            self.stale.lock().seen(Instant::now());
            // One a fetch: counted and shown at debug, not one warning each.
            dependency_metrics().kafka_consumer_error(&self.topic);
            return logs::log(RDKafkaLogLevel::Debug, facility, message);
        }
        logs::log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        logs::client_error(error, reason);
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (topic, group) = (&self.topic, &self.group);
        match rebalance {
            Rebalance::Assign(partitions) => {
                info!(topic, group, partitions = ?partition_numbers(partitions), "kafka partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                let revoked: HashSet<i32> = partition_numbers(partitions).into_iter().collect();
                self.delivered.lock().records.retain(|r| !revoked.contains(&r.partition));
                info!(topic, group, partitions = ?revoked, "kafka partitions revoked");
            }
            Rebalance::Error(error) => warn!(topic, group, %error, "kafka rebalance failed"),
        }
    }
}

fn partition_numbers(partitions: &TopicPartitionList) -> Vec<i32> {
    partitions.elements().iter().map(|p| p.partition()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(records: &[(i32, i64, &'static str)]) -> Delivered {
        let records = records
            .iter()
            .map(|&(partition, offset, key)| DeliveredRecord { partition, offset, key: Bytes::from(key) })
            .collect();
        Delivered { records }
    }

    fn record(offset: u64, key: &'static str) -> BusRecord {
        BusRecord { key: Bytes::from(key), payload: Bytes::new(), headers: Default::default(), offset }
    }

    #[test]
    fn a_commit_covers_every_partition_up_to_the_record() {
        let mut held = delivered(&[(0, 5, "a"), (1, 5, "b"), (0, 6, "a"), (1, 6, "b"), (0, 7, "a")]);
        // Offset 6 is in both partitions: the key says which record it is.
        let next = held.commit_point(&record(6, "a")).unwrap();
        assert_eq!(next, BTreeMap::from([(0, 7), (1, 6)]));
        held.forget_committed(&next);
        let left: Vec<_> = held.records.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(left, vec![(1, 6), (0, 7)]);
    }

    #[test]
    fn stale_fetches_count_only_an_unbroken_run() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut stale = StaleFetches::default();
        assert_eq!(stale.stuck_for(at(0)), Duration::ZERO);
        for ms in (0..=6000).step_by(20) {
            stale.seen(at(ms));
        }
        assert_eq!(stale.stuck_for(at(6000)), Duration::from_secs(6));
        // A pause longer than a second ends the run...
        assert_eq!(stale.stuck_for(at(7100)), Duration::ZERO);
        // ...and the next line starts a new one.
        stale.seen(at(7200));
        assert_eq!(stale.stuck_for(at(7300)), Duration::from_millis(100));
    }

    #[test]
    fn a_record_not_held_commits_nothing() {
        let held = delivered(&[(0, 5, "a")]);
        assert_eq!(held.commit_point(&record(4, "a")), None);
        assert_eq!(held.commit_point(&record(5, "b")), None);
    }
}
