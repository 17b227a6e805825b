//! The `ReceiptStore` suite. Read positions show in `conversations_of`, so
//! the suite runs against a store that is a `MessageStore` too.

use std::sync::Arc;

use im_core::Seq;
use im_core::message::ConversationSummary;
use im_core::ports::{MessageStore, ReceiptStore};

use super::fixtures::{message, private, unique_name, users};

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
    let summary =
        |read_seq, unread| ConversationSummary { conversation: ab, max_seq: Seq(6), read_seq: Seq(read_seq), unread };

    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(0, 5)]);
    store.mark_read(a, ab, Seq(3)).await.unwrap();
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(3, 2)]);
    store.mark_read(a, ab, Seq(6)).await.unwrap();
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(6, 0)]);
    // Marking an older seq changes nothing.
    store.mark_read(a, ab, Seq(2)).await.unwrap();
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(6, 0)]);
    // The other side's count is its own.
    assert_eq!(store.conversations_of(b).await.unwrap(), vec![summary(0, 1)]);
}
