//! Bad configuration fails at start-up, naming every bad key; nothing is
//! bound or written.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{Node, free_port};

#[test]
fn bad_values_are_all_reported_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra =
        vec![("MAX_MESSAGE_SIZE".to_string(), "lots".to_string()), ("LOG_FORMAT".to_string(), "xml".to_string())];
    let output = Node::command(&data, (1, 2, 3), &extra).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MAX_MESSAGE_SIZE"), "{stderr}");
    assert!(stderr.contains("LOG_FORMAT"), "{stderr}");
    assert!(!data.exists(), "nothing is created before the configuration is valid");
}

#[test]
fn unknown_keys_in_the_file_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "server:\n  grpc_port: 9094\n  grcp_port: 1\n").unwrap();
    let extra = vec![("IM_CONFIG".to_string(), file.display().to_string())];
    let output = Node::command(&dir.path().join("data"), (1, 2, 3), &extra).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.grcp_port"), "{stderr}");
}

/// Runs im-service with `extra` while this test holds its gRPC port: a
/// process that bound before refusing would fail on the port instead.
fn refused_before_binding(extra: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc_port = held.local_addr().unwrap().port();
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let output =
        Node::command(&data, (free_port(), grpc_port, free_port()), &extra).stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("ddress already in use"), "it bound before refusing: {stderr}");
    assert!(!data.exists(), "nothing is created before the configuration is accepted");
    stderr
}

#[test]
fn a_gateway_process_without_etcd_is_refused_before_binding() {
    let stderr = refused_before_binding(&[
        ("GATEWAY_SERVICE_ADDR", "127.0.0.1:9"),
        ("JWT_SECRET", "a-shared-key-of-at-least-32-bytes!"),
    ]);
    assert!(stderr.contains("ETCD_ENDPOINTS"), "{stderr}");
}

/// A generated key is one process's own: with another service over the
/// network, the shared key must be configured.
#[test]
fn a_remote_service_without_jwt_secret_is_refused_before_binding() {
    let stderr = refused_before_binding(&[("USER_SERVICE_ADDR", "127.0.0.1:9")]);
    assert!(stderr.contains("auth.jwt_secret"), "{stderr}");
}

/// A certificate pair or CA bundle that cannot serve stops the process
/// before it starts anything, naming the setting.
#[test]
fn unusable_tls_files_are_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let junk = junk.to_str().unwrap();
    let stderr = refused_before_binding(&[("TLS_CERT_FILE", junk), ("TLS_KEY_FILE", junk)]);
    assert!(stderr.contains("TLS_CERT_FILE") && stderr.contains("no CERTIFICATE"), "{stderr}");
    let missing = dir.path().join("missing-ca.pem");
    let stderr = refused_before_binding(&[("TLS_CA_FILE", missing.to_str().unwrap())]);
    assert!(stderr.contains("TLS_CA_FILE") && stderr.contains("missing-ca.pem"), "{stderr}");
}

/// Starts a node with `extra`, its stderr a pipe, and returns its log lines
/// up to and including "im-service ready".
fn log_lines_until_ready(extra: &[(String, String)]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let mut child = Node::command(&dir.path().join("data"), ports, extra).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let ready = line.contains("im-service ready");
        lines.push(line);
        if ready {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lines.iter().any(|l| l.contains("im-service ready")), "{lines:?}");
    lines
}

#[test]
fn log_format_json_gives_one_json_object_per_line_and_no_secrets() {
    let extra = vec![
        ("LOG_FORMAT".to_string(), "json".to_string()),
        ("LOG_LEVEL".to_string(), "info".to_string()),
        ("JWT_SECRET".to_string(), "s3cret-9f2c-s3cret-41ab-s3cret-7d0e".to_string()),
    ];
    for line in &log_lines_until_ready(&extra) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(value.get("level").is_some() && value.get("message").is_some(), "{line}");
        assert!(!line.contains("s3cret"), "a secret reached the logs: {line}");
    }
}

/// A log file or journal gets plain text: colours only on a terminal.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let lines = log_lines_until_ready(&[("LOG_LEVEL".to_string(), "info".to_string())]);
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "an escape sequence in a piped log: {line:?}");
    }
    assert!(lines.iter().any(|l| l.contains(" INFO ")), "text lines with their level: {lines:?}");
}

/// `/metrics` is served on the HTTP port and alone on `METRICS_PORT`; with
/// `METRICS_ENABLED=false` on neither, while the probes stay.
#[tokio::test]
async fn metrics_port_and_metrics_enabled() {
    use crate::support::http_get;
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let metrics_port_text = metrics_port.to_string();
    let node = Node::start_with(dir.path(), &[("METRICS_PORT", &metrics_port_text)]).await;
    let (status, body) = http_get(metrics_port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("im_messages_accepted_total"), "{body}");
    assert_eq!(http_get(metrics_port, "/ready").await.unwrap().0, 404, "only /metrics on the metrics port");
    assert_eq!(http_get(node.http_port, "/metrics").await.unwrap().0, 200);
    drop(node);

    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("METRICS_ENABLED", "false")]).await;
    assert_eq!(http_get(node.http_port, "/metrics").await.unwrap().0, 404);
    assert_eq!(http_get(node.http_port, "/health").await.unwrap().0, 200);
}

/// `KAFKA_REPLICATION_FACTOR` above what the brokers keep (the shared tansu:
/// one broker, which lists itself three times for a factor of 3) is warned
/// about at start, naming the topic and the setting, and never fails it.
#[test]
fn a_replication_factor_the_brokers_cannot_keep_is_warned_about_at_start() {
    let broker = crate::harness::SHARED_KAFKA;
    let reachable = std::net::TcpStream::connect_timeout(&broker.parse().unwrap(), Duration::from_secs(2));
    assert!(reachable.is_ok(), "tansu is not reachable at {broker}: start the test servers with scripts/servers.sh");
    let mut extra = crate::broker::kafka_env(broker);
    extra.extend([
        ("KAFKA_REPLICATION_FACTOR".to_owned(), "3".to_owned()),
        ("KAFKA_MIN_INSYNC_REPLICAS".to_owned(), "2".to_owned()),
        // "im-service ready" is an info line.
        ("LOG_LEVEL".to_owned(), "info".to_owned()),
    ]);
    let group_topic = extra.iter().find(|(key, _)| key == "KAFKA_TOPIC_GROUP_MSG").unwrap().1.clone();
    let lines = log_lines_until_ready(&extra);
    let replicas = lines
        .iter()
        .find(|l| l.contains("fewer replicas per partition") && l.contains(&group_topic))
        .unwrap_or_else(|| panic!("no warning about {group_topic}: {lines:?}"));
    assert!(replicas.contains("WARN") && replicas.contains("replicas=1") && replicas.contains("replication_factor=3"));
    assert!(replicas.contains("KAFKA_REPLICATION_FACTOR"), "{replicas}");
    assert!(lines.iter().any(|l| l.contains("fewer brokers than") && l.contains("brokers=1")), "{lines:?}");
}
