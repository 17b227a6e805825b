//! The one table of configuration keys: environment variable → config.yaml key → parser, with the
//! description that the reference and the example config are generated from.
//!
//! The YAML key of each row is spelled as the Rust field path (`server.grpc_port` is
//! `config.server.grpc_port`), and the parser is the field's type (see `value.rs`), so a row cannot
//! point at the wrong field or parse with the wrong type. Order matters: it is the order of the
//! reference and of the example config, and a section's keys must stay together.

use serde_yaml::Value;

use crate::schema::Config;
use crate::value::ConfigValue;

/// Who named a key: the deployment guide (its environment variable, its config.yaml key, or both) or
/// this project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Both the environment variable and the config.yaml key are the guide's.
    Guide,
    /// The guide names the environment variable; its config.yaml key is ours.
    GuideEnv,
    /// The guide names the config.yaml key; its environment variable is ours.
    GuideYaml,
    /// A project addition.
    Project,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Guide => "guide",
            Self::GuideEnv => "guide (env); yaml key: project",
            Self::GuideYaml => "guide (yaml); env var: project",
            Self::Project => "project",
        }
    }
}

pub(crate) struct Key {
    pub env: &'static str,
    pub path: &'static str,
    pub origin: Origin,
    pub doc: &'static str,
    pub from_env: fn(&mut Config, &str) -> Result<(), String>,
    pub from_yaml: fn(&mut Config, &Value) -> Result<(), String>,
    pub show: fn(&Config) -> Shown,
}

/// A field's type name and value as YAML, read through the field's `ConfigValue`.
pub(crate) struct Shown {
    pub kind: String,
    pub yaml: String,
}

fn shown<T: ConfigValue>(value: &T) -> Shown {
    Shown { kind: T::kind(), yaml: value.to_yaml() }
}

macro_rules! keys {
    ($($env:literal => $section:ident $(. $field:ident)+, $origin:ident, $doc:literal;)+) => {
        pub(crate) static KEYS: &[Key] = &[$(
            Key {
                env: $env,
                path: concat!(stringify!($section) $(, ".", stringify!($field))+),
                origin: Origin::$origin,
                doc: $doc,
                from_env: |config, text| {
                    config.$section$(.$field)+ = ConfigValue::parse_str(text)?;
                    Ok(())
                },
                from_yaml: |config, value| {
                    config.$section$(.$field)+ = ConfigValue::from_yaml(value)?;
                    Ok(())
                },
                show: |config| shown(&config.$section$(.$field)+),
            },
        )+];
    };
}

