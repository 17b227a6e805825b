//! Re-encryption of stored bodies (`imctl keys reencrypt`, issue 13) on a
//! real embedded node with the local master key: rows stored in clear
//! before encryption was turned on and rows of a retired key are sealed
//! again under the active key, by a walk of `KeyService.Reencrypt` windows
//! that is killed with the node (`kill -9` while windows are in flight),
//! resumed from the start by two walkers at once, beside live sends. Nothing
//! acked is lost or changed: every body syncs intact, once, in seq order, and
//! every row ends under the active key.

use std::time::Duration;

use im_proto::keys::key_service_client::KeyServiceClient;
use im_proto::keys::{ReencryptRequest, ReencryptResponse, RotateRequest, StatusRequest, StatusResponse};
use tonic::transport::Channel;

use crate::support::{Node, ack, conversation_id};

async fn keys_client(node: &Node) -> KeyServiceClient<Channel> {
    KeyServiceClient::connect(format!("http://127.0.0.1:{}", node.grpc_port)).await.expect("grpc connect")
}

fn admin<T>(node: &Node, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {}", node.admin_token()).parse().unwrap());
    request
}

async fn status(node: &Node) -> StatusResponse {
    keys_client(node).await.status(admin(node, StatusRequest {})).await.expect("status").into_inner()
}

/// (rows in clear, rows of each key as (id, active, rows)).
fn rows(status: &StatusResponse) -> (u64, Vec<(u64, bool, u64)>) {
    assert_eq!(status.orphan_rows, 0, "{status:?}");
    (status.clear_rows, status.keys.iter().map(|k| (k.id, k.active, k.rows)).collect())
}

/// One walk from the start to its end, `limit` rows a window; the windows'
/// responses.
async fn walk(node: &Node, limit: u32) -> Vec<ReencryptResponse> {
    let mut client = keys_client(node).await;
    let (mut after, mut windows) = (0, Vec::new());
    loop {
        let window = client
            .reencrypt(admin(node, ReencryptRequest { after, limit }))
            .await
            .expect("a re-encryption window")
            .into_inner();
        assert!(window.next >= after, "the walk moves forward: {window:?} after {after}");
        assert!(window.failures.is_empty(), "{window:?}");
        after = window.next;
        let done = window.done;
        windows.push(window);
        if done {
            return windows;
        }
    }
}

/// Sends `count` numbered messages from `from` to `to`; (seq, body) of each.
async fn send(client: &mut crate::support::Client, to: u64, tag: &str, count: usize) -> Vec<(u64, String)> {
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let body = format!("{tag}-{i}");
        sent.push((ack(client.send_text(to, &format!("{tag}{i}"), &body).await).seq, body));
    }
    sent
}

