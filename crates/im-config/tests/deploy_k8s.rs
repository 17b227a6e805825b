//! The Kubernetes manifests (deploy/k8s) against the configuration they feed: every environment
//! variable a container sets is a configuration key (or listed in `NOT_CONFIG` with the reason), every
//! process loads its configuration and gets what its binary requires to start, and the ports, probes
//! and Services agree with the configuration the process ends up with. Schema and security checks are
//! scripts/check-k8s.sh's (kubernetes-validate, checkov).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use im_config::{Config, JwtKeySource, load};
use serde_yaml::Value;

/// Variables a manifest may set that are not configuration keys, each with why it is set.
const NOT_CONFIG: &[(&str, &str)] = &[
    ("POD_IP", "the gateway pod's IP, expanded into GATEWAY_SERVICE_ADDR"),
    ("AWS_ACCESS_KEY_ID", "the KMS credentials, read by the AWS SDK (docs/encryption.md)"),
    ("AWS_SECRET_ACCESS_KEY", "the KMS credentials, read by the AWS SDK"),
    ("AWS_REGION", "the KMS region, read by the AWS SDK"),
];

/// Files of deploy/k8s that `kubectl apply -k` does not apply, each with why.
const NOT_IN_KUSTOMIZATION: &[(&str, &str)] = &[
    ("kustomization.yaml", "the kustomization itself"),
    ("secrets.example.yaml", "placeholders: the operator creates the Secrets"),
    ("servicemonitor.yaml", "needs the Prometheus Operator's CRDs"),
];

/// The template that documents every Secret the pods read.
const SECRETS_TEMPLATE: &str = "secrets.example.yaml";

/// The operator's filled-in copy of the template (deploy/k8s/.gitignore): not part of the manifests.
const OPERATOR_SECRETS: &str = "secrets.yaml";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s")
}

/// One YAML document of a manifest file.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
}

