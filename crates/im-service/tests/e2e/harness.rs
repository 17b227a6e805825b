//! Harness for tests that break things on purpose, across real processes.
//!
//! - [`Process`]: one `im-user`, `im-service` or `im-gateway` child with a
//!   clean environment; `kill -9`, and restart with the same environment and
//!   ports. Its output goes to a log file, printed when a test fails.
//! - [`PrivateRedis`], [`PrivateMariadb`]: servers a test owns, on a free port
//!   in a temporary directory, so it can flush, roll back, kill and restart
//!   them without touching the shared ones of `scripts/servers.sh`.
//! - [`ClusterBuilder`] / [`Cluster`]: `im-user`, two nodes and two gateways
//!   (gateway i talks to node i) on the shared servers or private ones, each
//!   test in its own database and `CLUSTER_NAME`.
//! - [`Device`]: a WebSocket client that reports a closed connection or a
//!   request left unanswered instead of panicking, and records every push.
//! - [`Traffic`]: talkers sending as fast as acks return (resending the same
//!   `client_msg_id` after an error, until it is acked), followers syncing
//!   from their cursor, and [`Traffic::finish`], the count that ends every
//!   fault test.
//!
//! `cluster.rs` could be rebuilt on this: its `Service` is a [`Process`] that
//! is never restarted, and its `Cluster::start()` is
//! `ClusterBuilder::new().start()` (gateway i on node i).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use im_proto::client::{self as pb, client_frame, server_frame};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::support::{Client, conversation_id, free_port, http_get_with};

pub const SHARED_MARIADB: &str = "127.0.0.1:3306";
pub const SHARED_REDIS: &str = "127.0.0.1:6379";
pub const SHARED_ETCD: &str = "127.0.0.1:2379";
pub const SHARED_KAFKA: &str = "127.0.0.1:9092";

/// How long a process may take to answer `/ready` 200 after it is started.
/// `SYNC_GAP_GRACE` of the nodes under test.
const SYNC_GAP_GRACE: Duration = Duration::from_secs(6);
const STARTUP: Duration = Duration::from_secs(30);
/// How long a server a test owns may take to accept connections.
const SERVER_STARTUP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// What must be installed and running.

/// Panics, naming `scripts/servers.sh`, unless something accepts TCP
/// connections at `addr`.
pub async fn require_server(name: &str, addr: &str) {
    if !matches!(tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await, Ok(Ok(_))) {
        panic!("{name} is not reachable at {addr}: start the test servers with scripts/servers.sh");
    }
}

/// The path of executable `name` (PATH, then the sbin folders where Debian
/// puts `mariadbd`); panics naming `scripts/servers.sh` when it is missing.
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (not on PATH): install the test servers with scripts/servers.sh")
        })
}

/// A name no other test running now uses: for databases, `CLUSTER_NAME`s and
/// device names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), free_port())
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let _ = file.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let file = OpenOptions::new().create(true).append(true).open(path).expect("opening a log file");
    (Stdio::from(file.try_clone().expect("cloning a log file handle")), Stdio::from(file))
}

fn kill9(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        // SIGKILL: no shutdown code runs.
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------
// Service processes.

/// One service process (`im-user`, `im-service`, `im-gateway`), killed when
/// dropped. Its stdout and stderr go to `{name}.log` in the cluster's
/// directory, printed when the test panics.
pub struct Process {
    pub name: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
    pub http_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts `bin` with a clean environment plus `env` (and its data
    /// directory, HTTP port and log settings), and waits until `/ready`
    /// answers 200.
    pub async fn start(name: &str, bin: &str, dir: &Path, env: Vec<(String, String)>) -> Process {
        let http_port = free_port();
        let mut env = env;
        env.extend([
            ("IM_DATA_DIR".to_owned(), dir.join(name).display().to_string()),
            ("SERVER_HTTP_PORT".to_owned(), http_port.to_string()),
            // The log is a file: no colour codes in it.
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ]);
        if !env.iter().any(|(key, _)| key == "LOG_LEVEL") {
            env.push(("LOG_LEVEL".to_owned(), "warn".to_owned()));
        }
        // Off unless the test turns metrics on (with a port of its own).
        if !env.iter().any(|(key, _)| key == "METRICS_ENABLED") {
            env.push(("METRICS_ENABLED".to_owned(), "false".to_owned()));
        }
        let mut process = Process {
            name: name.to_owned(),
            bin: PathBuf::from(bin),
            env,
            http_port,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        process.spawn();
        process.wait_ready(STARTUP).await;
        process
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let (stdout, stderr) = log_file(&self.log);
        let child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    /// Waits until `/ready` answers 200; panics if the process exits first or
    /// `within` passes.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((200, _)) = self.ready().await {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited during start-up ({status}); are the servers up? run scripts/servers.sh\n{}",
                    self.name,
                    tail(&self.log, 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {within:?}; /ready said {:?}",
                self.name,
                self.ready().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap_or_else(|| panic!("{} is not running", self.name)).id();
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        assert!(self.child.is_some(), "{} is not running", self.name);
        kill9(&mut self.child);
    }

    /// Starts the process again with the same environment and ports, and
    /// waits until it is ready.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready(STARTUP).await;
    }

    /// `/ready`: (status, JSON body).
    pub async fn ready(&self) -> std::io::Result<(u16, String)> {
        http_get_with(self.http_port, "/ready", self.tls_ca().as_deref()).await
    }

    /// The CA its listeners are checked against, when it serves TLS
    /// (started with `TLS_CA_FILE`).
    pub fn tls_ca(&self) -> Option<PathBuf> {
        self.env.iter().find(|(key, _)| key == "TLS_CA_FILE").map(|(_, ca)| PathBuf::from(ca))
    }

    /// Waits until `/ready` answers 503 with `dependency` down; panics after
    /// `within` with what it said last.
    pub async fn wait_until_reports_down(&self, dependency: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.ready().await.expect("/ready answers while a dependency is down");
            let report: serde_json::Value = serde_json::from_str(&body).expect("/ready is JSON");
            if status == 503 && report["dependencies"][dependency]["status"] == "down" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: /ready still says {status} {body} with {dependency} down",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of one of the environment variables it was started with.
    pub fn env(&self, key: &str) -> &str {
        self.env.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
    }

    /// Whether the process is still running (it may have exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        kill9(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- last lines of {} ({}) ---\n{}", self.name, self.log.display(), tail(&self.log, 40));
        }
    }
}

// ---------------------------------------------------------------------------
// Servers a test owns.

/// Sends one command to Redis at `port` in RESP and returns the reply: the
/// line of a simple one (`+OK`, `:12`, `-ERR ...`, `$-1`), the text of a bulk
/// string.
pub async fn redis_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        reply.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&reply[..reply.len() - 2]).into_owned();
    // A bulk string: `$len`, then the bytes (`$-1`: nil, returned as is).
    if let Some(len) = line.strip_prefix('$').and_then(|len| len.parse::<usize>().ok()) {
        let mut bulk = vec![0u8; len + 2];
        stream.read_exact(&mut bulk).await?;
        return Ok(String::from_utf8_lossy(&bulk[..len]).into_owned());
    }
    Ok(line)
}

