//! The group fan-out after a node is killed (issue 14, "fan-out that
//! recovers in seconds"): two nodes and two gateways in production mode, a
//! steady stream of group messages (one every 50 ms) to members online on
//! both gateways. The node whose fan-out holds the group's partition is
//! killed (-9), and later started again; the longest stretch without a
//! group push at a member is measured in each phase and bounded, and every
//! acked message reaches every member by push or sync, once, in seq order.
//!
//! The fan-out's consumer group (`KAFKA_GROUP_ID`) uses the cooperative
//! assignor, and the session of `broker::kafka_env` (3 s): a killed node's
//! partitions move once the broker gives up on its session, the others keep
//! being consumed. Measured values are in docs/resilience.md.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use im_proto::client::{self as pb, client_frame, server_frame};

use crate::harness::{Cluster, ClusterBuilder, Device, Inbox, REQUEST_TIMEOUT};
use crate::support::{GroupApi, free_port, group_conversation, http_get};

/// One group message every this long.
const PACE: Duration = Duration::from_millis(50);
/// How long each phase runs (steady, after the kill, after the restart).
const PHASE: Duration = Duration::from_secs(15);
/// The phase after the restart runs longer: the rejoin gap varies more
/// (11.2 s seen on a machine busy with builds), and a gap must fit in it to
/// be measured.
const RESTART_PHASE: Duration = Duration::from_secs(25);
/// The longest stretch without a group push a member may see after the
/// kill: the 3 s session, a heartbeat interval (1 s) for the broker to
/// notice, and the survivors' rejoin. Measured 4.7–6.5 s (docs/resilience.md):
/// above the 5 s aimed at, which tansu does not reach with the cooperative
/// assignor. The bound leaves room for a loaded 2-core machine; the old
/// settings (30 s session) stalled for the whole 15 s phase.
const KILL_GAP_BOUND: Duration = Duration::from_secs(10);
/// The same once the killed node is back and rejoins the group (measured
/// 2.7–5.0 s on a quiet machine, 11.2 s on a busy one).
const RESTART_GAP_BOUND: Duration = Duration::from_secs(15);