/// Every document of every `.yaml` file in deploy/k8s, files in name order.
fn docs() -> Vec<Doc> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/k8s exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .filter(|path| !path.ends_with(OPERATOR_SECRETS))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        // serde_yaml reads one document at a time; the separators are lines of their own.
        for chunk in text.split("\n---\n") {
            let value: Value = serde_yaml::from_str(chunk).unwrap_or_else(|e| panic!("{file}: {e}"));
            if !value.is_null() {
                docs.push(Doc { file: file.clone(), value });
            }
        }
    }
    docs
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_sequence().map(|seq| seq.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// A container of a workload, with its environment resolved as the kubelet would.
struct Container {
    /// `Kind/name` of the workload, for messages.
    workload: String,
    kind: String,
    /// The binary it runs: im-service, im-gateway or im-user.
    program: String,
    pod_labels: BTreeMap<String, String>,
    spec: Value,
    env: HashMap<String, String>,
    /// (variable, Secret, key) of every variable taken from a Secret.
    secret_refs: Vec<(String, String, String)>,
    /// Named container ports.
    ports: BTreeMap<String, u16>,
    /// The pod's `volumes`.
    pod_volumes: Value,
}

impl Container {
    fn config(&self) -> Config {
        load(None, &self.env).unwrap_or_else(|e| panic!("{}: the configuration does not load:\n{e}", self.workload))
    }

    fn port(&self, name: &str) -> u16 {
        *self.ports.get(name).unwrap_or_else(|| panic!("{}: no container port named {name}", self.workload))
    }
}

/// `$(NAME)` of a variable defined earlier in the list is replaced by its value, as in Kubernetes.
fn expand(value: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')').map(|end| (&after[..end], end)) {
            Some((name, end)) if env.contains_key(name) => {
                out.push_str(&env[name]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn containers(docs: &[Doc]) -> Vec<Container> {
    let config_maps: HashMap<&str, &Value> =
        docs.iter().filter(|d| d.kind() == "ConfigMap").map(|d| (d.name(), &d.value["data"])).collect();
    let mut found = Vec::new();
    for doc in docs.iter().filter(|d| matches!(d.kind(), "Deployment" | "StatefulSet" | "DaemonSet")) {
        let pod = &doc.value["spec"]["template"];
        let pod_labels: BTreeMap<String, String> = pod["metadata"]["labels"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned()))
            .collect();
        for spec in pod["spec"]["containers"].as_sequence().expect("a pod has containers") {
            let workload = format!("{}/{} ({})", doc.kind(), doc.name(), doc.file);
            let command = strings(&spec["command"]).join(" ");
            // The image's default command is im-service (deploy/Dockerfile).
            let program = command
                .split_whitespace()
                .find_map(|word| word.strip_prefix("/usr/local/bin/"))
                .unwrap_or("im-service")
                .to_owned();
            let mut env = HashMap::new();
            let mut secret_refs = Vec::new();
            for var in spec["env"].as_sequence().into_iter().flatten() {
                let name = var["name"].as_str().unwrap().to_owned();
                let from = &var["valueFrom"];
                let value = if let Some(value) = var["value"].as_str() {
                    expand(value, &env)
                } else if let Some(secret) = from["secretKeyRef"].as_mapping() {
                    let (secret, key) = (secret["name"].as_str().unwrap(), secret["key"].as_str().unwrap());
                    secret_refs.push((name.clone(), secret.to_owned(), key.to_owned()));
                    // A placeholder that passes validation: the value is the operator's.
                    "9c41e07b-3fa2-48d6-b15e-7a0d2c96f834".to_owned()
                } else if let Some(reference) = from["configMapKeyRef"].as_mapping() {
                    let (map, key) = (reference["name"].as_str().unwrap(), reference["key"].as_str().unwrap());
                    let data = config_maps.get(map).unwrap_or_else(|| panic!("{workload}: no ConfigMap {map}"));
                    data[key].as_str().unwrap_or_else(|| panic!("{workload}: ConfigMap {map} has no {key}")).to_owned()
                } else if from["fieldRef"]["fieldPath"].as_str() == Some("status.podIP") {
                    "10.1.2.3".to_owned()
                } else {
                    panic!("{workload}: {name} has a source this test does not know: {var:?}");
                };
                env.insert(name, value);
            }
            // im-service's NODE_ID is set by its shell command from the pod's ordinal (0 -> 1).
            if command.contains("NODE_ID=") {
                env.insert("NODE_ID".to_owned(), "1".to_owned());
            }
            let ports = spec["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|port| {
                    let number = port["containerPort"].as_u64().unwrap();
                    (port["name"].as_str().unwrap().to_owned(), u16::try_from(number).unwrap())
                })
                .collect();
            found.push(Container {
                workload,
                kind: doc.kind().to_owned(),
                program,
                pod_labels: pod_labels.clone(),
                spec: spec.clone(),
                env,
                secret_refs,
                ports,
                pod_volumes: pod["spec"]["volumes"].clone(),
            });
        }
    }
    found
}

fn by_program<'a>(containers: &'a [Container], program: &str) -> &'a Container {
    let mut matching = containers.iter().filter(|c| c.program == program);
    let container = matching.next().unwrap_or_else(|| panic!("no container runs {program}"));
    assert!(matching.next().is_none(), "more than one container runs {program}");
    container
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or_else(|| panic!("no port in {addr:?}"))
}

#[test]
fn all_three_processes_are_deployed() {
    let containers = containers(&docs());
    let programs: BTreeSet<&str> = containers.iter().map(|c| c.program.as_str()).collect();
    assert_eq!(programs, BTreeSet::from(["im-gateway", "im-service", "im-user"]));
}

