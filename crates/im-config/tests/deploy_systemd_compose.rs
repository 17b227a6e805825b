//! The systemd units and the compose file configure the three processes through environment variables
//! and `deploy/systemd/config.yaml`; a misspelt variable is silently ignored by systemd and compose, and
//! the process then runs on a default. These tests read the shipped files and check them with the real
//! loader:
//!
//! - every variable a unit (`Environment=`), the env template (`deploy/systemd/env.example`, also its
//!   commented-out suggestions), the Dockerfile (`ENV`) or an IM service of `deploy/compose.yaml` sets is
//!   a configuration key, or listed in [`NOT_CONFIG_KEYS`] with its reason;
//! - each process's configuration loads: a unit's environment over `config.yaml`, a compose service's
//!   environment alone, and has what that binary needs to start;
//! - the wiring holds: distinct ports per host and distinct node ids, every address names a compose
//!   service, every `depends_on` target exists and has a health check, one shared `JWT_SECRET`.
//!
//! `scripts/check-systemd-docker.sh` runs the tools that see the rest (systemd-analyze, hadolint,
//! compose's own validation).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use im_config::{Config, load, reference};
use serde_yaml::Value;

/// Variables the deployment files may set that are not configuration keys, with the reason.
const NOT_CONFIG_KEYS: &[(&str, &str)] = &[
    // Read by the binaries' argument parsing (im-service's cli.rs), not by im-config.
    ("IM_CONFIG", "the path of config.yaml, as --config"),
    // The KMS credentials of encryption at rest, read by the AWS SDK (docs/encryption.md).
    ("AWS_ACCESS_KEY_ID", "the KMS access key, read by the AWS SDK"),
    ("AWS_SECRET_ACCESS_KEY", "the KMS secret key, read by the AWS SDK"),
    ("AWS_REGION", "the KMS region, read by the AWS SDK"),
];

/// The shared key the tests put where an operator puts theirs.
fn test_secret() -> String {
    "9c41e07b-3fa2-48d6-b15e-7a0d2c96f834".to_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn known_env() -> BTreeSet<&'static str> {
    reference().map(|key| key.env).chain(NOT_CONFIG_KEYS.iter().map(|(name, _)| *name)).collect()
}

fn assert_known(origin: &str, names: impl IntoIterator<Item = impl AsRef<str>>) {
    let known = known_env();
    let unknown: Vec<String> =
        names.into_iter().map(|n| n.as_ref().to_owned()).filter(|n| !known.contains(n.as_str())).collect();
    assert!(unknown.is_empty(), "{origin} sets variables that are no configuration key: {unknown:?}");
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or_else(|| panic!("{addr:?} has no port"))
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// The three binaries, by what each needs to start (their `bind`/`run` and `refuse_unsupported` in
/// im-service: without these they exit at start-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Binary {
    Service,
    Gateway,
    User,
}

impl Binary {
    fn from_program(program: &str) -> Binary {
        match program.rsplit('/').next() {
            Some("im-service") => Binary::Service,
            Some("im-gateway") => Binary::Gateway,
            Some("im-user") => Binary::User,
            other => panic!("unknown program {other:?}"),
        }
    }

    /// What this binary needs beyond a valid configuration, as the wiring checks it.
    fn assert_startable(self, origin: &str, config: &Config) {
        let services = &config.services;
        match self {
            Binary::Service => {
                // A remote gateway needs etcd to find it (app::refuse_unsupported).
                if !services.gateway.addr.is_empty() {
                    assert!(!config.etcd.endpoints.is_empty(), "{origin}: GATEWAY_SERVICE_ADDR without ETCD_ENDPOINTS");
                }
                // The list the deployment installs (systemd) or mounts (compose) is
                // deploy/filter/wordlist.txt: the_shipped_word_list_loads.
                if config.filter.enabled {
                    let path = config.filter.wordlist_path.as_ref().expect("validated: a path when enabled");
                    assert_eq!(path.file_name(), Some("wordlist.txt".as_ref()), "{origin}: not the shipped list");
                }
            }
            Binary::Gateway => {
                assert!(!services.gateway.addr.is_empty(), "{origin}: im-gateway needs GATEWAY_SERVICE_ADDR");
                assert!(!services.im.addr.is_empty(), "{origin}: im-gateway needs IM_SERVICE_ADDR");
                assert!(!config.etcd.endpoints.is_empty(), "{origin}: im-gateway needs ETCD_ENDPOINTS");
            }
            Binary::User => {
                assert!(!services.user.addr.is_empty(), "{origin}: im-user needs USER_SERVICE_ADDR");
                assert!(!config.kafka.brokers.is_empty(), "{origin}: im-user needs KAFKA_BROKERS");
            }
        }
        // Every production process shares the token key (also enforced by the loader).
        assert_eq!(config.auth.jwt_secret.expose(), test_secret(), "{origin}: not the shared JWT_SECRET");
    }