keys! {
    "SERVER_GRPC_PORT"                 => server.grpc_port, Guide, "gRPC port.";
    "SERVER_HTTP_PORT"                 => server.http_port, Guide, "HTTP port: /health, /ready, /metrics.";
    "MAX_MESSAGE_SIZE"                 => server.max_message_size, Guide, "Largest message body in bytes, at most 1 MiB.";
    "MAX_RETRY_ATTEMPTS"               => server.max_retry_attempts, Guide, "Attempts to push a message to a device.";
    "RETRY_TIMEOUT"                    => server.retry_timeout, Guide, "Timeout of each push attempt.";
    "SERVER_LISTEN_HOST"               => server.listen_host, Project, "Address every listener binds to; 0.0.0.0 accepts remote clients.";
    "SERVER_WS_PORT"                   => server.ws_port, Project, "WebSocket port (/ws) of the built-in gateway, used when services.gateway.addr is empty.";
    "IM_DATA_DIR"                      => server.data_dir, Project, "Standalone mode's files: SQLite database, generated token secret, admin credential, local master key.";
    "NODE_ID"                          => server.node_id, Project, "This node's number, unique within a cluster.";
    "DATA_DIR_MIN_FREE_BYTES"          => server.data_dir_min_free_bytes, Project, "With SQLite, /ready fails (and sends are refused) while the disk under the data directory has fewer free bytes than this: a full disk fails every commit while reads still answer.";
    "SYNC_PAGE_MAX_BYTES"              => server.sync_page_max_bytes, Project, "Most message-body bytes in one sync page, besides its count limit (500): a page stops before the message that would pass it, with has_more set. One message is always returned, whatever its size.";
    "SYNC_GAP_GRACE"                   => server.sync_gap_grace, Project, "How long sync waits for a missing seq that another node may still commit; longer than database.conn_timeout + database.write_timeout. MySQL only: on SQLite one process writes, so a gap is permanent the moment it shows and sync steps over it at once.";
    "COMMIT_WINDOW"                    => server.commit_window, Project, "How long a commit of fewer than 4 sends waits for more, only when sends arrived while the previous commit was in flight (a lone sender never waits); 0 turns it off, at most 10ms. A commit's cost is mostly fixed (the fsync and the hand-offs to the store), so at a few thousand sends a second this cuts the CPU per message by about a third for about a millisecond of latency.";
    "CLUSTER_NAME"                     => server.cluster, Project, "Name of this deployment: the namespace of its keys in Redis and etcd (letters, digits, - and _).";

    "LIMIT_CONNECTIONS"                => limits.connections, Project, "Connections one process holds at once over all its listeners (WebSocket, gRPC, HTTP); more are accepted and closed at once. Lowered at start to the open-file limit less 1,024.";
    "LIMIT_PENDING_PER_IP"             => limits.pending_per_ip, Project, "Connections from one IP address that have not yet sent their first request's headers (WebSocket handshake, HTTP request); more from that address are closed at once. Stops a client from holding sockets open without a token.";
    "LIMIT_HANDSHAKE_TIMEOUT"          => limits.handshake_timeout, Project, "A connection whose first request's headers have not arrived this long after it was accepted is closed.";
    "LIMIT_IDLE_TIMEOUT"               => limits.idle_timeout, Project, "A WebSocket or HTTP connection from which nothing arrives for this long is closed; the gateway's pings keep a live WebSocket client above it. Longer than limits.ws_ping_interval.";
    "LIMIT_WS_PING_INTERVAL"           => limits.ws_ping_interval, Project, "How often the gateway pings an open WebSocket connection; the client's pong keeps it from going idle.";
    "LIMIT_CONNECTIONS_PER_USER"       => limits.connections_per_user, Project, "WebSocket connections of one user on one gateway; one more is refused with 429 before the upgrade.";
    "LIMIT_OUTBOUND_BYTES"             => limits.outbound_bytes, Project, "Bytes queued for one WebSocket connection. A push that would pass it closes the connection as too slow (4001: reconnect and sync); replies wait for room, and requests wait while replies hold it, so a client that does not read holds at most about twice this.";

    "LIMIT_NEW_CONNECTIONS_PER_IP"     => limits.new_connections_per_ip, Project, "New connections one IP address (an IPv6 /64) may open per second, with a burst of twice that; more are closed at accept. 0: no limit.";
    "LIMIT_USER_MESSAGES_PER_SECOND"   => limits.user_messages_per_second, Project, "Messages one user may send per second on one node, with a burst of twice that; more are refused with RESOURCE_EXHAUSTED, reason rate_limited, and the wait in retry_after_ms. 0: no limit. The benchmarks' busiest users send about 250 per second.";
    "LIMIT_USER_BYTES_PER_SECOND"      => limits.user_bytes_per_second, Project, "Message-body bytes one user may send per second on one node, with a burst of twice that; refused like LIMIT_USER_MESSAGES_PER_SECOND. 0: no limit.";
    "LIMIT_USER_GROUP_CHANGES_PER_MINUTE" => limits.user_group_changes_per_minute, Project, "Groups created and membership or role changes one user may make per minute on one node, with a burst of twice that; refused like LIMIT_USER_MESSAGES_PER_SECOND. 0: no limit.";

    "CACHE_DEDUP_ENTRIES"              => cache.dedup_entries, Project, "First acks of recent sends kept in memory to answer a resend at once (standalone mode; with Redis they live in Redis). A resend older than the last this many sends is answered from the store's unique key instead: the same ack, a little later. About 230 bytes each.";
    "CACHE_GROUP_MEMBERS"              => cache.group_members, Project, "Group members whose rosters are kept in memory, over all groups; beyond it the least recently used rosters are read again from the directory. About 50 bytes each.";
    "CACHE_SQLITE_WRITER_BYTES"        => cache.sqlite_writer_bytes, Project, "SQLite page cache of the connection that commits (standalone mode). Smaller costs throughput when messages spread over many conversations.";
    "CACHE_SQLITE_READERS_BYTES"       => cache.sqlite_readers_bytes, Project, "SQLite page caches of the connections that read (sync, history), all together (standalone mode).";

    "DB_HOST"                          => database.host, Guide, "MySQL host:port. Empty: embedded SQLite in server.data_dir.";
    "DB_NAME"                          => database.name, Guide, "MySQL database.";
    "DB_USER"                          => database.user, Guide, "MySQL user.";
    "DB_PASSWORD"                      => database.password, Guide, "MySQL password.";
    "DB_MAX_OPEN_CONNS"                => database.max_open_conns, Guide, "Connection pool size.";
    "DB_MAX_IDLE_CONNS"                => database.max_idle_conns, Guide, "Idle connections kept, at most max_open_conns.";
    "DB_CONN_MAX_LIFETIME"             => database.conn_max_lifetime, Guide, "Connections are replaced after this long; 0 keeps them.";
    "DB_CONN_TIMEOUT"                  => database.conn_timeout, GuideEnv, "Timeout to open a connection.";
    "DB_READ_TIMEOUT"                  => database.read_timeout, GuideEnv, "Timeout of a read.";
    "DB_WRITE_TIMEOUT"                 => database.write_timeout, GuideEnv, "Timeout of a write.";
    "MESSAGE_RETENTION_DAYS"           => database.message_retention_days, Project, "Messages older than this many days are deleted by a background job, except each conversation's newest (docs/operations.md). 0: kept forever. At most 36500.";
    "DB_TLS_MODE"                      => database.tls_mode, Project, "TLS to MySQL, as MySQL's --ssl-mode: disabled; preferred (TLS when the server offers it, unverified); required (TLS, unverified); verify_ca (the certificate chains to database.tls_ca_file); verify_identity (and names database.host).";
    "DB_TLS_CA_FILE"                   => database.tls_ca_file, Project, "PEM CA bundle for verify_ca and verify_identity.";

    "REDIS_ADDR"                       => redis.addr, Guide, "Redis host:port. Empty (and no REDIS_SENTINELS): in-process seq allocator and dedup cache.";
    "REDIS_PASSWORD"                   => redis.password, Guide, "Redis password.";
    "REDIS_DB"                         => redis.db, Guide, "Redis database number.";
    "REDIS_POOL_SIZE"                  => redis.pool_size, Guide, "Connection pool size.";
    "REDIS_MIN_IDLE_CONNS"             => redis.min_idle_conns, Guide, "Idle connections kept, at most pool_size.";
    "REDIS_DIAL_TIMEOUT"               => redis.dial_timeout, GuideEnv, "Timeout to connect.";
    "REDIS_READ_TIMEOUT"               => redis.read_timeout, GuideEnv, "Timeout of a read.";
    "REDIS_WRITE_TIMEOUT"              => redis.write_timeout, GuideEnv, "Timeout of a write.";
    "REDIS_TLS"                        => redis.tls, Project, "Speak TLS to Redis (rediss://), the certificate verified against redis.tls_ca_file and the host of redis.addr.";
    "REDIS_TLS_CA_FILE"                => redis.tls_ca_file, Project, "PEM CA bundle for REDIS_TLS. Empty: the system's roots.";
    "REDIS_SENTINELS"                  => redis.sentinels, Project, "Redis Sentinels, host:port (comma-separated in env): the primary is asked of them, and asked again after a failover. Replaces REDIS_ADDR (set one of the two). Not with REDIS_TLS yet.";
    "REDIS_MASTER_NAME"                => redis.master_name, Project, "The name the Sentinels monitor the primary under (sentinel monitor NAME ...); required with REDIS_SENTINELS.";
    "REDIS_SENTINEL_PASSWORD"          => redis.sentinel_password, Project, "Password of the Sentinels themselves, if they have one; REDIS_PASSWORD is the primary's.";

    "SEQUENCE_SNAPSHOT_INTERVAL"       => sequence.snapshot_interval, GuideEnv, "Seqs reserved per stored ceiling: the most a Redis loss can skip.";

    "KAFKA_BROKERS"                    => kafka.brokers, Guide, "Kafka brokers (comma-separated in env). Empty: in-process bus.";
    "KAFKA_GROUP_ID"                   => kafka.group_id, GuideEnv, "Consumer group of the group-message fan-out.";
    "KAFKA_PRODUCER_TIMEOUT"           => kafka.producer.timeout, Guide, "Timeout of a produce request.";
    "KAFKA_PRODUCER_RETRY_MAX"         => kafka.producer.retry_max, Guide, "Retries of a failed produce request.";
    "KAFKA_PRODUCER_BATCH_SIZE"        => kafka.producer.batch_size, Guide, "Bytes batched per partition.";
    "KAFKA_CONSUMER_GROUP_ID"          => kafka.consumer.group_id, Guide, "Consumer group of the offline worker.";
    "KAFKA_CONSUMER_AUTO_OFFSET_RESET" => kafka.consumer.auto_offset_reset, Guide, "Where a group without a committed offset starts.";
    "KAFKA_CONSUMER_SESSION_TIMEOUT"   => kafka.consumer.session_timeout, Guide, "Consumer session timeout: how long a killed node's partitions wait before they move (the fan-out's longest stall). Stock Kafka brokers refuse less than 6s (group.min.session.timeout.ms).";
    "KAFKA_CONSUMER_FETCH_WAIT_MAX"    => kafka.consumer.fetch_wait_max, Project, "The longest a fetch waits at the broker for records (librdkafka fetch.wait.max.ms), 1ms-5m. Each idle consumer fetches once per wait, so a short one costs the broker CPU; a stock Kafka broker answers as soon as a record arrives, so 500ms there costs no latency. The default suits a broker that holds every fetch for the whole wait (tansu, the test setup): group messages wait up to it.";
    "KAFKA_CONSUMER_ASSIGNMENT_STRATEGY" => kafka.consumer.assignment_strategy, Project, "Partition assignment of every consumer group (librdkafka partition.assignment.strategy): cooperative-sticky moves only the partitions that change owner; range or roundrobin (comma-separated, eager) stop every member at each rebalance. All nodes of a group must share one kind.";
    "KAFKA_TOPIC_GROUP_MSG"            => kafka.topics.group_msg, Guide, "Topic of group messages.";
    "KAFKA_TOPIC_OFFLINE_MSG"          => kafka.topics.offline_msg, Guide, "Topic of offline-message events.";
    "KAFKA_TOPIC_MEMBERSHIP_CHANGE"    => kafka.topics.membership_change, Guide, "Topic of group membership changes.";
    "KAFKA_TOPIC_CONTENT_AUDIT"        => kafka.topics.content_audit, Project, "Topic of the sensitive-word filter's audit records (FILTER_ACTION=audit), keyed by conversation.";
    "KAFKA_SECURITY_PROTOCOL"          => kafka.security_protocol, Project, "librdkafka security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.";
    "KAFKA_SSL_CA_FILE"                => kafka.ssl_ca_file, Project, "PEM CA bundle the brokers' certificates must chain to (ssl.ca.location), with ssl or sasl_ssl. Empty: the system's roots.";
    "KAFKA_SASL_MECHANISM"             => kafka.sasl_mechanism, Project, "SASL mechanism with sasl_plaintext or sasl_ssl: plain, scram-sha-256 or scram-sha-512.";
    "KAFKA_SASL_USERNAME"              => kafka.sasl_username, Project, "SASL user name; required with a sasl_* protocol.";
    "KAFKA_SASL_PASSWORD"              => kafka.sasl_password, Project, "SASL password.";
    "KAFKA_REPLICATION_FACTOR"         => kafka.replication_factor, Project, "Replicas of each topic this service creates. 0: the broker's default.replication.factor. A topic found with fewer replicas is warned about at start. Production: 3.";
    "KAFKA_MIN_INSYNC_REPLICAS"        => kafka.min_insync_replicas, Project, "min.insync.replicas of each topic this service creates: with acks=all, a publish is refused when fewer replicas are in sync. 0: the broker's default. Production: 2.";

    "ETCD_ENDPOINTS"                   => etcd.endpoints, GuideEnv, "etcd endpoints (comma-separated in env). Empty: in-process registry. https:// endpoints speak TLS (all or none).";
    "ETCD_TLS_CA_FILE"                 => etcd.tls_ca_file, Project, "PEM CA bundle that etcd's certificate must chain to, with https:// endpoints. Empty: the system's roots.";

    "OFFLINE_WORKER_ENABLED"           => offline_worker.enabled, Guide, "Run the offline worker in this process.";
    "OFFLINE_WORKER_BATCH_SIZE"        => offline_worker.batch_size, Guide, "Events per batch.";
    "OFFLINE_WORKER_BATCH_TIMEOUT"     => offline_worker.batch_timeout, Guide, "Longest wait to fill a batch.";
    "OFFLINE_WORKER_CONCURRENCY"       => offline_worker.concurrency, Guide, "Batches processed at once.";
    "OFFLINE_WORKER_OUTBOX_GRACE"      => offline_worker.outbox_grace, Project, "How old a route outbox row (a committed batch whose offline entries are not settled) must be before any node records all its entries: a node killed mid-batch leaves its rows for this long. Keep it above MAX_RETRY_ATTEMPTS x RETRY_TIMEOUT, or a slow push can also give an online user an entry.";

    "GROUP_MAX_MEMBERS"                => group.max_members, Project, "Most members a group may have.";
    "GROUP_READ_RECEIPT_DETAILS_MAX"   => group.read_receipt_details_max, Project, "Groups up to this size tell who read a message; larger ones only how many.";

    "FILTER_ENABLED"                   => filter.enabled, Guide, "Check text messages (content_type empty or text/*) against the sensitive-word list.";
    "FILTER_ACTION"                    => filter.action, Guide, "block refuses (FAILED_PRECONDITION, reason content_blocked), replace masks the matched characters with *, audit delivers unchanged and records the match (content_audit table and topic).";
    "FILTER_WORDLIST_PATH"             => filter.wordlist_path, Guide, "Word list: one entry per line, UTF-8, # comments; at most 1,000,000 entries and 64 MiB; reloaded on SIGHUP and when the file changes. Required when the filter is enabled.";

    "ENCRYPTION_ENABLED"               => encryption.enabled, Guide, "Encrypt message bodies at rest (store and Kafka) with envelope encryption: docs/encryption.md.";
    "KMS_ENDPOINT"                     => encryption.kms_endpoint, Guide, "KMS speaking the AWS KMS API: a URL, or host:port for plain HTTP. Empty: a local master key in server.data_dir. Credentials: the standard AWS_* variables.";
    "KMS_KEY_ID"                       => encryption.kms_key_id, Guide, "KMS key id; required with kms_endpoint.";
    "DEK_CACHE_TTL"                    => encryption.dek_cache_ttl, Guide, "How long an unwrapped data key stays in memory: with the KMS down, sends and reads go on this long.";
    "KEY_ROTATION_DAYS"                => encryption.key_rotation_days, Guide, "Age in days at which a new data key becomes active (0: never by age); old keys stay readable.";

    "GATEWAY_SERVICE_ADDR"             => services.gateway.addr, Guide, "Gateway Service gRPC host:port. Empty: built-in gateway.";
    "GATEWAY_SERVICE_TIMEOUT"          => services.gateway.timeout, GuideYaml, "Deadline of a call to the Gateway Service.";
    "USER_SERVICE_ADDR"                => services.user.addr, Guide, "User Service gRPC host:port. Empty: built-in user directory.";
    "USER_SERVICE_TIMEOUT"             => services.user.timeout, GuideYaml, "Deadline of a call to the User Service.";
    "IM_SERVICE_ADDR"                  => services.im.addr, Project, "IM Service gRPC host:port that an im-gateway process forwards client requests to.";
    "IM_SERVICE_TIMEOUT"               => services.im.timeout, Project, "Deadline of a call from im-gateway to the IM Service.";

    "METRICS_ENABLED"                  => observability.metrics_enabled, Guide, "Serve Prometheus metrics.";
    "METRICS_PORT"                     => observability.metrics_port, Guide, "Port of the dedicated metrics listener (/metrics is also on the HTTP port).";
    "OTEL_EXPORTER_OTLP_ENDPOINT"      => observability.otel_endpoint, Guide, "OTLP gRPC endpoint (http:// or https://) for traces. Empty: no spans are made or exported.";
    "OTEL_TRACES_SAMPLER"              => observability.otel_traces_sampler, Project, "Which traces are kept (OpenTelemetry's names). parentbased_*: a process follows the decision of the trace it joins; the gateway decides for each message.";
    "OTEL_TRACES_SAMPLER_ARG"          => observability.otel_traces_sampler_arg, Project, "Share of traces kept by traceidratio samplers, 0 to 1 (0.01: one message in a hundred).";
    "OTEL_SERVICE_NAME"                => observability.otel_service_name, Project, "service.name of this process's spans. Empty: the binary's name (im-service, im-gateway, im-user).";
    "LOG_LEVEL"                        => observability.log_level, Guide, "Lowest level logged. The libraries that see message bodies, tokens or keys (WebSocket, HTTP/2, gRPC, KMS client) log at INFO at most, whatever this or RUST_LOG says.";
    "LOG_FORMAT"                       => observability.log_format, Guide, "json for collectors, text for people.";

    "JWT_SECRET"                       => auth.jwt_secret, Project, "HS256 key of client tokens, at least 32 bytes, the same in every process. Empty: generated once in server.data_dir (one process only: required when a service address is set).";
    "TOKEN_TTL"                        => auth.token_ttl, Project, "Lifetime of an issued token.";
    "AUTH_PASSWORD_MEMORY_KIB"         => auth.password_memory_kib, Project, "argon2id memory cost of a password hash, in KiB (8 to 1048576); each sign-in uses this much for ~20-40 ms.";
    "AUTH_PASSWORD_ITERATIONS"         => auth.password_iterations, Project, "argon2id passes over that memory (1 to 16).";
    "AUTH_PASSWORD_PARALLELISM"        => auth.password_parallelism, Project, "argon2id lanes (1 to 16).";
    "LIMIT_LOGIN_ATTEMPTS_PER_MINUTE"  => auth.login_attempts_per_minute, Project, "Sign-in attempts per user name and minute on one user directory; beyond, sign-in is refused as rate limited (after the same work) until the attempts are earned back. At least 1.";
    "LIMIT_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE" => auth.login_attempts_per_address_per_minute, Project, "POST /login attempts per client address (IPv6: its /64) and minute on one gateway; beyond, 429 rate_limited with Retry-After. At least 1.";
    "AUTH_TRUSTED_PROXIES"             => auth.trusted_proxies, Project, "Reverse proxies in front of the gateways (addresses or CIDR blocks, comma-separated in env): a POST /login from one of them is counted against the client its X-Forwarded-For names (the last address not itself a trusted proxy). Empty: the TCP peer is the client, and X-Forwarded-For is ignored.";

    "TLS_CERT_FILE"                    => tls.cert_file, Project, "PEM certificate chain. With tls.key_file, every listener of this process speaks TLS (wss://, gRPC over TLS, https:// probes and metrics) and its calls to the other services use TLS.";
    "TLS_KEY_FILE"                     => tls.key_file, Project, "PEM private key of tls.cert_file (PKCS#8, PKCS#1 or SEC1).";
    "TLS_CA_FILE"                      => tls.ca_file, Project, "PEM CA bundle trusted for calls to the other services (nodes, gateways, user service); set alone, it turns TLS on for those calls only. Empty: the system's roots.";
    "TLS_SERVER_NAME"                  => tls.server_name, Project, "Name the other services' certificates must carry (useful when they are called at pod IPs). Empty: the host of the address called.";
    "TLS_RELOAD_INTERVAL"              => tls.reload_interval, Project, "How often the certificate and key files are read again; a renewed pair is served to new connections without a restart, a broken one is logged and the last good pair kept.";
}

