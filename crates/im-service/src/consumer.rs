//! Consuming a topic as members of a consumer group: the parts the offline
//! worker and the group fan-out share.
//!
//! - [`Members`]: joins a consumer group ([`Bus::subscribe`], plus a
//!   member's lag where the bus can tell, [`LagHook`]).
//! - [`Consume`]: what a consumer does with a batch it polled; [`Consume::start`]
//!   joins [`ConsumerSettings::concurrency`] members and runs each until the
//!   stop signal, and then what it already has without waiting (the drain).
//!   A failed poll is retried with backoff.
//! - [`LagReporter`]: where the bus can tell (Kafka), one task reports every
//!   member's partitions as `im_kafka_consumer_lag{group,topic,partition}`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use im_backends::kafka::{LagProbe, PartitionLag};
use im_backends::{KafkaBus, MemoryBus};
use im_core::ports::{BackendResult, Bus, BusConsumer, BusRecord};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::metrics::{Metrics, PartitionLabels, ReasonLabel};
use crate::publisher::{Backoff, DeadLetters, Stopped, pause};

/// Times a dependency may refuse a piece of work (not merely be
/// unavailable) before the consumer gives up on it: the offline worker
/// writes a batch again record by record, and parks a record; the fan-out
/// parks a group's messages.
pub const REFUSED_ATTEMPTS: u32 = 3;

/// The name of the dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

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

/// How a consumer runs: the topic and group names, and how its members poll.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// The topic consumed (`kafka.topics.*`).
    pub topic: String,
    /// Where records that cannot be handled are parked.
    pub dead_letter_topic: String,
    /// The consumer group.
    pub group: String,
    /// Most records taken per poll: a batch.
    pub poll_max: usize,
    /// How long a poll waits for a first record (the offline worker's
    /// batch also fills for as long after its first).
    pub poll_wait: Duration,
    /// Members of the consumer group in this process.
    pub concurrency: usize,
    /// Waits between retries of polls, of the work, and of dead letters.
    pub backoff: Backoff,
    /// How often the lag is read.
    pub lag_interval: Duration,
}

impl ConsumerSettings {
    /// `group` on `topic`, dead letters on [`dead_letter_topic`], the
    /// default backoff, the lag read every 5 s.
    pub fn new(topic: String, group: String, poll_max: usize, poll_wait: Duration, concurrency: usize) -> Self {
        Self {
            dead_letter_topic: dead_letter_topic(&topic),
            topic,
            group,
            poll_max,
            poll_wait,
            concurrency,
            backoff: Backoff::default(),
            lag_interval: Duration::from_secs(5),
        }
    }

    /// Where a consumer on these settings parks a record: counted by
    /// reason in `parked`, logged as a `what`.
    pub fn dead_letters<'a>(
        &'a self,
        bus: &'a dyn Bus,
        parked: &'a Family<ReasonLabel, Counter>,
        what: &'static str,
    ) -> DeadLetters<'a> {
        DeadLetters { bus, from: &self.topic, to: &self.dead_letter_topic, backoff: self.backoff, parked, what }
    }
}

/// A consumer of one topic in a consumer group: what each member does with
/// the records it polls. [`Consume::start`] runs the members.
pub(crate) trait Consume: Send + Sync + Sized + 'static {
    /// What the log lines call it ("offline worker").
    const WHAT: &'static str;

    /// A member's own buffers, kept from one batch to the next.
    type Scratch: Default + Send;

    fn settings(&self) -> &ConsumerSettings;

    /// Where the lag is reported.
    fn metrics(&self) -> &Arc<Metrics>;

    /// Adds to a batch that has its first records, before it is handled
    /// (not while draining). By default the batch is what one poll took.
    fn fill(
        &self,
        _consumer: &mut dyn BusConsumer,
        _batch: &mut Vec<BusRecord>,
        _stop: &CancellationToken,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Handles a polled batch (it has records), parks what cannot be
    /// handled, and then commits the last record. `Stopped` (nothing
    /// committed) when `stop` came while it waited.
    fn handle(
        &self,
        consumer: &mut dyn BusConsumer,
        records: Vec<BusRecord>,
        scratch: &mut Self::Scratch,
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<(), Stopped>> + Send;

    /// Joins the group through `members` with `concurrency` members and
    /// runs them, and the lag reporter where the bus tells the lag, on
    /// `tracker` until `stop`. Fails if a member cannot join.
    fn start(
        self,
        members: &dyn Members,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> impl Future<Output = BackendResult<()>> + Send {
        async move {
            let consumer = Arc::new(self);
            let settings = consumer.settings();
            let mut lags = Vec::new();
            for id in 0..settings.concurrency.max(1) {
                let member = members.join(&settings.topic, &settings.group).await?;
                lags.extend(member.lag);
                tracker.spawn(run_member(consumer.clone(), id, member.consumer, stop.clone()));
            }
            if !lags.is_empty() {
                let reporter = LagReporter {
                    hooks: lags,
                    group: settings.group.clone(),
                    metrics: consumer.metrics().clone(),
                    interval: settings.lag_interval,
                };
                tracker.spawn(reporter.run(stop));
            }
            info!(topic = %settings.topic, group = %settings.group, members = settings.concurrency.max(1), "{} started", Self::WHAT);
            Ok(())
        }
    }
}

/// One member: handles what it polls until `stop`, then what it already has
/// without waiting, then leaves.
async fn run_member<C: Consume>(
    consumer: Arc<C>,
    id: usize,
    mut member: Box<dyn BusConsumer>,
    stop: CancellationToken,
) {
    let settings = consumer.settings();
    let mut scratch = C::Scratch::default();
    let poll_max = settings.poll_max.max(1);
    let mut failures = 0;
    loop {
        let polled = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            polled = member.poll(poll_max, settings.poll_wait) => polled,
        };
        match polled {
            // Not proof that the bus is back (librdkafka reports some
            // errors between empty polls): the backoff keeps growing.
            Ok(records) if records.is_empty() => {}
            Ok(mut records) => {
                failures = 0;
                consumer.fill(&mut *member, &mut records, &stop).await;
                if consumer.handle(&mut *member, records, &mut scratch, &stop).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failures += 1;
                warn!(member = id, topic = %settings.topic, error = %e, "{} poll failed", C::WHAT);
                if pause(settings.backoff.delay(failures), &stop).await.is_err() {
                    break;
                }
            }
        }
    }
    // Drain: what this member already has, while everything works
    // (`handle` gives up at the first wait now that `stop` is set).
    while let Ok(records) = member.poll(poll_max, Duration::ZERO).await {
        if records.is_empty() || consumer.handle(&mut *member, records, &mut scratch, &stop).await.is_err() {
            break;
        }
    }
    // Leaves the group and waits for the bus to know, within the shutdown's
    // grace: the partitions move to the other nodes' members at once.
    if let Err(e) = member.close().await {
        warn!(member = id, topic = %settings.topic, error = %e, "{} member could not leave its group", C::WHAT);
    }
    info!(member = id, topic = %settings.topic, "{} member stopped", C::WHAT);
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
