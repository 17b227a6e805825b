//! Private messaging guarantees (DESIGN.md G1–G5, G7, G8) over the wire.

use std::time::Duration;

use im_proto::client::{self as pb, ErrorCode, client_frame, server_frame};
use prost::Message as _;

use crate::support::{Node, ack, conversation_id, error, handshake_status, http_get};

const WAIT: Duration = Duration::from_secs(5);

/// A fresh node with users alice and bob: (data dir guard, node, alice, bob).
async fn two_users() -> (tempfile::TempDir, Node, (u64, String), (u64, String)) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let alice = node.create_user("alice").await;
    let bob = node.create_user("bob").await;
    (dir, node, alice, bob)
}

fn push(body: Option<server_frame::Body>) -> pb::Message {
    match body {
        Some(server_frame::Body::Push(m)) => m,
        other => panic!("expected a push, got {other:?}"),
    }
}

#[tokio::test]
async fn online_delivery_reaches_every_device_of_both_sides() {
    let (_dir, node, (alice, alice_token), (bob, bob_token)) = two_users().await;

    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let mut alice_laptop = node.connect(&alice_token, "laptop").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let mut bob_laptop = node.connect(&bob_token, "laptop").await;

    let acked = ack(alice_phone.send_text(bob, "m1", "hello bob").await);
    assert_eq!(acked.seq, 1);
    assert_eq!(acked.conversation_id, conversation_id(alice, bob));

    for device in [&mut bob_phone, &mut bob_laptop, &mut alice_laptop] {
        let m = push(device.next_event(WAIT).await);
        assert_eq!((m.msg_id, m.seq, m.from_user, m.to_user), (acked.msg_id, 1, alice, bob));
        assert_eq!(&m.body[..], b"hello bob");
    }
    // The sending device gets the ack, not a copy of its own message.
    assert!(alice_phone.next_event(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn offline_device_gets_everything_on_sync_in_order_and_paginated() {
    let (_dir, node, (alice, alice_token), (bob, bob_token)) = two_users().await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;

    let mut acks = Vec::new();
    for i in 0..250 {
        acks.push(ack(alice_phone.send_text(bob, &format!("m{i}"), &format!("text {i}")).await));
    }
    let conv = conversation_id(alice, bob);

    let mut bob_phone = node.connect(&bob_token, "phone").await;
    // The first page is the server default size, and says more follow.
    match bob_phone.sync(&conv, 0).await {
        server_frame::Body::Sync(page) => {
            assert_eq!(page.messages.len(), 100);
            assert!(page.has_more);
        }
        other => panic!("{other:?}"),
    }
    let all = bob_phone.sync_all(&conv, 0).await;
    let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
    let acked: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, acked, "sync returns exactly the acked messages, in seq order");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(&all[249].body[..], b"text 249");

    // The conversation list shows the unread count.
    let list = bob_phone.conversations().await;
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!((c.peer, c.max_seq, c.read_seq, c.unread), (alice, 250, 0, 250));
}

#[tokio::test]
async fn resend_with_the_same_client_msg_id_returns_the_first_ack() {
    let (_dir, node, (alice, alice_token), (bob, bob_token)) = two_users().await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;

    let first = ack(alice_phone.send_text(bob, "same-id", "once").await);
    let again = ack(alice_phone.send_text(bob, "same-id", "once").await);
    assert_eq!(first, again);
    let next = ack(alice_phone.send_text(bob, "other-id", "twice").await);
    assert_eq!(next.seq, first.seq + 1, "a duplicate does not consume a seq");

    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let all = bob_phone.sync_all(&conversation_id(alice, bob), 0).await;
    assert_eq!(all.len(), 2, "the duplicate stored nothing");
}

/// A key is an idempotency key, not a name: the same client_msg_id with
/// another recipient or body is refused (nothing stored, nothing acked),
/// through the dedup cache and, after a restart emptied it, through the
/// store.
#[tokio::test]
async fn a_client_msg_id_reused_for_another_message_is_refused_and_the_resend_still_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path()).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let (carol, carol_token) = node.create_user("carol").await;

    for round in ["cache", "store"] {
        let mut phone = node.connect(&alice_token, "phone").await;
        let key = format!("reused-{round}");
        let first = ack(phone.send_text(bob, &key, "for bob").await);
        if round == "store" {
            // The in-process dedup cache goes with the process.
            node.kill9();
            node.restart().await;
            phone = node.connect(&alice_token, "phone").await;
        }
        for (to, text) in [(carol, "for carol"), (bob, "for bob, edited")] {
            let refused = error(phone.send_text(to, &key, text).await);
            assert_eq!(refused.code, ErrorCode::FailedPrecondition as i32, "{round}: {refused:?}");
            assert_eq!(refused.reason, "client_msg_id_reused", "{round}");
        }
        assert_eq!(ack(phone.send_text(bob, &key, "for bob").await), first, "{round}: the real resend");
    }

    let mut carol_phone = node.connect(&carol_token, "phone").await;
    assert!(carol_phone.sync_all(&conversation_id(alice, carol), 0).await.is_empty(), "a refused message was stored");
    let mut bob_side = node.connect(&alice_token, "laptop").await;
    let texts: Vec<_> = bob_side.sync_all(&conversation_id(alice, bob), 0).await.into_iter().map(|m| m.body).collect();
    assert_eq!(texts, [b"for bob".to_vec(), b"for bob".to_vec()], "one message per key, as first sent");
}

