//! Loading through the public API: the guide's own config.yaml, precedence, `${VAR}`, and how problems
//! are reported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use im_config::{
    AutoOffsetReset, BusBackend, Config, FilterAction, KeySource, LogFormat, LogLevel, Problem, Secret, SeqBackend,
    ServiceLink, StoreBackend, load,
};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The secrets a deployment of the guide's file passes in the environment,
/// the token key every process shares among them.
fn guide_secrets() -> HashMap<String, String> {
    env(&[
        ("DB_PASSWORD", "db-pass"),
        ("REDIS_PASSWORD", "redis-pass"),
        ("KMS_KEY_ID", "key-42"),
        ("JWT_SECRET", "a-shared-key-of-at-least-32-bytes!"),
    ])
}

/// The problems as (key, env) pairs, for comparing without the wording.
fn located(problems: &[Problem]) -> Vec<(&str, Option<&str>)> {
    problems.iter().map(|problem| (problem.key.as_str(), problem.env)).collect()
}

#[test]
fn no_file_and_empty_env_gives_embedded_defaults() {
    let config = load(None, &HashMap::new()).unwrap();
    assert_eq!(config, Config::default());
    assert!(config.is_fully_embedded());
    assert_eq!(config.server.grpc_port, 9094);
    assert_eq!(config.server.http_port, 8094);
    assert_eq!(config.server.ws_port, 8093);
    assert_eq!(config.server.listen_host, "127.0.0.1");
    assert_eq!(config.server.data_dir, PathBuf::from("./data"));
    assert_eq!(config.server.node_id, 1);
    assert_eq!(config.server.max_message_size, 10_240);
    assert_eq!(config.server.retry_timeout, Duration::from_secs(5));
    assert_eq!(config.database.host, "");
    assert_eq!(config.database.conn_max_lifetime, Duration::from_secs(3600));
    assert_eq!(config.redis.pool_size, 100);
    assert_eq!(config.sequence.snapshot_interval, 10_000);
    assert!(config.kafka.brokers.is_empty());
    assert_eq!(config.kafka.group_id, "im-service-group");
    assert_eq!(config.kafka.consumer.group_id, "im-service-offline-worker");
    assert_eq!(config.kafka.consumer.auto_offset_reset, AutoOffsetReset::Latest);
    assert_eq!(config.kafka.producer.batch_size, 16_384);
    assert!(config.etcd.endpoints.is_empty());
    assert!(config.offline_worker.enabled);
    assert!(!config.filter.enabled);
    assert!(!config.encryption.enabled);
    assert_eq!(config.encryption.key_rotation_days, 90);
    assert_eq!(config.observability.metrics_port, 9090);
    assert_eq!(config.observability.log_level, LogLevel::Info);
    assert_eq!(config.observability.log_format, LogFormat::Text);
    assert_eq!(config.observability.otel_endpoint, "");
    assert_eq!(config.auth.token_ttl, Duration::from_secs(720 * 3600));
    assert!(config.auth.jwt_secret.is_empty());
}

#[test]
fn the_guides_config_yaml_loads() {
    let config = load(Some(&fixture("guide-config.yaml")), &guide_secrets()).unwrap();
    assert_eq!(config.database.host, "mysql-master:3306");
    assert_eq!(config.database.password.expose(), "db-pass");
    assert_eq!(config.redis.password.expose(), "redis-pass");
    assert_eq!(config.encryption.kms_key_id.expose(), "key-42");
    assert_eq!(config.kafka.brokers, ["kafka-1:9092", "kafka-2:9092", "kafka-3:9092"]);
    assert_eq!(config.kafka.producer.timeout, Duration::from_secs(10));
    assert_eq!(config.kafka.consumer.session_timeout, Duration::from_secs(30));
    assert_eq!(config.filter.action, FilterAction::Replace);
    assert_eq!(config.filter.wordlist_path, Some(PathBuf::from("/etc/im-service/wordlist.txt")));
    assert_eq!(config.services.user.timeout, Duration::from_secs(3));
    assert_eq!(config.observability.log_format, LogFormat::Json);
    assert_eq!(config.observability.otel_endpoint, "http://otel-collector:4317");

    assert!(matches!(config.store(), StoreBackend::MySql(db) if db.name == "im_chat"));
    assert!(matches!(config.seq(), SeqBackend::Redis(redis) if redis.addr == "redis-master:6379"));
    assert!(matches!(config.bus(), BusBackend::Kafka(_)));
    assert!(matches!(config.gateway(), ServiceLink::Remote(gw) if gw.addr == "im-gateway-service:9093"));
    assert!(matches!(config.key_source(), KeySource::Kms { endpoint: "kms:8080", .. }));
    // The guide's file has no etcd section: ETCD_ENDPOINTS supplies it.
    assert!(!config.uses_etcd());
}

