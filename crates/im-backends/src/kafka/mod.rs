//! [`KafkaBus`]: the `Bus` port on Kafka (any broker speaking the Kafka
//! protocol; tests use tansu), the production column of DESIGN.md §1 for
//! `group_msg`, `offline_msg` and `membership_change`.
//!
//! - Publishing: one idempotent producer (`enable.idempotence`, `acks=all`)
//!   per bus; [`Bus::publish`] returns once the broker acknowledged the
//!   record, or fails with `Unavailable` within `kafka.producer.timeout`.
//!   Records are keyed, and the key picks the partition (Java's murmur2, so
//!   other clients agree): one key, one partition, one order. A producer
//!   that cannot recover by itself (fenced after a broker restart, or
//!   failing every publish) is replaced, so the bus works again when the
//!   broker is back (G9).
//! - Consuming: [`KafkaConsumer`], a member of a consumer group with
//!   auto-commit off. Offsets move only on [`BusConsumer::commit`], which
//!   commits everything handed out up to a record (DESIGN.md §4: commit after
//!   the work is durable); a member that restarts, or the member that takes
//!   a partition over, resumes after the last commit, so no record is skipped.
//!   [`LagProbe`] reads the lag of a member's partitions for the metrics.
//! - Topics are not created by publishing (production clusters should not,
//!   and the broker's default partition count is not ours):
//!   [`KafkaBus::ensure_topics`] at start-up, and again whenever they vanish
//!   (a broker that restarted empty), checked every second.
//!
//! - Replication: topics are created with `kafka.replication_factor` replicas
//!   and `kafka.min_insync_replicas` (0: the broker's defaults);
//!   [`KafkaBus::check_replication`] warns at start when the brokers keep
//!   fewer copies than that.
//!
//! Files: `consumer` (the member, its commits and lag), `security` (TLS and
//! SASL to the brokers from `kafka.*`), `topics` (creating
//! and keeping the topics), `replication` (the copies asked for, and the
//! check of the copies kept), `error` (librdkafka errors as [`BackendError`]),
//! `logs` (librdkafka's logs to `tracing`).

mod consumer;
mod error;
mod logs;
mod replication;
mod security;
mod topics;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use im_config::KafkaConfig;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, Bus, BusConsumer, RecordHeaders};
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

pub use self::consumer::{KafkaConsumer, LagProbe, PartitionLag};
use self::error::{join_failed, map_kafka, timed_out};
use self::logs::Logs;
use self::replication::Replication;
pub use self::replication::{Shortfall, TopicReplicas};
pub use self::topics::KEEP_INTERVAL;
use self::topics::Topics;
use crate::telemetry::dependency_metrics;

/// A Kafka bus: one producer, and a consumer per [`Bus::subscribe`]; see the
/// [module docs](self).
pub struct KafkaBus {
    /// Replaced when it cannot recover by itself (see [`KafkaBus::renew_producer`]).
    producer: parking_lot::RwLock<FutureProducer<Logs>>,
    producer_config: ClientConfig,
    /// Publishes that failed in a row, since the last success or renewal.
    failures_in_a_row: std::sync::atomic::AtomicU32,
    /// The topics created, and kept (see [`KafkaBus::ensure_topics`]).
    topics: Topics,
    /// Brokers and consumer settings; each consumer adds its `group.id`.
    consumer_config: ClientConfig,
    /// `kafka.producer.timeout`: bounds a publish, and every other broker
    /// request this bus makes (topic creation, commits, lag).
    timeout: Duration,
    /// Each topic's produce-latency histogram, looked up without building a
    /// label on every publish.
    produce_latency: parking_lot::RwLock<HashMap<String, Histogram>>,
}