/// One line of comment per top-level section of the example config.
pub(crate) static SECTIONS: &[(&str, &str)] = &[
    ("server", "Listeners and limits."),
    ("limits", "What one client may hold or do: connections, timeouts, queued bytes, rates (project addition)."),
    ("cache", "What the in-memory caches may hold; each only speeds things up (project addition)."),
    ("database", "Message store. Empty host: embedded SQLite file in server.data_dir; set it for MySQL."),
    ("redis", "Seq allocator and dedup cache. Empty addr: in-process; set it for Redis."),
    ("sequence", "Seq ceilings (DESIGN.md §4)."),
    ("kafka", "Message bus. No brokers: in-process bus, durable through the store; set them for Kafka."),
    ("etcd", "User-to-gateway registry. No endpoints: in-process; set them for etcd."),
    ("offline_worker", "Records undelivered messages for offline delivery and unread counts."),
    ("group", "Group limits (project addition)."),
    ("filter", "Sensitive-word filter."),
    ("encryption", "Encryption of message bodies at rest."),
    ("services", "Gateway and User Service. Empty addr: the copy built into this process."),
    ("observability", "Metrics, traces and logs."),
    ("auth", "Client tokens (project addition)."),
    ("tls", "TLS on the listeners and between the services (project addition)."),
];