#[test]
fn every_variable_is_a_config_key_or_listed() {
    let keys: BTreeSet<&str> = im_config::reference().map(|key| key.env).collect();
    for container in containers(&docs()) {
        for name in container.env.keys() {
            assert!(
                keys.contains(name.as_str()) || NOT_CONFIG.iter().any(|(listed, _)| listed == name),
                "{}: {name} is neither a configuration key (CONFIG_REFERENCE.md) nor in NOT_CONFIG",
                container.workload
            );
        }
    }
}

#[test]
fn every_process_gets_what_it_requires() {
    for container in containers(&docs()) {
        let config = container.config();
        let what = &container.workload;
        // Reachable from other pods, and one token key shared by all (a generated one is per process).
        assert_eq!(config.server.listen_host, "0.0.0.0", "{what}: listens on loopback only");
        assert!(matches!(config.jwt_key_source(), JwtKeySource::Configured(_)), "{what}: needs JWT_SECRET");
        match container.program.as_str() {
            // Several nodes share everything: no embedded store, allocator, bus or registry, and the
            // gateways and the user directory are processes of their own.
            "im-service" => {
                assert!(config.uses_mysql() && config.uses_redis(), "{what}: needs DB_HOST and REDIS_ADDR");
                assert!(config.uses_kafka() && config.uses_etcd(), "{what}: needs KAFKA_BROKERS and ETCD_ENDPOINTS");
                assert!(!config.builtin_gateway(), "{what}: needs GATEWAY_SERVICE_ADDR");
                assert!(!config.builtin_user_service(), "{what}: needs USER_SERVICE_ADDR");
                // The guide's encryption at rest, with its KMS and credentials.
                assert!(config.encryption.enabled && !config.encryption.kms_endpoint.is_empty(), "{what}: no KMS");
                assert!(
                    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
                        .iter()
                        .all(|var| container.secret_refs.iter().any(|(name, _, _)| name == var)),
                    "{what}: the KMS credentials come from a Secret"
                );
                // Each replica its own NODE_ID: a StatefulSet gives each pod its ordinal.
                assert_eq!(container.kind, "StatefulSet", "{what}: NODE_ID comes from a StatefulSet ordinal");
            }
            // gateway_app::run: its push address, the node it forwards to, and etcd.
            "im-gateway" => {
                assert!(!config.services.gateway.addr.is_empty(), "{what}: needs GATEWAY_SERVICE_ADDR");
                assert!(!config.services.gateway.addr.contains("$("), "{what}: GATEWAY_SERVICE_ADDR not expanded");
                assert!(!config.services.im.addr.is_empty(), "{what}: needs IM_SERVICE_ADDR");
                assert!(config.uses_etcd(), "{what}: needs ETCD_ENDPOINTS");
            }
            // user_app: Kafka for membership_change, its own address, and MySQL shared by the replicas.
            "im-user" => {
                assert!(config.uses_kafka(), "{what}: needs KAFKA_BROKERS");
                assert!(!config.services.user.addr.is_empty(), "{what}: needs USER_SERVICE_ADDR");
                assert!(config.uses_mysql(), "{what}: needs DB_HOST (users shared by every replica)");
            }
            other => panic!("{what}: unknown program {other}"),
        }
    }
}

/// The guide turns the sensitive-word filter on: the node's list must be a file of a mounted ConfigMap
/// (a directory mount, so the kubelet updates it and the node reloads it), and it must load, or the
/// node exits 2 at start.
#[test]
fn the_word_list_is_a_mounted_configmap_that_loads() {
    let docs = docs();
    let containers = containers(&docs);
    let node = by_program(&containers, "im-service");
    let config = node.config();
    assert!(config.filter.enabled, "the guide enables the filter");
    let path = config.filter.wordlist_path.clone().expect("FILTER_WORDLIST_PATH");
    let mount = node.spec["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|mount| mount["mountPath"].as_str().is_some_and(|dir| path.parent() == Some(Path::new(dir))))
        .unwrap_or_else(|| panic!("no volume is mounted at the directory of {}", path.display()));
    assert!(mount["subPath"].is_null(), "a subPath mount is never updated when the ConfigMap changes");
    let volume = node
        .pod_volumes
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|volume| volume["name"] == mount["name"])
        .expect("the mounted volume is declared");
    let map = volume["configMap"]["name"].as_str().expect("the word list comes from a ConfigMap");
    let data =
        &docs.iter().find(|d| d.kind() == "ConfigMap" && d.name() == map).expect("the ConfigMap exists").value["data"];
    let file = path.file_name().unwrap().to_str().unwrap();
    let list = data[file].as_str().unwrap_or_else(|| panic!("ConfigMap {map} has no {file}"));
    im_filter::WordList::parse(list.as_bytes()).unwrap_or_else(|e| panic!("ConfigMap {map}: {e}"));
}

