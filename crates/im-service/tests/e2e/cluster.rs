//! Production mode end to end: real `im-user`, `im-service` and `im-gateway`
//! processes on loopback, over MariaDB, Redis and etcd (started by
//! `scripts/servers.sh`; a test fails when they cannot be reached). Each test
//! gets its own database, and its own Redis and etcd namespace
//! (`CLUSTER_NAME`), so tests run in parallel on the shared servers.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use im_proto::client::{self as pb, server_frame};
use im_proto::user::user_service_client::UserServiceClient;

use crate::support::{Client, ack, conversation_id, free_port, http_get};

const WAIT: Duration = Duration::from_secs(5);
const MARIADB: &str = "127.0.0.1:3306";
const REDIS: &str = "127.0.0.1:6379";
const ETCD: &str = "127.0.0.1:2379";

/// One service process; killed when dropped.
struct Service {
    child: Child,
}

impl Service {
    /// Starts binary `bin` with a clean environment plus `env`, and waits
    /// until its `/ready` answers 200.
    async fn start(name: &'static str, bin: &str, data_dir: &Path, env: &[(&str, String)]) -> Service {
        let http_port = free_port();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("IM_DATA_DIR", data_dir.join(name))
            .env("SERVER_HTTP_PORT", http_port.to_string())
            .env("METRICS_ENABLED", "false")
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(http_port, "/ready").await {
                return Service { child };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited during start-up ({status}); are the servers up? run scripts/servers.sh");
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready within 30 s; /ready said {:?}",
                http_get(http_port, "/ready").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `im-user`, two `im-service` nodes and two gateways, gateway i talking to
/// node i.
struct Cluster {
    dir: tempfile::TempDir,
    /// The environment node 1 was started with.
    node_env: Vec<(&'static str, String)>,
    user_addr: String,
    admin_token: String,
    gateway_ws: Vec<String>,
    _services: Vec<Service>,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let unique = format!("{}_{}", std::process::id(), free_port());
        let common = [
            ("JWT_SECRET", format!("cluster-test-secret-{unique}-0123456789abcdef")),
            ("CLUSTER_NAME", format!("e2e-{unique}")),
            ("DB_HOST", MARIADB.to_owned()),
            ("DB_USER", "root".to_owned()),
            ("DB_NAME", format!("im_e2e_{unique}")),
        ];
        let with = |extra: Vec<(&'static str, String)>| common.iter().cloned().chain(extra).collect::<Vec<_>>();
        let user_addr = format!("127.0.0.1:{}", free_port());
        let node_addrs = [free_port(), free_port()].map(|p| format!("127.0.0.1:{p}"));
        let push_addrs = [free_port(), free_port()].map(|p| format!("127.0.0.1:{p}"));

        let mut services = vec![
            Service::start(
                "im-user",
                env!("CARGO_BIN_EXE_im-user"),
                dir.path(),
                &with(vec![("USER_SERVICE_ADDR", user_addr.clone())]),
            )
            .await,
        ];
        for (i, addr) in node_addrs.iter().enumerate() {
            let env = with(vec![
                ("NODE_ID", (i + 1).to_string()),
                ("SERVER_GRPC_PORT", addr.rsplit_once(':').unwrap().1.to_owned()),
                ("REDIS_ADDR", REDIS.to_owned()),
                ("ETCD_ENDPOINTS", ETCD.to_owned()),
                ("USER_SERVICE_ADDR", user_addr.clone()),
                ("GATEWAY_SERVICE_ADDR", push_addrs[i].clone()),
            ]);
            let name = ["im-service-1", "im-service-2"][i];
            services.push(Service::start(name, env!("CARGO_BIN_EXE_im-service"), dir.path(), &env).await);
        }
        let node_env = with(vec![
            ("NODE_ID", "1".to_owned()),
            ("REDIS_ADDR", REDIS.to_owned()),
            ("ETCD_ENDPOINTS", ETCD.to_owned()),
            ("USER_SERVICE_ADDR", user_addr.clone()),
            ("GATEWAY_SERVICE_ADDR", push_addrs[0].clone()),
        ]);
        let mut gateway_ws = Vec::new();
        for (i, push) in push_addrs.iter().enumerate() {
            let ws_port = free_port();
            let env = with(vec![
                ("SERVER_WS_PORT", ws_port.to_string()),
                ("ETCD_ENDPOINTS", ETCD.to_owned()),
                ("IM_SERVICE_ADDR", node_addrs[i].clone()),
                ("GATEWAY_SERVICE_ADDR", push.clone()),
            ]);
            let name = ["im-gateway-1", "im-gateway-2"][i];
            services.push(Service::start(name, env!("CARGO_BIN_EXE_im-gateway"), dir.path(), &env).await);
            gateway_ws.push(format!("ws://127.0.0.1:{ws_port}/ws"));
        }
        let admin_token =
            std::fs::read_to_string(dir.path().join("im-user").join("admin.token")).unwrap().trim().into();
        Cluster { dir, node_env, user_addr, admin_token, gateway_ws, _services: services }
    }

    /// Creates a user through `im-user`; returns (id, token).
    async fn create_user(&self, name: &str) -> (u64, String) {
        let mut client = UserServiceClient::connect(format!("http://{}", self.user_addr)).await.unwrap();
        let mut request = tonic::Request::new(im_proto::user::CreateUserRequest { name: name.into() });
        request.metadata_mut().insert("authorization", format!("Bearer {}", self.admin_token).parse().unwrap());
        let response = client.create_user(request).await.expect("create user").into_inner();
        (response.user.unwrap().id, response.token)
    }

    /// A device of the user of `token` on gateway `gateway`.
    async fn connect(&self, gateway: usize, token: &str, device: &str) -> Client {
        let client = Client::connect(&self.gateway_ws[gateway], token, device).await.expect("websocket connect");
        // The gateway registers the user in etcd; every node learns it from
        // its watch, shortly after. (That a registration reaches another
        // node within a second is the etcd registry's own test.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        client
    }
}

fn push(body: Option<server_frame::Body>) -> pb::Message {
    match body {
        Some(server_frame::Body::Push(m)) => m,
        other => panic!("expected a push, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_cross_gateways_and_nodes_to_every_device() {
    let cluster = Cluster::start().await;
    let (alice, alice_token) = cluster.create_user("alice").await;
    let (bob, bob_token) = cluster.create_user("bob").await;

    let mut alice_phone = cluster.connect(0, &alice_token, "phone").await;
    // Bob has a device on each gateway.
    let mut bob_phone = cluster.connect(1, &bob_token, "phone").await;
    let mut bob_laptop = cluster.connect(0, &bob_token, "laptop").await;

    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(ack(alice_phone.send_text(bob, &format!("a{i}"), &format!("hello {i}")).await));
    }
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "seqs of one sender through one node");
    for device in [&mut bob_phone, &mut bob_laptop] {
        let got: Vec<(u64, u64)> = {
            let mut got = Vec::new();
            for _ in 0..20 {
                let m = push(device.next_event(WAIT).await);
                got.push((m.msg_id, m.seq));
            }
            got
        };
        let want: Vec<(u64, u64)> = acks.iter().map(|a| (a.msg_id, a.seq)).collect();
        assert_eq!(got, want, "every message once, in order, on each of bob's gateways");
    }

    // Bob answers through the other node; alice's phone gets it.
    let reply = ack(bob_phone.send_text(alice, "b0", "hi alice").await);
    assert_eq!(reply.seq, 21, "one sequence per conversation across nodes");
    assert_eq!(reply.conversation_id, conversation_id(alice, bob));
    let m = push(alice_phone.next_event(WAIT).await);
    assert_eq!((m.msg_id, m.from_user, &m.body[..]), (reply.msg_id, bob, &b"hi alice"[..]));
    // Bob's laptop is told about his own message sent from the phone.
    let m = push(bob_laptop.next_event(WAIT).await);
    assert_eq!(m.msg_id, reply.msg_id);
}

#[tokio::test]
async fn an_offline_user_syncs_everything_through_another_gateway() {
    let cluster = Cluster::start().await;
    let (alice, alice_token) = cluster.create_user("alice").await;
    let (carol, carol_token) = cluster.create_user("carol").await;
    let mut alice_phone = cluster.connect(0, &alice_token, "phone").await;

    let mut acks = Vec::new();
    for i in 0..30 {
        acks.push(ack(alice_phone.send_text(carol, &format!("c{i}"), &format!("while away {i}")).await));
    }
    let mut carol_phone = cluster.connect(1, &carol_token, "phone").await;
    let synced = carol_phone.sync_all(&conversation_id(alice, carol), 0).await;
    let got: Vec<(u64, u64)> = synced.iter().map(|m| (m.msg_id, m.seq)).collect();
    let want: Vec<(u64, u64)> = acks.iter().map(|a| (a.msg_id, a.seq)).collect();
    assert_eq!(got, want, "every acked message, once, in seq order");
    let conversations = carol_phone.conversations().await;
    assert_eq!(conversations.len(), 1);
    assert_eq!(conversations[0].unread, 30);
}

#[tokio::test]
async fn a_second_node_with_a_taken_node_id_refuses_to_start() {
    let cluster = Cluster::start().await;
    let mut env = cluster.node_env.clone();
    env.push(("SERVER_GRPC_PORT", free_port().to_string()));
    env.push(("SERVER_HTTP_PORT", free_port().to_string()));
    let output = Command::new(env!("CARGO_BIN_EXE_im-service"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IM_DATA_DIR", cluster.dir.path().join("im-service-dup"))
        .env("METRICS_ENABLED", "false")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running a duplicate node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a second node with NODE_ID 1 started: {stderr}");
    assert!(stderr.contains("NODE_ID 1 is held by another running node"), "{stderr}");
}
