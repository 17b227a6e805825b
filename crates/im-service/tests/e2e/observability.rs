//! The alerting rules (`deploy/prometheus/alerts.yaml`) and the Grafana
//! dashboard (`deploy/grafana/im-service.json`) query only what the binaries
//! export: every metric name in each PromQL expression (tokens starting with
//! `im_` or `process_`, as scraped: `_total`, `_bucket`, `_sum`, `_count`) is
//! checked against a live `/metrics`, and so is every label value a selector
//! matches exactly (`state="in_use"`, `code=~"UNAVAILABLE|INTERNAL"`). A
//! renamed metric or label would otherwise leave an alert that never fires
//! and a panel that stays empty, silently.
//!
//! The standalone `im-service`, then the production processes (`im-user`,
//! an `im-service` node and an `im-gateway` over MariaDB, Redis, etcd and
//! Kafka: `scripts/servers.sh`), each scraped on its own. The Kafka families
//! whose series exist only where Kafka is used ([`ONLY_WHERE_USED`]) are
//! required of the production node alone.
//!
//! `alerts.yaml` is read with a line parser for its `expr:` fields (plain or
//! `|` blocks, the only forms it uses): the test crate has no YAML parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{SHARED_ETCD, SHARED_KAFKA, SHARED_MARIADB, SHARED_REDIS, require_server, unique};
use crate::support::{Node, free_port, http_get};

/// Series Prometheus makes itself, not scraped from the processes.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Labels the scrape adds (target labels), never in `/metrics`.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Families whose labels only exist where the process has that part: a
/// family without series is not in the text at all. Each is checked on the
/// production node instead (which consumes and produces).
const ONLY_WHERE_USED: &[&str] = &[
    // {group,topic,partition}: partitions assigned to this process's consumers.
    "im_kafka_consumer_lag",
    // {topic}: the topics this process produces to (none standalone, none on a gateway).
    "im_kafka_produce_duration_seconds",
];

/// Whether `metric` (as scraped) belongs to a family of [`ONLY_WHERE_USED`].
fn only_where_used(metric: &str) -> bool {
    ONLY_WHERE_USED.iter().any(|family| {
        metric.strip_prefix(family).is_some_and(|rest| ["", "_bucket", "_sum", "_count", "_total"].contains(&rest))
    })
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

// ---------------------------------------------------------------------------
// The queries.

/// (where, PromQL) of every alert of `alerts.yaml`.
fn alert_expressions(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut alert = String::new();
    let mut alerts = 0;
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        i += 1;
        if let Some(name) = trimmed.strip_prefix("- alert:").or_else(|| trimmed.strip_prefix("- record:")) {
            alert = name.trim().to_owned();
            alerts += 1;
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("expr:") else { continue };
        let rest = rest.trim();
        let expr = if rest.starts_with('|') || rest.starts_with('>') {
            // A block: the lines indented deeper than `expr:`.
            let mut block = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push(next.trim());
                i += 1;
            }
            block.join(" ")
        } else if let Some(quoted) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            quoted.replace("''", "'")
        } else {
            assert!(!rest.starts_with('"'), "alerts.yaml: {alert}: write the expression plain or as a | block");
            rest.to_owned()
        };
        assert!(!expr.trim().is_empty(), "alerts.yaml: {alert}: empty expr");
        exprs.push((format!("alert {alert}"), expr));
    }
    assert!(alerts > 0, "no alert found in alerts.yaml");
    assert_eq!(exprs.len(), alerts, "alerts.yaml: one expr per rule, read {exprs:#?}");
    exprs
}

/// (where, PromQL) of every panel query and variable query of the dashboard.
fn dashboard_expressions(json: &str) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((format!("panel {title:?} {}", target["refId"]), expr.to_owned()));
            }
            panels(&panel["panels"], out);
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(json).expect("im-service.json is JSON");
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or_default();
        let query = match &variable["query"] {
            serde_json::Value::String(q) => q.clone(),
            other => other["query"].as_str().unwrap_or_default().to_owned(),
        };
        out.push((format!("variable ${name}"), query));
    }
    assert!(out.len() > 10, "the dashboard has few queries: {out:#?}");
    out
}