#[test]
fn the_data_directory_is_a_writable_volume() {
    for container in containers(&docs()) {
        let config = container.config();
        // The root filesystem is read-only; the process writes admin.token into its data directory.
        let read_only = &container.spec["securityContext"]["readOnlyRootFilesystem"];
        assert_eq!(read_only.as_bool(), Some(true), "{}", container.workload);
        let mounts: Vec<PathBuf> = container.spec["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|mount| mount["mountPath"].as_str())
            .map(PathBuf::from)
            .collect();
        assert!(
            mounts.iter().any(|mount| config.server.data_dir.starts_with(mount)),
            "{}: IM_DATA_DIR {} is on the read-only root, not on a volume ({mounts:?})",
            container.workload,
            config.server.data_dir.display()
        );
    }
}

#[test]
fn ports_and_probes_match_the_configuration() {
    let containers = containers(&docs());
    for container in &containers {
        let config = container.config();
        let what = &container.workload;
        let mut expected = BTreeMap::from([
            ("http".to_owned(), config.server.http_port),
            ("metrics".to_owned(), config.observability.metrics_port),
        ]);
        assert!(config.observability.metrics_enabled, "{what}: metrics are off");
        match container.program.as_str() {
            "im-service" => expected.insert("grpc".to_owned(), config.server.grpc_port),
            "im-gateway" => {
                expected.insert("ws".to_owned(), config.server.ws_port);
                expected.insert("push".to_owned(), port_of(&config.services.gateway.addr))
            }
            "im-user" => expected.insert("grpc".to_owned(), port_of(&config.services.user.addr)),
            other => panic!("{what}: unknown program {other}"),
        };
        assert_eq!(container.ports, expected, "{what}: container ports");
        // /ready runs each dependency probe for up to 2 s: a 1 s probe timeout would fail a healthy pod.
        for (probe, path) in [("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
            let probe_spec = &container.spec[probe];
            assert_eq!(probe_spec["httpGet"]["path"].as_str(), Some(path), "{what}: {probe}");
            assert_eq!(probe_spec["httpGet"]["port"].as_str(), Some("http"), "{what}: {probe} port");
            assert!(probe_spec["timeoutSeconds"].as_u64().unwrap_or(1) >= 3, "{what}: {probe} timeoutSeconds < 3");
        }
    }
}

/// The Service `name` of the manifests.
fn service<'a>(docs: &'a [Doc], name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|d| d.kind() == "Service" && d.name() == name)
        .unwrap_or_else(|| panic!("no Service {name}"))
        .value
}

fn selects(service: &Value, container: &Container) -> bool {
    service["spec"]["selector"].as_mapping().is_some_and(|selector| {
        selector.iter().all(|(k, v)| container.pod_labels.get(k.as_str().unwrap()).map(String::as_str) == v.as_str())
    })
}

