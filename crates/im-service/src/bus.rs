//! The Kafka bus as every process that uses it opens it (an IM service node,
//! and `im-user`, which publishes `membership_change`): the same topics
//! ensured at start-up (their replication checked), the same `/ready` probe (degrading only).

use std::sync::Arc;

use anyhow::Context;
use im_backends::KafkaBus;
use im_config::KafkaConfig;
use tracing::warn;

use crate::consumer::dead_letter_topic;
use crate::readiness::Readiness;

/// Partitions of the Kafka topics created at start-up: the most consumers of
/// one group that share a topic's work (3 nodes × the default
/// `OFFLINE_WORKER_CONCURRENCY` of 10 fit). A topic that exists keeps its own.
pub const TOPIC_PARTITIONS: i32 = 32;

/// Connects to `kafka.brokers`, creates every topic of the deployment that is
/// missing (whichever process starts first creates them all, with the
/// dead-letter topics), and adds the brokers to `/ready` as `kafka`.
pub async fn kafka_bus(kafka: &KafkaConfig, readiness: &mut Readiness) -> anyhow::Result<Arc<KafkaBus>> {
    let bus = Arc::new(KafkaBus::new(kafka).context("kafka.brokers (KAFKA_BROKERS)")?);
    let topics = &kafka.topics;
    let offline_dead_letters = dead_letter_topic(&topics.offline_msg);
    let group_dead_letters = dead_letter_topic(&topics.group_msg);
    let all = [
        &topics.group_msg,
        &topics.offline_msg,
        &topics.membership_change,
        &topics.content_audit,
        &offline_dead_letters,
        &group_dead_letters,
    ];
    bus.ensure_topics(&all.map(String::as_str), TOPIC_PARTITIONS)
        .await
        .context("creating the Kafka topics (kafka.brokers, kafka.topics.*)")?;
    // Fewer copies than configured is warned about (by the check), never
    // fatal: the bus works, it survives fewer broker losses.
    if let Err(error) = bus.check_replication(&all.map(String::as_str)).await {
        warn!(%error, "could not check the replication of the kafka topics");
    }
    let probed = bus.clone();
    // Degrading only: sends are stored and acked without the bus; what is
    // published waits in bounded queues, retried, until it is back.
    readiness.add_degrading(
        "kafka",
        Box::new(move || {
            let bus = probed.clone();
            Box::pin(async move { bus.ping().await.map_err(|e| e.to_string()) })
        }),
    );
    Ok(bus)
}
