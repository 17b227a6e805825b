//! Checks on the merged configuration: ranges, and rules that involve more than one key. Each problem is
//! reported under the key an operator has to change. Messages never quote a secret.

use std::net::IpAddr;
use std::time::Duration;

use crate::keys;
use crate::schema::{ASSIGNMENT_STRATEGIES, COOPERATIVE_STICKY, CacheConfig, Config, DbTlsMode, RedisConfig};

/// The largest `server.max_message_size`: bigger bodies belong in object storage, not in a message.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = 1024 * 1024;

/// Message ids carry the node id in 10 bits (see im-service's `msg_id`).
pub const MAX_NODE_ID: u16 = 1023;

/// The longest `database.message_retention_days`: 100 years. Longer is a
/// typo; forever is 0.
pub const MAX_MESSAGE_RETENTION_DAYS: u32 = 36_500;

/// HS256 wants a key at least as long as its 256-bit output.
pub const MIN_JWT_SECRET_LEN: usize = 32;
/// Fewest bits a configured JWT secret must carry, as estimated from its
/// own byte frequencies (length × Shannon entropy per byte): 32 random
/// bytes in hex carry about 128, "a" × 32 none, "ab" × 16 32. A rough
/// estimate, so a low bar: it refuses keys typed by hand, not weak ones
/// that look random.
pub const MIN_JWT_SECRET_BITS: f64 = 96.0;

/// [`MIN_JWT_SECRET_BITS`]'s estimate of `secret`.
fn estimated_bits(secret: &[u8]) -> f64 {
    let mut counts = [0usize; 256];
    for &byte in secret {
        counts[usize::from(byte)] += 1;
    }
    let len = secret.len() as f64;
    let per_byte: f64 = counts.iter().filter(|&&n| n > 0).map(|&n| n as f64 / len).map(|p| p * (1.0 / p).log2()).sum();
    per_byte * len
}

pub(crate) fn validate(config: &Config) -> Vec<(&'static str, String)> {
    let mut checks = Checks(Vec::new());
    server(&mut checks, config);
    limits(&mut checks, config);
    cache(&mut checks, &config.cache);
    dependencies(&mut checks, config);
    features(&mut checks, config);
    tls(&mut checks, config);
    checks.0
}