#[tokio::test]
async fn group_pushes_resume_within_seconds_after_the_fan_out_node_is_killed_and_after_it_returns() {
    let mut cluster = ClusterBuilder::new()
        .node_env("METRICS_ENABLED", "true")
        .node_env_at(0, "METRICS_PORT", free_port())
        .node_env_at(1, "METRICS_PORT", free_port())
        .start()
        .await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let carol = cluster.create_user("carol").await;
    let mut api = GroupApi::connect(cluster.node_grpc_port(0), &alice.token).await;
    let group = api.create("recovery", &[bob.id, carol.id], false).await;
    let conv = group_conversation(group);

    // A member on each gateway; alice can send through either.
    let (bob_inbox, carol_inbox) = (Inbox::default(), Inbox::default());
    let mut bob_phone = cluster.connect(0, &bob, "phone", bob_inbox.clone()).await;
    let mut carol_phone = cluster.connect(1, &carol, "phone", carol_inbox.clone()).await;
    let mut senders = vec![
        cluster.connect(0, &alice, "gw0", Inbox::default()).await,
        cluster.connect(1, &alice, "gw1", Inbox::default()).await,
    ];

    // Warm-up through gateway 0 until both members are pushed to: the
    // fan-out's group has formed.
    let mut acked = Vec::new();
    let mut next = 0;
    let started = Instant::now();
    while bob_inbox.pushes().is_empty() || carol_inbox.pushes().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "no group push within 30 s of the first send");
        acked.push(send(&mut senders[0], group, next).await);
        next += 1;
        tokio::time::sleep(PACE).await;
    }
    // The node whose fan-out pushes this group's messages (one key, one
    // partition, one member) is the one to kill: the one whose deliveries
    // grow while a few more are sent (the group may still have been
    // settling during the warm-up).
    let holder = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "no single node fans the group out");
        let before = fan_out_deliveries(&cluster).await;
        for _ in 0..10 {
            acked.push(send(&mut senders[0], group, next).await);
            next += 1;
            tokio::time::sleep(PACE).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = fan_out_deliveries(&cluster).await;
        match (after[0] > before[0], after[1] > before[1]) {
            (true, false) => break 0,
            (false, true) => break 1,
            _ => {}
        }
    };
    let survivor = 1 - holder;
    eprintln!("node {} holds the group's partition", holder + 1);

    // Steady traffic through the survivor's gateway (gateway i forwards to
    // node i) from now to the end, once the warm-up's last records are
    // published (two nodes publishing one group may interleave).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let mut sender = senders.swap_remove(survivor);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                acked.push(send(&mut sender, group, next).await);
                next += 1;
                tokio::time::sleep(PACE).await;
            }
            acked
        })
    };
    tokio::time::sleep(PHASE).await;
    let killed_at = Instant::now();
    cluster.nodes[holder].kill9();
    tokio::time::sleep(PHASE).await;
    let restarted_at = Instant::now();
    cluster.nodes[holder].restart().await;
    tokio::time::sleep(RESTART_PHASE).await;
    stop.store(true, Ordering::SeqCst);
    let ended_at = Instant::now();
    acked.extend(traffic.await.expect("the traffic task"));
    // The last pushes land.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let acked_seqs: Vec<u64> = acked.clone();
    let expected: HashSet<u64> = acked_seqs.iter().copied().collect();
    assert_eq!(expected.len(), acked_seqs.len(), "every send got its own seq");
    for (name, inbox, device) in [("bob", &bob_inbox, &mut bob_phone), ("carol", &carol_inbox, &mut carol_phone)] {
        let pushes: Vec<(Instant, u64)> =
            inbox.pushes().into_iter().filter(|(_, m)| m.conversation_id == conv).map(|(at, m)| (at, m.seq)).collect();
        // Pushes: nothing unacked, each message first pushed in seq order
        // (a partition that moved is read again from its last commit, so a
        // message may be pushed twice; the client keeps the first).
        let mut seen = HashSet::new();
        let firsts: Vec<u64> = pushes.iter().map(|&(_, seq)| seq).filter(|&seq| seen.insert(seq)).collect();
        assert!(firsts.iter().all(|seq| expected.contains(seq)), "{name} was pushed a message never acked");
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{name}'s first pushes are out of seq order");
        let duplicates = pushes.len() - firsts.len();
        // Sync: every acked message once, in order (what the pushes missed
        // while the partition moved is here).
        let synced: Vec<u64> = device.sync_all(&conv, 0).await.iter().map(|m| m.seq).collect();
        let mut in_order = acked_seqs.clone();
        in_order.sort_unstable();
        assert_eq!(synced, in_order, "{name}: every acked group message once, in seq order, by sync");
        let missed = in_order.iter().filter(|seq| !seen.contains(seq)).count();

        let before = longest_gap(&pushes, killed_at - PHASE + Duration::from_secs(2), killed_at);
        let after_kill = longest_gap(&pushes, killed_at, restarted_at);
        let after_restart = longest_gap(&pushes, restarted_at, ended_at);
        let line = format!(
            "{name}: longest gap between group pushes: steady {before:?}, after the kill {after_kill:?}, \
             after the restart {after_restart:?}; {} pushes, {duplicates} again after a move, {missed} of {} \
             left to sync",
            pushes.len(),
            in_order.len()
        );
        eprintln!("{line}");
        assert!(after_kill <= KILL_GAP_BOUND, "{name}: no group push for {after_kill:?} after the kill");
        assert!(after_restart <= RESTART_GAP_BOUND, "{name}: no group push for {after_restart:?} after the restart");
        // The kill did stop this group's pushes for a while: the measured
        // gap is the fan-out's failover, not a partition that never moved.
        assert!(after_kill >= Duration::from_secs(1), "{name}: the kill did not interrupt the pushes");
    }
    drop(senders);
}

/// Sends group message `n` through `device` until it is acked (a resend of a
/// stored message gets its first ack); its seq.
async fn send(device: &mut Device, group: u64, n: u64) -> u64 {
    let client_msg_id = format!("m{n}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = pb::SendRequest {
            to_group: group,
            client_msg_id: client_msg_id.clone(),
            body: client_msg_id.as_bytes().to_vec().into(),
            content_type: "text/plain".into(),
            ..Default::default()
        };
        match device.request(client_frame::Body::Send(request), REQUEST_TIMEOUT).await {
            Ok(server_frame::Body::Ack(ack)) => return ack.seq,
            other => assert!(Instant::now() < deadline, "{client_msg_id} not acked within 30 s: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Each node's `im_group_fanout_deliveries_total`.
async fn fan_out_deliveries(cluster: &Cluster) -> Vec<f64> {
    let mut delivered = Vec::new();
    for node in &cluster.nodes {
        let (_, text) = http_get(node.http_port, "/metrics").await.expect("/metrics answers");
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("im_group_fanout_deliveries_total "))
            .map(|v| v.trim().parse().unwrap())
            .expect("im_group_fanout_deliveries_total in /metrics");
        delivered.push(value);
    }
    delivered
}

/// The longest stretch in `[from, to]` without a push: from `from` to the
/// first push, between pushes, and from the last push to `to`.
fn longest_gap(pushes: &[(Instant, u64)], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &(at, _) in pushes.iter().filter(|(at, _)| (from..=to).contains(at)) {
        longest = longest.max(at - last);
        last = at;
    }
    longest.max(to - last)
}
