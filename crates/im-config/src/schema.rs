//! The typed configuration. Field paths are the `config.yaml` keys: `Config.server.grpc_port` is
//! `server.grpc_port`, and the key table in `keys.rs` derives its YAML paths from these field paths, so
//! the two cannot drift apart.
//!
//! `Default` is the configuration with nothing configured: every dependency address is empty, which
//! selects the embedded backend (see [`crate::backends`]). The guide's sizes, timeouts and ports are
//! kept as they are.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::secret::Secret;

/// Everything the service binaries read at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub sequence: SequenceConfig,
    pub kafka: KafkaConfig,
    pub etcd: EtcdConfig,
    pub offline_worker: OfflineWorkerConfig,
    /// Project addition: group limits.
    pub group: GroupConfig,
    pub filter: FilterConfig,
    pub encryption: EncryptionConfig,
    pub services: ServicesConfig,
    pub observability: ObservabilityConfig,
    /// Project addition: the guide has no section for client authentication.
    pub auth: AuthConfig,
    /// Project addition: bounds on connections and what one client may hold.
    pub limits: LimitsConfig,
    /// Project addition: how much the in-memory caches may hold.
    pub cache: CacheConfig,
    /// Project addition: TLS on the listeners and on calls between the services.
    pub tls: TlsConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub grpc_port: u16,
    /// `/health`, `/ready` and `/metrics`.
    pub http_port: u16,
    /// Largest message body accepted, in bytes.
    pub max_message_size: usize,
    pub max_retry_attempts: u32,
    pub retry_timeout: Duration,
    /// Project addition: the address every listener binds to.
    pub listen_host: String,
    /// Project addition: WebSocket port of the built-in gateway.
    pub ws_port: u16,
    /// Project addition: standalone mode's files (see the `*_path` methods).
    pub data_dir: PathBuf,
    /// Project addition: this node's number, unique within a cluster.
    pub node_id: u16,
    /// Project addition: the name of this deployment, the namespace of its
    /// keys in Redis (`{cluster}:`) and etcd (`/{cluster}/`).
    pub cluster: String,
    /// Project addition: how long sync waits for a missing seq (another node
    /// may still be committing it) before showing the messages after it.
    pub sync_gap_grace: Duration,
    /// Project addition: most body bytes in one sync page (at least one
    /// message is always returned).
    pub sync_page_max_bytes: usize,
    /// Project addition: free bytes the disk under `data_dir` must keep for
    /// a SQLite store to be ready.
    pub data_dir_min_free_bytes: u64,
    /// Project addition: how long, under load, a commit of fewer than four
    /// sends waits for more (0 turns it off).
    pub commit_window: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_port: 9094,
            http_port: 8094,
            max_message_size: 10 * 1024,
            max_retry_attempts: 3,
            retry_timeout: Duration::from_secs(5),
            // Loopback: an unconfigured process must not be reachable from the network.
            listen_host: "127.0.0.1".to_owned(),
            ws_port: 8093,
            data_dir: PathBuf::from("./data"),
            node_id: 1,
            cluster: "im".to_owned(),
            sync_gap_grace: Duration::from_secs(45),
            sync_page_max_bytes: 1024 * 1024,
            data_dir_min_free_bytes: 64 * 1024 * 1024,
            commit_window: Duration::from_millis(1),
        }
    }
}

/// Bounds on connections, per process, per address, per user and per
/// connection: no client can hold more than these (DESIGN.md G10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connections one process holds at once, over all its listeners;
    /// lowered at start to what the open-file limit allows.
    pub connections: usize,
    /// Connections from one address that have not finished their handshake
    /// (request headers) at once.
    pub pending_per_ip: usize,
    /// Time from accept to the end of the first request's headers.
    pub handshake_timeout: Duration,
    /// A WebSocket or HTTP connection that sends nothing for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// How often the gateway pings an open WebSocket (its pong keeps the
    /// connection from going idle).
    pub ws_ping_interval: Duration,
    /// WebSocket connections of one user on one gateway.
    pub connections_per_user: usize,
    /// Bytes queued for one WebSocket connection: pushes beyond it close the
    /// connection as too slow; replies wait for room.
    pub outbound_bytes: usize,
    /// New connections one address may open per second (0: no limit).
    pub new_connections_per_ip: u32,
    /// Messages one user may send per second, per node (0: no limit).
    pub user_messages_per_second: u32,
    /// Body bytes one user may send per second, per node (0: no limit).
    pub user_bytes_per_second: usize,
    /// Groups created and membership or role changes one user may make per
    /// minute, per node (0: no limit).
    pub user_group_changes_per_minute: u32,
}

