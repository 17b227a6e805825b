//! G1 under `kill -9`: every acknowledged message survives, exactly once, in
//! seq order; seqs are never reused after the restart (G2).

use std::collections::HashMap;
use std::time::Duration;

use im_proto::client::server_frame;

use crate::support::{Node, conversation_id};

/// Senders × pairs, each sending as fast as acks come back.
const PAIRS: usize = 8;
const ACKS_BEFORE_KILL: usize = 2_000;

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path()).await;
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let sender = node.create_user(&format!("s{i}")).await;
        let receiver = node.create_user(&format!("r{i}")).await;
        pairs.push((sender, receiver));
    }

    // Each sender task sends until the connection breaks, recording acks.
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (p, ((_, sender_token), (receiver, _))) in pairs.iter().cloned().enumerate() {
        let url = node.ws_url();
        let acks_tx = acks_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = crate::support::Client::connect(&url, &sender_token, "load").await.unwrap();
            for n in 0.. {
                let (id, text) = (format!("p{p}-n{n}"), format!("{p}:{n}"));
                let request = client.send_text(receiver, &id, &text);
                match tokio::time::timeout(Duration::from_secs(3), request).await {
                    Ok(server_frame::Body::Ack(ack)) => {
                        if acks_tx.send((p, ack)).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    drop(acks_tx);

    let mut acked: HashMap<usize, Vec<im_proto::client::SendAck>> = HashMap::new();
    let mut count = 0;
    while count < ACKS_BEFORE_KILL {
        let (p, ack) = acks_rx.recv().await.expect("senders running");
        acked.entry(p).or_default().push(ack);
        count += 1;
    }
    node.kill9();
    // Acks that raced the kill are acknowledged too: collect them all.
    for task in tasks {
        // A request in flight fails once its connection is gone.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    while let Ok((p, ack)) = acks_rx.try_recv() {
        acked.entry(p).or_default().push(ack);
    }

    node.restart().await;
    let mut total = 0;
    for (p, ((sender, sender_token), (receiver, receiver_token))) in pairs.iter().enumerate() {
        let conv = conversation_id(*sender, *receiver);
        let mut reader = node.connect(receiver_token, "after-crash").await;
        let stored = reader.sync_all(&conv, 0).await;
        let acks = acked.remove(&p).unwrap_or_default();
        total += acks.len();

        let mut stored_by_seq: HashMap<u64, &im_proto::client::Message> = HashMap::new();
        for m in &stored {
            assert!(stored_by_seq.insert(m.seq, m).is_none(), "seq {} synced twice", m.seq);
        }
        assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq), "seqs strictly increase");
        for ack in &acks {
            let m = stored_by_seq.get(&ack.seq).unwrap_or_else(|| panic!("acked seq {} of pair {p} lost", ack.seq));
            assert_eq!(m.msg_id, ack.msg_id);
        }
        let ids: std::collections::HashSet<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
        assert_eq!(ids.len(), stored.len(), "each message stored once");

        // After the restart, new seqs are above every seq issued before.
        let mut writer = node.connect(sender_token, "after-crash").await;
        let next = crate::support::ack(writer.send_text(*receiver, "after-restart", "again").await);
        let highest = stored.last().map_or(0, |m| m.seq);
        assert!(next.seq > highest, "seq {} reused after restart (highest {highest})", next.seq);
    }
    assert!(total >= ACKS_BEFORE_KILL);
}

/// SIGTERM: connected clients are disconnected (told to reconnect), the process
/// exits 0 within its grace period, and what was acked is there after a
/// restart.
#[tokio::test]
async fn sigterm_closes_clients_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path()).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let acked = crate::support::ack(alice_phone.send_text(bob, "before-term", "bye").await);

    let pid = node.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "im-service did not exit within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(alice_phone.closed_within(Duration::from_secs(2)).await, "the client was not disconnected");

    node.restart().await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let stored = bob_phone.sync_all(&conversation_id(alice, bob), 0).await;
    assert_eq!(stored.iter().map(|m| m.msg_id).collect::<Vec<_>>(), vec![acked.msg_id]);
}

/// After a restart the seqs resume above the reserved ceiling, leaving a
/// gap no message will ever fill. On SQLite this node is the only writer, so
/// sync steps over it at once instead of waiting `SYNC_GAP_GRACE` (45 s).
#[tokio::test]
async fn after_a_restart_sync_shows_new_messages_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path()).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut phone = node.connect(&alice_token, "phone").await;
    let mut seqs = Vec::new();
    for i in 0..3 {
        seqs.push(crate::support::ack(phone.send_text(bob, &format!("before-{i}"), "hi").await).seq);
    }
    drop(phone);
    node.kill9();
    node.restart().await;

    let mut phone = node.connect(&alice_token, "phone").await;
    let after = crate::support::ack(phone.send_text(bob, "after", "back").await).seq;
    assert!(after > seqs[2] + 1, "the restart skipped a range: {} then {after}", seqs[2]);
    seqs.push(after);
    let mut reader = node.connect(&bob_token, "laptop").await;
    let synced: Vec<u64> = reader.sync_all(&conversation_id(alice, bob), 0).await.iter().map(|m| m.seq).collect();
    assert_eq!(synced, seqs, "the message after the gap is shown by the first sync");
}
