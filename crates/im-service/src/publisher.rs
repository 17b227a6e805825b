//! Publishing on the bus from the routing path, and parking what a consumer
//! cannot handle: the parts the offline events and the group messages share.
//!
//! - [`PublishQueue`] and [`Publisher`]: the router hands items to the queue
//!   without waiting; one publisher task publishes them (a batch at a time,
//!   concurrently: the Kafka producer batches them), keyed as the item says,
//!   and retries failed publishes with backoff. A full queue drops the newest
//!   items (counted): routing never waits for the bus. At shutdown, what
//!   still fails is dropped (counted), so stopping does not wait for a bus
//!   that is down. What an item is, its key, its payload and its counters
//!   come from [`Publishable`].
//! - [`DeadLetters`]: parks a record as it was on a dead-letter topic,
//!   retrying until that worked, so nothing is skipped silently.
//! - [`Backoff`], [`pause`]: the waits between retries, cut short by the stop
//!   signal.
//!
//! Items are stored before they are published, so a dropped one still reaches
//! the devices by sync (G4).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use im_core::error::BackendError;
use im_core::ports::{Bus, BusRecord, RecordHeaders};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::metrics::{Metrics, ReasonLabel};
use crate::telemetry::MessageTrace;

/// Items published at once (concurrently: the Kafka producer batches them).
const PUBLISH_BATCH: usize = 512;

/// Waits between retries: doubling from `first` up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { first: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let doubled = self.first.saturating_mul(1 << retry.saturating_sub(1).min(16));
        doubled.min(self.max)
    }
}

/// The stop signal came while retrying: the work in hand is abandoned
/// uncommitted, and comes again to whoever consumes next.
#[derive(Debug)]
pub struct Stopped;