/// Bounds on what the process keeps in memory to go faster (DESIGN.md G10).
/// Each cache only speeds things up: what it forgets is read again from the
/// store, so a small bound costs time, never correctness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// First acks of recent sends, by (sender, client_msg_id), kept to answer
    /// a resend without the store: standalone mode only (with Redis they live
    /// in Redis, for the dedup TTL).
    pub dedup_entries: usize,
    /// Members of the group rosters held in memory, over all groups.
    pub group_members: usize,
    /// SQLite's page cache on the connection that writes, in bytes.
    pub sqlite_writer_bytes: usize,
    /// SQLite's page caches on the read connections, in bytes, all together.
    pub sqlite_readers_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            dedup_entries: 50_000,
            group_members: 200_000,
            sqlite_writer_bytes: 32 * 1024 * 1024,
            sqlite_readers_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            connections: 50_000,
            pending_per_ip: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            ws_ping_interval: Duration::from_secs(30),
            connections_per_user: 64,
            outbound_bytes: 8 * 1024 * 1024,
            new_connections_per_ip: 2_000,
            user_messages_per_second: 1_000,
            user_bytes_per_second: 4 * 1024 * 1024,
            user_group_changes_per_minute: 60,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `host:port` of MySQL; empty selects the embedded SQLite store.
    pub host: String,
    pub name: String,
    pub user: String,
    pub password: Secret,
    pub max_open_conns: u32,
    pub max_idle_conns: u32,
    /// Zero keeps connections forever.
    pub conn_max_lifetime: Duration,
    pub conn_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Project addition: messages older than this many days are deleted in
    /// the background (each conversation's newest is kept); 0 keeps them.
    pub message_retention_days: u32,
    /// Project addition: TLS to MySQL, as MySQL's `--ssl-mode`.
    pub tls_mode: DbTlsMode,
    /// Project addition: CA bundle that MySQL's certificate must chain to.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            name: "im_chat".to_owned(),
            user: "im_service".to_owned(),
            password: Secret::default(),
            max_open_conns: 25,
            max_idle_conns: 5,
            conn_max_lifetime: Duration::from_secs(3600),
            conn_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            message_retention_days: 0,
            // What the MySQL clients do: TLS when the server offers it.
            tls_mode: DbTlsMode::Preferred,
            tls_ca_file: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `host:port` of Redis; empty selects the in-process allocator and dedup cache.
    pub addr: String,
    pub password: Secret,
    pub db: u32,
    pub pool_size: u32,
    pub min_idle_conns: u32,
    pub dial_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Project addition: speak TLS to Redis (`rediss://`).
    pub tls: bool,
    /// Project addition: CA bundle that Redis's certificate must chain to; none: the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Project addition: Sentinels (`host:port`) that name the primary; non-empty replaces `addr`.
    pub sentinels: Vec<String>,
    /// Project addition: the name the Sentinels monitor the primary under.
    pub master_name: String,
    /// Project addition: password of the Sentinels (`requirepass` in sentinel.conf), if they have one.
    pub sentinel_password: Secret,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            addr: String::new(),
            password: Secret::default(),
            db: 0,
            pool_size: 100,
            min_idle_conns: 10,
            dial_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(3),
            tls: false,
            tls_ca_file: None,
            sentinels: Vec::new(),
            master_name: String::new(),
            sentinel_password: Secret::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceConfig {
    /// How far each stored seq ceiling is raised at a time (DESIGN.md §4): the most seqs a Redis loss skips.
    pub snapshot_interval: u64,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        Self { snapshot_interval: 10_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Empty selects the in-process bus.
    pub brokers: Vec<String>,
    /// Consumer group of the group-message fan-out (`KAFKA_GROUP_ID`).
    pub group_id: String,
    pub producer: KafkaProducerConfig,
    pub consumer: KafkaConsumerConfig,
    pub topics: KafkaTopicsConfig,
    /// Project addition: librdkafka's `security.protocol`.
    pub security_protocol: KafkaSecurityProtocol,
    /// Project addition: CA bundle the brokers' certificates must chain to (`ssl.ca.location`).
    pub ssl_ca_file: Option<PathBuf>,
    /// Project addition: SASL mechanism (`sasl.mechanism`) with a `sasl_*` protocol.
    pub sasl_mechanism: KafkaSaslMechanism,
    pub sasl_username: String,
    pub sasl_password: Secret,
    /// Project addition: replicas of each topic this service creates; 0: the broker's `default.replication.factor`.
    pub replication_factor: u16,
    /// Project addition: `min.insync.replicas` of each topic this service creates; 0: the broker's default.
    pub min_insync_replicas: u16,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            group_id: "im-service-group".to_owned(),
            producer: KafkaProducerConfig::default(),
            consumer: KafkaConsumerConfig::default(),
            topics: KafkaTopicsConfig::default(),
            security_protocol: KafkaSecurityProtocol::Plaintext,
            ssl_ca_file: None,
            sasl_mechanism: KafkaSaslMechanism::Plain,
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            replication_factor: 0,
            min_insync_replicas: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaProducerConfig {
    pub timeout: Duration,
    pub retry_max: u32,
    /// Bytes per partition batch.
    pub batch_size: usize,
}

impl Default for KafkaProducerConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), retry_max: 3, batch_size: 16_384 }
    }
}

