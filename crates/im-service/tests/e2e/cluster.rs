//! Production mode end to end: real `im-user`, `im-service` and `im-gateway`
//! processes on loopback, over MariaDB, Redis and etcd (started by
//! `scripts/servers.sh`; a test fails when they cannot be reached). Each test
//! gets its own database, and its own Redis and etcd namespace
//! (`CLUSTER_NAME`), so tests run in parallel on the shared servers.

use std::process::Command;
use std::time::Duration;

use im_proto::client::{self as pb, server_frame};

use crate::harness::{Cluster, ClusterBuilder};
use crate::support::{ack, conversation_id, free_port};

const WAIT: Duration = Duration::from_secs(5);

/// `im-user`, two nodes and two gateways (gateway i talking to node i), from
/// the fault tests' harness.
async fn cluster() -> Cluster {
    ClusterBuilder::new().start().await
}

fn push(body: Option<server_frame::Body>) -> pb::Message {
    match body {
        Some(server_frame::Body::Push(m)) => m,
        other => panic!("expected a push, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_cross_gateways_and_nodes_to_every_device() {
    let cluster = cluster().await;
    let alice_user = cluster.create_user("alice").await;
    let alice = alice_user.id;
    let bob_user = cluster.create_user("bob").await;
    let bob = bob_user.id;

    let mut alice_phone = cluster.client(0, &alice_user, "phone").await;
    // Bob has a device on each gateway.
    let mut bob_phone = cluster.client(1, &bob_user, "phone").await;
    let mut bob_laptop = cluster.client(0, &bob_user, "laptop").await;

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
    let cluster = cluster().await;
    let alice_user = cluster.create_user("alice").await;
    let alice = alice_user.id;
    let carol_user = cluster.create_user("carol").await;
    let carol = carol_user.id;
    let mut alice_phone = cluster.client(0, &alice_user, "phone").await;

    let mut acks = Vec::new();
    for i in 0..30 {
        acks.push(ack(alice_phone.send_text(carol, &format!("c{i}"), &format!("while away {i}")).await));
    }
    let mut carol_phone = cluster.client(1, &carol_user, "phone").await;
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
    let cluster = cluster().await;
    let node = &cluster.nodes[0];
    let dir = tempfile::tempdir().unwrap();
    let same = [
        "JWT_SECRET",
        "CLUSTER_NAME",
        "DB_HOST",
        "DB_USER",
        "DB_NAME",
        "REDIS_ADDR",
        "ETCD_ENDPOINTS",
        "USER_SERVICE_ADDR",
        "GATEWAY_SERVICE_ADDR",
        "NODE_ID",
    ];
    assert_eq!(node.env("NODE_ID"), "1");
    let output = Command::new(env!("CARGO_BIN_EXE_im-service"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IM_DATA_DIR", dir.path())
        .env("METRICS_ENABLED", "false")
        .env("SERVER_GRPC_PORT", free_port().to_string())
        .env("SERVER_HTTP_PORT", free_port().to_string())
        .envs(same.iter().map(|key| (*key, node.env(key))))
        .output()
        .expect("running a duplicate node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a second node with NODE_ID 1 started: {stderr}");
    assert!(stderr.contains("NODE_ID 1 is held by another running node"), "{stderr}");
}

/// A resend the dedup cache no longer knows reaches the store, which answers
/// it with the first ack: the seq allocated to it is never stored. The node
/// records it (`seq_gaps`), so a reader is not held back on that hole for
/// `SYNC_GAP_GRACE` (6 s here) as it would be for a seq another node might
/// still commit.
#[tokio::test]
async fn a_seq_burnt_by_a_resend_does_not_hold_sync_back() {
    let cluster = cluster().await;
    let alice_user = cluster.create_user("alice").await;
    let alice = alice_user.id;
    let bob_user = cluster.create_user("bob").await;
    let bob = bob_user.id;
    let conversation = conversation_id(alice, bob);
    let mut alice_phone = cluster.client(0, &alice_user, "phone").await;

    let first = ack(alice_phone.send_text(bob, "x", "m1").await);
    // The cache forgets X (as after its TTL or a Redis restart).
    let redis_port: u16 = crate::harness::SHARED_REDIS.rsplit(':').next().unwrap().parse().unwrap();
    let key = format!("{}:dedup:{alice}:x", cluster.name);
    // The node records the first ack in the cache after answering it (and
    // after handing the message to the router), so the ack can arrive
    // first: wait for the key before it goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while crate::harness::redis_command(redis_port, &["EXISTS", &key]).await.unwrap() != ":1" {
        assert!(std::time::Instant::now() < deadline, "the dedup key {key} was never recorded");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let deleted = crate::harness::redis_command(redis_port, &["DEL", &key]).await.unwrap();
    assert_eq!(deleted, ":1", "the dedup key {key} was not there");
    let resent = ack(alice_phone.send_text(bob, "x", "m1").await);
    assert_eq!((resent.msg_id, resent.seq), (first.msg_id, first.seq), "the resend gets the first ack");
    let second = ack(alice_phone.send_text(bob, "y", "m2").await);
    assert_eq!(second.seq, first.seq + 2, "the resend burnt the seq between m1 and m2");

    let mut bob_phone = cluster.client(1, &bob_user, "phone").await;
    let started = std::time::Instant::now();
    let synced = loop {
        match bob_phone.sync(&conversation, first.seq).await {
            server_frame::Body::Sync(page) if !page.messages.is_empty() => break page.messages,
            server_frame::Body::Sync(_) => {}
            other => panic!("sync answered {other:?}"),
        }
        // Bounded: past the grace, m2 shows whether or not the hole was
        // recorded, and the assertion below tells which it was.
        assert!(started.elapsed() < Duration::from_secs(10), "m2 never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let waited = started.elapsed();
    assert_eq!(synced.iter().map(|m| (m.msg_id, m.seq)).collect::<Vec<_>>(), vec![(second.msg_id, second.seq)]);
    assert!(waited < Duration::from_secs(1), "sync held m2 back for {waited:?}: the burnt seq was not recorded");
}
