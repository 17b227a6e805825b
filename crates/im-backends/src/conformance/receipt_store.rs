//! The `ReceiptStore` suite. Read positions show in `conversations_of`, so
//! the suite runs against a store that is a `MessageStore` too.

use std::sync::Arc;

use im_core::Seq;
use im_core::message::ConversationSummary;
use im_core::ports::{MessageStore, ReceiptStore};

use super::fixtures::{group_conversation, message, private, unique_name, users};

/// Stamps out the `ReceiptStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! receipt_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            receipt_store,
            $make,
            [
                read_position_starts_at_zero,
                read_position_only_moves_forward,
                concurrent_marks_keep_the_highest,
                unread_counts_follow_the_read_position,
                readers_are_those_at_or_past_a_seq_by_id,
            ]
        );
    };
}

pub async fn read_position_starts_at_zero<S: ReceiptStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    assert_eq!(store.read_position(a, private(a, b)).await.unwrap(), Seq::ZERO);
}

pub async fn read_position_only_moves_forward<S: ReceiptStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let ab = private(a, b);
    assert_eq!(store.mark_read(a, ab, Seq(5)).await.unwrap(), Seq(5));
    assert_eq!(store.mark_read(a, ab, Seq(3)).await.unwrap(), Seq(5));
    assert_eq!(store.read_position(a, ab).await.unwrap(), Seq(5));
    assert_eq!(store.mark_read(a, ab, Seq(9)).await.unwrap(), Seq(9));
    assert_eq!(store.read_position(a, ab).await.unwrap(), Seq(9));
    // Positions are per user and per conversation.
    assert_eq!(store.read_position(b, ab).await.unwrap(), Seq::ZERO);
    assert_eq!(store.read_position(a, private(a, c)).await.unwrap(), Seq::ZERO);
}

pub async fn concurrent_marks_keep_the_highest<S: ReceiptStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let marks: Vec<_> = (1..=32u64)
        .rev()
        .map(|seq| {
            let store = store.clone();
            tokio::spawn(async move { store.mark_read(a, ab, Seq(seq)).await.unwrap() })
        })
        .collect();
    for mark in marks {
        let after = mark.await.unwrap();
        assert!(after >= Seq(1), "a mark returned {after}");
    }
    assert_eq!(store.read_position(a, ab).await.unwrap(), Seq(32));
}

pub async fn unread_counts_follow_the_read_position<S: MessageStore + ReceiptStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let mut batch: Vec<_> = (1..=5).map(|seq| message(ab, b, seq, &unique_name("k"), 1000 + seq as i64)).collect();
    batch.push(message(ab, a, 6, &unique_name("k"), 1006));
    store.append(&batch).await.unwrap();
    let summary = |read_seq, unread, peer_read_seq| ConversationSummary {
        conversation: ab,
        max_seq: Seq(6),
        read_seq: Seq(read_seq),
        unread,
        peer_read_seq: Seq(peer_read_seq),
    };

    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(0, 5, 0)]);
    store.mark_read(a, ab, Seq(3)).await.unwrap();
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(3, 2, 0)]);
    store.mark_read(a, ab, Seq(6)).await.unwrap();
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(6, 0, 0)]);
    // Marking an older seq changes nothing.
    store.mark_read(a, ab, Seq(2)).await.unwrap();
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(6, 0, 0)]);
    // The other side's count is its own; each sees how far the other read.
    assert_eq!(store.conversations_of(b).await.unwrap(), vec![summary(0, 1, 6)]);
    store.mark_read(b, ab, Seq(4)).await.unwrap();
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(6, 0, 4)]);
    assert_eq!(store.conversations_of(b).await.unwrap(), vec![summary(4, 1, 6)]);
}

pub async fn readers_are_those_at_or_past_a_seq_by_id<S: ReceiptStore + ?Sized>(store: Arc<S>) {
    let [a, b, c, d, e] = users();
    let group = group_conversation();
    // Marked out of id order; `e` read another conversation only.
    for (user, seq) in [(c, 10), (a, 5), (d, 4), (b, 3)] {
        store.mark_read(user, group, Seq(seq)).await.unwrap();
    }
    store.mark_read(e, group_conversation(), Seq(50)).await.unwrap();
    store.mark_read(e, private(a, e), Seq(50)).await.unwrap();

    assert_eq!(store.readers(group, Seq(5), 10).await.unwrap(), vec![a, c]);
    assert_eq!(store.readers(group, Seq(4), 10).await.unwrap(), vec![a, c, d]);
    assert_eq!(store.readers(group, Seq(1), 10).await.unwrap(), vec![a, b, c, d]);
    assert_eq!(store.readers(group, Seq(1), 2).await.unwrap(), vec![a, b], "the lowest ids within the limit");
    assert_eq!(store.readers(group, Seq(11), 10).await.unwrap(), vec![]);
    assert_eq!(store.readers(group, Seq(1), 0).await.unwrap(), vec![]);
    // A position only moves forward, and the readers with it.
    store.mark_read(b, group, Seq(12)).await.unwrap();
    store.mark_read(c, group, Seq(2)).await.unwrap();
    assert_eq!(store.readers(group, Seq(10), 10).await.unwrap(), vec![b, c]);
    assert_eq!(store.readers(group_conversation(), Seq(1), 10).await.unwrap(), vec![]);
}