/// One series selector of an expression: a metric name and the label
/// matchers in braces after it, `(label, operator, value)`.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// The metric names of `expr` that the processes export (`im_*`,
/// `process_*`) or Prometheus makes ([`PROMETHEUS_OWN`]), with their
/// matchers. String literals and Grafana variables are passed over.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
            continue;
        }
        if c == '{' {
            // Matchers without a metric name before them: not ours.
            i = matchers(&chars, i).1;
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == '$') {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < chars.len() && ident(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next] == ' ' {
            next += 1;
        }
        let (found, end) =
            if next < chars.len() && chars[next] == '{' { matchers(&chars, next) } else { (Vec::new(), i) };
        if word.starts_with("im_") || word.starts_with("process_") || PROMETHEUS_OWN.contains(&word.as_str()) {
            out.push(Selector { metric: word, matchers: found });
            i = end;
        }
    }
    out
}

/// The index after the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The matchers of the braces opening at `open`, and the index after them.
fn matchers(chars: &[char], open: usize) -> (Vec<(String, String, String)>, usize) {
    let mut out = Vec::new();
    let mut i = open + 1;
    loop {
        while i < chars.len() && (chars[i] == ' ' || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() || chars[i] == '}' {
            return (out, i + 1);
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        let op_start = i;
        while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        assert!(
            i < chars.len() && chars[i] == '"',
            "a matcher without a quoted value in {:?}",
            String::from_iter(chars)
        );
        let end = skip_string(chars, i);
        let value: String = chars[i + 1..end - 1].iter().collect::<String>().replace("\\\\", "\\");
        out.push((label, op, value));
        i = end;
    }
}

// ---------------------------------------------------------------------------
// The scrape.

/// What one `/metrics` holds: every sample's name with the label sets it
/// has, and the names each `# TYPE` line declares (a labelled family without
/// series yet has its `# TYPE` line and no sample).
#[derive(Default)]
struct Scrape {
    samples: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    declared: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                    "summary" => &["", "_sum", "_count"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                for suffix in suffixes {
                    // Counters declared with their _total already (the
                    // classic text format) keep it once.
                    let full = if name.ends_with(suffix) { name.to_owned() } else { format!("{name}{suffix}") };
                    scrape.declared.insert(full);
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let mut labels = BTreeMap::new();
            if line[name_end..].starts_with('{') {
                let chars: Vec<char> = line[name_end..].chars().collect();
                for (label, _, value) in matchers(&chars, 0).0 {
                    labels.insert(label, value.replace("\\\"", "\"").replace("\\n", "\n"));
                }
            }
            scrape.samples.entry(name.to_owned()).or_default().push(labels);
        }
        scrape
    }

    fn exports(&self, name: &str) -> bool {
        self.samples.contains_key(name) || self.declared.contains(name)
    }
}

/// Checks every selector of `queries` against `scrape` (but the families of
/// [`ONLY_WHERE_USED`] when `all` is false); returns what is wrong, one line
/// each.
fn check(process: &str, scrape: &Scrape, queries: &[(String, String)], all: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, expr) in queries {
        let found = selectors(expr);
        if found.is_empty() {
            problems.push(format!("{place}: names no metric: {expr}"));
        }
        for selector in found {
            let metric = &selector.metric;
            if PROMETHEUS_OWN.contains(&metric.as_str()) || (!all && only_where_used(metric)) {
                continue;
            }
            if !scrape.exports(metric) {
                problems.push(format!("{process}: {place}: {metric} is not in /metrics"));
                continue;
            }
            // Exact label values must be ones the process exports. Without
            // series yet (lag of partitions not assigned) there is nothing
            // to compare with.
            let Some(series) = scrape.samples.get(metric) else { continue };
            for (label, op, value) in &selector.matchers {
                if TARGET_LABELS.contains(&label.as_str()) || value.contains('$') || label == "le" {
                    continue;
                }
                if !series.iter().any(|labels| labels.contains_key(label)) {
                    problems.push(format!("{process}: {place}: {metric} has no label {label:?}"));
                    continue;
                }
                let wanted: Vec<&str> = match op.as_str() {
                    "=" => vec![value.as_str()],
                    // A plain alternation of literals: each must exist.
                    "=~" if value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|') => {
                        value.split('|').collect()
                    }
                    _ => Vec::new(),
                };
                for want in wanted {
                    if !series.iter().any(|labels| labels.get(label).map(String::as_str) == Some(want)) {
                        let have: BTreeSet<&str> =
                            series.iter().filter_map(|labels| labels.get(label).map(String::as_str)).collect();
                        problems.push(format!(
                            "{process}: {place}: no {metric}{{{label}=\"{want}\"}} series; it has {label} in {have:?}"
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// The queries of the rules and the dashboard.
fn all_queries() -> Vec<(String, String)> {
    let mut queries = alert_expressions(&repo_file("deploy/prometheus/alerts.yaml"));
    queries.extend(dashboard_expressions(&repo_file("deploy/grafana/im-service.json")));
    queries
}

async fn scrape(process: &str, http_port: u16) -> Scrape {
    let (status, body) =
        http_get(http_port, "/metrics").await.unwrap_or_else(|e| panic!("{process}: GET /metrics: {e}"));
    assert_eq!(status, 200, "{process}: /metrics answered {status}: {body}");
    Scrape::parse(&body)
}

/// What `/ready` lists must each have an `im_dependency_up` series:
/// IMDependencyDown watches exactly those.
async fn check_dependencies(process: &str, http_port: u16, scrape: &Scrape) -> Vec<String> {
    let (_, body) = http_get(http_port, "/ready").await.expect("/ready answers");
    let report: serde_json::Value = serde_json::from_str(&body).expect("/ready is JSON");
    let mut problems = Vec::new();
    let series = scrape.samples.get("im_dependency_up").cloned().unwrap_or_default();
    for dependency in report["dependencies"].as_object().into_iter().flat_map(|deps| deps.keys()) {
        if !series.iter().any(|labels| labels.get("dependency") == Some(dependency)) {
            problems.push(format!(
                "{process}: /ready lists {dependency:?}, no im_dependency_up{{dependency={dependency:?}}}"
            ));
        }
    }
    problems
}

/// IMCPUHigh and IMMemoryHigh divide by these: they must be positive.
fn check_limits(process: &str, text_values: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for name in ["im_process_cpu_limit_cores", "im_process_memory_limit_bytes"] {
        let value = text_values
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse::<f64>().ok());
        match value {
            Some(v) if v > 0.0 => {}
            other => problems.push(format!("{process}: {name} is {other:?}, not a positive number")),
        }
    }
    problems
}

async fn check_process(process: &str, http_port: u16, queries: &[(String, String)], all: bool) -> Vec<String> {
    let (_, text) = http_get(http_port, "/metrics").await.expect("/metrics answers");
    let scraped = scrape(process, http_port).await;
    let mut problems = check(process, &scraped, queries, all);
    problems.extend(check_dependencies(process, http_port, &scraped).await);
    problems.extend(check_limits(process, &text));
    problems
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn the_query_reader_finds_names_labels_and_values() {
    let found = selectors(
        r#"sum without (code) (rate(im_messages_failed_total{code=~"UNAVAILABLE|INTERNAL", job=~"$job"}[5m])) / rate(im_messages_accepted_total[$__rate_interval]) and on (job, instance) process_open_fds > 0.8 or up{job="x{y}"} == 0"#,
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["im_messages_failed_total", "im_messages_accepted_total", "process_open_fds", "up"]);
    assert_eq!(
        found[0].matchers,
        [
            ("code".to_owned(), "=~".to_owned(), "UNAVAILABLE|INTERNAL".to_owned()),
            ("job".to_owned(), "=~".to_owned(), "$job".to_owned())
        ]
    );
    assert!(
        selectors(r#"label_values(im_messages_accepted_total{job=~"$job"}, instance)"#)[0].metric
            == "im_messages_accepted_total"
    );

    let scrape = Scrape::parse(
        "# TYPE im_messages_failed counter\nim_messages_failed_total{code=\"UNAVAILABLE\"} 0\n\
         # TYPE im_kafka_consumer_lag gauge\n# TYPE im_routing_latency_seconds histogram\n\
         im_routing_latency_seconds_bucket{le=\"+Inf\"} 0\n",
    );
    assert!(scrape.exports("im_messages_failed_total") && scrape.exports("im_kafka_consumer_lag"));
    assert!(scrape.exports("im_routing_latency_seconds_count") && !scrape.exports("im_routing_latency_seconds"));
    let queries = [("q".to_owned(), r#"rate(im_messages_failed_total{code=~"UNAVAILABLE|INTERNAL"}[5m])"#.to_owned())];
    let problems = check("p", &scrape, &queries, true);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("INTERNAL"), "{problems:?}");
    assert!(!check("p", &scrape, &[("q".into(), "im_messages_failed".into())], true).is_empty());
    let kafka = [("q".to_owned(), "im_kafka_produce_duration_seconds_bucket".to_owned())];
    assert!(check("p", &scrape, &kafka, false).is_empty() && !check("p", &scrape, &kafka, true).is_empty());
}

#[test]
fn every_alert_and_dashboard_query_is_read() {
    let alerts = alert_expressions(&repo_file("deploy/prometheus/alerts.yaml"));
    let multi_line =
        alerts.iter().find(|(place, _)| place == "alert IMMessageFailuresHigh").expect("the failures alert");
    assert!(multi_line.1.contains("im_messages_accepted_total"), "the | block is read whole: {multi_line:?}");
    for (place, expr) in alerts.iter().chain(&dashboard_expressions(&repo_file("deploy/grafana/im-service.json"))) {
        assert!(!selectors(expr).is_empty(), "{place}: no metric found in {expr}");
    }
}

#[tokio::test]
async fn standalone_exports_every_metric_the_alerts_and_the_dashboard_query() {
    let queries = all_queries();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let problems = check_process("im-service (standalone)", node.http_port, &queries, false).await;
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// One production process with `/metrics` served (the fault harness turns
/// it off), killed when dropped.
struct Served {
    name: &'static str,
    child: Child,
    http_port: u16,
}

impl Served {
    async fn start(name: &'static str, bin: &str, dir: &Path, env: &[(String, String)]) -> Served {
        let http_port = free_port();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("IM_DATA_DIR", dir.join(name))
            .env("SERVER_HTTP_PORT", http_port.to_string())
            .env("METRICS_ENABLED", "true")
            .env("METRICS_PORT", free_port().to_string())
            .env("LOG_LEVEL", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut served = Served { name, child, http_port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(http_port, "/ready").await, Ok((200, _))) {
            if let Ok(Some(status)) = served.child.try_wait() {
                let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
                panic!("{name} exited during start-up ({status}); are the servers up? run scripts/servers.sh\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready within 30 s: {:?}",
                http_get(http_port, "/ready").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drops the test's database on the shared MariaDB when the test ends.
struct Database(String);

impl Drop for Database {
    fn drop(&mut self) {
        let (host, port) = SHARED_MARIADB.rsplit_once(':').unwrap();
        let _ = Command::new("mariadb")
            .args(["-h", host, "-P", port, "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.0))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn production_processes_export_every_metric_the_alerts_and_the_dashboard_query() {
    require_server("MariaDB", SHARED_MARIADB).await;
    require_server("Redis", SHARED_REDIS).await;
    require_server("etcd", SHARED_ETCD).await;
    require_server("the Kafka-protocol broker (tansu)", SHARED_KAFKA).await;
    let queries = all_queries();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("obs").replace('_', "-");
    let database = Database(unique("im_obs"));
    let mut common: Vec<(String, String)> = vec![
        ("JWT_SECRET".into(), format!("observability-test-secret-{name}-0123456789abcdef")),
        ("CLUSTER_NAME".into(), name.clone()),
        ("DB_HOST".into(), SHARED_MARIADB.into()),
        ("DB_USER".into(), "root".into()),
        ("DB_NAME".into(), database.0.clone()),
    ];
    common.extend(crate::broker::kafka_env(SHARED_KAFKA));
    let with = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut env = common.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let user_addr = format!("127.0.0.1:{}", free_port());
    let node_grpc = free_port();
    let push_addr = format!("127.0.0.1:{}", free_port());
    let user = Served::start(
        "im-user",
        env!("CARGO_BIN_EXE_im-user"),
        dir.path(),
        &with(&[("USER_SERVICE_ADDR", user_addr.clone()), ("ETCD_ENDPOINTS", SHARED_ETCD.into())]),
    )
    .await;
    let node = Served::start(
        "im-service",
        env!("CARGO_BIN_EXE_im-service"),
        dir.path(),
        &with(&[
            ("NODE_ID", "1".into()),
            ("SERVER_GRPC_PORT", node_grpc.to_string()),
            ("SERVER_WS_PORT", free_port().to_string()),
            ("REDIS_ADDR", SHARED_REDIS.into()),
            ("ETCD_ENDPOINTS", SHARED_ETCD.into()),
            ("USER_SERVICE_ADDR", user_addr.clone()),
            ("GATEWAY_SERVICE_ADDR", push_addr.clone()),
        ]),
    )
    .await;
    let gateway = Served::start(
        "im-gateway",
        env!("CARGO_BIN_EXE_im-gateway"),
        dir.path(),
        &with(&[
            ("SERVER_WS_PORT", free_port().to_string()),
            ("ETCD_ENDPOINTS", SHARED_ETCD.into()),
            ("IM_SERVICE_ADDR", format!("127.0.0.1:{node_grpc}")),
            ("GATEWAY_SERVICE_ADDR", push_addr.clone()),
        ]),
    )
    .await;

    // The node reports its consumers' lag once they have partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scrape("im-service", node.http_port).await.samples.contains_key("im_kafka_consumer_lag") {
        assert!(Instant::now() < deadline, "im-service reports no im_kafka_consumer_lag series within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut problems = Vec::new();
    for process in [&user, &node, &gateway] {
        let all = std::ptr::eq(process, &node);
        problems.extend(check_process(process.name, process.http_port, &queries, all).await);
    }
    // The production dependencies are reported, so the rules see them.
    let node_metrics = scrape("im-service", node.http_port).await;
    for dependency in ["mysql", "redis", "etcd", "kafka", "user-service"] {
        let up = node_metrics
            .samples
            .get("im_dependency_up")
            .into_iter()
            .flatten()
            .any(|labels| labels.get("dependency").map(String::as_str) == Some(dependency));
        if !up {
            problems.push(format!("im-service: no im_dependency_up{{dependency=\"{dependency}\"}}"));
        }
    }
    drop((gateway, node, user));
    drop(database);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// Bodies never reach the logs, at any level (issue 15): a node at
/// `LOG_LEVEL=trace` (its libraries' frame traces included) carries a
/// message, and its whole log holds neither the body nor its hex.
#[tokio::test]
async fn at_trace_level_no_body_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("node.log");
    let mut node =
        crate::support::Node::start_logging_to(&dir.path().join("data"), &[("LOG_LEVEL", "trace")], &log_path).await;
    let (_, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let mut phone = node.connect(&alice_token, "phone").await;
    const BODY: &str = "zq-secret-body-7f3a";
    crate::support::ack(phone.send_text(bob, "secret", BODY).await);
    assert!(bob_phone.next_event(std::time::Duration::from_secs(5)).await.is_some(), "bob got the push");
    node.kill9();
    let text = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned();
    assert!(text.lines().count() > 50, "trace logging was on: {} lines", text.lines().count());
    let hex: String = BODY.bytes().map(|b| format!("{b:02x}")).collect();
    for needle in [BODY.to_owned(), hex.clone(), hex.to_uppercase()] {
        assert!(!text.contains(&needle), "the body reached the log as {needle:?}");
    }
}