#[tokio::test]
async fn read_receipt_reaches_the_sender_and_only_moves_forward() {
    let (_dir, node, (alice, alice_token), (bob, bob_token)) = two_users().await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let conv = conversation_id(alice, bob);

    for i in 0..3 {
        ack(alice_phone.send_text(bob, &format!("r{i}"), "hi").await);
    }
    for _ in 0..3 {
        push(bob_phone.next_event(WAIT).await);
    }
    let mark = |seq| client_frame::Body::MarkRead(pb::MarkReadRequest { conversation_id: conv.clone(), seq });
    match bob_phone.request(mark(2)).await {
        server_frame::Body::MarkRead(r) => assert_eq!(r.read_seq, 2),
        other => panic!("{other:?}"),
    }
    match alice_phone.next_event(WAIT).await {
        Some(server_frame::Body::Receipt(r)) => {
            assert_eq!((r.conversation_id.as_str(), r.reader, r.read_seq), (conv.as_str(), bob, 2));
        }
        other => panic!("expected a receipt, got {other:?}"),
    }
    // Backwards is a no-op that reports the stored position, and tells no one.
    match bob_phone.request(mark(1)).await {
        server_frame::Body::MarkRead(r) => assert_eq!(r.read_seq, 2),
        other => panic!("{other:?}"),
    }
    assert!(alice_phone.next_event(Duration::from_millis(300)).await.is_none());
    // Beyond the last message is refused.
    assert_eq!(error(bob_phone.request(mark(99)).await).code, ErrorCode::InvalidArgument as i32);

    assert_eq!(bob_phone.conversations().await[0].unread, 1);
}

#[tokio::test]
async fn oversize_unknown_recipient_and_malformed_frames_are_rejected_and_store_nothing() {
    let (_dir, node, (alice, alice_token), (bob, bob_token)) = two_users().await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;

    let oversize = client_frame::Body::Send(pb::SendRequest {
        to_user: bob,
        client_msg_id: "big".into(),
        body: vec![b'x'; 10 * 1024 + 1].into(),
        content_type: String::new(),
        ..Default::default()
    });
    let e = error(alice_phone.request(oversize).await);
    assert_eq!(e.code, ErrorCode::ResourceExhausted as i32, "{e:?}");

    let e = error(alice_phone.send_text(999_999, "nobody", "hi").await);
    assert_eq!(e.code, ErrorCode::NotFound as i32);
    let e = error(alice_phone.send_text(alice, "self", "hi").await);
    assert_eq!(e.code, ErrorCode::InvalidArgument as i32);
    let e = error(alice_phone.send_text(bob, &"k".repeat(65), "hi").await);
    assert_eq!(e.code, ErrorCode::InvalidArgument as i32);

    // Garbage bytes: a typed error, and the connection stays usable.
    alice_phone.send_raw(vec![0xff, 0xff, 0xff, 0x01]);
    match alice_phone.next_event(WAIT).await {
        Some(server_frame::Body::Error(e)) => assert_eq!(e.code, ErrorCode::InvalidArgument as i32),
        other => panic!("expected an error frame, got {other:?}"),
    }
    let ok = ack(alice_phone.send_text(bob, "fine", "small").await);
    assert_eq!(ok.seq, 1, "nothing rejected consumed a seq or was stored");

    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let all = bob_phone.sync_all(&conversation_id(alice, bob), 0).await;
    assert_eq!(all.len(), 1);
    assert_eq!(&all[0].body[..], b"small");

    let (_, metrics) = http_get(node.http_port, "/metrics").await.unwrap();
    assert!(metrics.contains("im_messages_failed_total{code=\"RESOURCE_EXHAUSTED\"} 1"), "{metrics}");
}

