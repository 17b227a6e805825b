//! Offline delivery records (DESIGN.md §3): a message that reached none of
//! its addressee's devices becomes an `offline_msg` event; the offline worker
//! records those events in the store (`OfflineStore`), where a notification
//! service or a reconnecting device reads what waits for a user.
//!
//! - [`OfflineQueue`] and [`OfflinePublisher`]: the router hands entries to
//!   the queue without waiting; one publisher task publishes them, keyed by
//!   conversation, and retries failed publishes with backoff. A full queue
//!   drops the newest entries (counted): routing never waits for the bus.
//!   The same [`Publisher`] as the group messages' ([`crate::publisher`]).
//! - [`OfflineWorker`]: `OFFLINE_WORKER_CONCURRENCY` members of the consumer
//!   group, each collecting up to `OFFLINE_WORKER_BATCH_SIZE` records or for
//!   `OFFLINE_WORKER_BATCH_TIMEOUT` after the first, recording them in one
//!   `record_offline` call and committing the last offset only after that
//!   write returned (DESIGN.md §4).
//! - Failures: a store that is unavailable is waited out, batch and offset
//!   held (the lag metric shows it). A record that does not decode, or that
//!   the store keeps refusing, is parked on the dead-letter topic
//!   (`{offline_msg}.dlq`, the record as it was) with
//!   `im_offline_dead_letters_total`, and only then committed past: a batch
//!   refused [`REFUSED_ATTEMPTS`] times is written again record by record, so
//!   one bad record does not park good ones. Nothing is skipped silently.
//! - Lag: where the bus can tell (Kafka), one task reports every member's
//!   partitions as `im_kafka_consumer_lag{group,topic,partition}`.
//!
//! Delivery is at least once (a crash between the write and the commit
//! redelivers); recording is idempotent, so a redelivered record adds nothing.
//!
//! Messages are stored before they are routed, so whatever happens here (a
//! dropped event, a parked record) a device still gets every message by sync
//! (G4); these records only say who has something waiting.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use im_backends::kafka::{LagProbe, PartitionLag};
use im_backends::{KafkaBus, MemoryBus};
use im_core::error::BackendError;
use im_core::ports::{BackendResult, Bus, BusConsumer, BusRecord, OfflineEntry, OfflineStore};
use im_proto::convert::{decode_offline_event, encode_offline_event};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::metrics::{Metrics, PartitionLabels};
pub use crate::publisher::Backoff;
use crate::publisher::{DeadLetters, PublishCounters, PublishQueue, Publishable, Publisher, Stopped, pause};

/// Offline entries waiting for the publisher. At about 100 bytes each, a few
/// MiB; beyond it (the bus down for long under load) entries are dropped.
pub const PUBLISH_QUEUE: usize = 64 * 1024;
/// Times the store may refuse a batch (not merely be unavailable) before it
/// is written again record by record, and a record before it is parked.
pub const REFUSED_ATTEMPTS: u32 = 3;

/// The name of the dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

// ---------------------------------------------------------------------------
// Publishing

/// The router's handle on the offline publisher: hands entries over without
/// waiting; what does not fit is dropped and counted
/// (`im_offline_events_dropped_total`).
pub type OfflineQueue = PublishQueue<OfflineEntry>;

/// Publishes offline entries on the `offline_msg` topic, keyed by
/// conversation (one conversation, one partition, one order); see
/// [`Publisher`].
pub type OfflinePublisher = Publisher<OfflineEntry>;

impl Publishable for OfflineEntry {
    const WHAT: &'static str = "offline events";

    fn key(&self) -> Bytes {
        Bytes::from(self.conversation.to_string())
    }

    fn payload(&self) -> Bytes {
        encode_offline_event(self)
    }

    fn counters(metrics: &Metrics) -> PublishCounters {
        PublishCounters {
            published: metrics.offline_published.clone(),
            failures: metrics.offline_publish_failures.clone(),
            dropped: metrics.offline_dropped.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// Consuming

/// Reads the lag of one member's partitions (Kafka's [`LagProbe`]); the
/// optional hook through which a bus that can tell reports lag.
#[async_trait]
pub trait LagHook: Send + Sync + 'static {
    /// The lag of every partition the member holds now.
    async fn lag(&self) -> BackendResult<Vec<PartitionLag>>;
}

#[async_trait]
impl LagHook for LagProbe {
    async fn lag(&self) -> BackendResult<Vec<PartitionLag>> {
        LagProbe::lag(self).await
    }
}

/// A member of a consumer group, and its lag where the bus can tell.
pub struct Member {
    pub consumer: Box<dyn BusConsumer>,
    pub lag: Option<Box<dyn LagHook>>,
}

/// Joins consumer groups: [`Bus::subscribe`], plus what the port does not
/// carry (the lag).
#[async_trait]
pub trait Members: Send + Sync + 'static {
    async fn join(&self, topic: &str, group: &str) -> BackendResult<Member>;
}

/// The in-process bus: members without lag.
#[async_trait]
impl Members for MemoryBus {
    async fn join(&self, topic: &str, group: &str) -> BackendResult<Member> {
        Ok(Member { consumer: self.subscribe(topic, group).await?, lag: None })
    }
}

/// Kafka: each member with its lag probe.
#[async_trait]
impl Members for KafkaBus {
    async fn join(&self, topic: &str, group: &str) -> BackendResult<Member> {
        let consumer = self.consumer(topic, group).await?;
        let lag: Box<dyn LagHook> = Box::new(consumer.lag_probe());
        Ok(Member { consumer: Box::new(consumer), lag: Some(lag) })
    }
}

/// How the worker runs (`OFFLINE_WORKER_*`, the topic and group names).
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// `kafka.topics.offline_msg`.
    pub topic: String,
    /// Where records that cannot be recorded are parked.
    pub dead_letter_topic: String,
    /// `kafka.consumer.group_id`.
    pub group: String,
    pub batch_size: usize,
    /// How long a batch may wait to fill after its first record.
    pub batch_timeout: Duration,
    pub concurrency: usize,
    pub backoff: Backoff,
    /// How often the lag is read.
    pub lag_interval: Duration,
}