#[test]
fn the_guides_config_yaml_without_its_secrets_names_each_variable() {
    let error = load(Some(&fixture("guide-config.yaml")), &HashMap::new()).unwrap_err();
    assert_eq!(
        located(error.problems()),
        [
            ("database.password", None),
            ("redis.password", None),
            ("encryption.kms_key_id", None),
            // Its services are remote: they need the one key they share.
            ("auth.jwt_secret", None)
        ]
    );
    let text = error.to_string();
    assert_eq!(text.lines().count(), 4, "{text}");
    for var in ["DB_PASSWORD", "REDIS_PASSWORD", "KMS_KEY_ID"] {
        assert!(text.contains(&format!("environment variable {var} is not set")), "{text}");
    }
    assert!(text.contains("JWT_SECRET"), "{text}");
}

#[test]
fn environment_overrides_file_overrides_defaults() {
    let yaml = "server:\n  grpc_port: 7000\n  http_port: 7001\nobservability:\n  log_level: debug\n";
    let config = Config::from_yaml_str(
        yaml,
        &env(&[
            ("SERVER_GRPC_PORT", "7100"),
            ("KAFKA_BROKERS", "k1:9092, k2:9092"),
            ("ETCD_ENDPOINTS", "etcd-1:2379,etcd-2:2379,etcd-3:2379"),
            ("OFFLINE_WORKER_ENABLED", "0"),
            ("LOG_FORMAT", "json"),
            ("TOKEN_TTL", "30d"),
            ("UNRELATED", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(config.server.grpc_port, 7100, "env beats file");
    assert_eq!(config.server.http_port, 7001, "file beats default");
    assert_eq!(config.server.ws_port, 8093, "default");
    assert_eq!(config.observability.log_level, LogLevel::Debug);
    assert_eq!(config.observability.log_format, LogFormat::Json);
    assert_eq!(config.kafka.brokers, ["k1:9092", "k2:9092"]);
    assert_eq!(config.etcd.endpoints.len(), 3);
    assert!(!config.offline_worker.enabled);
    assert_eq!(config.auth.token_ttl, Duration::from_secs(30 * 86_400));
}

#[test]
fn an_empty_address_in_the_environment_selects_the_embedded_backend() {
    let config = load(Some(&fixture("guide-config.yaml")), &{
        let mut env = guide_secrets();
        env.insert("DB_HOST".to_owned(), String::new());
        env.insert("KAFKA_BROKERS".to_owned(), String::new());
        env
    })
    .unwrap();
    assert_eq!(config.store(), StoreBackend::Sqlite);
    assert!(!config.uses_kafka());
}

#[test]
fn variables_expand_in_values() {
    let yaml = "\
database:
  host: ${DB_HOST:-mysql:3306}
  password: ${DB_PASSWORD}
  max_open_conns: ${POOL:-40}
redis:
  addr: \"${REDIS_HOST}:${REDIS_PORT:-6379}\"
kafka:
  brokers:
    - ${BROKER_1}
    - broker-2:9092
filter:
  enabled: ${FILTER_ON:-false}
# ${IN_A_COMMENT} is not expanded
";
    let vars = env(&[("DB_PASSWORD", "p#ss: 'word' $$x"), ("REDIS_HOST", "redis"), ("BROKER_1", "broker-1:9092")]);
    let config = Config::from_yaml_str(yaml, &vars).unwrap();
    assert_eq!(config.database.host, "mysql:3306");
    assert_eq!(config.database.password.expose(), "p#ss: 'word' $$x", "a value cannot break the YAML");
    assert_eq!(config.database.max_open_conns, 40);
    assert_eq!(config.redis.addr, "redis:6379");
    assert_eq!(config.kafka.brokers, ["broker-1:9092", "broker-2:9092"]);
    assert!(!config.filter.enabled);
}

#[test]
fn an_unset_variable_is_an_error_unless_the_key_is_overridden() {
    let yaml = "database:\n  host: mysql:3306\n  password: ${DB_PASS}\nredis:\n  addr: ${REDIS_ADDRESS}\n";
    let error = Config::from_yaml_str(yaml, &env(&[])).unwrap_err();
    assert_eq!(located(error.problems()), [("database.password", None), ("redis.addr", None)]);
    assert!(error.problems()[0].message.contains("DB_PASS is not set"), "{error}");
    assert!(error.problems()[0].message.contains("${DB_PASS:-}"), "the message says how to allow empty");

    // The key's own environment variable wins, so the file's reference is never used.
    let config = Config::from_yaml_str(yaml, &env(&[("DB_PASSWORD", "x"), ("REDIS_ADDR", "")])).unwrap();
    assert_eq!(config.database.password.expose(), "x");
    assert_eq!(config.redis.addr, "");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let yaml = "\
server:
  grcp_port: 9094
kafka:
  producer:
    linger: 5ms
DB_HOST: mysql:3306
metrics: {}
";
    let error = Config::from_yaml_str(yaml, &env(&[])).unwrap_err();
    assert_eq!(
        located(error.problems()),
        [("server.grcp_port", None), ("kafka.producer.linger", None), ("DB_HOST", None), ("metrics", None)]
    );
    let text = error.to_string();
    assert!(text.contains("server.grcp_port: unknown key in config.yaml; did you mean server.grpc_port?"), "{text}");
    assert!(text.contains("DB_HOST is an environment variable, its config.yaml key is database.host"), "{text}");
}

#[test]
fn wrong_shapes_are_reported() {
    let yaml = "server: 9094\nkafka:\n  brokers:\n    nested: x\n  producer:\nfilter:\n  enabled: [true]\n";
    let error = Config::from_yaml_str(yaml, &env(&[])).unwrap_err();
    assert_eq!(
        located(error.problems()),
        [("server", None), ("kafka.brokers", None), ("filter.enabled", None)],
        "{error}"
    );
    assert!(error.to_string().contains("server: expected a mapping of keys, found a number"), "{error}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = "filter:\n  action: nuke\nserver:\n  colour: blue\n  retry_timeout: 5\n";
    let error = Config::from_yaml_str(
        yaml,
        &env(&[("SERVER_GRPC_PORT", "abc"), ("SERVER_HTTP_PORT", "9090"), ("REDIS_POOL_SIZE", "0")]),
    )
    .unwrap_err();
    assert_eq!(
        located(error.problems()),
        [
            ("server.colour", None),
            ("server.grpc_port", Some("SERVER_GRPC_PORT")),
            ("server.retry_timeout", None),
            ("filter.action", None),
            // 9090 is also the metrics listener's port.
            ("observability.metrics_port", None),
            // Reported once: min_idle_conns is not also compared with a pool size of 0.
            ("redis.pool_size", Some("REDIS_POOL_SIZE")),
        ],
        "{error}"
    );
    let text = error.to_string();
    assert_eq!(text.lines().count(), 6, "one line per problem:\n{text}");
    assert!(text.contains("SERVER_GRPC_PORT (server.grpc_port): invalid value \"abc\""), "{text}");
    assert!(text.contains("filter.action: invalid value \"nuke\": expected one of block, replace, audit"), "{text}");
    assert!(text.contains("server.retry_timeout: invalid value \"5\": missing unit"), "{text}");
    assert!(text.contains("REDIS_POOL_SIZE (redis.pool_size): must be at least 1"), "{text}");
    assert!(text.contains("observability.metrics_port: port 9090 is also server.http_port"), "{text}");
}

#[test]
fn a_value_that_failed_to_parse_is_not_validated_again() {
    let error = Config::from_yaml_str("filter:\n  enabled: true\n  wordlist_path: ${WORDS}\n", &env(&[])).unwrap_err();
    assert_eq!(located(error.problems()), [("filter.wordlist_path", None)], "{error}");
}

#[test]
fn file_level_problems() {
    let error = Config::from_yaml_str("server: [unclosed\n", &env(&[])).unwrap_err();
    assert_eq!(error.problems()[0].key, "config.yaml");
    assert!(error.problems()[0].message.starts_with("not valid YAML"), "{error}");

    let error = Config::from_yaml_str("- a\n- b\n", &env(&[])).unwrap_err();
    assert!(error.to_string().contains("expected a mapping of sections, found a list"), "{error}");

    let error = Config::from_yaml_str("server:\n  grpc_port: 1\n  grpc_port: 2\n", &env(&[])).unwrap_err();
    assert!(error.to_string().contains("duplicate"), "{error}");

    // A missing file is reported together with the environment's problems.
    let missing = fixture("does-not-exist.yaml");
    let error = load(Some(&missing), &env(&[("LOG_LEVEL", "loud")])).unwrap_err();
    assert_eq!(
        located(error.problems()),
        [(missing.display().to_string().as_str(), None), ("observability.log_level", Some("LOG_LEVEL"))]
    );

    assert_eq!(Config::from_yaml_str("", &env(&[])).unwrap(), Config::default());
    assert_eq!(Config::from_yaml_str("# only comments\nredis:\n", &env(&[])).unwrap(), Config::default());
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let vars = env(&[
        ("DB_PASSWORD", "db-hunter2"),
        ("REDIS_PASSWORD", "redis-hunter2"),
        ("KMS_KEY_ID", "kms-hunter2"),
        ("JWT_SECRET", "jwt-hunter2"),
    ]);
    let config = load(Some(&fixture("guide-config.yaml")), &{
        let mut env = vars.clone();
        env.insert("JWT_SECRET".to_owned(), "jwt-hunter2-jwt-hunter2-jwt-hunter2".to_owned());
        env
    })
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("password: Secret(<redacted>)"), "{debug}");
    let effective: Vec<String> = config.effective().map(|(key, value)| format!("{key}={value}")).collect();
    assert!(!effective.join("\n").contains("hunter2"));
    assert!(effective.contains(&"database.password=\"<redacted>\"".to_owned()));

    // Too short a JWT secret is an error that does not quote it.
    let error = load(Some(&fixture("guide-config.yaml")), &vars).unwrap_err();
    assert_eq!(located(error.problems()), [("auth.jwt_secret", Some("JWT_SECRET"))]);
    assert!(!error.to_string().contains("hunter2"), "{error}");
    assert!(!format!("{error:?}").contains("hunter2"));
    assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(<redacted>)");
}

#[test]
fn config_built_in_code_can_be_validated() {
    let mut config = Config::default();
    assert!(config.validate().is_ok());
    config.server.max_message_size = 0;
    let error = config.validate().unwrap_err();
    assert_eq!(located(error.problems()), [("server.max_message_size", None)]);
}

#[test]
fn generated_files_are_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let regenerate = "run `cargo run -p im-config --example config_reference -- --write`";
    let markdown = std::fs::read_to_string(crate_dir.join("CONFIG_REFERENCE.md")).unwrap_or_default();
    assert!(markdown == im_config::reference_markdown(), "CONFIG_REFERENCE.md is stale: {regenerate}");
    let example = std::fs::read_to_string(crate_dir.join("example-config.yaml")).unwrap_or_default();
    assert!(example == im_config::example_yaml(), "example-config.yaml is stale: {regenerate}");
}

#[test]
fn the_example_config_loads_to_the_defaults() {
    let config = Config::from_yaml_str(&im_config::example_yaml(), &HashMap::new()).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn every_key_is_documented_with_its_default() {
    let docs: Vec<_> = im_config::reference().collect();
    let grpc = docs.iter().find(|doc| doc.env == "SERVER_GRPC_PORT").unwrap();
    assert_eq!((grpc.yaml_key, grpc.default.as_str(), grpc.kind.as_str()), ("server.grpc_port", "9094", "integer"));
    let ttl = docs.iter().find(|doc| doc.env == "TOKEN_TTL").unwrap();
    assert_eq!((ttl.default.as_str(), ttl.origin), ("720h", im_config::Origin::Project));
    let action = docs.iter().find(|doc| doc.env == "FILTER_ACTION").unwrap();
    assert_eq!(action.kind, "block / replace / audit");
    // Every key can be set from the environment.
    for doc in &docs {
        let value = if doc.default == "\"\"" || doc.default == "[]" { "" } else { doc.default.trim_matches('"') };
        let config = Config::from_env(&env(&[(doc.env, value)]));
        assert_eq!(config, Ok(Config::default()), "{} = {value:?}", doc.env);
    }
}

/// deploy/config.yaml, the production mode on one machine, loads and selects
/// every real backend it names.
#[test]
fn the_deploy_config_selects_the_production_backends() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config.yaml");
    let env = HashMap::from([("JWT_SECRET".to_owned(), "9c41e07b-3fa2-48d6-b15e-7a0d2c96f834".to_owned())]);
    let config = im_config::load(Some(&path), &env).expect("deploy/config.yaml loads");
    assert!(matches!(config.store(), im_config::StoreBackend::MySql(db) if db.host == "127.0.0.1:3306"));
    assert!(matches!(config.seq(), im_config::SeqBackend::Redis(redis) if redis.addr == "127.0.0.1:6379"));
    assert!(matches!(config.registry(), im_config::RegistryBackend::Etcd { .. }));
    assert!(matches!(config.gateway(), im_config::ServiceLink::Remote(_)));
    assert!(matches!(config.user_service(), im_config::ServiceLink::Remote(_)));
    assert_eq!(config.services.im.addr, "127.0.0.1:9094");
    // Without the secret it refuses to load, naming the variable.
    let error = im_config::load(Some(&path), &HashMap::new()).unwrap_err().to_string();
    assert!(error.contains("JWT_SECRET"), "{error}");
}

#[test]
fn trusted_proxies_are_addresses_or_cidr_blocks() {
    let config = Config::from_env(&env(&[("AUTH_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8,192.0.2.1")])).unwrap();
    let networks: Vec<String> = config.auth.trusted_proxy_networks().iter().map(ToString::to_string).collect();
    assert_eq!(networks, ["10.0.0.0/8", "fd00::/8", "192.0.2.1/32"]);
    for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.0/8, 300.1.1.1"] {
        let error = Config::from_env(&env(&[("AUTH_TRUSTED_PROXIES", bad)])).unwrap_err();
        assert_eq!(located(error.problems()), [("auth.trusted_proxies", Some("AUTH_TRUSTED_PROXIES"))], "{bad}");
    }
}
