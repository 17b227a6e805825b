//! Groups in production mode: `im-user` and two nodes on MariaDB, Redis,
//! etcd and Kafka (the shared tansu, topics of this test alone), two
//! gateways, gateway i forwarding to node i.

use std::time::{Duration, Instant};

use im_proto::client::{self as pb, ErrorCode, server_frame};
use im_proto::user::Role;

use crate::harness::ClusterBuilder;
use crate::support::{Client, GroupApi, ack, error, group_conversation};

const WAIT: Duration = Duration::from_secs(10);

/// The pushes `client` gets within `WAIT` until it has `count` of them.
async fn pushes(client: &mut Client, count: usize) -> Vec<pb::Message> {
    let mut got = Vec::new();
    while got.len() < count {
        match client.next_event(WAIT).await {
            Some(server_frame::Body::Push(m)) => got.push(m),
            Some(_) => {}
            None => panic!("{} of {count} pushes within {WAIT:?}", got.len()),
        }
    }
    got
}

/// Pushes until the one of `seq` (included).
async fn pushes_until(client: &mut Client, seq: u64) -> Vec<pb::Message> {
    let mut got: Vec<pb::Message> = Vec::new();
    while got.last().is_none_or(|m| m.seq != seq) {
        match client.next_event(WAIT).await {
            Some(server_frame::Body::Push(m)) => got.push(m),
            Some(_) => {}
            None => {
                panic!("no push of seq {seq} within {WAIT:?} (got {:?})", got.iter().map(|m| m.seq).collect::<Vec<_>>())
            }
        }
    }
    got
}

#[tokio::test]
async fn group_messages_reach_members_on_every_gateway_and_a_removal_reaches_every_node_within_a_second() {
    let cluster = ClusterBuilder::new().start().await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let carol = cluster.create_user("carol").await;
    let mut alice_api = GroupApi::connect(cluster.node_grpc_port(0), &alice.token).await;
    let group = alice_api.create("cluster", &[bob.id, carol.id], false).await;
    let conv = group_conversation(group);

    let mut alice_phone = cluster.client(0, &alice, "phone").await;
    let mut bob_phone = cluster.client(1, &bob, "phone").await;
    let mut bob_laptop = cluster.client(0, &bob, "laptop").await;
    // Carol sends through both nodes: gateway 0 forwards to node 0 (which
    // makes the change below), gateway 1 to node 1 (which hears of it on
    // membership_change).
    let mut carol_on_node0 = cluster.client(0, &carol, "phone").await;
    let mut carol_on_node1 = cluster.client(1, &carol, "laptop").await;

    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(ack(alice_phone.send_group_text(group, &format!("a{i}"), "hello").await).seq);
    }
    seqs.push(ack(carol_on_node1.send_group_text(group, "c0", "from node 1").await).seq);
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
    for device in [&mut bob_phone, &mut bob_laptop] {
        let mut got: Vec<u64> = pushes(device, 11).await.iter().map(|m| m.seq).collect();
        // Two nodes publish to group_msg: the partition keeps the order in
        // which their records arrived, which across nodes need not be seq
        // order (the client orders by seq, docs/protocol.md).
        got.sort_unstable();
        assert_eq!(got, seqs, "every member's device on either gateway gets each message once");
    }
    assert_eq!(pushes(&mut carol_on_node0, 11).await.len(), 11);
    assert_eq!(pushes(&mut carol_on_node1, 10).await.len(), 10, "the sending device is skipped");

    // Node 1's watcher is live (its consumer joined its group at start-up,
    // which the broker may hold for a while): a first change has reached it.
    let promoted = alice_api.set_role(group, bob.id, Role::Admin).await.expect("the owner promotes bob");
    let mut alice_on_node1 = GroupApi::connect(cluster.node_grpc_port(1), &alice.token).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alice_on_node1.members(group).await.expect("alice lists her group").version < promoted.version {
        assert!(Instant::now() < deadline, "node 1 never saw the first change");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Removed on node 0; node 1 learns it from membership_change.
    alice_api.remove(group, carol.id).await.expect("the owner removes carol");
    let removed_at = Instant::now();
    let e = error(carol_on_node0.send_group_text(group, "r0", "after removal").await);
    assert_eq!(e.code, ErrorCode::NotFound as i32, "the node that made the change: at once");
    let mut attempt = 0;
    let took = loop {
        attempt += 1;
        match carol_on_node1.send_group_text(group, &format!("r1-{attempt}"), "after removal").await {
            server_frame::Body::Error(e) if e.code == ErrorCode::NotFound as i32 => break removed_at.elapsed(),
            server_frame::Body::Ack(_) => {}
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(removed_at.elapsed() < Duration::from_secs(5), "node 1 still lets carol send after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("removal reached node 1 in {took:?}");
    assert!(took < Duration::from_secs(1), "removal reached node 1 after {took:?}");

    // Carol gets nothing sent after her removal, and reads nothing.
    let after = ack(alice_phone.send_group_text(group, "after", "carol is gone").await);
    // Waits for that seq itself, not a count: a rebalance of the fan-out's
    // consumer group may push a record again (at least once).
    let bob_got = pushes_until(&mut bob_phone, after.seq).await;
    assert_eq!(bob_got.last().map(|m| m.seq), Some(after.seq), "the members still get it");
    while let Some(event) = carol_on_node1.next_event(Duration::from_millis(500)).await {
        if let server_frame::Body::Push(m) = event {
            assert!(m.seq < after.seq, "carol was pushed seq {} after her removal", m.seq);
        }
    }
    let e = error(carol_on_node1.sync(&conv, 0).await);
    assert_eq!(e.code, ErrorCode::NotFound as i32);
}