pub(crate) fn by_path(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.path == path)
}

/// Whether `path` is a mapping that holds keys, such as `kafka` or `kafka.producer`.
pub(crate) fn is_section(path: &str) -> bool {
    KEYS.iter().any(|key| key.path.strip_prefix(path).is_some_and(|rest| rest.starts_with('.')))
}

/// The names directly under `prefix` (`""` for the top level).
pub(crate) fn children(prefix: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = KEYS
        .iter()
        .filter_map(|key| {
            let rest =
                if prefix.is_empty() { Some(key.path) } else { key.path.strip_prefix(prefix)?.strip_prefix('.') };
            rest.map(|rest| rest.split('.').next().unwrap_or(rest))
        })
        .collect();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Every environment variable of the guide's "Configuration Parameters" section.
    const GUIDE_ENV: &[&str] = &[
        "SERVER_GRPC_PORT",
        "SERVER_HTTP_PORT",
        "MAX_MESSAGE_SIZE",
        "MAX_RETRY_ATTEMPTS",
        "RETRY_TIMEOUT",
        "DB_HOST",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_MAX_OPEN_CONNS",
        "DB_MAX_IDLE_CONNS",
        "DB_CONN_MAX_LIFETIME",
        "DB_CONN_TIMEOUT",
        "DB_READ_TIMEOUT",
        "DB_WRITE_TIMEOUT",
        "REDIS_ADDR",
        "REDIS_PASSWORD",
        "REDIS_DB",
        "REDIS_POOL_SIZE",
        "REDIS_MIN_IDLE_CONNS",
        "REDIS_DIAL_TIMEOUT",
        "REDIS_READ_TIMEOUT",
        "REDIS_WRITE_TIMEOUT",
        "SEQUENCE_SNAPSHOT_INTERVAL",
        "KAFKA_BROKERS",
        "KAFKA_GROUP_ID",
        "KAFKA_PRODUCER_TIMEOUT",
        "KAFKA_PRODUCER_RETRY_MAX",
        "KAFKA_PRODUCER_BATCH_SIZE",
        "KAFKA_CONSUMER_GROUP_ID",
        "KAFKA_CONSUMER_AUTO_OFFSET_RESET",
        "KAFKA_CONSUMER_SESSION_TIMEOUT",
        "KAFKA_TOPIC_GROUP_MSG",
        "KAFKA_TOPIC_OFFLINE_MSG",
        "KAFKA_TOPIC_MEMBERSHIP_CHANGE",
        "ETCD_ENDPOINTS",
        "GATEWAY_SERVICE_ADDR",
        "USER_SERVICE_ADDR",
        "KMS_ENDPOINT",
        "KMS_KEY_ID",
        "OFFLINE_WORKER_ENABLED",
        "OFFLINE_WORKER_BATCH_SIZE",
        "OFFLINE_WORKER_BATCH_TIMEOUT",
        "OFFLINE_WORKER_CONCURRENCY",
        "FILTER_ENABLED",
        "FILTER_ACTION",
        "FILTER_WORDLIST_PATH",
        "ENCRYPTION_ENABLED",
        "DEK_CACHE_TTL",
        "KEY_ROTATION_DAYS",
        "METRICS_ENABLED",
        "METRICS_PORT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "LOG_LEVEL",
        "LOG_FORMAT",
    ];

    #[test]
    fn every_guide_variable_has_a_row_marked_as_the_guides() {
        for env in GUIDE_ENV {
            let key = KEYS.iter().find(|key| key.env == *env).unwrap_or_else(|| panic!("{env} has no row"));
            assert!(matches!(key.origin, Origin::Guide | Origin::GuideEnv), "{env} is the guide's");
        }
        for key in KEYS.iter().filter(|key| matches!(key.origin, Origin::Guide | Origin::GuideEnv)) {
            assert!(GUIDE_ENV.contains(&key.env), "{} is not in the guide", key.env);
        }
    }

    #[test]
    fn names_are_unique_and_sections_contiguous() {
        let envs: HashSet<_> = KEYS.iter().map(|key| key.env).collect();
        let paths: HashSet<_> = KEYS.iter().map(|key| key.path).collect();
        assert_eq!(envs.len(), KEYS.len());
        assert_eq!(paths.len(), KEYS.len());
        let sections: Vec<&str> = KEYS.iter().map(|key| key.path.split('.').next().unwrap_or_default()).collect();
        let mut seen = Vec::new();
        for section in sections {
            if seen.last() != Some(&section) {
                assert!(!seen.contains(&section), "rows of {section} are not together");
                seen.push(section);
            }
        }
        let documented: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
        assert_eq!(seen, documented);
    }

    #[test]
    fn sections_and_children() {
        assert!(is_section("kafka"));
        assert!(is_section("kafka.producer"));
        assert!(!is_section("kafka.brokers"));
        assert!(!is_section("kaf"));
        assert_eq!(
            children("kafka"),
            [
                "brokers",
                "group_id",
                "producer",
                "consumer",
                "topics",
                "security_protocol",
                "ssl_ca_file",
                "sasl_mechanism",
                "sasl_username",
                "sasl_password",
                "replication_factor",
                "min_insync_replicas"
            ]
        );
        assert_eq!(children("").len(), SECTIONS.len());
    }
}
