//! Offline records end to end (DESIGN.md §3): a message to a user with no
//! device online becomes an `offline_msg` event, and the offline worker
//! records it in the store — over the in-process bus, over Kafka (tansu at
//! 127.0.0.1:9092, started by `scripts/servers.sh`; the test fails when it
//! cannot be reached), and across an outage of a private broker.
//!
//! The records are read from the node's SQLite file with the store's own
//! `OfflineStore::pending_offline`, beside the running node (WAL readers do
//! not disturb it).

use std::path::Path;
use std::time::{Duration, Instant};

use im_backends::SqliteStore;
use im_backends::conformance::fixtures::unique_name;
use im_core::ports::{OfflineStore, PendingOffline};
use im_core::{ConversationId, Seq, UserId};
use im_proto::client::{self as pb, client_frame, server_frame};

use crate::broker::{BrokerBehindProxy, WORKER_ENV, kafka_env};
use crate::support::{Node, ack, conversation_id, http_get};

const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits for the worker: tansu holds a new group's first
/// join for half the session timeout, and a restarted broker's clients
/// reconnect with backoff.
const PATIENCE: Duration = Duration::from_secs(60);
const BROKER: &str = "127.0.0.1:9092";
/// The partitions `app.rs` gives the topics it creates.
const TOPIC_PARTITIONS: usize = 32;

async fn start(dir: &Path, env: &[(String, String)]) -> Node {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::start_with(dir, &env).await
}

/// What waits for `user` on `node`, from its SQLite file.
async fn pending(node: &Node, user: u64) -> Vec<PendingOffline> {
    let store = SqliteStore::open(&node.data_dir.join("im.db")).await.expect("open the node's store");
    let pending = store.pending_offline(UserId(user), 100).await.unwrap();
    store.close().await;
    pending
}