/// The cooperative assignor of librdkafka (`partition.assignment.strategy`).
pub const COOPERATIVE_STICKY: &str = "cooperative-sticky";

/// The assignors librdkafka knows; `cooperative-sticky` is cooperative, the
/// others eager, and one consumer cannot mix the two kinds.
pub const ASSIGNMENT_STRATEGIES: [&str; 3] = ["range", "roundrobin", COOPERATIVE_STICKY];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConsumerConfig {
    /// Consumer group of the offline worker.
    pub group_id: String,
    pub auto_offset_reset: AutoOffsetReset,
    /// How long the broker waits for a silent member (a killed node) before
    /// its partitions move to the others: the longest stall of the fan-out
    /// after a node dies (docs/resilience.md, recovery times).
    pub session_timeout: Duration,
    /// librdkafka's `partition.assignment.strategy` of every consumer group.
    /// `cooperative-sticky`: a rebalance moves only the partitions that
    /// change owner, the others keep being consumed.
    pub assignment_strategy: String,
    /// The longest a fetch waits at the broker for records (librdkafka's
    /// `fetch.wait.max.ms`). A stock Kafka broker answers as soon as a
    /// record arrives, so a long wait costs no latency there; a broker that
    /// holds every fetch for the whole wait (tansu) delays the fan-out by up
    /// to it. Each consumer sends one fetch per wait when idle.
    pub fetch_wait_max: Duration,
}

