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
//! - The members, their polls, the drain at shutdown and the lag are the
//!   fan-out's too ([`crate::consumer`]).
//!
//! Delivery is at least once (a crash between the write and the commit
//! redelivers); recording is idempotent, so a redelivered record adds nothing.
//!
//! Messages are stored before they are routed, so whatever happens here (a
//! dropped event, a parked record) a device still gets every message by sync
//! (G4); these records only say who has something waiting.

use std::sync::Arc;

use bytes::Bytes;
use im_core::error::BackendError;
use im_core::ports::{Bus, BusConsumer, BusRecord, OfflineEntry, OfflineStore};
use im_proto::convert::{decode_offline_event, encode_offline_event};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, warn};

use crate::consumer::{Consume, ConsumerSettings, REFUSED_ATTEMPTS};
use crate::metrics::Metrics;
pub use crate::publisher::Backoff;
use crate::publisher::{DeadLetters, PublishCounters, PublishQueue, Publishable, Publisher, Stopped, Traced, pause};
use crate::telemetry::MessageTrace;
use crate::telemetry::propagation::message_span;

/// Offline entries waiting for the publisher. At about 100 bytes each, a few
/// MiB; beyond it (the bus down for long under load) entries are dropped.
pub const PUBLISH_QUEUE: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Publishing

/// The router's handle on the offline publisher: hands entries over without
/// waiting; what does not fit is dropped and counted
/// (`im_offline_events_dropped_total`).
pub type OfflineQueue = PublishQueue<Traced<OfflineEntry>>;

/// Publishes offline entries on the `offline_msg` topic, keyed by
/// conversation (one conversation, one partition, one order); see
/// [`Publisher`].
pub type OfflinePublisher = Publisher<Traced<OfflineEntry>>;

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

impl ConsumerSettings {
    /// The offline worker's (`OFFLINE_WORKER_*`, the topic and group names):
    /// a batch is up to `OFFLINE_WORKER_BATCH_SIZE` records, waiting up to
    /// `OFFLINE_WORKER_BATCH_TIMEOUT` for its first and as long to fill.
    pub fn offline_worker(config: &im_config::Config) -> Self {
        Self::new(
            config.kafka.topics.offline_msg.clone(),
            config.kafka.consumer.group_id.clone(),
            config.offline_worker.batch_size,
            config.offline_worker.batch_timeout,
            config.offline_worker.concurrency,
        )
    }
}

/// The offline worker; see the [module docs](self).
pub struct OfflineWorker {
    /// Where dead letters are published.
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn OfflineStore>,
    pub metrics: Arc<Metrics>,
    pub settings: ConsumerSettings,
}

/// What came of writing entries, retries included.
enum Written {
    Yes,
    /// The store kept refusing them (not merely unavailable).
    Refused(BackendError),
}

impl Consume for OfflineWorker {
    const WHAT: &'static str = "offline worker";
    type Scratch = ();

    fn settings(&self) -> &ConsumerSettings {
        &self.settings
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Adds records to a batch that has its first until it holds
    /// `poll_max`, `poll_wait` has passed, or `stop` came (the records in
    /// hand are handled all the same).
    async fn fill(&self, consumer: &mut dyn BusConsumer, batch: &mut Vec<BusRecord>, stop: &CancellationToken) {
        let size = self.settings.poll_max.max(1);
        let deadline = Instant::now() + self.settings.poll_wait;
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
        (): &mut (),
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
                Err(e) => self.dead_letters().park(&record, "undecodable", &e.message, stop).await?,
            }
        }
        // An `offline.record` span in the trace of each sampled message,
        // around the write that records it.
        let spans: Vec<Span> = decoded
            .iter()
            .zip(&entries)
            .filter(|(record, _)| !record.headers.is_empty())
            .map(|(record, entry)| {
                let trace = MessageTrace::from_headers(&record.headers);
                let (msg_id, conversation) = (entry.msg_id.0, &entry.conversation);
                message_span!(&trace, "offline.record", msg_id, conversation = %conversation)
            })
            .collect();
        if !entries.is_empty()
            && let Written::Refused(e) = self.write(&entries, stop).await?
        {
            warn!(records = entries.len(), error = %e, "the store keeps refusing a batch; writing it record by record");
            for (entry, record) in entries.iter().zip(&decoded) {
                if let Written::Refused(e) = self.write(std::slice::from_ref(entry), stop).await? {
                    self.dead_letters().park(record, "refused", &e.to_string(), stop).await?;
                }
            }
        }
        drop(spans);
        // Everything up to `last` is recorded or parked. A failed commit is
        // covered by the next one; if none comes (a crash), the records come
        // again and recording them again adds nothing.
        if let Err(e) = consumer.commit(&last).await {
            warn!(topic = %self.settings.topic, offset = last.offset, error = %e, "offline worker commit failed");
        }
        Ok(())
    }
}

impl OfflineWorker {
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

    /// Where records that cannot be recorded are parked: a record is
    /// committed past only once it is recorded or parked.
    fn dead_letters(&self) -> DeadLetters<'_> {
        self.settings.dead_letters(&*self.bus, &self.metrics.offline_dead_letters, "offline event")
    }
}

#[cfg(test)]
mod tests;