impl KafkaBus {
    /// Builds the producer and admin client from `config` (no I/O: librdkafka
    /// connects in the background). Fails when `config.brokers` is empty or
    /// librdkafka rejects a setting.
    pub fn new(config: &KafkaConfig) -> BackendResult<Self> {
        if config.brokers.is_empty() {
            return Err(BackendError::other("kafka.brokers is empty"));
        }
        let timeout = config.producer.timeout;
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", config.brokers.join(","));
        security::apply(config, &mut base)?;

        let mut producer = base.clone();
        producer
            .set("enable.idempotence", "true")
            // Idempotence requires it anyway; stated because replication
            // rests on it: the leader acknowledges once every in-sync
            // replica has the record, and refuses while fewer than the
            // topic's min.insync.replicas are in sync, so an acked record
            // is on that many brokers.
            .set("acks", "all")
            // librdkafka refuses an idempotent producer without retries.
            .set("retries", config.producer.retry_max.max(1).to_string())
            .set("batch.size", config.producer.batch_size.to_string())
            .set("message.timeout.ms", millis(timeout))
            .set("request.timeout.ms", millis(timeout.min(Duration::from_secs(30))))
            // Java's partitioner: the same key lands in the same partition
            // whichever client published it (an empty key included).
            .set("partitioner", "murmur2")
            // A publish to a topic the broker lost must not create it with
            // the broker's default partitions: `Topics` creates it again.
            .set("allow.auto.create.topics", "false");
        let producer_config = producer;
        let producer = producer_config.create_with_context(Logs).map_err(map_kafka)?;
        let replication = Replication::new(config.replication_factor, config.min_insync_replicas);
        let topics = Topics::new(&base, replication, timeout)?;

        let session = config.consumer.session_timeout;
        let mut consumer_config = base;
        consumer_config
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", config.consumer.auto_offset_reset.as_str())
            // How long a killed node's partitions wait before they move.
            .set("session.timeout.ms", millis(session))
            // cooperative-sticky: a rebalance (a node killed, or back) stops
            // only the partitions that change owner; an eager assignor
            // revokes every member's partitions until the group has settled
            // again (measured on tansu in docs/resilience.md).
            .set("partition.assignment.strategy", &config.consumer.assignment_strategy)
            // Kafka wants heartbeats well inside the session.
            .set("heartbeat.interval.ms", millis((session / 3).max(Duration::from_millis(100))))
            // The longest a fetch waits at the broker for records. Kafka
            // answers as soon as a record arrives; a broker that does not
            // (tansu) holds it this long, and the fan-out's latency and a
            // membership change's reach to every node include it
            // (kafka.consumer.fetch_wait_max; librdkafka's default is 500 ms).
            .set("fetch.wait.max.ms", millis(config.consumer.fetch_wait_max))
            // After a fetch error (a broker restarting, a partition moving)
            // the next fetch waits this long: 500 ms by default, which a
            // membership change or a group message would wait too.
            .set("fetch.error.backoff.ms", "50");
        Ok(Self {
            producer: parking_lot::RwLock::new(producer),
            producer_config,
            failures_in_a_row: std::sync::atomic::AtomicU32::new(0),
            topics,
            consumer_config,
            timeout,
            produce_latency: parking_lot::RwLock::default(),
        })
    }

    /// Creates the topics that do not exist yet, with `partitions` partitions
    /// and the configured replication (`kafka.replication_factor`,
    /// `kafka.min_insync_replicas`; the broker's defaults when 0), and keeps
    /// them: from
    /// then on, a topic of these that vanishes (a broker that restarted
    /// without its state) is created again within about a second, logged
    /// and counted (`im_kafka_topics_recreated_total`), for as long as this
    /// bus lives. A topic that exists is left as it is (its partition count
    /// included).
    pub async fn ensure_topics(&self, topics: &[&str], partitions: i32) -> BackendResult<()> {
        // The topics this process produces to: their latency series exist from now on.
        for topic in topics {
            self.produce_latency(topic);
        }
        self.topics.ensure(topics, partitions).await?;
        self.topics.keep(topics, partitions);
        Ok(())
    }

    /// Reads the replicas of `topics` (ensured before) and the brokers from
    /// the metadata and compares them with `kafka.replication_factor`:
    /// every shortfall is logged as a warning and returned. Nothing is
    /// checked when the factor is 0 (the broker's default). Fails only when
    /// the metadata cannot be read; the caller goes on either way.
    pub async fn check_replication(&self, topics: &[&str]) -> BackendResult<Vec<Shortfall>> {
        let wanted = self.topics.replication().factor;
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let (admin, timeout) = (self.topics.admin().clone(), self.timeout);
        let names: Vec<String> = topics.iter().map(|&t| t.to_owned()).collect();
        // One topic per request: the answer then names no topic but ours
        // (the metadata of a topic deleted meanwhile may carry a null name).
        let read = tokio::task::spawn_blocking(move || {
            let mut brokers = 0;
            let mut found = Vec::new();
            for topic in names {
                let metadata = admin.inner().fetch_metadata(Some(&topic), timeout)?;
                brokers = brokers.max(metadata.brokers().len());
                for listed in metadata.topics().iter().filter(|t| t.error().is_none()) {
                    let replicas = listed.partitions().iter().map(distinct_brokers).min().unwrap_or(0);
                    found.push(TopicReplicas { topic: topic.clone(), replicas });
                }
            }
            Ok::<_, rdkafka::error::KafkaError>((brokers, found))
        });
        let (brokers, found) = read.await.map_err(join_failed)?.map_err(map_kafka)?;
        let shortfalls = replication::shortfalls(wanted, brokers, &found);
        shortfalls.iter().for_each(Shortfall::warn);
        Ok(shortfalls)
    }