impl Default for KafkaConsumerConfig {
    fn default() -> Self {
        Self {
            group_id: "im-service-offline-worker".to_owned(),
            auto_offset_reset: AutoOffsetReset::Latest,
            // The least a stock Kafka broker accepts (group.min.session.timeout.ms).
            session_timeout: Duration::from_secs(6),
            assignment_strategy: COOPERATIVE_STICKY.to_owned(),
            fetch_wait_max: Duration::from_millis(20),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaTopicsConfig {
    pub group_msg: String,
    pub offline_msg: String,
    pub membership_change: String,
    /// The sensitive-word filter's audit records (a project addition).
    pub content_audit: String,
}

impl Default for KafkaTopicsConfig {
    fn default() -> Self {
        Self {
            group_msg: "group_msg".to_owned(),
            offline_msg: "offline_msg".to_owned(),
            membership_change: "membership_change".to_owned(),
            content_audit: "content_audit".to_owned(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Empty selects the in-process registry; `https://` endpoints speak TLS.
    pub endpoints: Vec<String>,
    /// Project addition: CA bundle that etcd's certificate must chain to; none: the system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineWorkerConfig {
    pub enabled: bool,
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub concurrency: usize,
    /// Age at which an unsettled route outbox row is recorded whole.
    pub outbox_grace: Duration,
}

impl Default for OfflineWorkerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 100,
            batch_timeout: Duration::from_secs(5),
            concurrency: 10,
            outbox_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Most members a group may have.
    pub max_members: usize,
    /// Groups up to this size tell who read a message; larger ones only how many.
    pub read_receipt_details_max: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self { max_members: 10_000, read_receipt_details_max: 100 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    pub enabled: bool,
    pub action: FilterAction,
    /// One word per line; required when `enabled`.
    pub wordlist_path: Option<PathBuf>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        // `replace` is the guide's example; it only matters once a word list is configured.
        Self { enabled: false, action: FilterAction::Replace, wordlist_path: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionConfig {
    pub enabled: bool,
    /// Empty with `enabled` means a local master key in `server.data_dir` (see [`crate::KeySource`]).
    pub kms_endpoint: String,
    pub kms_key_id: Secret,
    pub dek_cache_ttl: Duration,
    pub key_rotation_days: u32,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            kms_endpoint: String::new(),
            kms_key_id: Secret::default(),
            dek_cache_ttl: Duration::from_secs(3600),
            key_rotation_days: 90,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicesConfig {
    pub gateway: ServiceEndpoint,
    pub user: ServiceEndpoint,
    /// Project addition: where an `im-gateway` process reaches the IM Service.
    pub im: ServiceEndpoint,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            gateway: ServiceEndpoint { addr: String::new(), timeout: Duration::from_secs(5) },
            user: ServiceEndpoint { addr: String::new(), timeout: Duration::from_secs(3) },
            im: ServiceEndpoint { addr: String::new(), timeout: Duration::from_secs(5) },
        }
    }
}

/// A service reached over gRPC. An empty `addr` selects the copy linked into this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEndpoint {
    pub addr: String,
    /// Deadline of each call.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservabilityConfig {
    pub metrics_enabled: bool,
    /// Port of the dedicated metrics listener; `/metrics` is also served on `server.http_port`.
    pub metrics_port: u16,
    /// OTLP gRPC endpoint; empty disables tracing (no spans are made).
    pub otel_endpoint: String,
    /// `OTEL_TRACES_SAMPLER`: which traces are recorded and exported.
    pub otel_traces_sampler: TraceSampler,
    /// `OTEL_TRACES_SAMPLER_ARG`: the ratio of the `traceidratio` samplers, 0 to 1.
    pub otel_traces_sampler_arg: Ratio,
    /// `OTEL_SERVICE_NAME`; empty: the binary's name.
    pub otel_service_name: String,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
            metrics_port: 9090,
            otel_endpoint: String::new(),
            // OpenTelemetry's defaults would be parentbased_always_on; a ratio makes the rate one
            // setting away, and 1.0 is what the specification assumes when the argument is unset.
            otel_traces_sampler: TraceSampler::ParentBasedTraceIdRatio,
            otel_traces_sampler_arg: Ratio::ONE,
            otel_service_name: String::new(),
            log_level: LogLevel::Info,
            // Text for a person at a terminal; deployments set json as the guide does.
            log_format: LogFormat::Text,
        }
    }
}

/// Project addition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// HS256 key for client tokens; empty makes standalone mode generate one in `server.data_dir`.
    pub jwt_secret: Secret,
    /// Lifetime of an issued token.
    pub token_ttl: Duration,
    /// argon2id memory cost of a password hash, in KiB.
    pub password_memory_kib: u32,
    /// argon2id passes over that memory.
    pub password_iterations: u32,
    /// argon2id lanes.
    pub password_parallelism: u32,
    /// Sign-in attempts per user name and minute, on one user directory.
    pub login_attempts_per_minute: u32,
    /// Sign-in attempts per client address (IPv6: its /64) and minute, on one gateway.
    pub login_attempts_per_address_per_minute: u32,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For`
    /// names the client of a `POST /login`; empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
}

impl AuthConfig {
    /// [`Self::trusted_proxies`] as networks (a bare address is its own
    /// /32 or /128); validation refuses what does not parse, and this skips it.
    pub fn trusted_proxy_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies.iter().filter_map(|entry| parse_network(entry).ok()).collect()
    }
}

/// An address or a CIDR block.
pub(crate) fn parse_network(entry: &str) -> Result<ipnet::IpNet, String> {
    entry
        .parse::<ipnet::IpNet>()
        .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR block (10.0.0.0/8, fd00::/8)"))
}

/// The argon2id cost OWASP's password storage guide gives for 19 MiB: about
/// 20-40 ms of one core per hash on the project's VM.
pub const DEFAULT_PASSWORD_MEMORY_KIB: u32 = 19 * 1024;

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::default(),
            token_ttl: Duration::from_secs(720 * 3600),
            password_memory_kib: DEFAULT_PASSWORD_MEMORY_KIB,
            password_iterations: 2,
            password_parallelism: 1,
            login_attempts_per_minute: 10,
            login_attempts_per_address_per_minute: 30,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Project addition: TLS on this process's listeners (WebSocket, gRPC,
/// HTTP) and on its calls to the other services of the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key_file`, every listener speaks TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle trusted for calls to the other services; none: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Name the other services' certificates must carry; empty: the host of the address called.
    pub server_name: String,
    /// How often the certificate and key files are read again; a change is served to new connections.
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            ca_file: None,
            server_name: String::new(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    /// Whether this process's listeners speak TLS.
    pub fn serves_tls(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// Whether calls to the other services (nodes, gateways, the user
    /// service) use TLS: in a deployment that serves TLS, or trusts a CA
    /// for it, every service does.
    pub fn calls_use_tls(&self) -> bool {
        self.serves_tls() || self.ca_file.is_some()
    }
}

/// A closed set of words, spelled in config as the lowercase `text` given for each variant.
macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &[Self] = &[$(Self::$variant,)+];

            /// The word used in config (and understood by `tracing`'s filters for [`LogLevel`]).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            /// Case-insensitive, because `LOG_LEVEL=INFO` is as common as `info`.
            fn from_str(text: &str) -> Result<Self, String> {
                let word = text.trim();
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(word)).ok_or_else(|| {
                    let words: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("invalid value {text:?}: expected one of {}", words.join(", "))
                })
            }
        }
    };
}

config_enum! {
    /// Where a consumer group without a committed offset starts.
    AutoOffsetReset {
        Latest = "latest",
        Earliest = "earliest",
    }
}

config_enum! {
    /// What the sensitive-word filter does with a message that contains a listed word.
    FilterAction {
        /// Reject the message (`FAILED_PRECONDITION`).
        Block = "block",
        /// Mask the words and deliver.
        Replace = "replace",
        /// Deliver unchanged and record the hit.
        Audit = "audit",
    }
}

config_enum! {
    LogLevel {
        Trace = "trace",
        Debug = "debug",
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

config_enum! {
    LogFormat {
        Json = "json",
        Text = "text",
    }
}

/// A share from 0 to 1 (`OTEL_TRACES_SAMPLER_ARG`). Never NaN: parsing refuses anything outside
/// 0..=1, which is what makes `Eq` sound for a float.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Ratio(f64);

impl Eq for Ratio {}

impl Ratio {
    pub const ONE: Self = Self(1.0);

    /// `value` if it is within 0..=1.
    pub fn new(value: f64) -> Option<Self> {
        (0.0..=1.0).contains(&value).then_some(Self(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

config_enum! {
    /// `OTEL_TRACES_SAMPLER`, spelled as the OpenTelemetry specification spells it.
    TraceSampler {
        AlwaysOn = "always_on",
        AlwaysOff = "always_off",
        TraceIdRatio = "traceidratio",
        ParentBasedAlwaysOn = "parentbased_always_on",
        ParentBasedAlwaysOff = "parentbased_always_off",
        ParentBasedTraceIdRatio = "parentbased_traceidratio",
    }
}

impl LogFormat {
    pub fn is_json(self) -> bool {
        self == Self::Json
    }
}

config_enum! {
    /// TLS to MySQL, as MySQL's own `--ssl-mode`.
    DbTlsMode {
        /// Plain TCP.
        Disabled = "disabled",
        /// TLS when the server offers it, unverified; plain otherwise.
        Preferred = "preferred",
        /// TLS or no connection; the certificate is not verified.
        Required = "required",
        /// TLS with a certificate that chains to `database.tls_ca_file`.
        VerifyCa = "verify_ca",
        /// As `verify_ca`, and the certificate names `database.host`.
        VerifyIdentity = "verify_identity",
    }
}

config_enum! {
    /// librdkafka's `security.protocol`.
    KafkaSecurityProtocol {
        Plaintext = "plaintext",
        Ssl = "ssl",
        SaslPlaintext = "sasl_plaintext",
        SaslSsl = "sasl_ssl",
    }
}

config_enum! {
    /// librdkafka's `sasl.mechanism`, as the config spells it (the word sent to librdkafka is
    /// [`KafkaSaslMechanism::librdkafka_name`]).
    KafkaSaslMechanism {
        Plain = "plain",
        ScramSha256 = "scram-sha-256",
        ScramSha512 = "scram-sha-512",
    }
}

impl KafkaSaslMechanism {
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl KafkaSecurityProtocol {
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}