struct Checks(Vec<(&'static str, String)>);

impl Checks {
    fn fail(&mut self, path: &'static str, message: impl Into<String>) {
        debug_assert!(keys::by_path(path).is_some(), "{path} is not a config key");
        self.0.push((path, message.into()));
    }

    fn positive(&mut self, path: &'static str, value: u64) {
        if value == 0 {
            self.fail(path, "must be at least 1");
        }
    }

    fn within(&mut self, path: &'static str, value: u64, min: u64, max: u64) {
        if !(min..=max).contains(&value) {
            self.fail(path, format!("must be from {min} to {max}"));
        }
    }

    fn nonzero_duration(&mut self, path: &'static str, value: Duration) {
        if value.is_zero() {
            self.fail(path, "must be longer than 0");
        }
    }

    fn not_empty(&mut self, path: &'static str, value: &str, why: &str) {
        if value.is_empty() {
            self.fail(path, format!("must not be empty {why}"));
        }
    }
}

fn cache(checks: &mut Checks, cache: &CacheConfig) {
    checks.positive("cache.dedup_entries", cache.dedup_entries as u64);
    checks.positive("cache.group_members", cache.group_members as u64);
    // Below a few pages SQLite's cache thrashes on every commit.
    for (path, bytes) in [
        ("cache.sqlite_writer_bytes", cache.sqlite_writer_bytes),
        ("cache.sqlite_readers_bytes", cache.sqlite_readers_bytes),
    ] {
        if bytes < MIN_SQLITE_CACHE_BYTES {
            checks.fail(path, format!("must be at least {MIN_SQLITE_CACHE_BYTES} (1 MiB)"));
        }
    }
}

/// The smallest SQLite page cache accepted.
const MIN_SQLITE_CACHE_BYTES: usize = 1024 * 1024;
/// librdkafka refuses a `fetch.wait.max.ms` above 300,000.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(300);
/// The longest `server.commit_window`: past it the wait costs more latency
/// than the fsyncs it saves are worth.
const MAX_COMMIT_WINDOW: Duration = Duration::from_millis(10);

fn limits(checks: &mut Checks, config: &Config) {
    let limits = &config.limits;
    checks.positive("limits.connections", limits.connections as u64);
    checks.positive("limits.pending_per_ip", limits.pending_per_ip as u64);
    checks.positive("limits.connections_per_user", limits.connections_per_user as u64);
    checks.nonzero_duration("limits.handshake_timeout", limits.handshake_timeout);
    checks.nonzero_duration("limits.ws_ping_interval", limits.ws_ping_interval);
    // One reply must fit, or a client could never get a sync page.
    let page = config.server.sync_page_max_bytes + config.server.max_message_size;
    if limits.outbound_bytes < page {
        checks.fail(
            "limits.outbound_bytes",
            format!("must be at least server.sync_page_max_bytes + server.max_message_size ({page}): one sync reply must fit"),
        );
    }
    // A byte limit below one message would refuse every largest message.
    if limits.user_bytes_per_second != 0 && limits.user_bytes_per_second < config.server.max_message_size {
        checks.fail(
            "limits.user_bytes_per_second",
            format!("must be 0 (no limit) or at least server.max_message_size ({})", config.server.max_message_size),
        );
    }
    // A live client answers pings; the idle timeout must leave room for two.
    if limits.idle_timeout < limits.ws_ping_interval * 2 {
        checks.fail(
            "limits.idle_timeout",
            format!("must be at least twice limits.ws_ping_interval ({:?})", limits.ws_ping_interval * 2),
        );
    }
}

fn server(checks: &mut Checks, config: &Config) {
    let server = &config.server;
    let cluster = &server.cluster;
    if cluster.is_empty()
        || cluster.len() > 64
        || !cluster.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        checks.fail("server.cluster", "must be 1-64 letters, digits, '-' or '_'");
    }
    checks.nonzero_duration("server.sync_gap_grace", server.sync_gap_grace);
    checks.positive("server.sync_page_max_bytes", server.sync_page_max_bytes as u64);
    if server.commit_window > MAX_COMMIT_WINDOW {
        checks.fail("server.commit_window", "at most 10ms: every send of a small batch waits it");
    }
    // A commit may finish up to conn_timeout + write_timeout after its seqs
    // were allocated; a shorter grace would let sync step over a seq that is
    // still being written.
    let database = &config.database;
    if !database.host.is_empty() && server.sync_gap_grace <= database.conn_timeout + database.write_timeout {
        checks.fail(
            "server.sync_gap_grace",
            format!(
                "must be longer than database.conn_timeout + database.write_timeout ({:?})",
                database.conn_timeout + database.write_timeout
            ),
        );
    }
    if server.node_id > MAX_NODE_ID {
        checks.fail("server.node_id", format!("must be at most {MAX_NODE_ID} (it is 10 bits of every message id)"));
    }
    let observability = &config.observability;
    for (path, port) in [
        ("server.grpc_port", server.grpc_port),
        ("server.http_port", server.http_port),
        ("server.ws_port", server.ws_port),
        ("observability.metrics_port", observability.metrics_port),
    ] {
        if port == 0 {
            checks.fail(path, "must be a port from 1 to 65535");
        }
    }
    // Only listeners this process opens must differ: the WebSocket port is the built-in gateway's.
    let mut listeners = vec![("server.grpc_port", server.grpc_port), ("server.http_port", server.http_port)];
    if config.builtin_gateway() {
        listeners.push(("server.ws_port", server.ws_port));
    }
    if observability.metrics_enabled {
        listeners.push(("observability.metrics_port", observability.metrics_port));
    }
    for (index, &(path, port)) in listeners.iter().enumerate() {
        if let Some(&(earlier, _)) = listeners[..index].iter().find(|(_, other)| *other == port && port != 0) {
            checks.fail(path, format!("port {port} is also {earlier}; each listener needs its own port"));
        }
    }

    if !(1..=MAX_MESSAGE_SIZE_LIMIT).contains(&server.max_message_size) {
        checks.fail(
            "server.max_message_size",
            format!("must be from 1 to {MAX_MESSAGE_SIZE_LIMIT} bytes (1 MiB), found {}", server.max_message_size),
        );
    }
    checks.nonzero_duration("server.retry_timeout", server.retry_timeout);
    if !is_host(&server.listen_host) {
        checks.fail(
            "server.listen_host",
            format!("expected an IP address or host name without a port, found {:?}", server.listen_host),
        );
    }
    if server.data_dir.as_os_str().is_empty() {
        checks.fail("server.data_dir", "must not be empty");
    }
}

fn dependencies(checks: &mut Checks, config: &Config) {
    let database = &config.database;
    if config.uses_mysql() {
        checks.not_empty("database.name", &database.name, "when database.host is set");
        checks.not_empty("database.user", &database.user, "when database.host is set");
    }
    checks.positive("database.max_open_conns", database.max_open_conns.into());
    if database.max_open_conns > 0 && database.max_idle_conns > database.max_open_conns {
        checks.fail(
            "database.max_idle_conns",
            format!("{} is more than database.max_open_conns ({})", database.max_idle_conns, database.max_open_conns),
        );
    }
    checks.nonzero_duration("database.conn_timeout", database.conn_timeout);
    checks.nonzero_duration("database.read_timeout", database.read_timeout);
    checks.nonzero_duration("database.write_timeout", database.write_timeout);
    if database.message_retention_days > MAX_MESSAGE_RETENTION_DAYS {
        checks.fail(
            "database.message_retention_days",
            format!("must be at most {MAX_MESSAGE_RETENTION_DAYS} (100 years); 0 keeps messages forever"),
        );
    }

    let redis = &config.redis;
    checks.positive("redis.pool_size", redis.pool_size.into());
    if redis.pool_size > 0 && redis.min_idle_conns > redis.pool_size {
        checks.fail(
            "redis.min_idle_conns",
            format!("{} is more than redis.pool_size ({})", redis.min_idle_conns, redis.pool_size),
        );
    }
    checks.nonzero_duration("redis.dial_timeout", redis.dial_timeout);
    checks.nonzero_duration("redis.read_timeout", redis.read_timeout);
    checks.nonzero_duration("redis.write_timeout", redis.write_timeout);
    sentinels(checks, redis);

    checks.positive("sequence.snapshot_interval", config.sequence.snapshot_interval);

    // Topic and group names are checked in embedded mode too: the in-process bus uses the same names.
    let kafka = &config.kafka;
    checks.not_empty("kafka.group_id", &kafka.group_id, "");
    checks.not_empty("kafka.consumer.group_id", &kafka.consumer.group_id, "");
    if !kafka.group_id.is_empty() && kafka.group_id == kafka.consumer.group_id {
        checks.fail(
            "kafka.consumer.group_id",
            "must differ from kafka.group_id: the fan-out and the offline worker are separate consumer groups",
        );
    }
    checks.nonzero_duration("kafka.producer.timeout", kafka.producer.timeout);
    checks.positive("kafka.producer.batch_size", kafka.producer.batch_size as u64);
    checks.nonzero_duration("kafka.consumer.session_timeout", kafka.consumer.session_timeout);
    checks.nonzero_duration("kafka.consumer.fetch_wait_max", kafka.consumer.fetch_wait_max);
    if kafka.consumer.fetch_wait_max > MAX_FETCH_WAIT {
        checks.fail("kafka.consumer.fetch_wait_max", "at most 5m (librdkafka's fetch.wait.max.ms limit)");
    }
    if kafka.replication_factor != 0 && kafka.min_insync_replicas > kafka.replication_factor {
        checks.fail(
            "kafka.min_insync_replicas",
            format!(
                "{} is more than kafka.replication_factor ({}): no publish could succeed",
                kafka.min_insync_replicas, kafka.replication_factor
            ),
        );
    }
    if let Err(message) = check_assignment_strategy(&kafka.consumer.assignment_strategy) {
        checks.fail("kafka.consumer.assignment_strategy", message);
    }
    let topics = [
        ("kafka.topics.group_msg", &kafka.topics.group_msg),
        ("kafka.topics.offline_msg", &kafka.topics.offline_msg),
        ("kafka.topics.membership_change", &kafka.topics.membership_change),
        ("kafka.topics.content_audit", &kafka.topics.content_audit),
    ];
    for (index, &(path, topic)) in topics.iter().enumerate() {
        if let Err(message) = check_topic(topic) {
            checks.fail(path, message);
        } else if let Some(&(earlier, _)) = topics[..index].iter().find(|(_, other)| *other == topic) {
            checks.fail(path, format!("topic {topic:?} is also {earlier}"));
        }
    }

    checks.nonzero_duration("services.gateway.timeout", config.services.gateway.timeout);
    checks.nonzero_duration("services.user.timeout", config.services.user.timeout);
    checks.nonzero_duration("services.im.timeout", config.services.im.timeout);
}

/// Sentinel discovery replaces `redis.addr`; both set would leave it unclear which Redis the seq counters
/// live on.
fn sentinels(checks: &mut Checks, redis: &RedisConfig) {
    if redis.sentinels.is_empty() {
        if !redis.master_name.is_empty() {
            checks.fail("redis.sentinels", "must name the Sentinels when redis.master_name is set");
        }
        return;
    }
    if !redis.addr.is_empty() {
        checks.fail("redis.addr", "must be empty when redis.sentinels is set: the Sentinels name the primary");
    }
    checks.not_empty("redis.master_name", &redis.master_name, "when redis.sentinels is set");
    if redis.tls {
        checks.fail("redis.tls", "is not supported with redis.sentinels yet");
    }
    for sentinel in &redis.sentinels {
        let port = sentinel.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
        if port.and_then(|port| port.parse::<u16>().ok()).is_none() {
            checks.fail("redis.sentinels", format!("{sentinel:?} is not host:port"));
        }
    }
}

fn features(checks: &mut Checks, config: &Config) {
    let worker = &config.offline_worker;
    checks.positive("offline_worker.batch_size", worker.batch_size as u64);
    checks.positive("offline_worker.concurrency", worker.concurrency as u64);
    checks.nonzero_duration("offline_worker.batch_timeout", worker.batch_timeout);
    checks.nonzero_duration("offline_worker.outbox_grace", worker.outbox_grace);
    checks.positive("group.max_members", config.group.max_members as u64);

    if config.filter.enabled && config.filter.wordlist_path.is_none() {
        checks.fail("filter.wordlist_path", "is required when filter.enabled is true");
    }

    let encryption = &config.encryption;
    // Without a KMS endpoint, encryption uses a local master key in data_dir (DESIGN.md §1, embedded
    // column); with one, the key id is what the KMS needs.
    if encryption.enabled && !encryption.kms_endpoint.is_empty() && encryption.kms_key_id.is_empty() {
        checks.fail("encryption.kms_key_id", "is required when encryption.kms_endpoint is set");
    }
    checks.nonzero_duration("encryption.dek_cache_ttl", encryption.dek_cache_ttl);
    checks.positive("encryption.key_rotation_days", encryption.key_rotation_days.into());

    let otel = &config.observability.otel_endpoint;
    let has_scheme = otel.starts_with("http://") || otel.starts_with("https://");
    if !otel.is_empty() && !has_scheme {
        checks.fail("observability.otel_endpoint", format!("must start with http:// or https://, found {otel:?}"));
    }

    let auth = &config.auth;
    let secret_len = auth.jwt_secret.expose().len();
    if secret_len != 0 && secret_len < MIN_JWT_SECRET_LEN {
        checks.fail(
            "auth.jwt_secret",
            format!(
                "is {secret_len} bytes, at least {MIN_JWT_SECRET_LEN} are needed (or leave it empty to generate one)"
            ),
        );
    }
    let bits = estimated_bits(auth.jwt_secret.expose().as_bytes());
    if secret_len >= MIN_JWT_SECRET_LEN && bits < MIN_JWT_SECRET_BITS {
        checks.fail(
            "auth.jwt_secret",
            format!(
                "carries about {bits:.0} bits of entropy, at least {MIN_JWT_SECRET_BITS:.0} are needed: use a random \
                 value (e.g. `openssl rand -hex 32`)"
            ),
        );
    }
    checks.nonzero_duration("auth.token_ttl", auth.token_ttl);
    checks.within("auth.password_memory_kib", auth.password_memory_kib.into(), 8, 1024 * 1024);
    checks.within("auth.password_iterations", auth.password_iterations.into(), 1, 16);
    checks.within("auth.password_parallelism", auth.password_parallelism.into(), 1, 16);
    if auth.password_memory_kib < 8 * auth.password_parallelism {
        checks.fail("auth.password_memory_kib", "must be at least 8 KiB per lane (auth.password_parallelism)");
    }
    checks.positive("auth.login_attempts_per_minute", auth.login_attempts_per_minute.into());
    checks.positive("auth.login_attempts_per_address_per_minute", auth.login_attempts_per_address_per_minute.into());
    for entry in &auth.trusted_proxies {
        if let Err(error) = crate::schema::parse_network(entry) {
            checks.fail("auth.trusted_proxies", error);
        }
    }
    // A generated key is this process's own: the services would reject each
    // other's calls and the tokens the others issued.
    let services = &config.services;
    let remote = [&services.gateway.addr, &services.user.addr, &services.im.addr];
    if secret_len == 0 && remote.iter().any(|addr| !addr.is_empty()) {
        checks.fail(
            "auth.jwt_secret",
            "must be set (JWT_SECRET), the same in every process, when another service is reached over the network \
             (services.gateway.addr, services.user.addr or services.im.addr)",
        );
    }
}

fn tls(checks: &mut Checks, config: &Config) {
    let tls = &config.tls;
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => checks.fail("tls.key_file", "must be set with tls.cert_file"),
        (None, Some(_)) => checks.fail("tls.cert_file", "must be set with tls.key_file"),
        _ => {}
    }
    checks.nonzero_duration("tls.reload_interval", tls.reload_interval);

    let database = &config.database;
    if matches!(database.tls_mode, DbTlsMode::VerifyCa | DbTlsMode::VerifyIdentity) && database.tls_ca_file.is_none() {
        checks.fail("database.tls_ca_file", format!("must be set with database.tls_mode {}", database.tls_mode));
    }
    if config.redis.tls_ca_file.is_some() && !config.redis.tls {
        checks.fail("redis.tls", "must be true when redis.tls_ca_file is set");
    }

    let endpoints = &config.etcd.endpoints;
    let secure = endpoints.iter().filter(|endpoint| endpoint.starts_with("https://")).count();
    if secure != 0 && secure != endpoints.len() {
        checks.fail("etcd.endpoints", "must all be https:// or none: one connection speaks to every member");
    }
    if config.etcd.tls_ca_file.is_some() && secure == 0 {
        checks.fail("etcd.tls_ca_file", "is used with https:// etcd.endpoints only");
    }

    let kafka = &config.kafka;
    if kafka.security_protocol.uses_sasl() {
        checks.not_empty("kafka.sasl_username", &kafka.sasl_username, "with a sasl_* kafka.security_protocol");
    } else if !kafka.sasl_username.is_empty() || !kafka.sasl_password.is_empty() {
        checks.fail("kafka.security_protocol", "must be sasl_plaintext or sasl_ssl when a SASL user is set");
    }
    if kafka.ssl_ca_file.is_some() && !kafka.security_protocol.uses_tls() {
        checks.fail("kafka.security_protocol", "must be ssl or sasl_ssl when kafka.ssl_ca_file is set");
    }
}