/// A `redis-server` of the test's own, on a free port, with its files in a
/// temporary directory (`dump.rdb` only when asked: `SAVE`). Killed when
/// dropped. Also a replica ([`PrivateRedis::start_with`] `--replicaof`) or a
/// Sentinel ([`PrivateRedis::sentinel`]).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Arguments before the common ones: a Sentinel's config file.
    leading: Vec<String>,
    /// Arguments after them.
    extra: Vec<String>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        Self::start_with(&[]).await
    }

    /// With more `redis-server` arguments (`--replicaof 127.0.0.1 PORT`).
    pub async fn start_with(extra: &[&str]) -> PrivateRedis {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = PrivateRedis {
            port: free_port(),
            child: None,
            dir,
            leading: Vec::new(),
            extra: ["--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb"]
                .iter()
                .chain(extra)
                .map(|arg| arg.to_string())
                .collect(),
        };
        redis.spawn();
        redis.wait_ready().await;
        redis
    }

    /// A Sentinel that monitors the primary on `primary_port` as `name`
    /// with quorum 2, deems it down after `down_after` of silence, and may
    /// fail over again 4 s after a failover. Its config file is its own
    /// (Sentinels rewrite theirs).
    pub async fn sentinel(name: &str, primary_port: u16, down_after: Duration) -> PrivateRedis {
        Self::sentinel_on(free_port(), name, primary_port, down_after).await
    }

    /// [`PrivateRedis::sentinel`] on `port`.
    pub async fn sentinel_on(port: u16, name: &str, primary_port: u16, down_after: Duration) -> PrivateRedis {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sentinel.conf");
        let down_after = down_after.as_millis();
        std::fs::write(
            &config,
            format!(
                "sentinel monitor {name} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {name} {down_after}\n\
                 sentinel failover-timeout {name} 4000\n\
                 sentinel parallel-syncs {name} 2\n"
            ),
        )
        .unwrap();
        let mut sentinel = PrivateRedis {
            port,
            child: None,
            dir,
            leading: vec![config.display().to_string(), "--sentinel".to_owned()],
            extra: Vec::new(),
        };
        sentinel.spawn();
        sentinel.wait_ready().await;
        sentinel
    }

    fn spawn(&mut self) {
        let bin = require_binary("redis-server");
        let (stdout, stderr) = log_file(&self.dir.path().join("redis.out"));
        let dir = self.dir.path().display().to_string();
        let child = Command::new(bin)
            .args(&self.leading)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir", &dir])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + SERVER_STARTUP;
        while redis_command(self.port, &["PING"]).await.ok().as_deref() != Some("+PONG") {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited ({status}):\n{}", tail(&self.dir.path().join("redis.out"), 20));
            }
            assert!(Instant::now() < deadline, "redis-server on port {} not ready", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One command; panics unless Redis answers.
    pub async fn command(&self, args: &[&str]) -> String {
        redis_command(self.port, args).await.unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Where `SAVE` writes, and a restart reads.
    pub fn dump_file(&self) -> PathBuf {
        self.dir.path().join("dump.rdb")
    }

    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// Starts again on the same port and directory (loading `dump.rdb` if
    /// there is one).
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        kill9(&mut self.child);
    }
}

/// A MariaDB server of the test's own: a fresh data directory
/// (`mariadb-install-db`), root with an empty password over TCP, on a free
/// port. InnoDB flushes its log at every commit (the default), so what was
/// committed survives [`PrivateMariadb::kill9`]. Killed when dropped.
pub struct PrivateMariadb {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Options after the common ones (replication: `--server-id`, …).
    extra: Vec<String>,
}

impl PrivateMariadb {
    /// Small InnoDB files and buffers: a test database is tiny, and several
    /// tests may each run a server at once.
    const SIZES: [&str; 2] = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"];

    pub async fn start() -> PrivateMariadb {
        Self::start_with(Vec::new()).await
    }

    /// With more `mariadbd` options.
    pub async fn start_with(extra: Vec<String>) -> PrivateMariadb {
        let install = require_binary("mariadb-install-db");
        require_binary("mariadbd");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Temporary files of its own: two bootstraps sharing /tmp at once
        // collide on their names.
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let (stdout, stderr) = log_file(&dir.path().join("install.log"));
        // `--user`: mariadbd refuses to run as root without it; ignored (with
        // a warning) for anyone else.
        let status = tokio::process::Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"])
            .args(Self::SIZES)
            .arg(Self::tmpdir(dir.path()))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .await
            .expect("running mariadb-install-db");
        assert!(status.success(), "mariadb-install-db failed:\n{}", tail(&dir.path().join("install.log"), 30));
        let mut server = PrivateMariadb { port: free_port(), child: None, dir, extra };
        server.spawn();
        server.wait_ready().await;
        server
    }

    fn tmpdir(dir: &Path) -> String {
        format!("--tmpdir={}", dir.join("tmp").display())
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let (stdout, stderr) = log_file(&dir.join("mariadbd.out"));
        let child = Command::new(require_binary("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(Self::tmpdir(dir))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve", "--user=root"])
            .args(Self::SIZES)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("starting mariadbd");
        self.child = Some(child);
    }

    /// Ready when it sends its handshake packet on a new connection.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + SERVER_STARTUP;
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await {
                let mut greeting = [0u8; 5];
                let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut greeting)).await;
                // Byte 4 is the protocol version (10); 0xff is an error packet.
                if matches!(read, Ok(Ok(_))) && greeting[4] == 10 {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("mariadbd exited ({status}):\n{}", tail(&self.dir.path().join("error.log"), 30));
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd on port {} not ready:\n{}",
                self.port,
                tail(&self.dir.path().join("error.log"), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The last lines of its error log.
    pub fn error_log(&self) -> String {
        tail(&self.dir.path().join("error.log"), 30)
    }

    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// Starts again on the same port and data directory (InnoDB recovers
    /// what was committed).
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        kill9(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the private mariadbd error log ---\n{}",
                tail(&self.dir.path().join("error.log"), 20)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The cluster.

/// What a [`Cluster`] runs on and how many of each process it starts.
pub struct ClusterBuilder {
    db_host: String,
    redis: String,
    etcd: String,
    /// Where the cluster's own look-ups ([`Cluster::registrations`]) go.
    etcd_lookups: String,
    nodes: usize,
    gateways: usize,
    node_env: Vec<(String, String)>,
    /// Extra environment of one node: (node index, key, value).
    node_env_at: Vec<(usize, String, String)>,
    /// Extra environment of every process (`im-user`, nodes, gateways).
    all_env: Vec<(String, String)>,
    /// Kafka settings of `im-user` and the nodes: topic and group names of
    /// this cluster alone.
    kafka: Vec<(String, String)>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterBuilder {
    /// Two nodes and two gateways on the shared servers (MariaDB, Redis,
    /// etcd, and the Kafka-protocol broker).
    pub fn new() -> Self {
        ClusterBuilder {
            db_host: SHARED_MARIADB.to_owned(),
            redis: SHARED_REDIS.to_owned(),
            etcd: SHARED_ETCD.to_owned(),
            etcd_lookups: SHARED_ETCD.to_owned(),
            nodes: 2,
            gateways: 2,
            node_env: Vec::new(),
            node_env_at: Vec::new(),
            all_env: Vec::new(),
            kafka: crate::broker::kafka_env(SHARED_KAFKA),
        }
    }

    /// The MySQL server of every process (`DB_HOST`).
    pub fn db_host(mut self, addr: String) -> Self {
        self.db_host = addr;
        self
    }

    /// The Redis of the nodes (`REDIS_ADDR`).
    pub fn redis(mut self, addr: String) -> Self {
        self.redis = addr;
        self
    }

    /// The etcd of the nodes and gateways (`ETCD_ENDPOINTS`); the cluster's
    /// own look-ups ([`Cluster::registrations`]) stay on the shared one.
    pub fn etcd(mut self, addr: String) -> Self {
        self.etcd = addr;
        self
    }

    /// An etcd cluster of the test's own, `members` comma-separated
    /// host:port: the `ETCD_ENDPOINTS` of every process, and where the
    /// cluster's own look-ups go.
    pub fn etcd_cluster(mut self, members: String) -> Self {
        self.etcd_lookups = members.clone();
        self.etcd = members;
        self
    }

    /// How many nodes and gateways (gateway i talks to node i mod `nodes`).
    pub fn size(mut self, nodes: usize, gateways: usize) -> Self {
        (self.nodes, self.gateways) = (nodes, gateways);
        self
    }

    /// An extra environment variable for every `im-service` node.
    pub fn node_env(mut self, key: &str, value: impl ToString) -> Self {
        self.node_env.push((key.to_owned(), value.to_string()));
        self
    }

    /// An extra environment variable for node `node` alone (a port of its own).
    pub fn node_env_at(mut self, node: usize, key: &str, value: impl ToString) -> Self {
        self.node_env_at.push((node, key.to_owned(), value.to_string()));
        self
    }

    /// An extra environment variable for every process.
    pub fn env_all(mut self, key: &str, value: impl ToString) -> Self {
        self.all_env.push((key.to_owned(), value.to_string()));
        self
    }

    /// Starts `im-user`, the nodes, then the gateways, each ready before the
    /// next starts. Panics naming `scripts/servers.sh` if a server is missing.
    pub async fn start(self) -> Cluster {
        require_server("MariaDB", &self.db_host).await;
        require_server("Redis", &self.redis).await;
        // The first member stands for an etcd cluster.
        require_server("etcd", self.etcd.split(',').next().unwrap_or_default()).await;
        require_server("the Kafka-protocol broker (tansu)", SHARED_KAFKA).await;
        let dir = tempfile::tempdir().unwrap();
        let name = unique("fault").replace('_', "-");
        let database = unique("im_fault");
        let common = vec![
            ("JWT_SECRET".to_owned(), format!("fault-test-secret-{name}-0123456789abcdef")),
            ("CLUSTER_NAME".to_owned(), name.clone()),
            ("DB_HOST".to_owned(), self.db_host.clone()),
            ("DB_USER".to_owned(), "root".to_owned()),
            ("DB_NAME".to_owned(), database.clone()),
            // Sync holds back what follows a missing seq for SYNC_GAP_GRACE
            // (another node may still commit it), which must outlast a
            // commit: short timeouts keep the tests short.
            ("DB_CONN_TIMEOUT".to_owned(), "2s".to_owned()),
            ("DB_WRITE_TIMEOUT".to_owned(), "3s".to_owned()),
            ("SYNC_GAP_GRACE".to_owned(), format!("{}s", SYNC_GAP_GRACE.as_secs())),
        ];
        let common = [common, self.all_env.clone()].concat();
        let with = |extra: Vec<(&str, String)>, more: &[(String, String)]| {
            let mut env = common.clone();
            env.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            env.extend(more.iter().cloned());
            env
        };
        let user_addr = format!("127.0.0.1:{}", free_port());
        let user_service = Process::start(
            "im-user",
            env!("CARGO_BIN_EXE_im-user"),
            dir.path(),
            with(vec![("USER_SERVICE_ADDR", user_addr.clone()), ("ETCD_ENDPOINTS", self.etcd.clone())], &self.kafka),
        )
        .await;

        let node_addrs: Vec<String> = (0..self.nodes).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let push_addrs: Vec<String> = (0..self.gateways).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut nodes = Vec::new();
        for (i, addr) in node_addrs.iter().enumerate() {
            let env = with(
                vec![
                    ("NODE_ID", (i + 1).to_string()),
                    ("SERVER_GRPC_PORT", addr.rsplit_once(':').unwrap().1.to_owned()),
                    ("REDIS_ADDR", self.redis.clone()),
                    ("ETCD_ENDPOINTS", self.etcd.clone()),
                    ("USER_SERVICE_ADDR", user_addr.clone()),
                    // Any gateway address selects remote gateways; pushes go
                    // to the ones the registry names.
                    ("GATEWAY_SERVICE_ADDR", push_addrs[i % push_addrs.len()].clone()),
                ],
                &[self.kafka.clone(), self.node_env.clone()].concat(),
            );
            let own = self.node_env_at.iter().filter(|(node, ..)| *node == i);
            let env = [env, own.map(|(_, key, value)| (key.clone(), value.clone())).collect()].concat();
            nodes.push(
                Process::start(&format!("im-service-{}", i + 1), env!("CARGO_BIN_EXE_im-service"), dir.path(), env)
                    .await,
            );
        }
        let mut gateways = Vec::new();
        let mut ws_urls = Vec::new();
        for (i, push) in push_addrs.iter().enumerate() {
            let ws_port = free_port();
            let env = with(
                vec![
                    ("SERVER_WS_PORT", ws_port.to_string()),
                    ("ETCD_ENDPOINTS", self.etcd.clone()),
                    ("IM_SERVICE_ADDR", node_addrs[i % self.nodes].clone()),
                    ("GATEWAY_SERVICE_ADDR", push.clone()),
                    // POST /login calls the user service's Login.
                    ("USER_SERVICE_ADDR", user_addr.clone()),
                ],
                &[],
            );
            gateways.push(
                Process::start(&format!("im-gateway-{}", i + 1), env!("CARGO_BIN_EXE_im-gateway"), dir.path(), env)
                    .await,
            );
            ws_urls.push(format!("ws://127.0.0.1:{ws_port}/ws"));
        }
        let admin_token =
            std::fs::read_to_string(dir.path().join("im-user").join("admin.token")).unwrap().trim().to_owned();
        Cluster {
            name,
            database,
            db_host: self.db_host,
            etcd_lookups: self.etcd_lookups,
            user_addr,
            admin_token,
            push_addrs,
            ws_urls,
            user_service,
            nodes,
            gateways,
            _dir: dir,
        }
    }
}

/// A user and its token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: u64,
    pub token: String,
}

/// `im-user`, the nodes and the gateways of one test; every process is killed
/// when it is dropped, then its database on the shared server is dropped.
pub struct Cluster {
    /// `CLUSTER_NAME`: the namespace of its Redis and etcd keys.
    pub name: String,
    pub database: String,
    db_host: String,
    etcd_lookups: String,
    user_addr: String,
    admin_token: String,
    /// Gateway i's push address, which is its id in the registry.
    push_addrs: Vec<String>,
    ws_urls: Vec<String>,
    pub user_service: Process,
    pub nodes: Vec<Process>,
    pub gateways: Vec<Process>,
    // Last: the processes write here until they are killed.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Creates a user through `im-user`.
    pub async fn create_user(&self, name: &str) -> User {
        let (id, token) = self.user_admin().await.create_user(name).await;
        User { id, token }
    }

    pub fn ws_url(&self, gateway: usize) -> &str {
        &self.ws_urls[gateway]
    }

    /// Every process of the cluster: im-user, the nodes, the gateways.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        std::iter::once(&self.user_service).chain(&self.nodes).chain(&self.gateways)
    }

    /// Gateway `gateway`'s WebSocket (and `POST /login`) port.
    pub fn ws_port(&self, gateway: usize) -> u16 {
        self.gateways[gateway].env("SERVER_WS_PORT").parse().expect("a port")
    }

    /// `im-user`'s gRPC address and the admin credential it wrote, for a
    /// test's own client (one over TLS).
    pub fn user_service(&self) -> (&str, &str) {
        (&self.user_addr, &self.admin_token)
    }

    /// The admin side of `im-user`'s directory.
    pub async fn user_admin(&self) -> crate::support::UserAdmin {
        crate::support::UserAdmin::connect(&self.user_addr, &self.admin_token).await
    }

    /// Node `node`'s gRPC port (gateway i forwards to node i).
    pub fn node_grpc_port(&self, node: usize) -> u16 {
        self.nodes[node].env("SERVER_GRPC_PORT").parse().expect("a port")
    }

    /// The etcd keys under this cluster's registry prefix.
    pub async fn registrations(&self) -> Vec<String> {
        let etcdctl = require_binary("etcdctl");
        let output = tokio::process::Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.etcd_lookups, "get", "--prefix", "--keys-only"])
            .arg(format!("/{}/users/", self.name))
            .output()
            .await
            .expect("running etcdctl");
        assert!(output.status.success(), "etcdctl: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// Whether `user` is registered on gateway `gateway` in etcd.
    pub async fn is_registered(&self, user: u64, gateway: usize) -> bool {
        let key = format!("/{}/users/{user}/{}", self.name, self.push_addrs[gateway]);
        self.registrations().await.contains(&key)
    }

    /// Waits until no user is registered on gateway `gateway` any more (its
    /// lease expired); returns how long that took.
    pub async fn wait_until_gateway_forgotten(&self, gateway: usize, within: Duration) -> Duration {
        let start = Instant::now();
        let suffix = format!("/{}", self.push_addrs[gateway]);
        while self.registrations().await.iter().any(|key| key.ends_with(&suffix)) {
            assert!(start.elapsed() < within, "gateway {gateway}'s users still registered after {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        start.elapsed()
    }

    /// Connects a device of `user` to gateway `gateway`, and waits until the
    /// gateway registered the user ([`Cluster::wait_registered`]).
    pub async fn connect(&self, gateway: usize, user: &User, device: &str, inbox: Inbox) -> Device {
        let device = Device::connect(self.ws_url(gateway), &user.token, device, inbox)
            .await
            .unwrap_or_else(|e| panic!("connecting {device} to gateway {gateway}: {e}"));
        self.wait_registered(user, gateway).await;
        device
    }

    /// A plain [`Client`] of `user` on gateway `gateway`, once the gateway
    /// registered the user ([`Cluster::wait_registered`]).
    pub async fn client(&self, gateway: usize, user: &User, device: &str) -> Client {
        let client = Client::connect(self.ws_url(gateway), &user.token, device).await.expect("websocket connect");
        self.wait_registered(user, gateway).await;
        client
    }

    /// Waits until gateway `gateway` registered `user` in etcd, and then a
    /// moment for the nodes' watches to see it.
    pub async fn wait_registered(&self, user: &User, gateway: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.is_registered(user.id, gateway).await {
            assert!(Instant::now() < deadline, "user {} not registered on gateway {gateway} within 10 s", user.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self.gateways.iter_mut().chain(&mut self.nodes).chain([&mut self.user_service]) {
            kill9(&mut process.child);
        }
        // Best effort: a private server is gone already, and a database left
        // behind on the shared one harms nobody.
        if self.db_host == SHARED_MARIADB {
            let (host, port) = self.db_host.rsplit_once(':').unwrap();
            let _ = Command::new("mariadb")
                .args(["-h", host, "-P", port, "-u", "root", "-e"])
                .arg(format!("DROP DATABASE IF EXISTS `{}`", self.database))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------
// Devices.

/// What happened to a device's connection, and every push it received.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<InboxState>>);

#[derive(Default)]
struct InboxState {
    pushes: Vec<(Instant, pb::Message)>,
    /// When the current connection was opened.
    since: Option<Instant>,
    open: bool,
}

impl Inbox {
    pub fn pushes(&self) -> Vec<(Instant, pb::Message)> {
        self.0.lock().unwrap().pushes.clone()
    }

    /// When the open connection was opened; `None` if it is closed.
    pub fn open_since(&self) -> Option<Instant> {
        let state = self.0.lock().unwrap();
        state.open.then_some(state.since).flatten()
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection is gone.
    Closed,
    /// No answer in time: a hang, which G9 forbids.
    Timeout,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<server_frame::Body>>>>;

/// A WebSocket client that records pushes in its [`Inbox`] and never panics
/// on a broken connection.
pub struct Device {
    out: mpsc::UnboundedSender<WsMessage>,
    waiters: Waiters,
    closed: Arc<AtomicBool>,
    next_req: u64,
}

impl Device {
    pub async fn connect(url: &str, token: &str, device: &str, inbox: Inbox) -> Result<Device, String> {
        let mut request = format!("{url}?device={device}").into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let waiters: Waiters = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        {
            let mut state = inbox.0.lock().unwrap();
            state.since = Some(Instant::now());
            state.open = true;
        }
        let (routes, closed_flag) = (waiters.clone(), closed.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let WsMessage::Binary(data) = message else { continue };
                let frame = pb::ServerFrame::decode(data).expect("server frames decode");
                let Some(body) = frame.body else { continue };
                if frame.req_id != 0 {
                    if let Some(waiter) = routes.lock().unwrap().remove(&frame.req_id) {
                        let _ = waiter.send(body);
                    }
                } else if let server_frame::Body::Push(message) = body {
                    inbox.0.lock().unwrap().pushes.push((Instant::now(), message));
                }
            }
            inbox.0.lock().unwrap().open = false;
            closed_flag.store(true, Ordering::SeqCst);
            // Dropping the waiters answers every request in flight: Closed.
            routes.lock().unwrap().clear();
        });
        Ok(Device { out, waiters, closed, next_req: 0 })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends a request and waits up to `within` for its answer.
    pub async fn request(&mut self, body: client_frame::Body, within: Duration) -> Result<server_frame::Body, Failure> {
        self.next_req += 1;
        let req_id = self.next_req;
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(req_id, tx);
        if self.is_closed() {
            self.waiters.lock().unwrap().remove(&req_id);
            return Err(Failure::Closed);
        }
        let frame = pb::ClientFrame { req_id, body: Some(body) };
        if self.out.send(WsMessage::Binary(frame.encode_to_vec().into())).is_err() {
            return Err(Failure::Closed);
        }
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(Failure::Closed),
            Err(_) => {
                self.waiters.lock().unwrap().remove(&req_id);
                Err(Failure::Timeout)
            }
        }
    }

    pub async fn send_text(
        &mut self,
        to: u64,
        client_msg_id: &str,
        text: &str,
        within: Duration,
    ) -> Result<server_frame::Body, Failure> {
        let send = pb::SendRequest {
            to_user: to,
            client_msg_id: client_msg_id.into(),
            body: text.as_bytes().to_vec().into(),
            content_type: "text/plain".into(),
            ..Default::default()
        };
        self.request(client_frame::Body::Send(send), within).await
    }

    pub async fn sync(
        &mut self,
        conversation: &str,
        after: u64,
        within: Duration,
    ) -> Result<server_frame::Body, Failure> {
        let sync = pb::SyncRequest { conversation_id: conversation.into(), after_seq: after, limit: 0 };
        self.request(client_frame::Body::Sync(sync), within).await
    }

    /// Every message after `after`, following pages; panics on anything but
    /// pages.
    pub async fn sync_all(&mut self, conversation: &str, mut after: u64) -> Vec<pb::Message> {
        let mut all = Vec::new();
        loop {
            match self.sync(conversation, after, REQUEST_TIMEOUT).await {
                Ok(server_frame::Body::Sync(page)) => {
                    if let Some(last) = page.messages.last() {
                        after = last.seq;
                    }
                    all.extend(page.messages);
                    if !page.has_more {
                        return all;
                    }
                }
                other => panic!("sync of {conversation} after {after} answered {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Traffic and the count.

/// How long a request may go unanswered before it counts as a hang. Above
/// the gateway's own deadline for a call to the IM Service
/// (`IM_SERVICE_TIMEOUT`, 5 s), so every request of a healthy gateway is
/// answered — by an ack or by an error — well within it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause before resending after an error.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Pause between a follower's syncs.
const FOLLOW_PAUSE: Duration = Duration::from_millis(20);
/// How long `finish` lets talkers get their last message acked.
const DRAIN: Duration = Duration::from_secs(20);

/// One ack as a talker received it.
#[derive(Clone, Debug)]
pub struct AckRecord {
    pub talker: String,
    pub sender: u64,
    pub client_msg_id: String,
    /// When the first attempt of this message was sent.
    pub first_sent: Instant,
    pub acked_at: Instant,
    pub attempts: u32,
    pub ack: pb::SendAck,
}

/// A request answered by an error frame.
#[derive(Clone, Debug)]
pub struct ErrorRecord {
    pub device: String,
    pub at: Instant,
    /// From sending the request to the error frame.
    pub latency: Duration,
    pub code: pb::ErrorCode,
    pub message: String,
}

#[derive(Default)]
struct Ledger {
    acks: Vec<AckRecord>,
    errors: Vec<ErrorRecord>,
    /// (device, what, when): requests unanswered within REQUEST_TIMEOUT.
    hangs: Vec<(String, String, Instant)>,
    /// Messages given up on: their fate is unknown (stored at most once).
    abandoned: Vec<(u64, String)>,
    /// Every (sender, client_msg_id) a talker sent.
    started: HashSet<(u64, String)>,
    acks_by_talker: HashMap<String, usize>,
}

/// A device taking part in the traffic.
struct DeviceRecord {
    label: String,
    user: User,
    conversation: String,
    inbox: Inbox,
}

/// Load on a cluster: talkers, followers and watching devices, pairs of
/// users writing in private conversations. See the module docs.
pub struct Traffic {
    ledger: Arc<Mutex<Ledger>>,
    devices: Vec<DeviceRecord>,
    /// conversation → its two users.
    conversations: BTreeMap<String, (User, User)>,
    /// Talkers and followers, ready to start.
    pending: Vec<Role>,
    talkers: Vec<(String, JoinHandle<()>)>,
    followers: Vec<(String, String, JoinHandle<FollowLog>)>,
    /// Devices that only receive, kept connected.
    watchers: HashMap<String, Device>,
    /// Devices that must get pushes from an instant other than the rules'.
    pushes_from: HashMap<String, Instant>,
    stop_talking: CancellationToken,
    give_up: CancellationToken,
    stop_following: CancellationToken,
}

enum Role {
    Talker { label: String, device: Device, me: User, peer: User },
    Follower { label: String, device: Device, conversation: String },
}

/// What a follower synced, in the order it synced it.
struct FollowLog {
    messages: Vec<pb::Message>,
    /// It lost its connection (and stopped) before the end.
    cut_short: bool,
}

/// How [`Traffic::finish`] judges the run.
pub struct CountRules {
    /// The largest difference allowed between consecutive stored seqs of a
    /// conversation (1: no gap at all).
    pub max_gap: u64,
    /// Every device connected since before this instant (and still at the
    /// end) must have received by push every message first sent after it,
    /// except its own.
    pub pushes_complete_after: Instant,
    /// The gateway the final sync reads through.
    pub reader_gateway: usize,
}

/// The figures of a run.
#[derive(Debug, Default)]
pub struct Count {
    /// Distinct messages acked.
    pub acked: usize,
    /// Messages in the store (acked, plus abandoned ones that made it).
    pub stored: usize,
    /// Acks received (resends that were acked again count again).
    pub acks: usize,
    /// Messages acked after more than one attempt.
    pub resent: usize,
    pub abandoned: usize,
    pub errors_by_code: BTreeMap<String, usize>,
    pub slowest_error: Duration,
    pub largest_gap: u64,
    /// Per device: (pushes, messages it only has by sync).
    pub per_device: BTreeMap<String, (usize, usize)>,
    /// Longest time from an ack to the push of that message, over the
    /// messages that must be pushed.
    pub slowest_push: Duration,
    pub conversations: usize,
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pushed: usize = self.per_device.values().map(|(p, _)| p).sum();
        let by_sync: usize = self.per_device.values().map(|(_, s)| s).sum();
        write!(
            f,
            "{} conversations: {} messages acked ({} acks, {} after a resend), {} stored, {} abandoned; \
             largest seq gap {}; errors {:?} (slowest {:?}); {} devices: {} pushes, {} by sync only; \
             slowest required push {:?}",
            self.conversations,
            self.acked,
            self.acks,
            self.resent,
            self.stored,
            self.abandoned,
            self.largest_gap,
            self.errors_by_code,
            self.slowest_error,
            self.per_device.len(),
            pushed,
            by_sync,
            self.slowest_push
        )
    }
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new()
    }
}

impl Traffic {
    pub fn new() -> Self {
        Traffic {
            ledger: Arc::default(),
            devices: Vec::new(),
            conversations: BTreeMap::new(),
            pending: Vec::new(),
            talkers: Vec::new(),
            followers: Vec::new(),
            watchers: HashMap::new(),
            pushes_from: HashMap::new(),
            stop_talking: CancellationToken::new(),
            give_up: CancellationToken::new(),
            stop_following: CancellationToken::new(),
        }
    }

    async fn device(
        &mut self,
        cluster: &Cluster,
        gateway: usize,
        me: &User,
        peer: &User,
        role: &str,
    ) -> (String, Device) {
        let label = format!("u{}-{role}{}-gw{gateway}", me.id, self.devices.len());
        let conversation = conversation_id(me.id, peer.id);
        let (a, b) = if me.id < peer.id { (me, peer) } else { (peer, me) };
        self.conversations.entry(conversation.clone()).or_insert_with(|| (a.clone(), b.clone()));
        let inbox = Inbox::default();
        let device = cluster.connect(gateway, me, &label, inbox.clone()).await;
        self.devices.push(DeviceRecord { label: label.clone(), user: me.clone(), conversation, inbox });
        (label, device)
    }

    /// A device of `me` on `gateway` that sends to `peer` as fast as acks
    /// return, from [`Traffic::start`] until [`Traffic::finish`].
    pub async fn talker(&mut self, cluster: &Cluster, gateway: usize, me: &User, peer: &User) -> String {
        let (label, device) = self.device(cluster, gateway, me, peer, "talk").await;
        self.pending.push(Role::Talker { label: label.clone(), device, me: me.clone(), peer: peer.clone() });
        label
    }

    /// A device of `me` on `gateway` that syncs its conversation with `peer`
    /// from its cursor, again and again.
    pub async fn follower(&mut self, cluster: &Cluster, gateway: usize, me: &User, peer: &User) -> String {
        let (label, device) = self.device(cluster, gateway, me, peer, "follow").await;
        let conversation = conversation_id(me.id, peer.id);
        self.pending.push(Role::Follower { label: label.clone(), device, conversation });
        label
    }

    /// A device of `me` on `gateway` that only receives pushes.
    pub async fn watcher(&mut self, cluster: &Cluster, gateway: usize, me: &User, peer: &User) -> String {
        let (label, device) = self.device(cluster, gateway, me, peer, "watch").await;
        self.watchers.insert(label.clone(), device);
        label
    }

    /// Connects watcher `label` again, to `gateway` (after its gateway died);
    /// its pushes keep going to the same inbox.
    pub async fn reconnect_watcher(&mut self, cluster: &Cluster, label: &str, gateway: usize) {
        let record = self.devices.iter().find(|d| d.label == label).expect("a watcher of this traffic");
        let device = cluster.connect(gateway, &record.user, label, record.inbox.clone()).await;
        self.watchers.insert(label.to_owned(), device);
    }

    /// Device `label` must get by push every message first sent after `from`
    /// (instead of after `CountRules::pushes_complete_after`), if it stays
    /// connected from before then to the end.
    pub fn require_pushes_from(&mut self, label: &str, from: Instant) {
        self.pushes_from.insert(label.to_owned(), from);
    }

    /// The labels of the talkers still running.
    pub fn running_talkers(&self) -> Vec<String> {
        self.talkers.iter().filter(|(_, task)| !task.is_finished()).map(|(label, _)| label.clone()).collect()
    }

    /// Whether watcher `label`'s connection is closed.
    pub fn watcher_closed(&self, label: &str) -> bool {
        self.watchers.get(label).is_none_or(Device::is_closed)
    }

    /// Starts every talker and follower.
    pub fn start(&mut self) {
        for role in self.pending.drain(..) {
            match role {
                Role::Talker { label, device, me, peer } => {
                    let task = talk(
                        device,
                        label.clone(),
                        me,
                        peer,
                        self.ledger.clone(),
                        self.stop_talking.clone(),
                        self.give_up.clone(),
                    );
                    self.talkers.push((label, tokio::spawn(task)));
                }
                Role::Follower { label, device, conversation } => {
                    let task = follow(
                        device,
                        label.clone(),
                        conversation.clone(),
                        self.ledger.clone(),
                        self.stop_following.clone(),
                    );
                    self.followers.push((label, conversation, tokio::spawn(task)));
                }
            }
        }
    }

    /// Distinct messages acked so far.
    pub fn acked(&self) -> usize {
        self.ledger.lock().unwrap().acks_by_talker.values().sum()
    }

    /// Waits until `count` messages are acked in all.
    pub async fn wait_for_acks(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.acked() < count {
            assert!(Instant::now() < deadline, "only {} of {count} messages acked within {within:?}", self.acked());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every talker whose task still runs has `each` more
    /// messages acked than now: all of them are making progress.
    pub async fn wait_for_progress(&self, each: usize, within: Duration) {
        let before = self.ledger.lock().unwrap().acks_by_talker.clone();
        let deadline = Instant::now() + within;
        loop {
            let lagging: Vec<String> = {
                let ledger = self.ledger.lock().unwrap();
                self.talkers
                    .iter()
                    .filter(|(_, task)| !task.is_finished())
                    .filter(|(label, _)| {
                        let now = ledger.acks_by_talker.get(label).copied().unwrap_or(0);
                        now < before.get(label).copied().unwrap_or(0) + each
                    })
                    .map(|(label, _)| label.clone())
                    .collect()
            };
            if lagging.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "talkers {lagging:?} did not get {each} more acks within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The longest stretch without an ack from `since` on (the time to the
    /// first ack counts): how long sends were unavailable after a fault.
    pub fn longest_pause_in_acks(&self, since: Instant) -> Duration {
        let mut acked: Vec<Instant> =
            self.ledger.lock().unwrap().acks.iter().map(|ack| ack.acked_at).filter(|at| *at >= since).collect();
        acked.sort();
        let mut previous = since;
        let mut longest = Duration::ZERO;
        for at in acked {
            longest = longest.max(at - previous);
            previous = at;
        }
        longest
    }

    /// Error frames answered so far, in order.
    pub fn errors(&self) -> Vec<ErrorRecord> {
        self.ledger.lock().unwrap().errors.clone()
    }

    /// Requests left unanswered within [`REQUEST_TIMEOUT`] so far.
    pub fn hangs(&self) -> usize {
        self.ledger.lock().unwrap().hangs.len()
    }

    /// Stops the traffic, reads every conversation back through a new device
    /// on `rules.reader_gateway`, and checks:
    ///
    /// - no request hung, and every error frame was UNAVAILABLE (G9);
    /// - every acked message is stored once, with the seq and msg_id of its
    ///   ack; every ack of one `client_msg_id` is the same ack (G1, G3);
    /// - stored seqs strictly increase, no seq was acked for two messages,
    ///   and a message first sent after another was acked has a higher seq;
    ///   gaps are at most `rules.max_gap` (G2);
    /// - nothing is stored that no talker sent;
    /// - each device got no push twice, only pushes of stored messages, and
    ///   (see `pushes_complete_after`) every message by push;
    /// - each follower synced every message exactly once, in seq order: its
    ///   cursor never skipped one (G4).
    ///
    /// Panics listing every violation; returns the figures otherwise.
    pub async fn finish(mut self, cluster: &Cluster, rules: CountRules) -> Count {
        // Talkers finish the message in flight (resending until it is
        // acked), then stop; past DRAIN they give it up.
        self.stop_talking.cancel();
        let drain_deadline = tokio::time::Instant::now() + DRAIN;
        for (label, task) in self.talkers.drain(..) {
            let mut task = task;
            if tokio::time::timeout_at(drain_deadline, &mut task).await.is_err() {
                self.give_up.cancel();
                task.await.unwrap_or_else(|e| panic!("talker {label} failed: {e}"));
            }
        }
        self.stop_following.cancel();
        let mut follow_logs = Vec::new();
        for (label, conversation, task) in self.followers.drain(..) {
            let log = task.await.unwrap_or_else(|e| panic!("follower {label} failed: {e}"));
            follow_logs.push((label, conversation, log));
        }
        settle_pushes(&self.devices).await;

        let ledger = std::mem::take(&mut *self.ledger.lock().unwrap());
        let mut stored_by_conversation = BTreeMap::new();
        for (conversation, (a, _)) in &self.conversations {
            let reader_name = unique("reader");
            let mut reader =
                Device::connect(cluster.ws_url(rules.reader_gateway), &a.token, &reader_name, Inbox::default())
                    .await
                    .unwrap_or_else(|e| panic!("connecting the reader: {e}"));
            stored_by_conversation.insert(conversation.clone(), reader.sync_all(conversation, 0).await);
        }

        let mut violations = Vec::new();
        let mut count = Count { conversations: self.conversations.len(), ..Count::default() };
        check_requests(&ledger, &mut violations, &mut count);
        for (conversation, stored) in &stored_by_conversation {
            let acks: Vec<&AckRecord> = ledger.acks.iter().filter(|a| &a.ack.conversation_id == conversation).collect();
            check_conversation(conversation, stored, &acks, &ledger, &rules, &mut violations, &mut count);
        }
        let acks_by_msg: HashMap<u64, &AckRecord> = ledger.acks.iter().map(|a| (a.ack.msg_id, a)).collect();
        for device in &self.devices {
            let stored = &stored_by_conversation[&device.conversation];
            let from = self.pushes_from.get(&device.label).copied().unwrap_or(rules.pushes_complete_after);
            check_device(device, stored, &acks_by_msg, from, &mut violations, &mut count);
        }
        for (label, conversation, log) in &follow_logs {
            check_follower(label, &stored_by_conversation[conversation], log, &mut violations);
        }

        eprintln!("count: {count}");
        if !violations.is_empty() {
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for violation in &violations {
                let kind = violation.split_once(']').map_or("?", |(kind, _)| kind.trim_start_matches('['));
                *kinds.entry(kind).or_default() += 1;
            }
            let shown = violations.iter().take(40).cloned().collect::<Vec<_>>().join("\n  ");
            panic!("{} violations {kinds:?}\ncount: {count}\n  {shown}", violations.len());
        }
        count
    }
}

/// Waits until no device has received a push for a while.
async fn settle_pushes(devices: &[DeviceRecord]) {
    let total = || devices.iter().map(|d| d.inbox.0.lock().unwrap().pushes.len()).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = total();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(700) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = total();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
}

/// A talker: sends `{label}-{n}` for n = 0, 1, ... to `peer`, each resent
/// after an error until it is acked.
async fn talk(
    mut device: Device,
    label: String,
    me: User,
    peer: User,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
    give_up: CancellationToken,
) {
    for n in 0u64.. {
        if stop.is_cancelled() {
            return;
        }
        let client_msg_id = format!("{label}-{n}");
        let text = format!("{label} message {n}");
        ledger.lock().unwrap().started.insert((me.id, client_msg_id.clone()));
        let first_sent = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = Instant::now();
            let reply = device.send_text(peer.id, &client_msg_id, &text, REQUEST_TIMEOUT).await;
            let acked_at = Instant::now();
            // The guard must not live across an await: a block of its own.
            let acked = {
                let mut book = ledger.lock().unwrap();
                match reply {
                    Ok(server_frame::Body::Ack(ack)) => {
                        *book.acks_by_talker.entry(label.clone()).or_default() += 1;
                        book.acks.push(AckRecord {
                            talker: label.clone(),
                            sender: me.id,
                            client_msg_id: client_msg_id.clone(),
                            first_sent,
                            acked_at,
                            attempts,
                            ack,
                        });
                        true
                    }
                    Ok(server_frame::Body::Error(error)) => {
                        book.errors.push(ErrorRecord {
                            device: label.clone(),
                            at: acked_at,
                            latency: acked_at - sent,
                            code: error.code(),
                            message: error.message,
                        });
                        false
                    }
                    Ok(other) => panic!("{label}: a send answered {other:?}"),
                    Err(Failure::Timeout) => {
                        book.hangs.push((label.clone(), client_msg_id.clone(), sent));
                        false
                    }
                    Err(Failure::Closed) => {
                        book.abandoned.push((me.id, client_msg_id));
                        return;
                    }
                }
            };
            if acked {
                break;
            }
            if give_up.is_cancelled() {
                ledger.lock().unwrap().abandoned.push((me.id, client_msg_id));
                return;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// A follower: syncs its conversation from its cursor until stopped, then
/// once more to the end.
async fn follow(
    mut device: Device,
    label: String,
    conversation: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
) -> FollowLog {
    let mut log = FollowLog { messages: Vec::new(), cut_short: false };
    let mut cursor = 0;
    let mut stopping = false;
    loop {
        if stop.is_cancelled() && !stopping {
            stopping = true;
            // A seq lost with a killed node is a gap that sync only steps
            // over once it is older than the grace.
            tokio::time::sleep(SYNC_GAP_GRACE + Duration::from_secs(1)).await;
        }
        let sent = Instant::now();
        match device.sync(&conversation, cursor, REQUEST_TIMEOUT).await {
            Ok(server_frame::Body::Sync(page)) => {
                if let Some(last) = page.messages.last() {
                    cursor = last.seq;
                }
                log.messages.extend(page.messages);
                if page.has_more {
                    continue;
                }
                if stopping {
                    return log;
                }
            }
            Ok(server_frame::Body::Error(error)) => ledger.lock().unwrap().errors.push(ErrorRecord {
                device: label.clone(),
                at: Instant::now(),
                latency: sent.elapsed(),
                code: error.code(),
                message: error.message,
            }),
            Ok(other) => panic!("{label}: a sync answered {other:?}"),
            Err(Failure::Timeout) => {
                ledger.lock().unwrap().hangs.push((label.clone(), format!("sync after {cursor}"), sent))
            }
            Err(Failure::Closed) => {
                log.cut_short = true;
                return log;
            }
        }
        tokio::time::sleep(FOLLOW_PAUSE).await;
    }
}

fn check_requests(ledger: &Ledger, violations: &mut Vec<String>, count: &mut Count) {
    for (device, what, at) in &ledger.hangs {
        violations
            .push(format!("[G9 hang] {device}: {what} got no answer within {REQUEST_TIMEOUT:?} (sent at {at:?})"));
    }
    for error in &ledger.errors {
        *count.errors_by_code.entry(error.code.as_str_name().to_owned()).or_default() += 1;
        count.slowest_error = count.slowest_error.max(error.latency);
        if error.code != pb::ErrorCode::Unavailable {
            violations.push(format!(
                "[G9 error code] {}: error {:?} {:?}, expected UNAVAILABLE",
                error.device, error.code, error.message
            ));
        }
    }
    count.acks = ledger.acks.len();
    count.abandoned = ledger.abandoned.len();
}

fn check_conversation(
    conversation: &str,
    stored: &[pb::Message],
    acks: &[&AckRecord],
    ledger: &Ledger,
    rules: &CountRules,
    violations: &mut Vec<String>,
    count: &mut Count,
) {
    count.stored += stored.len();
    let mut by_seq: HashMap<u64, &pb::Message> = HashMap::new();
    let mut msg_ids = HashSet::new();
    let mut keys = HashSet::new();
    for pair in stored.windows(2) {
        if pair[1].seq <= pair[0].seq {
            violations.push(format!("[G2 order] {conversation}: synced seq {} after seq {}", pair[1].seq, pair[0].seq));
        }
        let gap = pair[1].seq.saturating_sub(pair[0].seq);
        count.largest_gap = count.largest_gap.max(gap);
        if gap > rules.max_gap {
            violations.push(format!(
                "[G2 gap] {conversation}: seq gap {} -> {} is over {}",
                pair[0].seq, pair[1].seq, rules.max_gap
            ));
        }
    }
    for m in stored {
        by_seq.insert(m.seq, m);
        if !msg_ids.insert(m.msg_id) {
            violations.push(format!("[G3 stored twice] {conversation}: msg_id {} stored twice", m.msg_id));
        }
        if !keys.insert((m.from_user, m.client_msg_id.clone())) {
            violations.push(format!(
                "[G3 stored twice] {conversation}: {} from {} stored twice",
                m.client_msg_id, m.from_user
            ));
        }
        if !ledger.started.contains(&(m.from_user, m.client_msg_id.clone())) {
            violations.push(format!(
                "[phantom] {conversation}: stored {} from {} that nobody sent",
                m.client_msg_id, m.from_user
            ));
        }
    }

    // First ack per message; every later ack of it must be the same.
    let mut first: BTreeMap<(u64, &str), &AckRecord> = BTreeMap::new();
    let mut acked_seqs: HashMap<u64, u64> = HashMap::new();
    for ack in acks {
        if let Some(msg_id) = acked_seqs.insert(ack.ack.seq, ack.ack.msg_id)
            && msg_id != ack.ack.msg_id
        {
            violations.push(format!(
                "[G2 seq issued twice] {conversation}: seq {} acked for two messages ({msg_id} and {})",
                ack.ack.seq, ack.ack.msg_id
            ));
        }
        match first.get(&(ack.sender, ack.client_msg_id.as_str())) {
            Some(earlier) if (earlier.ack.msg_id, earlier.ack.seq) != (ack.ack.msg_id, ack.ack.seq) => {
                violations.push(format!(
                    "[G3 acked twice] {conversation}: {} acked twice differently: (msg {}, seq {}) then (msg {}, seq {})",
                    ack.client_msg_id, earlier.ack.msg_id, earlier.ack.seq, ack.ack.msg_id, ack.ack.seq
                ))
            }
            Some(_) => {}
            None => {
                first.insert((ack.sender, ack.client_msg_id.as_str()), ack);
            }
        }
        match by_seq.get(&ack.ack.seq) {
            None => violations.push(format!(
                "[G1 lost] {conversation}: acked {} (seq {}, msg {}) is not stored",
                ack.client_msg_id, ack.ack.seq, ack.ack.msg_id
            )),
            Some(m) if m.msg_id != ack.ack.msg_id || m.client_msg_id != ack.client_msg_id => violations.push(format!(
                "[G1 mismatch] {conversation}: seq {} acked as {} (msg {}) but stored as {} (msg {})",
                ack.ack.seq, ack.client_msg_id, ack.ack.msg_id, m.client_msg_id, m.msg_id
            )),
            Some(_) => {}
        }
    }
    count.acked += first.len();
    count.resent += first.values().filter(|a| a.attempts > 1).count();

    // Real-time order: a message first sent after another was acked gets a
    // higher seq, whichever node, epoch or Redis served either.
    let mut by_ack: Vec<&AckRecord> = first.values().copied().collect();
    by_ack.sort_by_key(|a| a.acked_at);
    let mut by_send: Vec<&AckRecord> = first.values().copied().collect();
    by_send.sort_by_key(|a| a.first_sent);
    let mut done = 0;
    let mut highest: Option<&AckRecord> = None;
    for later in by_send {
        while done < by_ack.len() && by_ack[done].acked_at < later.first_sent {
            if highest.is_none_or(|h| by_ack[done].ack.seq > h.ack.seq) {
                highest = Some(by_ack[done]);
            }
            done += 1;
        }
        if let Some(earlier) = highest
            && later.ack.seq <= earlier.ack.seq
        {
            violations.push(format!(
                "[G2 order] {conversation}: {} got seq {} though {} had been acked with seq {} before it was sent",
                later.client_msg_id, later.ack.seq, earlier.client_msg_id, earlier.ack.seq
            ));
        }
    }
}

fn check_device(
    device: &DeviceRecord,
    stored: &[pb::Message],
    acks_by_msg: &HashMap<u64, &AckRecord>,
    pushes_from: Instant,
    violations: &mut Vec<String>,
    count: &mut Count,
) {
    let label = &device.label;
    let by_msg: HashMap<u64, &pb::Message> = stored.iter().map(|m| (m.msg_id, m)).collect();
    let pushes = device.inbox.pushes();
    let mut pushed = HashMap::new();
    for (at, m) in &pushes {
        if m.conversation_id != device.conversation {
            violations.push(format!(
                "[push] {label}: pushed msg {} of {}, not its conversation",
                m.msg_id, m.conversation_id
            ));
            continue;
        }
        if pushed.insert(m.msg_id, *at).is_some() {
            violations.push(format!("[push twice] {label}: msg {} (seq {}) pushed twice", m.msg_id, m.seq));
        }
        match by_msg.get(&m.msg_id) {
            None => violations
                .push(format!("[push not stored] {label}: pushed msg {} (seq {}) is not stored", m.msg_id, m.seq)),
            Some(s) if s.seq != m.seq || s.client_msg_id != m.client_msg_id => violations.push(format!(
                "[push mismatch] {label}: msg {} pushed as seq {} but stored as seq {}",
                m.msg_id, m.seq, s.seq
            )),
            Some(_) => {}
        }
    }
    let by_sync_only = stored.iter().filter(|m| !pushed.contains_key(&m.msg_id)).count();
    count.per_device.insert(label.clone(), (pushed.len(), by_sync_only));

    // Every message must reach a device that was online throughout.
    let Some(since) = device.inbox.open_since() else { return };
    if since > pushes_from {
        return;
    }
    for m in stored {
        let Some(ack) = acks_by_msg.get(&m.msg_id) else { continue };
        if &ack.talker == label || ack.first_sent < pushes_from {
            continue;
        }
        match pushed.get(&m.msg_id) {
            None => violations.push(format!(
                "[push missing] {label}: online throughout, never got msg {} (seq {}, {}) by push",
                m.msg_id, m.seq, m.client_msg_id
            )),
            Some(at) => count.slowest_push = count.slowest_push.max(at.saturating_duration_since(ack.acked_at)),
        }
    }
}

fn check_follower(label: &str, stored: &[pb::Message], log: &FollowLog, violations: &mut Vec<String>) {
    let synced: Vec<(u64, u64)> = log.messages.iter().map(|m| (m.seq, m.msg_id)).collect();
    let expected: Vec<(u64, u64)> = stored.iter().map(|m| (m.seq, m.msg_id)).collect();
    let complete = if log.cut_short { expected.get(..synced.len()) } else { Some(&expected[..]) };
    if complete == Some(&synced[..]) {
        return;
    }
    // Name the first difference: a message its cursor skipped, or one it got
    // twice or out of order.
    let first_difference =
        synced.iter().zip(&expected).position(|(s, e)| s != e).unwrap_or(synced.len().min(expected.len()));
    violations.push(format!(
        "[G4 cursor skipped] {label}: synced from its cursor {} messages, the store holds {}; first difference at #{first_difference}: \
         synced {:?}, stored {:?}",
        synced.len(),
        expected.len(),
        synced.get(first_difference),
        expected.get(first_difference)
    ));
}

/// The count must be able to fail: fed a run with a lost ack, a seq issued
/// twice, a seq out of real-time order, a gap, a cursor that skipped and a
/// push received twice, it reports each of them.
#[test]
fn the_count_reports_every_kind_of_violation_it_checks() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let conversation = "p:1:2";
    let message = |seq, msg_id, client_msg_id: &str| pb::Message {
        msg_id,
        conversation_id: conversation.into(),
        seq,
        from_user: 1,
        to_user: 2,
        client_msg_id: client_msg_id.into(),
        ..pb::Message::default()
    };
    let ack = |seq, msg_id, client_msg_id: &str, sent, acked| AckRecord {
        talker: "talker".into(),
        sender: 1,
        client_msg_id: client_msg_id.into(),
        first_sent: at(sent),
        acked_at: at(acked),
        attempts: 1,
        ack: pb::SendAck { msg_id, conversation_id: conversation.into(), seq, server_time_ms: 0, body_masked: false },
    };
    let stored = vec![message(1, 11, "a"), message(2, 12, "b"), message(5, 15, "d")];
    let mut ledger = Ledger::default();
    for id in ["a", "b", "c", "d", "e"] {
        ledger.started.insert((1, id.to_owned()));
    }
    ledger.acks = vec![
        ack(1, 11, "a", 0, 1),
        ack(2, 12, "b", 2, 3),
        // Acked, never stored.
        ack(3, 13, "c", 4, 5),
        ack(5, 15, "d", 6, 7),
        // Sent after d's ack, yet seq 2 — which b already holds.
        ack(2, 16, "e", 8, 9),
    ];
    let rules = CountRules { max_gap: 1, pushes_complete_after: at(0), reader_gateway: 0 };
    let mut violations = Vec::new();
    let mut count = Count::default();
    let acks: Vec<&AckRecord> = ledger.acks.iter().collect();
    check_conversation(conversation, &stored, &acks, &ledger, &rules, &mut violations, &mut count);
    let follower = FollowLog { messages: vec![stored[0].clone(), stored[2].clone()], cut_short: false };
    check_follower("follower", &stored, &follower, &mut violations);
    let inbox = Inbox::default();
    inbox.0.lock().unwrap().pushes = vec![(at(2), stored[0].clone()), (at(3), stored[0].clone())];
    let device = DeviceRecord {
        label: "watcher".into(),
        user: User { id: 2, token: String::new() },
        conversation: conversation.into(),
        inbox,
    };
    check_device(&device, &stored, &HashMap::new(), at(0), &mut violations, &mut count);

    let kinds: HashSet<&str> =
        violations.iter().filter_map(|v| v.split_once(']')).map(|(kind, _)| kind.trim_start_matches('[')).collect();
    for kind in
        ["G1 lost", "G1 mismatch", "G2 seq issued twice", "G2 order", "G2 gap", "G4 cursor skipped", "push twice"]
    {
        assert!(kinds.contains(kind), "{kind} not reported; got {violations:#?}");
    }
}

/// Every record on `topic` (all partitions, from the start, no consumer
/// group join), read until `want` records arrived and then `settle` more,
/// or `within`: (key, payload).
pub fn read_topic(topic: &str, want: usize, settle: Duration, within: Duration) -> Vec<(Vec<u8>, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SHARED_KAFKA)
        .set("group.id", im_backends::conformance::fixtures::unique_name("e2e-topic-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
    let partitions = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    assert!(partitions > 0, "topic {topic} does not exist");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition as i32, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + within;
    let mut records = Vec::new();
    let mut settled: Option<Instant> = None;
    while Instant::now() < deadline && settled.is_none_or(|at| Instant::now() < at) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => records
                .push((message.key().unwrap_or_default().to_vec(), message.payload().unwrap_or_default().to_vec())),
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            None => {}
        }
        if records.len() >= want && settled.is_none() {
            settled = Some(Instant::now() + settle);
        }
    }
    records
}
