//! A three-member etcd cluster of the test's own (the shared etcd of
//! `scripts/servers.sh` is one member and must not be stopped): each member
//! on free loopback ports for its client and peer URLs, with its data
//! directory in a temporary folder, so a member that is killed and started
//! again rejoins with its state. Every member is killed when this is dropped.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{require_binary, unique};
use crate::support::{free_port, http_get};

/// How long members may take to elect a leader and answer `/health`.
const STARTUP: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

pub struct EtcdTrio {
    members: Vec<Member>,
    /// `--initial-cluster`: every member's name and peer URL.
    initial_cluster: String,
    /// Tells this cluster's members from other tests' (`--initial-cluster-token`).
    token: String,
    dir: tempfile::TempDir,
}

impl EtcdTrio {
    /// Starts three members and waits until each answers `/health` (a leader
    /// is elected). Panics naming `scripts/servers.sh` when `etcd` is missing.
    pub async fn start() -> EtcdTrio {
        require_binary("etcd");
        let members: Vec<Member> = (0..3)
            .map(|i| Member { name: format!("m{i}"), client_port: free_port(), peer_port: free_port(), child: None })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",");
        let mut trio = EtcdTrio {
            members,
            initial_cluster,
            token: unique("trio"),
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        for member in 0..3 {
            trio.spawn(member);
        }
        for member in 0..3 {
            trio.wait_healthy(member).await;
        }
        trio
    }

    /// `ETCD_ENDPOINTS` naming every member (host:port, comma-separated).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect::<Vec<_>>().join(",")
    }

    /// The keys under `prefix`, read from the running members only (so a
    /// dead member listed costs the look-up nothing), serializable: answered
    /// by a member without a leader too (during an election).
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let output = self.etcdctl(&["get", "--consistency=s", "--prefix", "--keys-only", prefix]).await;
        String::from_utf8_lossy(&output).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// The member that is the leader now, asked of every running member
    /// (`etcdctl endpoint status`); `None` while none is.
    pub async fn leader(&self) -> Option<usize> {
        let output = self.etcdctl(&["endpoint", "status", "-w", "json"]).await;
        let statuses: serde_json::Value = serde_json::from_slice(&output).expect("etcdctl prints JSON");
        let leader = statuses.as_array().into_iter().flatten().find_map(|status| {
            let (me, leader) = (&status["Status"]["header"]["member_id"], &status["Status"]["leader"]);
            (me == leader).then(|| status["Endpoint"].as_str().map(str::to_owned)).flatten()
        });
        let leader = leader?;
        let member = self.running().find(|&m| self.members[m].client_url() == leader);
        Some(member.unwrap_or_else(|| panic!("the leader {leader} is none of the members")))
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..3).filter(|&m| self.members[m].child.is_some())
    }

    /// Runs etcdctl against the running members; its output.
    async fn etcdctl(&self, args: &[&str]) -> Vec<u8> {
        let endpoints = self.running().map(|m| self.members[m].client_url()).collect::<Vec<_>>().join(",");
        let output = tokio::process::Command::new(require_binary("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints])
            .args(args)
            .output()
            .await
            .expect("running etcdctl");
        assert!(output.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    /// `kill -9` of member `member`: no shutdown, its connections reset.
    pub fn kill9(&mut self, member: usize) {
        let mut child = self.members[member].child.take().expect("the member runs");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts member `member` again on its ports and data directory, and
    /// waits until it answers `/health` (which needs a quorum).
    pub async fn restart(&mut self, member: usize) {
        self.spawn(member);
        self.wait_healthy(member).await;
    }

    fn spawn(&mut self, member: usize) {
        let bin = require_binary("etcd");
        let data = self.dir.path().join(&self.members[member].name);
        let log = self.log(member);
        let (stdout, stderr) = log_file(&log);
        let m = &self.members[member];
        let child = Command::new(bin)
            .args(["--name", &m.name, "--data-dir", &data.display().to_string()])
            .args(["--listen-client-urls", &m.client_url(), "--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url(), "--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-token", &self.token])
            // Ignored by a member that has a data directory (a restart).
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("starting etcd");
        self.members[member].child = Some(child);
    }

    async fn wait_healthy(&mut self, member: usize) {
        let deadline = Instant::now() + STARTUP;
        let port = self.members[member].client_port;
        loop {
            if let Ok((200, body)) = http_get(port, "/health").await
                && body.contains("true")
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.members[member].child.as_mut().map(Child::try_wait) {
                panic!("etcd member {member} exited ({status}), see {}", self.log(member).display());
            }
            assert!(Instant::now() < deadline, "etcd member {member} not healthy within {STARTUP:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self, member: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.members[member].name))
    }
}

impl Drop for EtcdTrio {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let file = OpenOptions::new().create(true).append(true).open(path).expect("opening a log file");
    (Stdio::from(file.try_clone().expect("cloning a log file handle")), Stdio::from(file))
}