#[tokio::test]
async fn identity_comes_from_the_token_and_others_conversations_are_closed() {
    let (_dir, node, (alice, alice_token), (bob, bob_token)) = two_users().await;
    let (carol, carol_token) = node.create_user("carol").await;
    let alice_phone = node.connect(&alice_token, "phone").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;

    // The client protocol has no sender field; unknown fields a client adds
    // (here a made-up field 15 carrying carol's id) change nothing.
    let mut frame = pb::ClientFrame {
        req_id: 7,
        body: Some(client_frame::Body::Send(pb::SendRequest {
            to_user: bob,
            client_msg_id: "spoof".into(),
            body: b"who am i".to_vec().into(),
            content_type: String::new(),
            ..Default::default()
        })),
    }
    .encode_to_vec();
    prost::encoding::uint64::encode(15, &carol, &mut frame);
    alice_phone.send_raw(frame);
    let m = push(bob_phone.next_event(WAIT).await);
    assert_eq!(m.from_user, alice, "the sender is the token's user");

    // Carol cannot read alice and bob's conversation, nor mark it read.
    let mut carol_phone = node.connect(&carol_token, "phone").await;
    let conv = conversation_id(alice, bob);
    assert_eq!(error(carol_phone.sync(&conv, 0).await).code, ErrorCode::PermissionDenied as i32);
    let mark = client_frame::Body::MarkRead(pb::MarkReadRequest { conversation_id: conv, seq: 1 });
    assert_eq!(error(carol_phone.request(mark).await).code, ErrorCode::PermissionDenied as i32);
    let _ = carol;

    // No token, a forged token, or the admin token as a user: refused.
    assert_eq!(handshake_status(&node.ws_url(), None).await, 401);
    assert_eq!(handshake_status(&node.ws_url(), Some("not-a-token")).await, 401);
    let forged = {
        let other = im_auth::Tokens::new(&[7u8; 32]).unwrap();
        other.issue_user(im_core::UserId(alice), "alice", Duration::from_secs(60))
    };
    assert_eq!(handshake_status(&node.ws_url(), Some(&forged)).await, 401);
}

/// Sync pages are bounded in bytes as well as in count (issue 15): with
/// `SYNC_PAGE_MAX_BYTES` at 20,000, 9 KB bodies come two to a page, and a
/// body over the limit still comes alone.
#[tokio::test]
async fn sync_pages_stop_at_the_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("SYNC_PAGE_MAX_BYTES", "20000")]).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut phone = node.connect(&alice_token, "phone").await;
    for i in 0..5 {
        ack(phone.send_text(bob, &format!("big-{i}"), &"x".repeat(9_000)).await);
    }
    let conversation = conversation_id(alice, bob);
    let mut reader = node.connect(&bob_token, "laptop").await;
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let server_frame::Body::Sync(page) = reader.sync(&conversation, after).await else { panic!("a sync page") };
        pages.push(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>());
        after = page.messages.last().map_or(after, |m| m.seq);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, [vec![1, 2], vec![3, 4], vec![5]], "two 9 KB bodies per 20,000-byte page");
}
