//! How the calls to the dependencies go: latency per operation of the
//! database and of Redis, produce latency per Kafka topic, and the state of
//! the database pool — what the runbooks read when sends slow down.
//!
//! Process-wide, like Prometheus's own default registry: every store and
//! connection of a process records here without each constructor taking a
//! handle, and the process's `/metrics` registers these families (see
//! `im-service`'s `metrics.rs`). Every operation's series exists from the
//! start (at 0), so a rule or a dashboard never meets a missing series.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Declares an operation enum with its label values and the list of all of
/// them (the series created at start).
macro_rules! operations {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The `operation` label value.
            pub fn label(self) -> &'static str {
                match self { $(Self::$variant => $label,)* }
            }
        }
    };
}

operations! {
    /// One call of a database store, named after the port method it serves.
    DbOperation {
        Append => "append",
        Fetch => "fetch",
        RecordSkipped => "record_skipped",
        FindByClientMsgId => "find_by_client_msg_id",
        AuditRecords => "audit_records",
        ConversationsOf => "conversations_of",
        MaxSeq => "max_seq",
        CountUnread => "count_unread",
        RowsByKey => "rows_by_key",
        BodiesToReseal => "bodies_to_reseal",
        Reseal => "reseal",
        Ping => "ping",
        ExpireMessages => "expire_messages",
        MarkRead => "mark_read",
        ReadPosition => "read_position",
        Readers => "readers",
        LoadCeilings => "load_ceilings",
        RaiseCeilings => "raise_ceilings",
        CurrentEpoch => "current_epoch",
        BumpEpoch => "bump_epoch",
        CreateUser => "create_user",
        UserById => "user_by_id",
        UserByName => "user_by_name",
        ChangeUserStatus => "change_user_status",
        ChangedUserStatuses => "changed_user_statuses",
        SetPasswordHash => "set_password_hash",
        PasswordHash => "password_hash",
        RecordOffline => "record_offline",
        PendingOffline => "pending_offline",
        ClearOffline => "clear_offline",
        SettleOutbox => "settle_outbox",
        AbandonedOutbox => "abandoned_outbox",
        CreateGroup => "create_group",
        Roster => "roster",
        GroupsOf => "groups_of",
        ChangeMembership => "change_membership",
        ActiveDataKey => "active_data_key",
        ActivateDataKey => "activate_data_key",
        DataKey => "data_key",
        DataKeys => "data_keys",
        RewrapDataKey => "rewrap_data_key",
    }
}