/// Waits until `user` has `count` entries pending in the conversation with
/// `peer`, and returns them.
async fn wait_for_pending(node: &Node, user: u64, peer: u64, count: u64) -> PendingOffline {
    let conversation = ConversationId::private(UserId(user), UserId(peer)).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = pending(node, user).await.into_iter().find(|p| p.conversation == conversation);
        if let Some(found) = found.filter(|p| p.count >= count) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{count} offline entries for {user} not recorded within {PATIENCE:?}; metrics:\n{}",
            offline_metrics(node).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `/ready` says of Kafka (`"up"`, `"down"`; `"none"` when absent).
async fn kafka_status(node: &Node) -> String {
    let (_, body) = http_get(node.http_port, "/ready").await.unwrap();
    let ready: serde_json::Value = serde_json::from_str(&body).expect("/ready answers JSON");
    ready["dependencies"]["kafka"]["status"].as_str().unwrap_or("none").to_owned()
}

async fn metrics(node: &Node) -> String {
    match http_get(node.http_port, "/metrics").await {
        Ok((_, body)) => body,
        Err(e) => {
            // A child that died and is not yet reaped is a zombie ("Z").
            let pid = node.child.id();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            panic!("/metrics does not answer ({e}); im-service pid {pid}: {stat}")
        }
    }
}

async fn offline_metrics(node: &Node) -> String {
    metrics(node)
        .await
        .lines()
        .filter(|l| l.starts_with("im_offline") || l.starts_with("im_kafka"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a metric line that starts with `name`, 0 if absent.
async fn metric(node: &Node, name: &str) -> f64 {
    metrics(node)
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Waits until the metric `name` reaches at least `value`.
async fn wait_for_metric(node: &Node, name: &str, value: f64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = metric(node, name).await;
        if now >= value {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {now}, not {value}, after {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many offline entries of `user` in `conversation` up to `seq` are in
/// the node's SQLite file, read or not (`pending_offline` hides the read
/// ones). Read-only, beside the running node.
async fn offline_rows_up_to(node: &Node, user: u64, conversation: ConversationId, seq: u64) -> i64 {
    use sqlx::{ConnectOptions, Connection};
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(node.data_dir.join("im.db")).read_only(true);
    let mut connection = options.connect().await.expect("open the node's store read-only");
    let count =
        sqlx::query_scalar("SELECT COUNT(*) FROM offline_entries WHERE user_id = ? AND conversation = ? AND seq <= ?")
            .bind(i64::try_from(user).unwrap())
            .bind(conversation.to_string())
            .bind(i64::try_from(seq).unwrap())
            .fetch_one(&mut connection)
            .await
            .expect("count the offline entries");
    connection.close().await.ok();
    count
}

/// Alice, online, sends `count` messages to bob from `first`; returns the acks.
async fn send(alice: &mut crate::support::Client, bob: u64, first: usize, count: usize) -> Vec<pb::SendAck> {
    let mut acks = Vec::new();
    for i in first..first + count {
        acks.push(ack(alice.send_text(bob, &format!("m{i}"), &format!("text {i}")).await));
    }
    acks
}

/// Sends to an offline user, checks the records, then that a message
/// delivered to a device is not recorded, and that reading clears what is
/// pending.
async fn offline_messages_are_recorded(node: &Node) {
    let (alice, alice_token) = node.create_user(&unique_name("alice")).await;
    let (bob, bob_token) = node.create_user(&unique_name("bob")).await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;

    let acks = send(&mut alice_phone, bob, 0, 3).await;
    let conversation = ConversationId::private(UserId(alice), UserId(bob)).unwrap();
    let recorded = wait_for_pending(node, bob, alice, 3).await;
    let last = acks.last().unwrap();
    assert_eq!(
        recorded,
        PendingOffline {
            conversation,
            count: 3,
            first_seq: Seq(1),
            last_seq: Seq(3),
            last_time_ms: last.server_time_ms
        }
    );
    assert_eq!(pending(node, alice).await, [], "the sender has nothing waiting");

    // Bob comes online: a message pushed to his device is not recorded.
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let pushed = send(&mut alice_phone, bob, 3, 1).await;
    match bob_phone.next_event(WAIT).await {
        Some(server_frame::Body::Push(m)) => assert_eq!(m.seq, pushed[0].seq),
        other => panic!("expected a push, got {other:?}"),
    }
    // A message to carol, offline, after it: the router hands offline
    // entries to one publisher in order, which counts each batch once it is
    // published, so once carol's entry is recorded and counted, an entry for
    // bob's pushed message would have been counted too.
    let (carol, _) = node.create_user(&unique_name("carol")).await;
    // (client_msg_id m100: ids are per sender, and m0 went to bob.)
    send(&mut alice_phone, carol, 100, 1).await;
    wait_for_pending(node, carol, alice, 1).await;
    wait_for_metric(node, "im_offline_events_published_total", 4.0).await;
    assert_eq!(metric(node, "im_offline_events_published_total").await, 4.0, "bob's pushed message was published");
    assert_eq!(wait_for_pending(node, bob, alice, 3).await.count, 3);

    // What bob has read is no longer pending.
    let mark =
        client_frame::Body::MarkRead(pb::MarkReadRequest { conversation_id: conversation_id(alice, bob), seq: 2 });
    match bob_phone.request(mark).await {
        server_frame::Body::MarkRead(r) => assert_eq!(r.read_seq, 2),
        other => panic!("mark_read answered {other:?}"),
    }
    let left = pending(node, bob).await;
    assert_eq!((left.len(), left[0].count, left[0].first_seq), (1, 1, Seq(3)));
    // The read entries are deleted, not only hidden: the node's clean-up
    // (off the request path) leaves nothing up to seq 2.
    let deadline = Instant::now() + PATIENCE;
    while offline_rows_up_to(node, bob, conversation, 2).await > 0 {
        assert!(Instant::now() < deadline, "entries up to the read position not deleted within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(offline_rows_up_to(node, bob, conversation, 3).await, 1, "the unread entry is kept");
    assert_eq!(metric(node, "im_offline_dead_letters_total").await, 0.0);
    assert_eq!(metric(node, "im_offline_publish_failures_total").await, 0.0);
}

#[tokio::test]
async fn messages_to_an_offline_user_are_recorded_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = WORKER_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let node = start(dir.path(), &env).await;
    offline_messages_are_recorded(&node).await;
    assert_eq!(kafka_status(&node).await, "none", "no Kafka configured");
}

#[tokio::test]
async fn a_disabled_in_process_worker_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("OFFLINE_WORKER_ENABLED".to_owned(), "false".to_owned())];
    let node = start(dir.path(), &env).await;
    let (_, alice_token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    send(&mut alice_phone, bob, 0, 2).await;
    // Both routed (an offline entry is handed to the publisher, if there is
    // one, before the routing latency is observed).
    wait_for_metric(&node, "im_routing_latency_seconds_count", 2.0).await;
    // Nothing would consume them: an in-process bus is this process's alone.
    assert_eq!(metric(&node, "im_offline_events_published_total").await, 0.0);
    assert_eq!(pending(&node, bob).await, []);
}

#[tokio::test]
async fn messages_to_an_offline_user_are_recorded_over_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let env = kafka_env(BROKER);
    let group = env.iter().find(|(k, _)| k == "KAFKA_CONSUMER_GROUP_ID").unwrap().1.clone();
    let node = start(dir.path(), &env).await;
    // Kafka only degrades a feature: the node may be ready before its probe
    // of the broker first reported.
    let deadline = Instant::now() + Duration::from_secs(10);
    while kafka_status(&node).await != "up" {
        assert!(Instant::now() < deadline, "/ready: {:?}", http_get(node.http_port, "/ready").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    offline_messages_are_recorded(&node).await;

    // The worker reports its lag, per partition, once it committed: 0.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = metrics(&node).await;
        let lags: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("im_kafka_consumer_lag{") && l.contains(&format!("group=\"{group}\"")))
            .collect();
        if lags.len() == TOPIC_PARTITIONS && lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        assert!(Instant::now() < deadline, "no lag of 0 for every partition of {group}: {lags:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The broker goes away and comes back while messages keep coming: every
/// acked message is in the store (the send path never waits for the bus),
/// the node reports Kafka down and then up again, and the offline records
/// are complete — events that could not be published meanwhile are retried
/// until the broker is back.
#[tokio::test]
async fn offline_records_are_complete_across_a_broker_outage() {
    let broker = BrokerBehindProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    // `kafka_env`'s 3 s consumer session: it times out during the outage,
    // so the worker must rejoin its group when the broker is back (a rejoin
    // that hung when a member backed off between polls on each stale
    // error, answering its rebalance late — issue 14).
    let env = kafka_env(&broker.addr());
    let node = start(dir.path(), &env).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;

    let mut acks = send(&mut alice_phone, bob, 0, 5).await;
    wait_for_pending(&node, bob, alice, 5).await;

    broker.cut_off();
    // Acks keep coming without the broker: G1 rests on the store alone.
    let began = Instant::now();
    acks.extend(send(&mut alice_phone, bob, 5, 5).await);
    assert!(began.elapsed() < Duration::from_secs(2), "sends waited for the broker: {:?}", began.elapsed());
    let deadline = Instant::now() + PATIENCE;
    while metric(&node, "im_offline_publish_failures_total").await == 0.0 {
        assert!(Instant::now() < deadline, "no publish failed while the broker was away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The bus only degrades a node (G9): the body says so, the status not.
    let deadline = Instant::now() + PATIENCE;
    while kafka_status(&node).await != "down" {
        assert!(Instant::now() < deadline, "/ready does not say kafka is down while the broker is away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(http_get(node.http_port, "/ready").await.unwrap().0, 200, "the broker away made the node unready");

    broker.restore();
    acks.extend(send(&mut alice_phone, bob, 10, 5).await);
    let recorded = wait_for_pending(&node, bob, alice, 15).await;
    assert_eq!((recorded.count, recorded.first_seq, recorded.last_seq), (15, Seq(1), Seq(15)));
    let synced = alice_phone.sync_all(&conversation_id(alice, bob), 0).await;
    let seqs: Vec<u64> = synced.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, acks.iter().map(|a| a.seq).collect::<Vec<_>>(), "every acked message, once, in order");
    assert_eq!(metric(&node, "im_offline_events_dropped_total").await, 0.0);
    let deadline = Instant::now() + PATIENCE;
    while kafka_status(&node).await != "up" {
        assert!(Instant::now() < deadline, "kafka not up again on /ready after the broker came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
