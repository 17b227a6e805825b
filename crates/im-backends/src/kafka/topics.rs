//! Creating the bus's topics, and keeping them: a broker that restarts
//! without its state (tansu on memory storage, a cluster rebuilt empty) comes
//! back with no topics, and nothing else would create them again — the
//! producer is told not to (`allow.auto.create.topics=false`: a topic made by
//! a publish gets the broker's default partition count, not ours).
//!
//! [`Topics::ensure`] creates what is missing once; [`Topics::keep`] then
//! asks again every [`KEEP_INTERVAL`] on a task of its own. It sends
//! `CreateTopics` rather than reading metadata: the answer is
//! "already exists" while all is well, and it needs no metadata accessor
//! (librdkafka's metadata of a vanished topic may carry a null name).

use std::sync::Arc;
use std::time::Duration;

use im_core::error::BackendError;
use im_core::ports::BackendResult;
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use super::error::{map_kafka, timed_out};
use super::logs::Logs;
use super::replication::Replication;
use crate::telemetry::dependency_metrics;

/// How often the kept topics are created again if missing: after a broker
/// came back empty, publishes fail (and are retried) for at most about this
/// long plus a round trip.
pub const KEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The topics of one bus, their partition count, and the task that keeps
/// them (stopped when this is dropped, with the bus).
pub(super) struct Topics {
    admin: Arc<AdminClient<Logs>>,
    /// How many copies every topic created here asks for (a kept topic
    /// created again included).
    replication: Arc<Replication>,
    timeout: Duration,
    kept: Arc<Mutex<Vec<(String, i32)>>>,
    keeper: Mutex<Option<AbortHandle>>,
}

impl Topics {
    pub(super) fn new(config: &ClientConfig, replication: Replication, timeout: Duration) -> BackendResult<Self> {
        let admin = config.create_with_context(Logs).map_err(map_kafka)?;
        Ok(Self {
            admin: Arc::new(admin),
            replication: Arc::new(replication),
            timeout,
            kept: Arc::default(),
            keeper: Mutex::new(None),
        })
    }

    /// The copies every topic created here asks for.
    pub(super) fn replication(&self) -> &Replication {
        &self.replication
    }

    /// The admin client, for reading the topics' metadata.
    pub(super) fn admin(&self) -> &Arc<AdminClient<Logs>> {
        &self.admin
    }

    /// Creates the `topics` that do not exist (with `partitions`
    /// partitions); a topic that exists is left as it is. Returns the topics
    /// created.
    pub(super) async fn ensure(&self, topics: &[&str], partitions: i32) -> BackendResult<Vec<String>> {
        create(&self.admin, &self.replication, topics.iter().map(|&t| (t, partitions)), self.timeout).await
    }

    /// From now on, creates `topics` again whenever they are missing, every
    /// [`KEEP_INTERVAL`], until this is dropped. Each creation is logged and
    /// counted in `im_kafka_topics_recreated_total`.
    pub(super) fn keep(&self, topics: &[&str], partitions: i32) {
        {
            let mut kept = self.kept.lock();
            for &topic in topics {
                if !kept.iter().any(|(t, _)| t == topic) {
                    kept.push((topic.to_owned(), partitions));
                }
            }
        }
        let mut keeper = self.keeper.lock();
        if keeper.is_some() {
            return;
        }
        let (admin, replication, kept, timeout) =
            (self.admin.clone(), self.replication.clone(), self.kept.clone(), self.timeout);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(KEEP_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let wanted = kept.lock().clone();
                match create(&admin, &replication, wanted.iter().map(|(t, p)| (t.as_str(), *p)), timeout).await {
                    Ok(created) => {
                        for topic in created {
                            dependency_metrics().kafka_topic_recreated(&topic);
                            warn!(%topic, "kafka topic was missing (the broker lost it); created it again");
                        }
                    }
                    // The broker is away: the next tick asks again.
                    Err(error) => debug!(%error, "could not check the kafka topics"),
                }
            }
        });
        *keeper = Some(task.abort_handle());
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.get_mut().take() {
            keeper.abort();
        }
    }
}

/// One `CreateTopics` request for `topics`, each with `replication`; the
/// ones it created.
async fn create<'a>(
    admin: &AdminClient<Logs>,
    replication: &'a Replication,
    topics: impl Iterator<Item = (&'a str, i32)>,
    timeout: Duration,
) -> BackendResult<Vec<String>> {
    let new: Vec<NewTopic<'_>> = topics.map(|(topic, partitions)| replication.new_topic(topic, partitions)).collect();
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let options = AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout));
    let results = match tokio::time::timeout(timeout, admin.create_topics(&new, &options)).await {
        Ok(results) => results.map_err(map_kafka)?,
        Err(_) => return Err(timed_out("topic creation")),
    };
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(match map_kafka(KafkaError::AdminOp(code)) {
                    BackendError::Unavailable(e) => BackendError::unavailable(format!("creating topic {topic}: {e}")),
                    BackendError::Other(e) => BackendError::other(format!("creating topic {topic}: {e}")),
                });
            }
        }
    }
    Ok(created)
}