/// Sleeps `delay`, or returns `Stopped` when `stop` comes first.
pub async fn pause(delay: Duration, stop: &CancellationToken) -> Result<(), Stopped> {
    tokio::select! {
        () = stop.cancelled() => Err(Stopped),
        () = tokio::time::sleep(delay) => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Publishing

/// Where publishing one kind of item is counted (clones of the counters in
/// [`Metrics`]).
#[derive(Clone, Debug)]
pub struct PublishCounters {
    /// Items published.
    pub published: Counter,
    /// Failed attempts to publish an item (each is retried).
    pub failures: Counter,
    /// Items never published: the queue was full, or the node stopped first.
    pub dropped: Counter,
}

/// An item a [`Publisher`] publishes.
pub trait Publishable: Send + 'static {
    /// What the log lines call these items ("offline events").
    const WHAT: &'static str;

    /// The record's key: records with one key keep their order.
    fn key(&self) -> Bytes;

    /// The record's payload.
    fn payload(&self) -> Bytes;

    /// The record's headers: none unless said otherwise ([`Traced`]).
    fn headers(&self) -> RecordHeaders {
        RecordHeaders::default()
    }

    /// Where publishing these items is counted.
    fn counters(metrics: &Metrics) -> PublishCounters;
}

/// An item with the trace of its message, which its record carries in its
/// headers (`traceparent`), so the consumer's spans join that trace.
pub struct Traced<T> {
    pub item: T,
    pub trace: MessageTrace,
}

impl<T> From<T> for Traced<T> {
    /// An item outside any trace.
    fn from(item: T) -> Self {
        Self { item, trace: MessageTrace::default() }
    }
}

impl<T: Publishable> Publishable for Traced<T> {
    const WHAT: &'static str = T::WHAT;

    fn key(&self) -> Bytes {
        self.item.key()
    }

    fn payload(&self) -> Bytes {
        self.item.payload()
    }

    fn headers(&self) -> RecordHeaders {
        self.trace.headers()
    }

    fn counters(metrics: &Metrics) -> PublishCounters {
        T::counters(metrics)
    }
}

/// The router's handle on a [`Publisher`]: hands items over without waiting.
pub struct PublishQueue<T> {
    items: mpsc::Sender<T>,
    dropped: Counter,
}

impl<T> Clone for PublishQueue<T> {
    fn clone(&self) -> Self {
        Self { items: self.items.clone(), dropped: self.dropped.clone() }
    }
}

impl<T: Publishable> PublishQueue<T> {
    /// Queues `items` for publishing. What does not fit is dropped and
    /// counted: the router must not wait for a bus that is down.
    pub fn enqueue<I: Into<T>>(&self, items: impl IntoIterator<Item = I>) {
        let mut dropped = 0u64;
        for item in items {
            if self.items.try_send(item.into()).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.dropped.inc_by(dropped);
            warn!(dropped, "{} publish queue full or closed; dropped (messages reach devices by sync)", T::WHAT);
        }
    }
}

/// Publishes the items of its queue on one topic, keyed as each item says.
pub struct Publisher<T> {
    bus: Arc<dyn Bus>,
    topic: String,
    counters: PublishCounters,
    /// The waits between retries of failed publishes.
    pub backoff: Backoff,
    items: mpsc::Receiver<T>,
}

impl<T: Publishable> Publisher<T> {
    /// A publisher on `topic` and the queue that feeds it, holding up to
    /// `capacity` items.
    pub fn new(bus: Arc<dyn Bus>, topic: String, metrics: Arc<Metrics>, capacity: usize) -> (Self, PublishQueue<T>) {
        let (tx, items) = mpsc::channel(capacity.max(1));
        let counters = T::counters(&metrics);
        let queue = PublishQueue { items: tx, dropped: counters.dropped.clone() };
        (Self { bus, topic, counters, backoff: Backoff::default(), items }, queue)
    }

    /// Publishes until every queue handle is gone and the queue is empty.
    /// A failed publish is counted, logged and retried with backoff, until
    /// `shutdown`: from then on what fails is dropped (counted), so stopping
    /// does not wait for a bus that is down.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        // Set when a publish failed after `shutdown`: the rest is dropped
        // without trying, each try could take the whole producer timeout.
        let mut gave_up = false;
        while self.items.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
            if gave_up {
                self.drop_batch(&mut batch);
                continue;
            }
            let mut retry = 0;
            loop {
                let failed = self.publish(&mut batch).await;
                if failed.is_none() {
                    break;
                }
                // What queued meanwhile is tried with the retry, not one
                // batch per failed attempt.
                while batch.len() < PUBLISH_BATCH {
                    let Ok(item) = self.items.try_recv() else { break };
                    batch.push(item);
                }
                retry += 1;
                if pause(self.backoff.delay(retry), &shutdown).await.is_err() {
                    self.drop_batch(&mut batch);
                    gave_up = true;
                    break;
                }
            }
        }
        info!(topic = %self.topic, "{} publisher stopped", T::WHAT);
    }

    fn drop_batch(&self, batch: &mut Vec<T>) {
        self.counters.dropped.inc_by(batch.len() as u64);
        warn!(dropped = batch.len(), "stopping: {} not published are dropped", T::WHAT);
        batch.clear();
    }

    /// Publishes `batch` concurrently; keeps in it what failed, and returns
    /// the first error if anything did.
    async fn publish(&self, batch: &mut Vec<T>) -> Option<BackendError> {
        let attempted = batch.len() as u64;
        let sends = batch
            .iter()
            .map(|item| self.bus.publish_with_headers(&self.topic, item.key(), item.payload(), item.headers()));
        let mut results = futures::future::join_all(sends).await.into_iter();
        let mut first_error = None;
        batch.retain(|_| match results.next().expect("one result per item") {
            Ok(()) => false,
            Err(e) => {
                first_error.get_or_insert(e);
                true
            }
        });
        let failed = batch.len() as u64;
        self.counters.published.inc_by(attempted - failed);
        if let Some(e) = &first_error {
            self.counters.failures.inc_by(failed);
            warn!(topic = %self.topic, failed, error = %e, "{} not published; retrying", T::WHAT);
        }
        first_error
    }
}

// ---------------------------------------------------------------------------
// Dead letters

/// Where a consumer of `from` parks the records it cannot handle: on `to`,
/// as they were, counted by reason in `parked`.
pub struct DeadLetters<'a> {
    pub bus: &'a dyn Bus,
    pub from: &'a str,
    pub to: &'a str,
    pub backoff: Backoff,
    pub parked: &'a Family<ReasonLabel, Counter>,
    /// What the log lines call a record ("offline event").
    pub what: &'static str,
}

impl DeadLetters<'_> {
    /// Publishes `record` as it is to the dead-letter topic, retrying until
    /// that worked (until `stop`): a record is committed past only once it is
    /// handled or parked.
    pub async fn park(
        &self,
        record: &BusRecord,
        reason: &'static str,
        cause: &str,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let mut failures = 0;
        loop {
            let (key, payload, headers) = (record.key.clone(), record.payload.clone(), record.headers.clone());
            match self.bus.publish_with_headers(self.to, key, payload, headers).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    warn!(topic = %self.to, offset = record.offset, error = %e, "could not park a record on the dead-letter topic; retrying");
                    pause(self.backoff.delay(failures), stop).await?;
                }
            }
        }
        self.parked.get_or_create(&ReasonLabel { reason }).inc();
        error!(
            from = %self.from,
            to = %self.to,
            offset = record.offset,
            reason,
            cause,
            "{} parked on the dead-letter topic",
            self.what
        );
        Ok(())
    }
}
