//! One hung gateway does not stall delivery for everyone (issue 14, item 8):
//! one node, two gateways in production mode; alice and bob on gateway 0,
//! carol on gateway 1. Under cross traffic (alice → bob and alice → carol),
//! gateway 1 is frozen with SIGSTOP: pushes to bob keep their latency (each
//! gateway has its own delivery lane; before, the router waited for every
//! gateway of a batch, up to MAX_RETRY_ATTEMPTS × RETRY_TIMEOUT = 15 s).
//! After SIGCONT nothing is lost: carol syncs every acked message once, in
//! order.

use std::time::{Duration, Instant};

use im_proto::client::server_frame;

use crate::harness::{ClusterBuilder, User};
use crate::support::{Client, ack, conversation_id};

/// Rounds of (alice → bob, measured; alice → carol) per phase.
const ROUNDS: usize = 60;

/// Sends one message to bob and waits for its push on bob's phone: the
/// time from the send to the push.
async fn push_latency(alice: &mut Client, bob: &User, bob_phone: &mut Client, text: &str) -> Duration {
    let sent = Instant::now();
    ack(alice.send_text(bob.id, text, text).await);
    loop {
        match bob_phone.next_event(Duration::from_secs(20)).await {
            Some(server_frame::Body::Push(m)) if m.body == text.as_bytes() => return sent.elapsed(),
            Some(_) => continue,
            None => panic!("{text}: no push to bob within 20 s"),
        }
    }
}

/// `ROUNDS` rounds; the 99th percentile (with 60 samples, the largest) of
/// bob's push latency.
async fn phase(alice: &mut Client, bob: &User, bob_phone: &mut Client, carol: &User, tag: &str) -> Duration {
    let mut latencies = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        latencies.push(push_latency(alice, bob, bob_phone, &format!("{tag}-bob-{i}")).await);
        let text = format!("{tag}-carol-{i}");
        ack(alice.send_text(carol.id, &text, &text).await);
    }
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_gateway_does_not_slow_pushes_through_the_other() {
    let cluster = ClusterBuilder::new().size(1, 2).start().await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let carol = cluster.create_user("carol").await;
    let mut alice_phone = cluster.client(0, &alice, "phone").await;
    let mut bob_phone = cluster.client(0, &bob, "phone").await;
    let carol_phone = cluster.client(1, &carol, "phone").await;

    let before = phase(&mut alice_phone, &bob, &mut bob_phone, &carol, "before").await;
    cluster.gateways[1].signal("STOP");
    let frozen = phase(&mut alice_phone, &bob, &mut bob_phone, &carol, "frozen").await;
    cluster.gateways[1].signal("CONT");
    let after = phase(&mut alice_phone, &bob, &mut bob_phone, &carol, "after").await;
    eprintln!("bob's push p99: {before:?} before, {frozen:?} with gateway 1 frozen, {after:?} after");
    // Within 2× of the run without the fault; a floor of 50 ms for the
    // noise of a loaded 2-core machine on millisecond latencies.
    let bound = (before * 2).max(Duration::from_millis(50));
    assert!(frozen <= bound, "frozen gateway slowed the other: p99 {frozen:?} > {bound:?} (before {before:?})");

    // Nothing lost: carol syncs every acked message, once, in order.
    drop(carol_phone);
    let mut carol_laptop = cluster.client(1, &carol, "laptop").await;
    let bodies: Vec<String> = carol_laptop
        .sync_all(&conversation_id(alice.id, carol.id), 0)
        .await
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = ["before", "frozen", "after"]
        .iter()
        .flat_map(|tag| (0..ROUNDS).map(move |i| format!("{tag}-carol-{i}")))
        .collect();
    assert_eq!(bodies, expected);
}