    /// The TCP ports this process listens on.
    fn ports(self, config: &Config) -> Vec<u16> {
        let mut ports = vec![config.server.http_port];
        if config.observability.metrics_enabled {
            ports.push(config.observability.metrics_port);
        }
        match self {
            Binary::Service => {
                ports.push(config.server.grpc_port);
                if config.services.gateway.addr.is_empty() {
                    ports.push(config.server.ws_port);
                }
            }
            Binary::Gateway => ports.extend([config.server.ws_port, port_of(&config.services.gateway.addr)]),
            Binary::User => ports.push(port_of(&config.services.user.addr)),
        }
        ports
    }
}

/// The sensitive-word list the systemd install copies to /etc/im-service and compose mounts: a node
/// whose list does not load exits 2 at start.
#[test]
fn the_shipped_word_list_loads() {
    let list = std::fs::read(repo().join("deploy/filter/wordlist.txt")).unwrap();
    im_filter::WordList::parse(&list).unwrap_or_else(|e| panic!("deploy/filter/wordlist.txt: {e}"));
    let compose = read("deploy/compose.yaml");
    assert!(compose.contains("./filter:/etc/im-service/filter:ro"), "compose mounts deploy/filter");
}

// ---------------------------------------------------------------- systemd

const UNITS: [&str; 3] = ["im-service.service", "im-gateway.service", "im-user.service"];

/// A unit file as (key, value) pairs of its `[Service]` section, in order; comments dropped.
fn service_section(unit: &str) -> Vec<(String, String)> {
    let text = read(&format!("deploy/systemd/{unit}"));
    let mut in_service = false;
    let mut pairs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{unit}: not key=value: {line}"));
            pairs.push((key.to_owned(), value.to_owned()));
        }
    }
    pairs
}

fn the(pairs: &[(String, String)], key: &str) -> String {
    let values: Vec<&String> = pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect();
    assert_eq!(values.len(), 1, "expected one {key}=, found {values:?}");
    values[0].clone()
}