fn is_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')))
}

/// Kafka's own rule for topic names.
/// A list librdkafka takes as `partition.assignment.strategy`: known
/// assignors, comma-separated, not mixing the cooperative one with eager ones
/// (librdkafka refuses that when the consumer is made, long after start-up).
fn check_assignment_strategy(list: &str) -> Result<(), String> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if let Some(unknown) = names.iter().find(|name| !ASSIGNMENT_STRATEGIES.contains(name)) {
        return Err(format!("{unknown:?} is not one of {}", ASSIGNMENT_STRATEGIES.join(", ")));
    }
    if names.len() > 1 && names.contains(&COOPERATIVE_STICKY) {
        return Err(format!("{COOPERATIVE_STICKY} cannot be mixed with eager assignors"));
    }
    Ok(())
}

fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!("a topic name has 1 to 249 characters, found {}", topic.len()));
    }
    if topic == "." || topic == ".." || !topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("invalid topic name {topic:?}: use letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret as an operator makes one.
    const TEST_SECRET: &str = "9c41e07b-3fa2-48d6-b15e-7a0d2c96f834";
    use crate::secret::Secret;

    fn problems(config: &Config) -> Vec<&'static str> {
        validate(config).into_iter().map(|(path, _)| path).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&Config::default()), vec![]);
    }

    #[test]
    fn sync_waits_longer_than_a_mysql_commit_can_take() {
        let mut config = Config::default();
        config.database.host = "db:3306".to_owned();
        assert_eq!(problems(&config), Vec::<&str>::new());
        config.server.sync_gap_grace = config.database.conn_timeout + config.database.write_timeout;
        assert_eq!(problems(&config), ["server.sync_gap_grace"]);
        // SQLite commits in one process: nothing to wait for across nodes.
        config.database.host.clear();
        assert_eq!(problems(&config), Vec::<&str>::new());
    }

    #[test]
    fn listeners_need_distinct_nonzero_ports() {
        let mut config = Config::default();
        config.server.http_port = config.server.grpc_port;
        config.observability.metrics_port = 0;
        assert_eq!(problems(&config), ["observability.metrics_port", "server.http_port"]);

        // The WebSocket port is not opened when the gateway runs elsewhere.
        let mut config = Config::default();
        config.server.ws_port = config.server.grpc_port;
        assert_eq!(problems(&config), ["server.ws_port"]);
        config.services.gateway.addr = "gateway:9093".to_owned();
        config.auth.jwt_secret = Secret::new(TEST_SECRET);
        assert_eq!(problems(&config), Vec::<&str>::new());

        let mut config = Config::default();
        config.observability.metrics_port = config.server.http_port;
        assert_eq!(problems(&config), ["observability.metrics_port"]);
        config.observability.metrics_enabled = false;
        assert_eq!(problems(&config), Vec::<&str>::new());
    }

    #[test]
    fn a_remote_service_needs_the_shared_jwt_secret() {
        for set_addr in [
            |c: &mut Config| c.services.gateway.addr = "gateway:9093".to_owned(),
            |c: &mut Config| c.services.user.addr = "user:9096".to_owned(),
            |c: &mut Config| c.services.im.addr = "im:9094".to_owned(),
        ] {
            let mut config = Config::default();
            set_addr(&mut config);
            assert_eq!(problems(&config), ["auth.jwt_secret"]);
            config.auth.jwt_secret = Secret::new(TEST_SECRET);
            assert_eq!(problems(&config), Vec::<&str>::new());
        }
    }

    #[test]
    fn node_id_fits_in_a_message_id() {
        let mut config = Config::default();
        config.server.node_id = MAX_NODE_ID;
        assert_eq!(problems(&config), Vec::<&str>::new());
        config.server.node_id = MAX_NODE_ID + 1;
        assert_eq!(problems(&config), ["server.node_id"]);
    }

    #[test]
    fn limits_and_positive_values() {
        let mut config = Config::default();
        config.server.max_message_size = MAX_MESSAGE_SIZE_LIMIT + 1;
        config.offline_worker.batch_size = 0;
        config.offline_worker.concurrency = 0;
        config.sequence.snapshot_interval = 0;
        config.database.max_idle_conns = 26;
        config.redis.read_timeout = Duration::ZERO;
        assert_eq!(
            problems(&config),
            [
                "server.max_message_size",
                "database.max_idle_conns",
                "redis.read_timeout",
                "sequence.snapshot_interval",
                "offline_worker.batch_size",
                "offline_worker.concurrency",
            ]
        );
    }

    #[test]
    fn message_retention_is_off_by_default_and_bounded() {
        let mut config = Config::default();
        assert_eq!(config.database.message_retention_days, 0);
        config.database.message_retention_days = MAX_MESSAGE_RETENTION_DAYS;
        assert_eq!(problems(&config), Vec::<&str>::new());
        config.database.message_retention_days = MAX_MESSAGE_RETENTION_DAYS + 1;
        assert_eq!(problems(&config), ["database.message_retention_days"]);
    }

    #[test]
    fn feature_requirements() {
        let mut config = Config::default();
        config.filter.enabled = true;
        config.encryption.enabled = true;
        assert_eq!(problems(&config), ["filter.wordlist_path"], "a local master key needs no KMS settings");
        config.encryption.kms_endpoint = "kms:8080".to_owned();
        assert_eq!(problems(&config), ["filter.wordlist_path", "encryption.kms_key_id"]);
        config.encryption.kms_key_id = Secret::new("key-1");
        config.filter.wordlist_path = Some("/etc/words.txt".into());
        assert_eq!(problems(&config), Vec::<&str>::new());
    }

    #[test]
    fn short_jwt_secret_is_rejected_without_showing_it() {
        let mut config = Config::default();
        config.auth.jwt_secret = Secret::new("hunter2");
        let found = validate(&config);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "auth.jwt_secret");
        assert!(!found[0].1.contains("hunter2"));
        config.auth.jwt_secret = Secret::new(TEST_SECRET);
        assert_eq!(validate(&config), vec![]);
    }

    #[test]
    fn a_jwt_secret_typed_by_hand_is_rejected_without_showing_it() {
        for weak in ["a".repeat(32), "ab".repeat(16), "abcd".repeat(10)] {
            let mut config = Config::default();
            config.auth.jwt_secret = Secret::new(weak.clone());
            let found = validate(&config);
            assert_eq!(found.len(), 1, "{weak}");
            assert_eq!(found[0].0, "auth.jwt_secret");
            assert!(found[0].1.contains("bits of entropy") && !found[0].1.contains(&weak), "{}", found[0].1);
        }
        // 32 random bytes in hex, as `openssl rand -hex 32` makes.
        assert!(estimated_bits(b"3f9a1c7e0b5d2486e1f03a9c7b5d2e8f41a6c09b7d3e5f2186a4c0e9b3d7f512") > 120.0);
    }

    #[test]
    fn names_and_endpoints() {
        let mut config = Config::default();
        config.server.listen_host = "0.0.0.0:8080".to_owned();
        config.kafka.topics.offline_msg = "group_msg".to_owned();
        config.kafka.topics.membership_change = "bad topic".to_owned();
        config.kafka.consumer.group_id = config.kafka.group_id.clone();
        config.observability.otel_endpoint = "collector:4317".to_owned();
        config.database.host = "mysql:3306".to_owned();
        config.database.user = String::new();
        assert_eq!(
            problems(&config),
            [
                "server.listen_host",
                "database.user",
                "kafka.consumer.group_id",
                "kafka.topics.offline_msg",
                "kafka.topics.membership_change",
                "observability.otel_endpoint",
            ]
        );
        for host in ["0.0.0.0", "::", "::1", "localhost", "im-1.internal"] {
            assert!(is_host(host), "{host}");
        }
        for host in ["", "[::1]", "a b", "host:80", "a..b"] {
            assert!(!is_host(host), "{host}");
        }
    }

    #[test]
    fn tls_settings_come_in_consistent_sets() {
        let mut config = Config::default();
        config.tls.cert_file = Some("/etc/im/tls.crt".into());
        config.tls.reload_interval = Duration::ZERO;
        config.database.tls_mode = DbTlsMode::VerifyIdentity;
        config.redis.tls_ca_file = Some("/etc/im/ca.pem".into());
        config.etcd.endpoints = vec!["https://etcd-0:2379".to_owned(), "http://etcd-1:2379".to_owned()];
        config.kafka.security_protocol = crate::KafkaSecurityProtocol::SaslSsl;
        assert_eq!(
            problems(&config),
            [
                "tls.key_file",
                "tls.reload_interval",
                "database.tls_ca_file",
                "redis.tls",
                "etcd.endpoints",
                "kafka.sasl_username"
            ]
        );

        let mut config = Config::default();
        config.etcd.endpoints = vec!["http://etcd-0:2379".to_owned()];
        config.etcd.tls_ca_file = Some("/etc/im/ca.pem".into());
        config.kafka.sasl_username = "im".to_owned();
        config.kafka.ssl_ca_file = Some("/etc/im/ca.pem".into());
        assert_eq!(problems(&config), ["etcd.tls_ca_file", "kafka.security_protocol", "kafka.security_protocol"]);

        let mut config = Config::default();
        config.tls.cert_file = Some("/etc/im/tls.crt".into());
        config.tls.key_file = Some("/etc/im/tls.key".into());
        config.database.tls_mode = DbTlsMode::VerifyCa;
        config.database.tls_ca_file = Some("/etc/im/ca.pem".into());
        config.redis.tls = true;
        config.etcd.endpoints = vec!["https://etcd-0:2379".to_owned()];
        config.kafka.security_protocol = crate::KafkaSecurityProtocol::SaslSsl;
        config.kafka.sasl_username = "im".to_owned();
        assert!(problems(&config).is_empty(), "{:?}", problems(&config));
        assert!(config.tls.serves_tls() && config.tls.calls_use_tls());
    }

    #[test]
    fn high_availability_settings_come_in_consistent_sets() {
        let mut config = Config::default();
        config.redis.master_name = "im".to_owned();
        config.kafka.replication_factor = 3;
        config.kafka.min_insync_replicas = 4;
        assert_eq!(problems(&config), ["redis.sentinels", "kafka.min_insync_replicas"]);

        let mut config = Config::default();
        config.redis.addr = "redis:6379".to_owned();
        config.redis.tls = true;
        config.redis.sentinels = vec!["sentinel-0:26379".to_owned(), "sentinel-1".to_owned(), ":26379".to_owned()];
        assert_eq!(
            problems(&config),
            ["redis.addr", "redis.master_name", "redis.tls", "redis.sentinels", "redis.sentinels"]
        );

        let mut config = Config::default();
        config.redis.sentinels = vec!["sentinel-0:26379".to_owned(), "[::1]:26379".to_owned()];
        config.redis.master_name = "im".to_owned();
        config.kafka.replication_factor = 3;
        config.kafka.min_insync_replicas = 2;
        assert!(problems(&config).is_empty(), "{:?}", problems(&config));
        assert!(config.uses_redis());
    }

    #[test]
    fn assignment_strategies() {
        for good in ["cooperative-sticky", "range", "range,roundrobin", "roundrobin, range"] {
            assert_eq!(check_assignment_strategy(good), Ok(()), "{good}");
        }
        for bad in ["", "sticky", "range,", "cooperative-sticky,range"] {
            assert!(check_assignment_strategy(bad).is_err(), "{bad:?}");
        }
        let mut config = Config::default();
        config.kafka.consumer.assignment_strategy = "uniform".to_owned();
        assert_eq!(problems(&config), ["kafka.consumer.assignment_strategy"]);
    }

    #[test]
    fn the_fetch_wait_is_between_a_millisecond_and_five_minutes() {
        let mut config = Config::default();
        for good in [Duration::from_millis(1), Duration::from_millis(500), MAX_FETCH_WAIT] {
            config.kafka.consumer.fetch_wait_max = good;
            assert!(problems(&config).is_empty(), "{good:?}: {:?}", problems(&config));
        }
        for bad in [Duration::ZERO, MAX_FETCH_WAIT + Duration::from_millis(1)] {
            config.kafka.consumer.fetch_wait_max = bad;
            assert_eq!(problems(&config), ["kafka.consumer.fetch_wait_max"], "{bad:?}");
        }
    }

    #[test]
    fn the_commit_window_is_off_or_at_most_ten_milliseconds() {
        let mut config = Config::default();
        for good in [Duration::ZERO, Duration::from_millis(1), MAX_COMMIT_WINDOW] {
            config.server.commit_window = good;
            assert!(problems(&config).is_empty(), "{good:?}: {:?}", problems(&config));
        }
        config.server.commit_window = MAX_COMMIT_WINDOW + Duration::from_micros(1);
        assert_eq!(problems(&config), ["server.commit_window"]);
    }
}