operations! {
    /// One Redis round trip.
    RedisOperation {
        SeqAllocate => "seq_allocate",
        SeqLookup => "seq_lookup",
        DedupGet => "dedup_get",
        DedupSet => "dedup_set",
        DedupGetMany => "dedup_get_many",
        DedupSetMany => "dedup_set_many",
        Ping => "ping",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolStateLabel {
    pub state: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The dependency metrics of this process; [`dependency_metrics`] returns it.
#[derive(Debug)]
pub struct DependencyMetrics {
    /// Seconds per database call, by operation: the wait for a connection
    /// included, as the caller sees it.
    pub db_operation_duration: Histograms<OperationLabel>,
    /// Seconds per Redis round trip, by operation.
    pub redis_operation_duration: Histograms<OperationLabel>,
    /// Times the Sentinels named another Redis primary than the one in use.
    pub redis_primary_changes: Counter,
    /// Seconds from producing a record to the broker's acknowledgement.
    pub kafka_produce_duration: Histograms<TopicLabel>,
    /// Topics found missing (the broker lost them) and created again.
    pub kafka_topics_recreated: Family<TopicLabel, Counter>,
    /// Errors a consumer reported (librdkafka recovers from all but fatal
    /// ones), by topic.
    pub kafka_consumer_errors: Family<TopicLabel, Counter>,
    /// Consumers replaced because they kept fetching a topic the broker
    /// had lost, by topic.
    pub kafka_consumers_renewed: Family<TopicLabel, Counter>,
    /// Database connections by `state`: `in_use` or `idle`.
    pub db_pool_connections: Family<PoolStateLabel, Gauge>,
    /// The pool's `max_open_conns`.
    pub db_pool_max_connections: Gauge,
    /// Calls waiting for a database connection now.
    pub db_pool_waiting: Gauge,
    /// Seconds a call waited for a database connection.
    pub db_pool_acquire_duration: Histogram,
    /// Pools dropped and opened again because the server refused a write
    /// as read-only (a demoted primary, a replica): failovers followed.
    pub db_pool_resets: Counter,
}

/// 100 µs .. ~3.3 s: a loopback call to ~100 × a slow one.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

pub fn dependency_metrics() -> &'static DependencyMetrics {
    static METRICS: LazyLock<DependencyMetrics> = LazyLock::new(|| {
        let metrics = DependencyMetrics {
            db_operation_duration: Family::new_with_constructor(call_buckets),
            redis_operation_duration: Family::new_with_constructor(call_buckets),
            redis_primary_changes: Counter::default(),
            kafka_produce_duration: Family::new_with_constructor(call_buckets),
            kafka_topics_recreated: Family::default(),
            kafka_consumer_errors: Family::default(),
            kafka_consumers_renewed: Family::default(),
            db_pool_connections: Family::default(),
            db_pool_max_connections: Gauge::default(),
            db_pool_waiting: Gauge::default(),
            db_pool_acquire_duration: call_buckets(),
            db_pool_resets: Counter::default(),
        };
        for op in DbOperation::ALL {
            drop(metrics.db_operation_duration.get_or_create(&OperationLabel { operation: op.label() }));
        }
        for op in RedisOperation::ALL {
            drop(metrics.redis_operation_duration.get_or_create(&OperationLabel { operation: op.label() }));
        }
        for state in ["in_use", "idle"] {
            drop(metrics.db_pool_connections.get_or_create(&PoolStateLabel { state }));
        }
        metrics
    });
    &METRICS
}

impl DependencyMetrics {
    pub(crate) fn db_operation(&self, op: DbOperation, started: Instant) {
        self.db_operation_duration
            .get_or_create(&OperationLabel { operation: op.label() })
            .observe(started.elapsed().as_secs_f64());
    }

    pub(crate) fn redis_operation(&self, op: RedisOperation, started: Instant) {
        self.redis_operation_duration
            .get_or_create(&OperationLabel { operation: op.label() })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The histogram of `topic`, created (at 0) if it is new. Callers keep
    /// the handle: the look-up builds a label.
    pub fn kafka_produce(&self, topic: &str) -> Histogram {
        self.kafka_produce_duration.get_or_create(&TopicLabel { topic: topic.to_owned() }).clone()
    }

    pub(crate) fn kafka_topic_recreated(&self, topic: &str) {
        self.kafka_topics_recreated.get_or_create(&TopicLabel { topic: topic.to_owned() }).inc();
    }

    pub(crate) fn kafka_consumer_error(&self, topic: &str) {
        self.kafka_consumer_errors.get_or_create(&TopicLabel { topic: topic.to_owned() }).inc();
    }

    pub(crate) fn kafka_consumer_renewed(&self, topic: &str) {
        self.kafka_consumers_renewed.get_or_create(&TopicLabel { topic: topic.to_owned() }).inc();
    }

    pub(crate) fn db_pool_state(&self, in_use: u32, idle: usize, max: u32) {
        self.db_pool_connections.get_or_create(&PoolStateLabel { state: "in_use" }).set(i64::from(in_use));
        self.db_pool_connections.get_or_create(&PoolStateLabel { state: "idle" }).set(idle as i64);
        self.db_pool_max_connections.set(i64::from(max));
    }
}

/// Counts a call in `db_pool_waiting` for as long as it lives: dropped when
/// the connection arrives, or when the caller gives up (a timeout drops the
/// waiting future).
pub(crate) struct WaitingForConnection(Instant);

impl WaitingForConnection {
    pub(crate) fn start() -> Self {
        dependency_metrics().db_pool_waiting.inc();
        Self(Instant::now())
    }
}

impl Drop for WaitingForConnection {
    fn drop(&mut self) {
        let metrics = dependency_metrics();
        metrics.db_pool_waiting.dec();
        metrics.db_pool_acquire_duration.observe(self.0.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_distinct_label() {
        let mut db: Vec<_> = DbOperation::ALL.iter().map(|op| op.label()).collect();
        db.sort_unstable();
        db.dedup();
        assert_eq!(db.len(), DbOperation::ALL.len());
        let mut redis: Vec<_> = RedisOperation::ALL.iter().map(|op| op.label()).collect();
        redis.sort_unstable();
        redis.dedup();
        assert_eq!(redis.len(), RedisOperation::ALL.len());
    }
}
