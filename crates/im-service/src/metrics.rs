//! Every metric the service exports, defined in one place so names, labels
//! and help texts can be reviewed together. Served as Prometheus text on
//! `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

use im_backends::telemetry::dependency_metrics;
use im_config::FilterAction;
use im_core::ErrorCode;
use im_gateway::StatsSnapshot;

use crate::process_metrics::ProcessCollector;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KmsLabels {
    pub op: &'static str,
    pub result: &'static str,
}

/// The KMS calls and their outcomes (im_crypto's names): each pair has its
/// series from the start.
const KMS_OPS: [&str; 4] = ["generate_data_key", "decrypt", "re_encrypt", "describe_key"];
const KMS_RESULTS: [&str; 3] = ["ok", "unavailable", "rejected"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabel {
    pub dependency: &'static str,
}

/// Why the offline worker parks a record on its dead-letter topic.
pub const OFFLINE_DEAD_LETTER_REASONS: [&str; 2] = ["undecodable", "refused"];
/// Why the fan-out parks a record on its dead-letter topic.
pub const GROUP_DEAD_LETTER_REASONS: [&str; 3] = ["undecodable", "no_group", "roster_refused"];

/// One partition of a topic, as one consumer group sees it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

pub struct Metrics {
    registry: Registry,
    /// Messages acknowledged (durably stored) — excludes duplicates.
    pub accepted: Counter,
    /// Duplicate sends answered with the first ack.
    pub duplicates: Counter,
    /// Push events handed to a gateway that reached at least one device.
    pub pushed: Counter,
    /// Push events whose user had no device online (they sync later).
    pub push_offline: Counter,
    /// Push events dropped because their gateway's delivery lane was full
    /// (the gateway hangs or lags); their messages go the offline way.
    pub push_lane_full: Counter,
    /// Sends and pushes that failed, by error code.
    pub failed: Family<CodeLabel, Counter>,
    /// Messages returned by sync.
    pub synced: Counter,
    /// Read receipts stored.
    pub receipts: Counter,
    /// Messages deleted by the retention job (`MESSAGE_RETENTION_DAYS`).
    pub messages_expired: Counter,
    /// How long one step of the retention job took (one short transaction).
    pub retention_step_seconds: Histogram,
    /// Accept to push hand-off, seconds.
    pub routing_latency: Histogram,
    /// Messages per group commit.
    pub commit_batch_size: Histogram,
    /// WebSocket clients connected to the built-in gateway.
    pub connected_clients: Gauge,
    /// 1 while a dependency's last probe succeeded, 0 after one failed.
    pub dependency_up: Family<DependencyLabel, Gauge>,
    /// Offline events published on `offline_msg`.
    pub offline_published: Counter,
    /// Failed attempts to publish offline events (each is retried).
    pub offline_publish_failures: Counter,
    /// Offline events never published: the queue was full, or the node
    /// stopped first. Their messages still reach the devices by sync.
    pub offline_dropped: Counter,
    /// Offline entries the worker wrote to the store (a redelivered entry
    /// counts again; the store keeps it once).
    pub offline_recorded: Counter,
    /// Failed batch writes of the offline worker (each is retried).
    pub offline_write_failures: Counter,
    /// Route outbox rows settled by their node: the batch's unreached
    /// messages recorded, the row deleted.
    pub outbox_settled: Counter,
    /// Route outbox rows found abandoned (their node stopped, or a
    /// settlement was dropped) and recorded whole by a sweep.
    pub outbox_swept: Counter,
    /// Failed outbox writes (settlements and sweeps; each is retried).
    pub outbox_write_failures: Counter,
    /// `offline_msg` records parked on the dead-letter topic, by reason.
    pub offline_dead_letters: Family<ReasonLabel, Counter>,
    /// Records after a consumer group's last commit, per partition.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// `membership_change` records applied to this node's cache.
    pub membership_changes: Counter,
    /// `membership_change` records that did not decode (passed over).
    pub membership_undecodable: Counter,
    /// Group messages published on `group_msg`.
    pub group_published: Counter,
    /// Failed attempts to publish group messages (each is retried).
    pub group_publish_failures: Counter,
    /// Group messages never published on `group_msg`: the queue was full, or
    /// the node stopped first. Their members get them by sync.
    pub group_dropped: Counter,
    /// Group messages the fan-out handled (looked up and pushed to the
    /// members online, if any).
    pub group_fanned_out: Counter,
    /// (message, member) pairs the fan-out delivered to at least one device.
    pub group_fanout_deliveries: Counter,
    /// From a group message's `server_time_ms` to the return of the last
    /// gateway call carrying it, seconds.
    pub group_fanout_latency: Histogram,
    /// Failed roster lookups of the fan-out (each is retried).
    pub group_roster_failures: Counter,
    /// `group_msg` records parked on the dead-letter topic, by reason.
    pub group_dead_letters: Family<ReasonLabel, Counter>,
    /// im-user: membership changes stored but never published on
    /// `membership_change` since start (the nodes catch up only when they
    /// reload the roster). Anything but 0 wants a look at the broker.
    pub membership_unpublished: Gauge,
    /// Sends the sensitive-word filter matched, by `FILTER_ACTION`.
    pub filter_matches: Family<ActionLabel, Counter>,
    /// Entries of the word list in use (0 with the filter off).
    pub filter_wordlist_entries: Gauge,
    /// Reloads of the word list that failed (the previous list stayed).
    pub filter_reload_failures: Counter,
    /// Time the filter took per text body, seconds.
    pub filter_seconds: Histogram,
    /// Audit records published on `content_audit`.
    pub audit_published: Counter,
    /// Failed attempts to publish audit records (each is retried).
    pub audit_publish_failures: Counter,
    /// Audit records never published (queue full, or the node stopped
    /// first); the `content_audit` table still has them.
    pub audit_dropped: Counter,
    /// Calls to the KMS, by operation and result.
    pub kms_requests: Family<KmsLabels, Counter>,
    /// Duration of the KMS calls, seconds.
    pub kms_request_seconds: Histogram,
    /// Data keys found unwrapped in memory.
    pub dek_cache_hits: Counter,
    /// Data keys that had to be unwrapped by the master key.
    pub dek_cache_misses: Counter,
    /// Age of the data key new bodies are sealed with (0 with encryption
    /// off); updated every minute.
    pub encryption_active_dek_age_seconds: Gauge,
    /// Stored bodies sealed again under the active key (`imctl keys
    /// reencrypt`).
    pub reencrypted_rows: Counter,
    /// The circuit breakers' state, refusals and openings.
    pub breakers: crate::breaker::BreakerMetrics,
    /// Connections of every listener: open, refused, timed out.
    pub connections: crate::connection_limits::GuardMetrics,
    /// Requests refused by a rate limit, by limit.
    pub rate_limited: crate::rate_limits::RateLimitMetrics,
    /// The WebSocket gateway's own counters (built-in gateway or
    /// `im-gateway`), brought up to date at scrape time.
    gateway: GatewayCounters,
}

/// The gateway counts in plain atomics (it has no metrics library); at each
/// scrape these counters advance by what the gateway counted since the last.
#[derive(Default)]
struct GatewayCounters {
    last: Mutex<StatsSnapshot>,
    connections_opened: Counter,
    connections_replaced: Counter,
    connections_dropped_slow: Counter,
    connections_stalled: Counter,
    connections_refused_per_user: Counter,
    connections_revoked: Counter,
    handshakes_rejected: Counter,
    frames_in: Counter,
    frames_out: Counter,
    bad_frames: Counter,
    push_events: Counter,
    pushes_delivered: Counter,
    registry_errors: Counter,
}

impl GatewayCounters {
    fn register(&self, registry: &mut Registry) {
        let gateway = registry.sub_registry_with_prefix("gateway");
        gateway.register(
            "connections_opened",
            "WebSocket connections accepted (after a successful handshake)",
            self.connections_opened.clone(),
        );
        gateway.register(
            "connections_replaced",
            "Connections closed because the same user and device connected again",
            self.connections_replaced.clone(),
        );
        gateway.register(
            "connections_dropped_slow",
            "Connections closed because their outbound queue was full (a client too slow to read)",
            self.connections_dropped_slow.clone(),
        );
        gateway.register(
            "connections_stalled",
            "Connections closed because their socket took no bytes for LIMIT_IDLE_TIMEOUT (a client that stopped reading)",
            self.connections_stalled.clone(),
        );
        gateway.register(
            "connections_refused_per_user",
            "Connections refused because their user had LIMIT_CONNECTIONS_PER_USER on this gateway",
            self.connections_refused_per_user.clone(),
        );
        gateway.register(
            "connections_revoked",
            "Connections closed because their user was disabled or their token revoked",
            self.connections_revoked.clone(),
        );
        gateway.register(
            "handshakes_rejected",
            "Upgrade requests refused (missing, bad or revoked token, disabled user, bad device id)",
            self.handshakes_rejected.clone(),
        );
        gateway.register("frames_in", "WebSocket data frames received", self.frames_in.clone());
        gateway.register("frames_out", "WebSocket frames written (replies and pushes)", self.frames_out.clone());
        gateway.register("bad_frames", "Received frames that were text or did not decode", self.bad_frames.clone());
        gateway.register("push_events", "Push events handled (one per event of a batch)", self.push_events.clone());
        gateway.register(
            "pushes_delivered",
            "Push frames queued to a device (one per event and device)",
            self.pushes_delivered.clone(),
        );
        gateway.register(
            "registry_errors",
            "Registry register/unregister calls that failed",
            self.registry_errors.clone(),
        );
    }

    fn advance(&self, now: StatsSnapshot) {
        let mut last = self.last.lock().expect("gateway counters lock poisoned");
        let step = |counter: &Counter, now: u64, before: u64| {
            counter.inc_by(now.saturating_sub(before));
        };
        step(&self.connections_opened, now.connections_opened, last.connections_opened);
        step(&self.connections_replaced, now.connections_replaced, last.connections_replaced);
        step(&self.connections_dropped_slow, now.connections_dropped_slow, last.connections_dropped_slow);
        step(&self.connections_stalled, now.connections_stalled, last.connections_stalled);
        step(&self.connections_refused_per_user, now.connections_refused_per_user, last.connections_refused_per_user);
        step(&self.connections_revoked, now.connections_revoked, last.connections_revoked);
        step(&self.handshakes_rejected, now.handshakes_rejected, last.handshakes_rejected);
        step(&self.frames_in, now.frames_in, last.frames_in);
        step(&self.frames_out, now.frames_out, last.frames_out);
        step(&self.bad_frames, now.bad_frames, last.bad_frames);
        step(&self.push_events, now.push_events, last.push_events);
        step(&self.pushes_delivered, now.pushes_delivered, last.pushes_delivered);
        step(&self.registry_errors, now.registry_errors, last.registry_errors);
        *last = now;
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // The process_* metrics keep their standard names; the rest are im_*.
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("im");
        let accepted = Counter::default();
        let duplicates = Counter::default();
        let pushed = Counter::default();
        let push_offline = Counter::default();
        let push_lane_full = Counter::default();
        let failed = Family::<CodeLabel, Counter>::default();
        let synced = Counter::default();
        let receipts = Counter::default();
        let messages_expired = Counter::default();
        // 1 ms .. ~16 s
        let retention_step_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        // 50 µs .. ~1.6 s
        let routing_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let connected_clients = Gauge::default();
        let offline_published = Counter::default();
        let offline_publish_failures = Counter::default();
        let offline_dropped = Counter::default();
        let offline_recorded = Counter::default();
        let offline_write_failures = Counter::default();
        let outbox_settled = Counter::default();
        let outbox_swept = Counter::default();
        let outbox_write_failures = Counter::default();
        let offline_dead_letters = Family::<ReasonLabel, Counter>::default();
        let consumer_lag = Family::<PartitionLabels, Gauge>::default();
        let membership_changes = Counter::default();
        let membership_undecodable = Counter::default();
        let group_published = Counter::default();
        let group_publish_failures = Counter::default();
        let group_dropped = Counter::default();
        let group_fanned_out = Counter::default();
        let group_fanout_deliveries = Counter::default();
        // 1 ms .. ~33 s
        let group_fanout_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let group_roster_failures = Counter::default();
        let group_dead_letters = Family::<ReasonLabel, Counter>::default();
        let membership_unpublished = Gauge::default();
        let dependency_up = Family::<DependencyLabel, Gauge>::default();
        let filter_matches = Family::<ActionLabel, Counter>::default();
        let filter_wordlist_entries = Gauge::default();
        let filter_reload_failures = Counter::default();
        // 250 ns .. ~4 ms
        let filter_seconds = Histogram::new(exponential_buckets(0.000_000_25, 2.0, 15));
        let audit_published = Counter::default();
        let audit_publish_failures = Counter::default();
        let audit_dropped = Counter::default();
        let kms_requests = Family::<KmsLabels, Counter>::default();
        // 1 ms .. ~16 s
        let kms_request_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let dek_cache_hits = Counter::default();
        let dek_cache_misses = Counter::default();
        let encryption_active_dek_age_seconds = Gauge::default();
        let reencrypted_rows = Counter::default();
        for op in KMS_OPS {
            for result in KMS_RESULTS {
                drop(kms_requests.get_or_create(&KmsLabels { op, result }));
            }
        }
        let gateway = GatewayCounters::default();
        for action in FilterAction::ALL {
            drop(filter_matches.get_or_create(&ActionLabel { action: action.as_str() }));
        }
        // Every code a send or push can fail with has its series from the start.
        for code in ErrorCode::ALL {
            drop(failed.get_or_create(&CodeLabel { code: code.as_str() }));
        }
        for reason in OFFLINE_DEAD_LETTER_REASONS {
            drop(offline_dead_letters.get_or_create(&ReasonLabel { reason }));
        }
        for reason in GROUP_DEAD_LETTER_REASONS {
            drop(group_dead_letters.get_or_create(&ReasonLabel { reason }));
        }

        registry.register("messages_accepted", "Messages durably stored and acknowledged", accepted.clone());
        registry.register("messages_duplicate", "Resends answered with the first ack", duplicates.clone());
        registry.register("messages_pushed", "Push events delivered to at least one device", pushed.clone());
        registry.register("messages_push_offline", "Push events whose user had no device online", push_offline.clone());
        registry.register(
            "push_lane_full",
            "Push events dropped because their gateway's delivery lane was full (a hung or lagging gateway)",
            push_lane_full.clone(),
        );
        registry.register("messages_failed", "Sends and pushes that failed, by error code", failed.clone());
        registry.register("messages_synced", "Messages returned by sync", synced.clone());
        registry.register("read_receipts", "Read positions stored", receipts.clone());
        registry.register(
            "messages_expired",
            "Messages deleted by the retention job (MESSAGE_RETENTION_DAYS)",
            messages_expired.clone(),
        );
        registry.register(
            "retention_step_seconds",
            "Duration of one step (one transaction) of the retention job",
            retention_step_seconds.clone(),
        );
        registry.register(
            "routing_latency_seconds",
            "From accepting a send to handing its push to the gateway",
            routing_latency.clone(),
        );
        registry.register("commit_batch_size", "Messages per group commit", commit_batch_size.clone());
        registry.register(
            "connected_clients",
            "WebSocket clients connected to the built-in gateway",
            connected_clients.clone(),
        );
        registry.register(
            "offline_events_published",
            "Offline events published for the offline worker",
            offline_published.clone(),
        );
        registry.register(
            "offline_publish_failures",
            "Failed attempts to publish offline events (each is retried)",
            offline_publish_failures.clone(),
        );
        registry.register(
            "offline_events_dropped",
            "Offline events never published (queue full, or stopped first); their messages reach devices by sync",
            offline_dropped.clone(),
        );
        registry.register(
            "offline_recorded",
            "Offline entries written to the store by the offline worker",
            offline_recorded.clone(),
        );
        registry.register(
            "offline_write_failures",
            "Failed batch writes of the offline worker (each is retried)",
            offline_write_failures.clone(),
        );
        registry.register(
            "offline_outbox_settled",
            "Route outbox rows settled by their node (unreached messages' offline entries recorded)",
            outbox_settled.clone(),
        );
        registry.register(
            "offline_outbox_swept",
            "Route outbox rows found abandoned (node killed mid-batch) and recorded whole",
            outbox_swept.clone(),
        );
        registry.register(
            "offline_outbox_write_failures",
            "Failed route outbox writes (settlements and sweeps; each is retried)",
            outbox_write_failures.clone(),
        );
        registry.register(
            "offline_dead_letters",
            "Offline events parked on the dead-letter topic, by reason",
            offline_dead_letters.clone(),
        );
        registry.register(
            "kafka_consumer_lag",
            "Records after the consumer group's last commit, per partition",
            consumer_lag.clone(),
        );
        registry.register(
            "membership_changes",
            "membership_change records applied to this node's membership cache",
            membership_changes.clone(),
        );
        registry.register(
            "membership_undecodable",
            "membership_change records that did not decode (passed over)",
            membership_undecodable.clone(),
        );
        registry.register("group_messages_published", "Group messages published on group_msg", group_published.clone());
        registry.register(
            "group_publish_failures",
            "Failed attempts to publish group messages (each is retried)",
            group_publish_failures.clone(),
        );
        registry.register(
            "group_messages_dropped",
            "Group messages never published (queue full, or stopped first); members get them by sync",
            group_dropped.clone(),
        );
        registry.register(
            "group_messages_fanned_out",
            "Group messages the fan-out pushed to their online members",
            group_fanned_out.clone(),
        );
        registry.register(
            "group_fanout_deliveries",
            "Group message deliveries by the fan-out: (message, member) pairs that reached a device",
            group_fanout_deliveries.clone(),
        );
        registry.register(
            "group_fanout_latency_seconds",
            "From a group message's server time to the return of the last gateway call pushing it",
            group_fanout_latency.clone(),
        );
        registry.register(
            "group_roster_failures",
            "Failed roster lookups of the group fan-out (each is retried)",
            group_roster_failures.clone(),
        );
        registry.register(
            "group_dead_letters",
            "group_msg records parked on the dead-letter topic, by reason",
            group_dead_letters.clone(),
        );
        // Process-wide, like the tracer (see telemetry::export): every
        // registry of the process serves the same counters.
        registry.register(
            "trace_spans_dropped",
            "Trace spans never exported, by reason: queue_full (the export queue was full), export_failed (the collector did not take them)",
            crate::telemetry::spans_dropped().clone(),
        );
        registry.register(
            "membership_unpublished",
            "Membership changes stored but not published on membership_change since start (im-user)",
            membership_unpublished.clone(),
        );
        registry.register(
            "dependency_up",
            "1 while the last probe of a dependency succeeded, 0 after one failed (probed in the background)",
            dependency_up.clone(),
        );
        registry.register(
            "filter_matches",
            "Sends the sensitive-word filter matched, by FILTER_ACTION",
            filter_matches.clone(),
        );
        registry.register(
            "filter_wordlist_entries",
            "Entries of the sensitive-word list in use (0 with the filter off)",
            filter_wordlist_entries.clone(),
        );
        registry.register(
            "filter_reload_failures",
            "Reloads of the sensitive-word list that failed (the previous list stayed in use)",
            filter_reload_failures.clone(),
        );
        registry.register(
            "filter_seconds",
            "Time the sensitive-word filter took per text body",
            filter_seconds.clone(),
        );
        registry.register(
            "audit_records_published",
            "Audit records of the sensitive-word filter published on content_audit",
            audit_published.clone(),
        );
        registry.register(
            "audit_publish_failures",
            "Failed attempts to publish audit records (each is retried)",
            audit_publish_failures.clone(),
        );
        registry.register(
            "audit_records_dropped",
            "Audit records never published on content_audit (queue full, or stopped first); the content_audit table has them",
            audit_dropped.clone(),
        );
        registry.register("kms_requests", "Calls to the KMS, by operation and result", kms_requests.clone());
        registry.register("kms_request_seconds", "Duration of the KMS calls", kms_request_seconds.clone());
        registry.register("dek_cache_hits", "Data keys found unwrapped in memory", dek_cache_hits.clone());
        registry.register(
            "dek_cache_misses",
            "Data keys that had to be unwrapped by the master key (KMS Decrypt)",
            dek_cache_misses.clone(),
        );
        registry.register(
            "encryption_active_dek_age_seconds",
            "Age of the data key new message bodies are sealed with (0 with encryption off)",
            encryption_active_dek_age_seconds.clone(),
        );
        registry.register(
            "reencrypted_rows",
            "Stored message bodies sealed again under the active data key (imctl keys reencrypt)",
            reencrypted_rows.clone(),
        );
        register_dependency_metrics(registry);
        gateway.register(registry);
        let breakers = crate::breaker::BreakerMetrics::default();
        breakers.register(registry);
        let connections = crate::connection_limits::GuardMetrics::default();
        connections.register(registry);
        let rate_limited = crate::rate_limits::RateLimitMetrics::default();
        rate_limited.register(registry);
        Self {
            registry: root,
            breakers,
            connections,
            rate_limited,
            dependency_up,
            accepted,
            duplicates,
            pushed,
            push_offline,
            push_lane_full,
            failed,
            synced,
            receipts,
            messages_expired,
            retention_step_seconds,
            routing_latency,
            commit_batch_size,
            connected_clients,
            offline_published,
            offline_publish_failures,
            offline_dropped,
            offline_recorded,
            outbox_settled,
            outbox_swept,
            outbox_write_failures,
            offline_write_failures,
            offline_dead_letters,
            consumer_lag,
            membership_changes,
            membership_undecodable,
            group_published,
            group_publish_failures,
            group_dropped,
            group_fanned_out,
            group_fanout_deliveries,
            group_fanout_latency,
            group_roster_failures,
            group_dead_letters,
            membership_unpublished,
            filter_matches,
            filter_wordlist_entries,
            filter_reload_failures,
            filter_seconds,
            audit_published,
            audit_publish_failures,
            audit_dropped,
            kms_requests,
            kms_request_seconds,
            dek_cache_hits,
            dek_cache_misses,
            encryption_active_dek_age_seconds,
            reencrypted_rows,
            gateway,
        }
    }

    /// Brings the gateway's gauge and counters up to `stats` (called at
    /// scrape time by the processes that run a gateway).
    pub fn observe_gateway(&self, stats: StatsSnapshot) {
        self.connected_clients.set(stats.connected as i64);
        self.gateway.advance(stats);
    }

    /// `im_dependency_up` from one probe of a dependency.
    pub fn observe_dependency(&self, dependency: &'static str, up: bool) {
        self.dependency_up.get_or_create(&DependencyLabel { dependency }).set(i64::from(up));
    }

    /// One send the sensitive-word filter matched.
    pub fn filter_match(&self, action: FilterAction) {
        self.filter_matches.get_or_create(&ActionLabel { action: action.as_str() }).inc();
    }

    pub fn fail(&self, code: im_core::ErrorCode) {
        self.fail_n(code, 1);
    }

    pub fn fail_n(&self, code: im_core::ErrorCode, count: u64) {
        self.failed.get_or_create(&CodeLabel { code: code.as_str() }).inc_by(count);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The calls to the database, Redis and Kafka, as the backends time them.
fn register_dependency_metrics(registry: &mut Registry) {
    let deps = dependency_metrics();
    registry.register(
        "db_operation_duration_seconds",
        "Database calls by operation, the wait for a connection included",
        deps.db_operation_duration.clone(),
    );
    registry.register(
        "redis_operation_duration_seconds",
        "Redis round trips by operation",
        deps.redis_operation_duration.clone(),
    );
    registry.register(
        "redis_primary_changes",
        "Times the Redis Sentinels named another primary than the one in use (a failover)",
        deps.redis_primary_changes.clone(),
    );
    registry.register(
        "kafka_produce_duration_seconds",
        "From producing a record to the broker's acknowledgement, by topic",
        deps.kafka_produce_duration.clone(),
    );
    registry.register(
        "kafka_topics_recreated",
        "Kafka topics found missing (a broker that restarted without its state) and created again, by topic",
        deps.kafka_topics_recreated.clone(),
    );
    registry.register(
        "kafka_consumer_errors",
        "Errors Kafka consumers reported, by topic (librdkafka recovers from all but fatal ones)",
        deps.kafka_consumer_errors.clone(),
    );
    registry.register(
        "kafka_consumers_renewed",
        "Kafka consumers replaced because they kept fetching a topic the broker had lost, by topic",
        deps.kafka_consumers_renewed.clone(),
    );
    registry.register(
        "db_pool_connections",
        "Database connections of the pool by state (in_use, idle)",
        deps.db_pool_connections.clone(),
    );
    registry.register(
        "db_pool_max_connections",
        "The pool's maximum (database.max_open_conns)",
        deps.db_pool_max_connections.clone(),
    );
    registry.register("db_pool_waiting", "Calls waiting for a database connection", deps.db_pool_waiting.clone());
    registry.register(
        "db_pool_acquire_duration_seconds",
        "How long calls waited for a database connection",
        deps.db_pool_acquire_duration.clone(),
    );
    registry.register(
        "db_pool_resets",
        "Database pools dropped and opened again because the server refused a write as read-only (a failover)",
        deps.db_pool_resets.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_counters_advance_by_what_the_gateway_counted_since_the_last_scrape() {
        let metrics = Metrics::new();
        let first = StatsSnapshot { connected: 3, frames_in: 10, connections_dropped_slow: 1, ..Default::default() };
        metrics.observe_gateway(first);
        metrics.observe_gateway(StatsSnapshot { connected: 2, frames_in: 25, ..first });

        let text = metrics.render();
        assert!(text.contains("im_connected_clients 2\n"), "{text}");
        assert!(text.contains("im_gateway_frames_in_total 25\n"), "{text}");
        assert!(text.contains("im_gateway_connections_dropped_slow_total 1\n"), "{text}");
        assert!(text.contains("im_gateway_pushes_delivered_total 0\n"), "{text}");
    }

    #[test]
    fn every_known_labelled_series_is_exported_at_zero_from_the_start() {
        let text = Metrics::new().render();
        for series in [
            "im_messages_failed_total{code=\"UNAVAILABLE\"} 0\n",
            "im_messages_failed_total{code=\"INTERNAL\"} 0\n",
            "im_offline_dead_letters_total{reason=\"refused\"} 0\n",
            "im_group_dead_letters_total{reason=\"roster_refused\"} 0\n",
            "im_db_operation_duration_seconds_count{operation=\"append\"} ",
            "im_redis_operation_duration_seconds_count{operation=\"seq_allocate\"} ",
            "im_db_pool_connections{state=\"in_use\"} ",
            "im_db_pool_waiting ",
            "im_redis_primary_changes_total 0\n",
            "im_db_pool_resets_total 0\n",
        ] {
            assert!(text.contains(series), "{series:?} missing from:\n{text}");
        }
    }

    #[test]
    fn the_process_metrics_keep_their_standard_names() {
        let text = Metrics::new().render();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "im_process_cpu_limit_cores ",
            "im_process_memory_limit_bytes ",
        ] {
            assert!(text.lines().any(|line| line.starts_with(name)), "{name:?} missing from:\n{text}");
        }
        let resident: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
            .and_then(|value| value.parse().ok())
            .expect("a resident size");
        assert!(resident > 1e6, "a running test process holds more than 1 MB: {resident}");
    }
}