impl WorkerSettings {
    pub fn from_config(config: &im_config::Config) -> Self {
        let topic = config.kafka.topics.offline_msg.clone();
        Self {
            dead_letter_topic: dead_letter_topic(&topic),
            topic,
            group: config.kafka.consumer.group_id.clone(),
            batch_size: config.offline_worker.batch_size,
            batch_timeout: config.offline_worker.batch_timeout,
            concurrency: config.offline_worker.concurrency,
            backoff: Backoff::default(),
            lag_interval: Duration::from_secs(5),
        }
    }
}

/// The offline worker; see the [module docs](self).
pub struct OfflineWorker {
    pub members: Arc<dyn Members>,
    /// Where dead letters are published.
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn OfflineStore>,
    pub metrics: Arc<Metrics>,
    pub settings: WorkerSettings,
}

/// What came of writing entries, retries included.
enum Written {
    Yes,
    /// The store kept refusing them (not merely unavailable).
    Refused(BackendError),
}

impl OfflineWorker {
    /// Joins the group with `concurrency` members and runs them, and the lag
    /// reporter, on `tracker` until `stop`. Fails if a member cannot join.
    pub async fn start(self, tracker: &TaskTracker, stop: CancellationToken) -> BackendResult<()> {
        let worker = Arc::new(self);
        let settings = &worker.settings;
        let mut lags = Vec::new();
        for id in 0..settings.concurrency.max(1) {
            let member = worker.members.join(&settings.topic, &settings.group).await?;
            lags.extend(member.lag);
            tracker.spawn(worker.clone().run_member(id, member.consumer, stop.clone()));
        }
        if !lags.is_empty() {
            let reporter = LagReporter {
                hooks: lags,
                group: settings.group.clone(),
                metrics: worker.metrics.clone(),
                interval: settings.lag_interval,
            };
            tracker.spawn(reporter.run(stop));
        }
        info!(topic = %settings.topic, group = %settings.group, members = settings.concurrency.max(1), "offline worker started");
        Ok(())
    }

    /// One member: batches until `stop`, then what is already there without
    /// waiting (records and commits what it can), then leaves.
    async fn run_member(self: Arc<Self>, id: usize, mut consumer: Box<dyn BusConsumer>, stop: CancellationToken) {
        let mut failures = 0;
        loop {
            let polled = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                polled = consumer.poll(self.settings.batch_size.max(1), self.settings.batch_timeout) => polled,
            };
            match polled {
                // Not proof that the bus is back (librdkafka reports some
                // errors between empty polls): the backoff keeps growing.
                Ok(records) if records.is_empty() => {}
                Ok(mut records) => {
                    failures = 0;
                    self.fill(&mut *consumer, &mut records, &stop).await;
                    if self.handle(&mut *consumer, records, &stop).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failures += 1;
                    warn!(member = id, topic = %self.settings.topic, error = %e, "offline worker poll failed");
                    if pause(self.settings.backoff.delay(failures), &stop).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Drain: what this member already has, while everything works
        // (`handle` gives up at the first failure now that `stop` is set).
        while let Ok(records) = consumer.poll(self.settings.batch_size.max(1), Duration::ZERO).await {
            if records.is_empty() || self.handle(&mut *consumer, records, &stop).await.is_err() {
                break;
            }
        }
        info!(member = id, topic = %self.settings.topic, "offline worker member stopped");
    }

    /// Adds records to a batch that has its first until it holds
    /// `batch_size`, `batch_timeout` has passed, or `stop` came (the records
    /// in hand are handled all the same).
    async fn fill(&self, consumer: &mut dyn BusConsumer, batch: &mut Vec<BusRecord>, stop: &CancellationToken) {
        let size = self.settings.batch_size.max(1);
        let deadline = Instant::now() + self.settings.batch_timeout;
        while batch.len() < size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A poll cancelled while waiting has handed out nothing.
            let polled = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                polled = consumer.poll(size - batch.len(), left) => polled,
            };
            match polled {
                Ok(more) => batch.extend(more),
                // What is in hand is handled; the next poll meets the error.
                Err(e) => {
                    debug!(error = %e, "poll failed while filling a batch");
                    break;
                }
            }
        }
    }