#[tokio::test]
async fn clear_and_old_rows_move_to_the_active_key_across_a_kill9_beside_live_sends() {
    let dir = tempfile::tempdir().unwrap();
    // A node killed leaves a gap in the seqs it had reserved; sync waits it
    // out for SYNC_GAP_GRACE.
    let grace = ("SYNC_GAP_GRACE", "1s");
    let mut clear_node = Node::start_with(dir.path(), &[grace]).await;
    let (alice, alice_token) = clear_node.create_user("alice").await;
    let (bob, bob_token) = clear_node.create_user("bob").await;
    let pair = conversation_id(alice, bob);
    let mut phone = clear_node.connect(&alice_token, "phone").await;
    let mut sent = send(&mut phone, bob, "clear", 150).await;
    drop(phone);
    clear_node.kill9();

    // Encryption turned on: 60 rows under a first key, then 60 under a
    // second one.
    let encrypted = [grace, ("ENCRYPTION_ENABLED", "true")];
    let mut node = Node::start_with(dir.path(), &encrypted).await;
    let mut phone = node.connect(&alice_token, "phone").await;
    sent.extend(send(&mut phone, bob, "first-key", 60).await);
    let rotated = keys_client(&node).await.rotate(admin(&node, RotateRequest {})).await.expect("rotate");
    let (first, second) =
        (rotated.get_ref().previous_id.expect("a key was active"), rotated.get_ref().active.as_ref().unwrap().id);
    sent.extend(send(&mut phone, bob, "second-key", 60).await);
    assert_eq!(rows(&status(&node).await), (150, vec![(first, false, 60), (second, true, 60)]));

    // A walk in windows of 10 (21 of them, 20 ms apart), killed with the
    // node once the first has landed.
    let walker = {
        let (port, token) = (node.grpc_port, node.admin_token());
        tokio::spawn(async move {
            let mut client = KeyServiceClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap();
            let mut after = 0;
            let mut resealed = 0;
            loop {
                let mut request = tonic::Request::new(ReencryptRequest { after, limit: 10 });
                request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
                match client.reencrypt(request).await {
                    Ok(window) => {
                        resealed += window.get_ref().resealed;
                        after = window.get_ref().next;
                        if window.get_ref().done {
                            return (resealed, true);
                        }
                        // Paced, as `imctl` paces it: the kill lands mid-walk.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    // The node was killed under it.
                    Err(_) => return (resealed, false),
                }
            }
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (clear, _) = rows(&status(&node).await);
        if clear < 150 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the walk re-encrypted nothing in 20 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(phone);
    node.kill9();
    let (before_kill, finished) = walker.await.unwrap();
    assert!(!finished, "the walk should be cut short by the kill (it re-encrypted {before_kill} rows first)");

    // Restarted: part of the rows moved, part did not, none lost.
    let node = Node::start_with(dir.path(), &encrypted).await;
    let (clear, keys) = rows(&status(&node).await);
    let moved = keys.iter().find(|k| k.0 == second).unwrap().2 - 60;
    assert!(moved > 0 && clear + moved <= 150, "{clear} clear, {keys:?}");
    assert_eq!(clear + keys.iter().map(|k| k.2).sum::<u64>(), 270, "every row is still there: {keys:?}");

    // Resumed from the start by two walkers at once, while alice sends.
    let mut phone = node.connect(&alice_token, "laptop").await;
    let (live, a, b) = tokio::join!(send(&mut phone, bob, "live", 80), walk(&node, 10), walk(&node, 25));
    sent.extend(live);
    let resealed: u64 = a.iter().chain(&b).map(|w| w.resealed).sum();
    let changed: u64 = a.iter().chain(&b).map(|w| w.changed_meanwhile).sum();
    // Every row the first walk left is re-encrypted exactly once: the two
    // walkers meet on some rows, and the compare-and-set lets one of them
    // through.
    assert_eq!(resealed, 270 - 60 - moved, "resealed {resealed}, changed meanwhile {changed}");
    assert!(a.iter().chain(&b).all(|w| w.active_key_id == second));

    // Every row is under the active key now; the old key seals nothing.
    let (clear, keys) = rows(&status(&node).await);
    assert_eq!((clear, keys), (0, vec![(first, false, 0), (second, true, 350)]));
    // A walk over a store already current does nothing.
    let again = walk(&node, 1000).await;
    assert_eq!(again.iter().map(|w| (w.examined, w.resealed)).collect::<Vec<_>>(), [(0, 0)]);

    // Every acked message syncs once, intact, in seq order, for both. (Each
    // kill left a gap in the seqs; sync steps over one once the message
    // after it is SYNC_GAP_GRACE old.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sent.sort_by_key(|(seq, _)| *seq);
    let expected: Vec<String> = sent.iter().map(|(_, body)| body.clone()).collect();
    for (who, token) in [("bob", &bob_token), ("alice", &alice_token)] {
        let mut device = node.connect(token, "tablet").await;
        let synced = device.sync_all(&pair, 0).await;
        let seqs: Vec<u64> = synced.iter().map(|m| m.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{who}: seqs in order");
        assert_eq!(seqs, sent.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), "{who}: every acked seq, once");
        let bodies: Vec<String> = synced.iter().map(|m| String::from_utf8(m.body.to_vec()).unwrap()).collect();
        assert_eq!(bodies, expected, "{who}: bodies intact");
    }
}