    /// Joins `group` on `topic`: [`Bus::subscribe`] with the concrete type,
    /// for the lag and a graceful close.
    pub async fn consumer(&self, topic: &str, group: &str) -> BackendResult<KafkaConsumer> {
        KafkaConsumer::join(&self.consumer_config, topic, group, self.producer.read().clone(), self.timeout)
    }

    fn produce_latency(&self, topic: &str) -> Histogram {
        if let Some(histogram) = self.produce_latency.read().get(topic) {
            return histogram.clone();
        }
        let histogram = dependency_metrics().kafka_produce(topic);
        self.produce_latency.write().insert(topic.to_owned(), histogram.clone());
        histogram
    }

    /// A metadata round trip to the brokers, for `/ready`.
    pub async fn ping(&self) -> BackendResult<()> {
        let producer = self.producer.read().clone();
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(BackendError::unavailable(format!(
                "the producer failed ({code:?}: {reason}); it is renewed on the next publish"
            )));
        }
        let timeout = self.timeout;
        let fetched = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).map(drop));
        fetched.await.map_err(join_failed)?.map_err(map_kafka)
    }
}

impl KafkaBus {
    /// Replaces the producer when it cannot publish again by itself: after a
    /// fatal error (a broker that restarted without its state fences an
    /// idempotent producer), or after [`RENEW_AFTER_FAILURES`] failed
    /// publishes in a row (it may loop on `UNKNOWN_PRODUCER_ID` forever).
    /// Records it still held are failed back to their callers, which retry;
    /// consumers of these topics are idempotent about redelivery.
    fn renew_producer(&self, failed: &FutureProducer<Logs>) {
        let failures = self.failures_in_a_row.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let fatal = failed.client().fatal_error();
        if fatal.is_none() && failures < RENEW_AFTER_FAILURES {
            return;
        }
        let mut producer = self.producer.write();
        // Another publish may have renewed it already.
        if !std::ptr::eq(producer.client().native_ptr(), failed.client().native_ptr()) {
            return;
        }
        match self.producer_config.create_with_context(Logs) {
            Ok(fresh) => {
                tracing::warn!(?fatal, failures, "renewing the Kafka producer");
                *producer = fresh;
                self.failures_in_a_row.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            Err(error) => tracing::error!(%error, "could not renew the Kafka producer"),
        }
    }
}

/// The brokers holding a replica of `partition`: a broker listed twice is
/// one copy (tansu lists its one broker three times for a factor of 3).
fn distinct_brokers(partition: &rdkafka::metadata::MetadataPartition) -> usize {
    partition.replicas().iter().collect::<std::collections::HashSet<_>>().len()
}

/// Failed publishes in a row after which the producer is replaced.
const RENEW_AFTER_FAILURES: u32 = 3;

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

#[async_trait]
impl Bus for KafkaBus {
    /// [`Bus::publish`] with headers, which consumers get back on the
    /// record.
    async fn publish_with_headers(
        &self,
        topic: &str,
        key: Bytes,
        payload: Bytes,
        headers: RecordHeaders,
    ) -> BackendResult<()> {
        let mut record = FutureRecord::to(topic).key(&key[..]).payload(&payload[..]);
        if !headers.is_empty() {
            let kafka_headers = headers.iter().fold(OwnedHeaders::new(), |all, (name, value)| {
                all.insert(Header { key: name, value: Some(&value[..]) })
            });
            record = record.headers(kafka_headers);
        }
        // librdkafka gives up at `message.timeout.ms` (the same bound); this
        // also bounds the wait for room in a full local queue.
        let producer = self.producer.read().clone();
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, producer.send(record, self.timeout)).await {
            Ok(Ok(_delivered)) => Ok(()),
            Ok(Err((e, _record))) => Err(map_kafka(e)),
            Err(_) => Err(timed_out("publish")),
        };
        self.produce_latency(topic).observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => self.failures_in_a_row.store(0, std::sync::atomic::Ordering::Relaxed),
            Err(_) => self.renew_producer(&producer),
        }
        result
    }

    /// Joins `group` on `topic`. Members of one group share the records; each
    /// group sees every record.
    async fn subscribe(&self, topic: &str, group: &str) -> BackendResult<Box<dyn BusConsumer>> {
        Ok(Box::new(self.consumer(topic, group).await?))
    }
}