    /// Records a batch, parks what cannot be recorded, and then commits
    /// the last record. `Stopped` (nothing committed) when `stop` came while
    /// retrying.
    async fn handle(
        &self,
        consumer: &mut dyn BusConsumer,
        records: Vec<BusRecord>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let last = records.last().expect("a batch has records").clone();
        let mut entries = Vec::with_capacity(records.len());
        let mut decoded = Vec::with_capacity(records.len());
        for record in records {
            match decode_offline_event(&record.payload) {
                Ok(entry) => {
                    entries.push(entry);
                    decoded.push(record);
                }
                Err(e) => self.dead_letter(&record, "undecodable", &e.message, stop).await?,
            }
        }
        if !entries.is_empty()
            && let Written::Refused(e) = self.write(&entries, stop).await?
        {
            warn!(records = entries.len(), error = %e, "the store keeps refusing a batch; writing it record by record");
            for (entry, record) in entries.iter().zip(&decoded) {
                if let Written::Refused(e) = self.write(std::slice::from_ref(entry), stop).await? {
                    self.dead_letter(record, "refused", &e.to_string(), stop).await?;
                }
            }
        }
        // Everything up to `last` is recorded or parked. A failed commit is
        // covered by the next one; if none comes (a crash), the records come
        // again and recording them again adds nothing.
        if let Err(e) = consumer.commit(&last).await {
            warn!(topic = %self.settings.topic, offset = last.offset, error = %e, "offline worker commit failed");
        }
        Ok(())
    }

    /// Writes `entries` in one call. An unavailable store is retried with
    /// backoff for as long as it takes (until `stop`); a refusal
    /// [`REFUSED_ATTEMPTS`] times in all.
    async fn write(&self, entries: &[OfflineEntry], stop: &CancellationToken) -> Result<Written, Stopped> {
        let (mut failures, mut refusals) = (0, 0);
        loop {
            let e = match self.store.record_offline(entries).await {
                Ok(()) => {
                    self.metrics.offline_recorded.inc_by(entries.len() as u64);
                    return Ok(Written::Yes);
                }
                Err(e) => e,
            };
            self.metrics.offline_write_failures.inc();
            failures += 1;
            match &e {
                BackendError::Unavailable(_) => {
                    warn!(entries = entries.len(), attempt = failures, error = %e, "offline store unavailable; retrying");
                }
                BackendError::Other(_) => {
                    refusals += 1;
                    warn!(entries = entries.len(), attempt = refusals, error = %e, "offline store refused a write");
                    if refusals >= REFUSED_ATTEMPTS {
                        return Ok(Written::Refused(e));
                    }
                }
            }
            pause(self.settings.backoff.delay(failures), stop).await?;
        }
    }

    /// Parks `record` as it is on the dead-letter topic (retrying until that
    /// worked, until `stop`): a record is committed past only once it is
    /// recorded or parked.
    async fn dead_letter(
        &self,
        record: &BusRecord,
        reason: &'static str,
        cause: &str,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let dead_letters = DeadLetters {
            bus: &*self.bus,
            from: &self.settings.topic,
            to: &self.settings.dead_letter_topic,
            backoff: self.settings.backoff,
            parked: &self.metrics.offline_dead_letters,
            what: "offline event",
        };
        dead_letters.park(record, reason, cause, stop).await
    }
}

/// Reports the lag of every member of this process as one set, so a
/// partition moving between two of them does not blink out, and one that
/// left this process is no longer reported by it.
pub(crate) struct LagReporter {
    pub(crate) hooks: Vec<Box<dyn LagHook>>,
    pub(crate) group: String,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) interval: Duration,
}

impl LagReporter {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut shown: HashSet<PartitionLabels> = HashSet::new();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let mut now = HashSet::new();
            for hook in &self.hooks {
                match hook.lag().await {
                    Ok(partitions) => {
                        for p in partitions {
                            let labels =
                                PartitionLabels { group: self.group.clone(), topic: p.topic, partition: p.partition };
                            self.metrics
                                .consumer_lag
                                .get_or_create(&labels)
                                .set(i64::try_from(p.lag).unwrap_or(i64::MAX));
                            now.insert(labels);
                        }
                    }
                    // Keep what this member reported last: it may still hold them.
                    Err(e) => {
                        debug!(group = %self.group, error = %e, "could not read the consumer lag");
                        now.extend(shown.iter().cloned());
                    }
                }
            }
            for gone in shown.difference(&now) {
                self.metrics.consumer_lag.remove(gone);
            }
            shown = now;
        }
        // This process no longer consumes: its partitions are for others to report.
        for labels in &shown {
            self.metrics.consumer_lag.remove(labels);
        }
    }
}

#[cfg(test)]
mod tests;