/// Asserts that `host:port` names a Service of the manifests that forwards `port` to the container
/// port `target` of `container`'s pods.
fn assert_routes(docs: &[Doc], addr: &str, container: &Container, target: &str) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let service = service(docs, host);
    assert!(selects(service, container), "Service {host} does not select {}", container.workload);
    let ports = service["spec"]["ports"].as_sequence().unwrap();
    let entry = ports
        .iter()
        .find(|p| p["port"].as_u64() == port.parse().ok())
        .unwrap_or_else(|| panic!("Service {host} has no port {port} ({addr})"));
    let target_port = match &entry["targetPort"] {
        Value::Null => entry["port"].as_u64().map(|p| u16::try_from(p).unwrap()),
        Value::Number(n) => n.as_u64().map(|p| u16::try_from(p).unwrap()),
        Value::String(name) => container.ports.get(name).copied(),
        other => panic!("targetPort {other:?}"),
    };
    assert_eq!(target_port, Some(container.port(target)), "Service {host} port {port} misses {target}");
}

#[test]
fn the_addresses_reach_the_processes_they_name() {
    let docs = docs();
    let containers = containers(&docs);
    let (node, gateway, user) = (
        by_program(&containers, "im-service"),
        by_program(&containers, "im-gateway"),
        by_program(&containers, "im-user"),
    );
    assert_routes(&docs, &gateway.config().services.im.addr, node, "grpc");
    assert_routes(&docs, &node.config().services.user.addr, user, "grpc");
    assert_routes(&docs, &user.config().services.user.addr, user, "grpc");

    // The StatefulSet's governing Service exists and is headless.
    let statefulset = docs.iter().find(|d| d.kind() == "StatefulSet").unwrap();
    let governing = service(&docs, statefulset.value["spec"]["serviceName"].as_str().unwrap());
    assert_eq!(governing["spec"]["clusterIP"].as_str(), Some("None"), "the StatefulSet's Service is not headless");

    // One Service reaches the metrics port of every process.
    let metrics = service(&docs, "im-metrics");
    for container in &containers {
        assert!(selects(metrics, container), "im-metrics does not select {}", container.workload);
    }
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"].as_str(), Some("metrics"));
}

#[test]
fn every_secret_is_in_the_template_and_the_token_key_is_shared() {
    let docs = docs();
    let template: BTreeSet<(String, String)> = docs
        .iter()
        .filter(|d| d.file == SECRETS_TEMPLATE && d.kind() == "Secret")
        .flat_map(|d| {
            let keys = d.value["stringData"].as_mapping().cloned().unwrap_or_default();
            keys.into_iter().map(|(key, _)| (d.name().to_owned(), key.as_str().unwrap().to_owned())).collect::<Vec<_>>()
        })
        .collect();
    let mut jwt_sources = BTreeSet::new();
    for container in containers(&docs) {
        for (var, secret, key) in &container.secret_refs {
            assert!(
                template.contains(&(secret.clone(), key.clone())),
                "{}: {var} reads Secret {secret} key {key}, which {SECRETS_TEMPLATE} does not document",
                container.workload
            );
            if var == "JWT_SECRET" {
                jwt_sources.insert((secret.clone(), key.clone()));
            }
        }
    }
    assert_eq!(jwt_sources.len(), 1, "JWT_SECRET must come from one Secret key in every process: {jwt_sources:?}");
    // Secrets are shipped only as the template.
    for doc in docs.iter().filter(|d| d.kind() == "Secret") {
        assert_eq!(doc.file, SECRETS_TEMPLATE, "Secret {} outside the template", doc.name());
    }
}

#[test]
fn the_kustomization_applies_every_other_manifest() {
    let docs = docs();
    let kustomization = docs.iter().find(|d| d.kind() == "Kustomization").expect("kustomization.yaml");
    let resources: BTreeSet<&str> = strings(&kustomization.value["resources"]).into_iter().collect();
    let files: BTreeSet<&str> = docs.iter().map(|d| d.file.as_str()).collect();
    let expected: BTreeSet<&str> =
        files.into_iter().filter(|file| NOT_IN_KUSTOMIZATION.iter().all(|(skip, _)| skip != file)).collect();
    assert_eq!(resources, expected, "kustomization.yaml resources (NOT_IN_KUSTOMIZATION lists the exceptions)");
}