/// `Environment=` assignments: space-separated `VAR=value`, each optionally in double quotes.
fn unit_environment(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (_, value) in pairs.iter().filter(|(k, _)| k == "Environment") {
        let mut words = Vec::new();
        let (mut word, mut quoted) = (String::new(), false);
        for c in value.chars() {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => words.extend((!word.is_empty()).then(|| std::mem::take(&mut word))),
                c => word.push(c),
            }
        }
        words.extend((!word.is_empty()).then_some(word));
        for word in words {
            let (name, value) = word.split_once('=').unwrap_or_else(|| panic!("Environment= word {word:?}"));
            assert!(!value.contains('%'), "{name}: specifiers are not expanded by this test");
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    env
}

/// The env template: the active `VAR=value` lines, and the names of the commented-out `#VAR=value`
/// suggestions.
fn env_template() -> (BTreeMap<String, String>, Vec<String>) {
    let (mut active, mut suggested) = (BTreeMap::new(), Vec::new());
    for line in read("deploy/systemd/env.example").lines() {
        let is_assignment = |s: &str| {
            s.split_once('=').is_some_and(|(n, _)| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
        };
        if let Some(commented) = line.strip_prefix('#') {
            if is_assignment(commented) {
                suggested.push(commented.split_once('=').unwrap().0.to_owned());
            }
        } else if is_assignment(line) {
            let (name, value) = line.split_once('=').unwrap();
            active.insert(name.to_owned(), value.to_owned());
        } else {
            assert!(line.trim().is_empty(), "env.example: not a comment nor VAR=value: {line}");
        }
    }
    (active, suggested)
}

/// The environment systemd gives `unit`'s process: its `Environment=`, then the env file, which wins
/// (systemd.exec: EnvironmentFile= overrides Environment=).
fn unit_process_env(unit: &str, env_file: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = unit_environment(&service_section(unit)).into_iter().collect();
    env.extend(env_file.clone());
    env
}

/// The template as an operator fills it: the two required secrets set.
fn filled_env_file() -> BTreeMap<String, String> {
    let (mut env, _) = env_template();
    env.insert("JWT_SECRET".into(), test_secret());
    env.insert("DB_PASSWORD".into(), "db-pass".into());
    env
}

fn systemd_config_path() -> PathBuf {
    repo().join("deploy/systemd/config.yaml")
}

#[test]
fn every_variable_of_the_units_and_the_env_template_is_a_configuration_key() {
    for unit in UNITS {
        assert_known(unit, unit_environment(&service_section(unit)).keys());
    }
    let (active, suggested) = env_template();
    assert_known("env.example", active.keys());
    assert_known("env.example (commented-out suggestions)", &suggested);
}

#[test]
fn the_env_template_sets_nothing_that_differs_per_unit() {
    // The env file overrides Environment=, and all three units read the same file: a per-process value
    // there would reach all three.
    let (active, _) = env_template();
    for unit in UNITS {
        for name in unit_environment(&service_section(unit)).keys() {
            assert!(!active.contains_key(name), "env.example sets {name}, which {unit} sets for itself");
        }
    }
}

#[test]
fn each_unit_runs_its_binary_with_the_shipped_config_and_env_file_as_the_sysusers_user() {
    let sysusers = read("deploy/systemd/im-service.sysusers.conf");
    let user_line = sysusers.lines().find(|l| l.starts_with("u ")).expect("a `u` line");
    let user = user_line.split_whitespace().nth(1).unwrap();
    for unit in UNITS {
        let pairs = service_section(unit);
        let exec = the(&pairs, "ExecStart");
        let program = unit.trim_end_matches(".service");
        assert_eq!(exec, format!("/opt/im-service/bin/{program} --config /etc/im-service/config.yaml"), "{unit}");
        assert_eq!(the(&pairs, "EnvironmentFile"), "/etc/im-service/env", "{unit}");
        assert_eq!(the(&pairs, "User"), user, "{unit}");
        assert_eq!(the(&pairs, "Group"), user, "{unit}");
        // The data dir is the unit's StateDirectory, which systemd creates and hands to the user.
        let state = the(&pairs, "StateDirectory");
        let env = unit_environment(&pairs);
        assert_eq!(env.get("IM_DATA_DIR").map(String::as_str), Some(format!("/var/lib/{state}").as_str()), "{unit}");
        assert_eq!(the(&pairs, "WorkingDirectory"), format!("/var/lib/{state}"), "{unit}");
        // Exit 2 is a configuration error: restarting cannot fix it.
        assert_eq!(the(&pairs, "RestartPreventExitStatus"), "2", "{unit}");
    }
}

#[test]
fn the_three_units_share_one_hardening_block() {
    let hardening = |unit: &str| -> Vec<(String, String)> {
        let text = read(&format!("deploy/systemd/{unit}"));
        let block = &text[text.find("# Hardening").unwrap_or_else(|| panic!("{unit}: no hardening block"))..];
        let block = &block[..block.find("[Install]").expect("[Install]")];
        block
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    };
    let first = hardening(UNITS[0]);
    for key in [
        "ProtectSystem",
        "CapabilityBoundingSet",
        "MemoryDenyWriteExecute",
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "PrivateDevices",
    ] {
        assert!(first.iter().any(|(k, _)| k == key), "{}: {key}= missing", UNITS[0]);
    }
    for unit in &UNITS[1..] {
        assert_eq!(hardening(unit), first, "{unit}'s hardening differs from {}'s", UNITS[0]);
    }
}

#[test]
fn each_unit_loads_the_shipped_config_and_the_three_fit_on_one_host() {
    let env_file = filled_env_file();
    let mut listening: BTreeMap<u16, &str> = BTreeMap::new();
    for unit in UNITS {
        let env = unit_process_env(unit, &env_file);
        let config = load(Some(&systemd_config_path()), &env).unwrap_or_else(|e| panic!("{unit}:\n{e}"));
        let binary = Binary::from_program(unit.trim_end_matches(".service"));
        binary.assert_startable(unit, &config);
        assert_eq!(config.database.password.expose(), "db-pass", "{unit}: DB_PASSWORD from the env file");
        for port in binary.ports(&config) {
            if let Some(other) = listening.insert(port, unit) {
                panic!("{unit} and {other} both listen on {port}");
            }
        }
    }
}

#[test]
fn the_untouched_template_does_not_start_anything() {
    // JWT_SECRET= is empty in the template: a copy nobody edited must not run with a known key.
    let (template, _) = env_template();
    for unit in UNITS {
        let env = unit_process_env(unit, &template);
        let error = load(Some(&systemd_config_path()), &env).expect_err(unit);
        assert!(error.problems().iter().any(|p| p.key == "auth.jwt_secret"), "{unit}: {error}");
    }
    // No env file at all: `${JWT_SECRET}` in config.yaml is unset, which is an error, not an empty key.
    let error = load(Some(&systemd_config_path()), &HashMap::new()).expect_err("no env file");
    assert!(error.problems().iter().any(|p| p.key == "auth.jwt_secret"), "{error}");
}

// ---------------------------------------------------------------- Docker

/// The variables of the Dockerfile's `ENV` instructions (with `\` continuations).
fn dockerfile_env() -> BTreeMap<String, String> {
    let text = read("deploy/Dockerfile").replace("\\\n", " ");
    let mut env = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.trim().strip_prefix("ENV ")) {
        for word in line.split_whitespace() {
            let (name, value) = word.split_once('=').expect("ENV NAME=value");
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    env
}

#[test]
fn the_images_env_is_configuration_and_its_healthcheck_port_is_the_default() {
    let env = dockerfile_env();
    assert_known("deploy/Dockerfile ENV", env.keys());
    let config = load(None, &env.into_iter().collect()).expect("the image's own environment loads");
    let text = read("deploy/Dockerfile");
    let healthcheck = &text[text.find("HEALTHCHECK").expect("a HEALTHCHECK")..];
    let default_port = format!("${{SERVER_HTTP_PORT:-{}}}", config.server.http_port);
    assert!(healthcheck.contains(&default_port), "the HEALTHCHECK does not default to {default_port}");
}

// ---------------------------------------------------------------- compose

/// Compose's interpolation of `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}` and `$$`, enough for
/// deploy/compose.yaml. An unset required variable is an `Err` naming it.
fn interpolate(text: &str, vars: &HashMap<&str, &str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let reference = &body[..end];
            let set = |name: &str| vars.get(name).copied().filter(|v| !v.is_empty());
            if let Some((name, message)) = reference.split_once(":?") {
                out.push_str(set(name).ok_or_else(|| format!("{name}: {message}"))?);
            } else if let Some((name, default)) = reference.split_once(":-") {
                out.push_str(set(name).unwrap_or(default));
            } else if let Some((name, default)) = reference.split_once('-') {
                // Without the colon the default is for unset only: set and empty stays empty.
                out.push_str(vars.get(name).copied().unwrap_or(default));
            } else {
                out.push_str(vars.get(reference).copied().unwrap_or(""));
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_all(value: &mut Value, vars: &HashMap<&str, &str>) -> Result<(), String> {
    match value {
        Value::String(s) => *s = interpolate(s, vars)?,
        Value::Sequence(items) => items.iter_mut().try_for_each(|v| interpolate_all(v, vars))?,
        Value::Mapping(map) => map.values_mut().try_for_each(|v| interpolate_all(v, vars))?,
        _ => {}
    }
    Ok(())
}

/// The secrets of deploy/compose/im.env, as an operator sets them.
fn compose_vars() -> HashMap<&'static str, &'static str> {
    let secret: &'static str = Box::leak(test_secret().into_boxed_str());
    HashMap::from([
        ("JWT_SECRET", secret),
        ("DB_PASSWORD", "db-pass"),
        ("MARIADB_ROOT_PASSWORD", "root-pass"),
        ("REDIS_PASSWORD", "redis-pass"),
    ])
}

fn compose_with(vars: &HashMap<&str, &str>) -> Result<Value, String> {
    let mut doc: Value = serde_yaml::from_str(&read("deploy/compose.yaml")).expect("compose.yaml is YAML");
    // One pass merges the `<<` it finds, but not a `<<` inside what it merged in (x-node-env's own
    // `<<` reaches the nodes through theirs): merge until none is left.
    for _ in 0..8 {
        if !has_merge_key(&doc) {
            break;
        }
        doc.apply_merge().expect("compose.yaml's << merges");
    }
    assert!(!has_merge_key(&doc), "compose.yaml: `<<` nested deeper than 8");
    interpolate_all(&mut doc, vars)?;
    Ok(doc)
}

fn has_merge_key(value: &Value) -> bool {
    match value {
        Value::Mapping(map) => map.iter().any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        Value::Sequence(items) => items.iter().any(has_merge_key),
        _ => false,
    }
}

fn services(doc: &Value) -> BTreeMap<String, Value> {
    doc["services"]
        .as_mapping()
        .expect("services:")
        .iter()
        .map(|(name, service)| (name.as_str().expect("a service name").to_owned(), service.clone()))
        .collect()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn environment(service: &Value) -> HashMap<String, String> {
    match &service["environment"] {
        Value::Mapping(map) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Value::Null => HashMap::new(),
        other => panic!("environment: use a mapping, found {other:?}"),
    }
}

/// The IM processes: the services running the project's image, with their binary.
fn im_services(services: &BTreeMap<String, Value>) -> Vec<(String, Binary, HashMap<String, String>)> {
    let image = services.values().find_map(|s| s["build"].is_mapping().then(|| s["image"].clone())).expect("a build");
    services
        .iter()
        .filter(|(_, s)| s["image"] == image)
        .map(|(name, s)| {
            let program = s["command"][0].as_str().unwrap_or_else(|| panic!("{name}: command: [program]"));
            (name.clone(), Binary::from_program(program), environment(s))
        })
        .collect()
}

/// The names a service answers to on the compose network: its own and its aliases.
fn network_names(services: &BTreeMap<String, Value>) -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, service) in services {
        names.entry(name.clone()).or_default().push(name.clone());
        if let Some(networks) = service["networks"].as_mapping() {
            for network in networks.values() {
                for alias in network["aliases"].as_sequence().into_iter().flatten() {
                    names.entry(alias.as_str().unwrap().to_owned()).or_default().push(name.clone());
                }
            }
        }
    }
    names
}

#[test]
fn every_variable_of_the_compose_im_services_is_a_configuration_key() {
    let services = services(&compose_with(&compose_vars()).unwrap());
    let im = im_services(&services);
    assert!(!im.is_empty());
    for (name, _, env) in &im {
        assert_known(&format!("compose service {name}"), env.keys());
    }
}

#[test]
fn compose_runs_the_production_topology_and_each_process_loads() {
    let services = services(&compose_with(&compose_vars()).unwrap());
    let im = im_services(&services);
    let count = |binary| im.iter().filter(|(_, b, _)| *b == binary).count();
    assert_eq!((count(Binary::User), count(Binary::Service), count(Binary::Gateway)), (1, 2, 1), "{im:?}");
    for server in ["mariadb", "redis", "etcd", "kafka"] {
        assert!(services.contains_key(server), "no {server} service");
    }

    let names = network_names(&services);
    let resolves = |origin: &str, addr: &str| {
        assert!(names.contains_key(host_of(addr)), "{origin}: {addr} names no compose service");
    };
    let mut node_ids = BTreeSet::new();
    for (name, binary, env) in &im {
        let config = load(None, env).unwrap_or_else(|e| panic!("compose service {name}:\n{e}"));
        binary.assert_startable(name, &config);
        // The health check compose waits on is the process's own HTTP port.
        let check = serde_yaml::to_string(&services[name]["healthcheck"]["test"]).unwrap();
        assert!(check.contains(&format!(":{}/ready", config.server.http_port)), "{name}: health check {check}");

        let services_config = &config.services;
        for addr in [&services_config.gateway.addr, &services_config.user.addr, &services_config.im.addr] {
            if !addr.is_empty() {
                resolves(name, addr);
            }
        }
        for addr in config.kafka.brokers.iter().chain(&config.etcd.endpoints) {
            resolves(name, addr);
        }
        for addr in [&config.database.host, &config.redis.addr].into_iter().filter(|a| !a.is_empty()) {
            resolves(name, addr);
        }
        match binary {
            Binary::Service => assert!(node_ids.insert(config.server.node_id), "{name}: NODE_ID already taken"),
            // Its push address is registered in etcd for the nodes to dial: it must be this service.
            Binary::Gateway => assert!(names[host_of(&services_config.gateway.addr)].contains(name), "{name}"),
            Binary::User => assert!(names[host_of(&services_config.user.addr)].contains(name), "{name}"),
        }
        if let Binary::Gateway = binary {
            let targets = &names[host_of(&services_config.im.addr)];
            assert!(targets.iter().all(|t| im.iter().any(|(n, b, _)| n == t && *b == Binary::Service)), "{name}");
        }
    }
}

/// The commented HA lines of deploy/compose/im.env.example, uncommented: the nodes then take Redis from
/// the Sentinels (REDIS_ADDR emptied, not defaulted) and create topics with three replicas.
#[test]
fn the_env_template_s_ha_lines_point_every_process_at_the_ha_servers() {
    let template = read("deploy/compose/im.env.example");
    let ha: Vec<(&str, &str)> = template
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| {
            ["DB_HOST", "REDIS_", "KAFKA_", "ETCD_"].iter().any(|prefix| key.starts_with(prefix)) && !key.contains(' ')
        })
        .collect();
    assert!(ha.iter().any(|(key, _)| *key == "REDIS_SENTINELS"), "no HA lines in the env template: {ha:?}");
    let mut vars = compose_vars();
    vars.extend(ha.iter().copied());
    let services = services(&compose_with(&vars).unwrap());
    let nodes: Vec<_> = im_services(&services).into_iter().filter(|(_, b, _)| *b == Binary::Service).collect();
    assert_eq!(nodes.len(), 2);
    for (name, binary, env) in &nodes {
        let config = load(None, env).unwrap_or_else(|e| panic!("compose service {name} with the HA lines:\n{e}"));
        binary.assert_startable(name, &config);
        assert!(config.redis.addr.is_empty() && config.redis.sentinels.len() == 3, "{name}: {:?}", config.redis);
        assert_eq!(config.redis.master_name, "redis-master");
        assert_eq!((config.kafka.replication_factor, config.kafka.min_insync_replicas), (3, 2), "{name}");
        assert_eq!((config.kafka.brokers.len(), config.etcd.endpoints.len()), (3, 3), "{name}");
        assert_eq!(config.database.host, "mysql-primary.internal:3306");
    }
}

#[test]
fn the_database_the_processes_use_is_the_one_mariadb_creates() {
    let services = services(&compose_with(&compose_vars()).unwrap());
    let mariadb = environment(&services["mariadb"]);
    for (name, _, env) in im_services(&services) {
        if let Some(user) = env.get("DB_USER") {
            assert_eq!(Some(user), mariadb.get("MARIADB_USER"), "{name}");
            assert_eq!(env.get("DB_NAME"), mariadb.get("MARIADB_DATABASE"), "{name}");
            assert_eq!(env.get("DB_PASSWORD"), mariadb.get("MARIADB_PASSWORD"), "{name}");
        }
        if env.contains_key("REDIS_PASSWORD") {
            assert_eq!(env.get("REDIS_PASSWORD"), environment(&services["redis"]).get("REDIS_PASSWORD"), "{name}");
        }
    }
}

#[test]
fn compose_dependencies_exist_and_are_waited_for_by_health() {
    let services = services(&compose_with(&compose_vars()).unwrap());
    for (name, service) in &services {
        assert!(service["healthcheck"]["test"].is_sequence(), "{name}: no health check");
        let Some(depends_on) = service["depends_on"].as_mapping() else { continue };
        for (target, how) in depends_on {
            let target = target.as_str().unwrap();
            assert!(services.contains_key(target), "{name} depends on {target}, which is no service");
            assert_eq!(how["condition"].as_str(), Some("service_healthy"), "{name} -> {target}");
        }
    }
}

#[test]
fn only_the_gateway_is_published() {
    let services = services(&compose_with(&compose_vars()).unwrap());
    let published: Vec<&String> = services.iter().filter(|(_, s)| !s["ports"].is_null()).map(|(n, _)| n).collect();
    assert_eq!(published, ["gateway"]);
}

#[test]
fn compose_refuses_to_run_without_each_secret() {
    for missing in ["JWT_SECRET", "DB_PASSWORD", "MARIADB_ROOT_PASSWORD", "REDIS_PASSWORD"] {
        let mut vars = compose_vars();
        vars.remove(missing);
        let error = compose_with(&vars).expect_err(missing);
        assert!(error.starts_with(missing), "{missing}: {error}");
    }
}

#[test]
fn the_compose_env_template_names_every_secret_and_holds_none() {
    let template = read("deploy/compose/im.env.example");
    for (name, _) in compose_vars() {
        let line = template.lines().find(|l| l.starts_with(&format!("{name}="))).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(line, format!("{name}="), "im.env.example must leave {name} empty");
    }
}
