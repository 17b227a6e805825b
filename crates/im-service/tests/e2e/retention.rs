//! Message retention (`MESSAGE_RETENTION_DAYS`) in the real binary, on
//! SQLite: messages are sent through the node, aged in its file while it is
//! down (no test waits for days), and the node started with a retention of
//! one day deletes them at start — except each conversation's newest and the
//! last expired message before an unexpired one — while
//! clients keep syncing, listing, marking read and sending as before.

use std::time::{Duration, Instant};

use crate::support::{Node, ack, conversation_id, http_get};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The value of an unlabelled metric line `name value` on `/metrics`.
async fn metric(node: &Node, name: &str) -> Option<f64> {
    let (_, body) = http_get(node.http_port, "/metrics").await.ok()?;
    body.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn retention_deletes_old_messages_but_each_conversations_newest_and_clients_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = Node::start(&data).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let (carol, carol_token) = node.create_user("carol").await;
    let mut phone = node.connect(&alice_token, "phone").await;
    for i in 1..=5 {
        assert_eq!(ack(phone.send_text(bob, &format!("b{i}"), &format!("to bob {i}")).await).seq, i);
    }
    for i in 1..=2 {
        assert_eq!(ack(phone.send_text(carol, &format!("c{i}"), &format!("to carol {i}")).await).seq, i);
    }
    drop(phone);
    node.kill9();

    // Three days pass for every message but alice:bob's fifth.
    let (ab, ac) = (conversation_id(alice, bob), conversation_id(alice, carol));
    {
        use sqlx::{ConnectOptions, Connection};
        let mut db =
            sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("im.db")).connect().await.expect("open im.db");
        let aged = sqlx::query(
            "UPDATE messages SET server_time_ms = server_time_ms - ? WHERE NOT (conversation = ? AND seq = 5)",
        )
        .bind(3 * DAY_MS)
        .bind(&ab)
        .execute(&mut db)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(aged, 6);
        db.close().await.unwrap();
    }

    let mut node = Node::start_with(&data, &[("MESSAGE_RETENTION_DAYS", "1")]).await;
    // alice:bob 1-3 (4 stays: the last expired one before the young 5) and
    // alice:carol 1 (2 is the newest of its conversation and stays, old as
    // it is).
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&node, "im_messages_expired_total").await != Some(4.0) {
        assert!(Instant::now() < deadline, "expired: {:?}", metric(&node, "im_messages_expired_total").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut bob_phone = node.connect(&bob_token, "phone").await;
    // At once, though 5 is young: the gap (1-3) lies below an old message.
    let synced = bob_phone.sync_all(&ab, 0).await;
    assert_eq!(synced.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(&synced[1].body[..], b"to bob 5");
    let list = bob_phone.conversations().await;
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].max_seq, list[0].read_seq, list[0].unread), (5, 0, 2));
    let mut carol_phone = node.connect(&carol_token, "phone").await;
    assert_eq!(carol_phone.sync_all(&ac, 0).await.iter().map(|m| m.seq).collect::<Vec<_>>(), [2]);
    // The newest seq is still there to mark read, and seqs go on above it.
    assert!(matches!(carol_phone.mark_read(&ac, 2).await, im_proto::client::server_frame::Body::MarkRead(_)));
    assert_eq!((carol_phone.conversations().await[0].read_seq, carol_phone.conversations().await[0].unread), (2, 0));
    // (After the kill -9 the allocator resumed above its stored ceiling: a
    // gap of one SEQUENCE_SNAPSHOT_INTERVAL, never a seq handed out twice.)
    let mut phone = node.connect(&alice_token, "phone").await;
    let sixth = ack(phone.send_text(bob, "b6", "to bob 6").await).seq;
    assert!(sixth > 5, "{sixth}");

    // The job does not hold up a graceful stop.
    let stopping = Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = node.child.try_wait().unwrap() {
            break exit;
        }
        assert!(stopping.elapsed() < Duration::from_secs(10), "no exit within 10 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
}
