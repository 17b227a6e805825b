//! How many copies of each topic the bus asks for, and the start-up check of
//! what the brokers actually keep against it.
//!
//! The settings are `kafka.replication_factor` and
//! `kafka.min_insync_replicas` (0: the broker's default for each). They only
//! shape topics this process creates; a topic that already exists keeps its
//! replicas, so [`KafkaBus::check_replication`](super::KafkaBus::check_replication)
//! reads the brokers' metadata once the topics are ensured and reports every
//! [`Shortfall`]: a topic with fewer replicas than configured, or fewer
//! brokers than the factor. It warns and never fails the start: the bus works
//! with fewer copies, it only survives fewer broker losses.
//!
//! With the idempotent producer (`acks=all`), `min.insync.replicas` is what
//! an acknowledged publish means: the record is on at least that many
//! brokers. Below it the broker refuses the publish (`NOT_ENOUGH_REPLICAS`,
//! retried as `Unavailable`) instead of acknowledging a single copy.

use rdkafka::admin::{NewTopic, TopicReplication};
use tracing::warn;

/// The replication settings, as the topic creation request carries them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    /// Replicas per partition; 0: the broker's `default.replication.factor`.
    pub factor: u16,
    /// `min.insync.replicas` of each topic, as text for the request; `None`:
    /// the broker's default.
    min_insync: Option<String>,
}

impl Replication {
    pub fn new(factor: u16, min_insync_replicas: u16) -> Self {
        Self { factor, min_insync: (min_insync_replicas != 0).then(|| min_insync_replicas.to_string()) }
    }

    /// The creation request of `topic` with these settings.
    pub(super) fn new_topic<'a>(&'a self, topic: &'a str, partitions: i32) -> NewTopic<'a> {
        // -1 asks for the broker's default.
        let factor = if self.factor == 0 { -1 } else { i32::from(self.factor) };
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(factor));
        match &self.min_insync {
            Some(min_insync) => new.set("min.insync.replicas", min_insync),
            None => new,
        }
    }
}

/// What a topic's replication looks like in the brokers' metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicReplicas {
    pub topic: String,
    /// The fewest distinct brokers holding a replica of any of its partitions.
    pub replicas: usize,
}

/// A way the brokers keep fewer copies than `kafka.replication_factor` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// The topic existed with fewer replicas (or the brokers created it so).
    TooFewReplicas { topic: String, replicas: usize, wanted: u16 },
    /// The metadata lists fewer brokers than the factor.
    TooFewBrokers { brokers: usize, wanted: u16 },
}

impl Shortfall {
    /// Logs it as the warning the operator sees at start.
    pub fn warn(&self) {
        match self {
            Shortfall::TooFewReplicas { topic, replicas, wanted } => warn!(
                %topic,
                replicas,
                replication_factor = wanted,
                "kafka topic has fewer replicas per partition than kafka.replication_factor \
                 (KAFKA_REPLICATION_FACTOR); it existed before, or the brokers were fewer: reassign its partitions"
            ),
            Shortfall::TooFewBrokers { brokers, wanted } => warn!(
                brokers,
                replication_factor = wanted,
                "the kafka metadata lists fewer brokers than kafka.replication_factor (KAFKA_REPLICATION_FACTOR)"
            ),
        }
    }
}

/// The shortfalls of `topics` on `brokers` brokers against a configured
/// factor of `wanted` (0, the broker's default, is not checked: this process
/// does not know it).
pub fn shortfalls(wanted: u16, brokers: usize, topics: &[TopicReplicas]) -> Vec<Shortfall> {
    if wanted == 0 {
        return Vec::new();
    }
    let wanted_replicas = usize::from(wanted);
    let mut found = Vec::new();
    if brokers < wanted_replicas {
        found.push(Shortfall::TooFewBrokers { brokers, wanted });
    }
    found.extend(topics.iter().filter(|t| t.replicas < wanted_replicas).map(|t| Shortfall::TooFewReplicas {
        topic: t.topic.clone(),
        replicas: t.replicas,
        wanted,
    }));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(topic: &str, replicas: usize) -> TopicReplicas {
        TopicReplicas { topic: topic.to_owned(), replicas }
    }

    #[test]
    fn zero_asks_for_the_broker_defaults() {
        let replication = Replication::new(0, 0);
        let topic = replication.new_topic("t", 4);
        assert_eq!((topic.name, topic.num_partitions), ("t", 4));
        assert!(matches!(topic.replication, TopicReplication::Fixed(-1)));
        assert!(topic.config.is_empty(), "no min.insync.replicas: the broker's default");
    }

    #[test]
    fn the_settings_go_into_the_creation_request() {
        let replication = Replication::new(3, 2);
        let topic = replication.new_topic("t", 32);
        assert!(matches!(topic.replication, TopicReplication::Fixed(3)));
        assert_eq!(topic.config, [("min.insync.replicas", "2")]);
        // A factor alone leaves min.insync.replicas to the broker.
        let factor_only = Replication::new(3, 0);
        assert!(factor_only.new_topic("t", 1).config.is_empty());
    }

    #[test]
    fn topics_with_fewer_replicas_and_too_few_brokers_are_shortfalls() {
        let topics = [replicas("a", 1), replicas("b", 3), replicas("c", 2)];
        assert_eq!(
            shortfalls(3, 1, &topics),
            [
                Shortfall::TooFewBrokers { brokers: 1, wanted: 3 },
                Shortfall::TooFewReplicas { topic: "a".into(), replicas: 1, wanted: 3 },
                Shortfall::TooFewReplicas { topic: "c".into(), replicas: 2, wanted: 3 },
            ]
        );
    }

    #[test]
    fn enough_copies_or_the_broker_default_is_no_shortfall() {
        assert!(shortfalls(3, 3, &[replicas("a", 3), replicas("b", 4)]).is_empty());
        assert!(shortfalls(0, 1, &[replicas("a", 1)]).is_empty(), "0: the broker's default, not checked");
        assert!(shortfalls(1, 1, &[replicas("a", 1)]).is_empty());
    }
}
