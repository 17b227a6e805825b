//! Offline entries that a crash cannot lose (issue 14, the route outbox):
//! senders write as fast as acks come back to users who never connect, and
//! the node is killed (`kill -9`) twice mid-stream. Before the outbox, the
//! entries of messages committed but not yet recorded were in memory only
//! (2 of 7,974 went missing in a fault run); now each commit keeps them in
//! its own transaction, and a restarted node sweeps what its predecessor
//! left once the rows are older than `OFFLINE_WORKER_OUTBOX_GRACE`.
//!
//! Asserted per pair: the receiver's offline entries are exactly the stored
//! messages to them — every acked one included, none missing, none extra —
//! read from the node's SQLite file.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use im_backends::conformance::fixtures::unique_name;
use im_proto::client::server_frame;

use crate::support::{Client, Node, conversation_id};

const PAIRS: usize = 4;
/// Acks collected before each kill.
const ACKS_PER_ROUND: usize = 1_500;
const ROUNDS: usize = 2;
/// The outbox grace for this test: rows the killed node left are swept
/// this long after they were written (the default is 30 s).
const GRACE: &str = "2s";
/// The grace, a sweep period (5 s) and room for a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// One sender per pair, sending until its connection breaks; returns the
/// acked seqs of each pair as they come.
fn start_senders(
    node: &Node,
    pairs: &[(String, u64)],
    round: usize,
) -> tokio::sync::mpsc::UnboundedReceiver<(usize, u64)> {
    let (acks_tx, acks_rx) = tokio::sync::mpsc::unbounded_channel();
    for (p, (token, receiver)) in pairs.iter().cloned().enumerate() {
        let (url, acks_tx) = (node.ws_url(), acks_tx.clone());
        tokio::spawn(async move {
            let mut client = Client::connect(&url, &token, "load").await.unwrap();
            for n in 0.. {
                let id = format!("r{round}-n{n}");
                let request = client.send_text(receiver, &id, "to an offline user");
                match tokio::time::timeout(Duration::from_secs(3), request).await {
                    Ok(server_frame::Body::Ack(ack)) if acks_tx.send((p, ack.seq)).is_ok() => {}
                    _ => return,
                }
            }
        });
    }
    acks_rx
}

#[tokio::test]
async fn every_message_to_an_offline_user_keeps_its_entry_across_kill9s_of_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with(dir.path(), &[("OFFLINE_WORKER_OUTBOX_GRACE", GRACE)]).await;
    let mut pairs = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..PAIRS {
        let (sender, token) = node.create_user(&unique_name("sender")).await;
        let (receiver, _) = node.create_user(&unique_name("offline")).await;
        pairs.push((token, receiver));
        ids.push((sender, receiver));
    }

    let mut acked = vec![BTreeSet::new(); PAIRS];
    for round in 0..ROUNDS {
        let mut acks = start_senders(&node, &pairs, round);
        for _ in 0..ACKS_PER_ROUND {
            let (p, seq) = acks.recv().await.expect("senders running");
            acked[p].insert(seq);
        }
        node.kill9();
        // Acks that raced the kill count too; every sender stops once its
        // connection is gone, which ends the stream.
        while let Ok(Some((p, seq))) = tokio::time::timeout(Duration::from_secs(5), acks.recv()).await {
            acked[p].insert(seq);
        }
        node.restart().await;
    }

    // The receivers never connect: every message to them needs its entry.
    let deadline = Instant::now() + PATIENCE;
    for (p, (sender, receiver)) in ids.iter().enumerate() {
        let conversation = conversation_id(*sender, *receiver);
        // Everything stored for the pair, from the node's file.
        let stored = node.stored_seqs(*sender, &conversation).await;
        let lost: Vec<_> = acked[p].difference(&stored).take(10).collect();
        assert!(lost.is_empty(), "pair {p}: acked seqs missing from the store: {lost:?} ({} stored)", stored.len());
        let began = Instant::now();
        loop {
            let entries = node.offline_seqs(*receiver, &conversation).await;
            if entries == stored {
                eprintln!(
                    "pair {p}: {} entries for {} stored ({} acked), complete after {:?}",
                    entries.len(),
                    stored.len(),
                    acked[p].len(),
                    began.elapsed()
                );
                break;
            }
            assert!(entries.is_subset(&stored), "pair {p}: entries for messages never stored");
            assert!(
                Instant::now() < deadline,
                "pair {p}: {} of {} stored messages have no entry within {PATIENCE:?}: {:?}",
                stored.difference(&entries).count(),
                stored.len(),
                stored.difference(&entries).take(10).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
