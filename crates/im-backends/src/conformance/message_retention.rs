//! The retention cases of the `MessageStore` suite
//! (`MessageStore::expire_messages`). Expiry is store-wide, so these cases
//! need a store of their own: on a store shared with other cases (whose
//! fixtures carry server times of 1970) a walk would delete their messages.

use std::sync::Arc;

use im_core::message::ExpiryStep;
use im_core::ports::{MessageStore, ReceiptStore};
use im_core::{ClientMsgId, ConversationId, Seq};

use super::fixtures::{group_conversation, message, private, unique_name, users};

/// Stamps out the retention suite; `$make` must give a store no other case
/// writes to (a fresh file, a fresh database).
#[macro_export]
macro_rules! message_retention_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            message_retention,
            $make,
            [
                retention_deletes_expired_messages_but_keeps_each_conversations_newest,
                retention_walk_ends_at_the_first_unexpired_message,
                retention_walks_on_two_nodes_delete_each_message_once,
                retention_deletes_skipped_seq_records_older_than_the_cutoff,
            ]
        );
    };
}

/// A whole walk, as the retention job runs it: steps until one is done.
/// Returns the messages deleted and the steps taken.
async fn walk<S: MessageStore + ?Sized>(store: &S, before_ms: i64, limit: u32) -> (u64, u32) {
    let (mut deleted, mut steps, mut after) = (0, 0, 0);
    loop {
        let step: ExpiryStep = store.expire_messages(before_ms, after, limit).await.unwrap();
        steps += 1;
        deleted += step.deleted;
        assert!(step.next >= after, "the walk went backwards: {after} -> {}", step.next);
        if step.done {
            return (deleted, steps);
        }
        after = step.next;
        assert!(steps < 10_000, "the walk does not end");
    }
}

async fn seqs_of<S: MessageStore + ?Sized>(store: &S, conversation: ConversationId) -> Vec<u64> {
    store.fetch(conversation, Seq::ZERO, 100).await.unwrap().messages.iter().map(|m| m.seq.0).collect()
}

pub async fn retention_deletes_expired_messages_but_keeps_each_conversations_newest<S>(store: Arc<S>)
where
    S: MessageStore + ReceiptStore + ?Sized,
{
    let [a, b, c, d] = users();
    let (ab, ac, ad, group) = (private(a, b), private(a, c), private(a, d), group_conversation());
    let prefix = unique_name("r");
    let key = |n: u64| format!("{prefix}-{n}");
    let cutoff = 10_000;
    // ab: five old messages, then two young ones; ac: two old; ad: one old
    // (its newest); the group: old messages interleaved with the others.
    let mut batch = Vec::new();
    for seq in 1..=5 {
        batch.push(message(ab, if seq % 2 == 0 { a } else { b }, seq, &key(seq), 1_000 + seq as i64));
        batch.push(message(group, c, seq, &key(100 + seq), 1_000 + seq as i64));
    }
    batch.push(message(ac, c, 1, &key(200), 2_000));
    batch.push(message(ac, a, 2, &key(201), 2_001));
    batch.push(message(ad, d, 1, &key(300), 3_000));
    store.append(&batch).await.unwrap();
    let young = [message(ab, b, 6, &key(6), cutoff), message(ab, b, 7, &key(7), cutoff + 1)];
    store.append(&young).await.unwrap();
    store.mark_read(a, ab, Seq(3)).await.unwrap();
    let listed_before = store.conversations_of(a).await.unwrap();

    // Small steps, so the walk crosses several windows.
    let (deleted, steps) = walk(&*store, cutoff, 3).await;
    // ab 1-4 (5 stays: the last expired one before the young 6), the
    // group's 1-4 (5 is its newest), ac's 1.
    assert_eq!(deleted, 9);
    // 13 old messages, then the young ones: the fifth window meets seq 6.
    assert_eq!(steps, 5);
    assert_eq!(seqs_of(&*store, ab).await, [5, 6, 7]);
    assert_eq!(seqs_of(&*store, group).await, [5], "the group's newest stays");
    assert_eq!(seqs_of(&*store, ac).await, [2]);
    assert_eq!(seqs_of(&*store, ad).await, [1], "a conversation's only message stays");
    // Sync of a range whose messages are gone returns what remains.
    let page = store.fetch(ab, Seq(2), 1).await.unwrap();
    assert_eq!((page.messages[0].seq, page.has_more), (Seq(5), true));
    // The gap lies below an expired message (5, older than the grace at the
    // cutoff): sync shows it and what follows at once, however young.
    let page = store.fetch(ab, Seq::ZERO, 10).await.unwrap();
    assert_eq!(im_core::message::visible_prefix(&page.messages, &page.skipped, Seq::ZERO, cutoff, 5_000), 3);

    // Nothing derived from the newest seq moves: max seqs, the read
    // position, the list and its order; unread counts count what is left.
    assert_eq!(store.max_seq(ab).await.unwrap(), Seq(7));
    assert_eq!(store.max_seq(group).await.unwrap(), Seq(5));
    assert_eq!(store.max_seq(ad).await.unwrap(), Seq(1));
    assert_eq!(store.read_position(a, ab).await.unwrap(), Seq(3));
    let listed_after = store.conversations_of(a).await.unwrap();
    let order =
        |list: &[im_core::message::ConversationSummary]| list.iter().map(|s| s.conversation).collect::<Vec<_>>();
    assert_eq!(order(&listed_after), order(&listed_before));
    let entry = |conversation| *listed_after.iter().find(|s| s.conversation == conversation).unwrap();
    assert_eq!((entry(ab).max_seq, entry(ab).read_seq, entry(ab).unread), (Seq(7), Seq(3), 3));
    assert_eq!((entry(ac).max_seq, entry(ac).unread), (Seq(2), 0));
    assert_eq!(store.count_unread(group, a, Seq::ZERO).await.unwrap(), 1);
    // A deleted message's idempotency key is forgotten with it.
    assert_eq!(store.find_by_client_msg_id(b, &ClientMsgId::parse(&key(1)).unwrap()).await.unwrap(), None);
    assert!(store.find_by_client_msg_id(b, &ClientMsgId::parse(&key(5)).unwrap()).await.unwrap().is_some());

    // Done: a second walk finds nothing more; the timeline goes on.
    assert_eq!(walk(&*store, cutoff, 3).await.0, 0);
    store.append(&[message(ab, a, 8, &key(8), cutoff + 2)]).await.unwrap();
    assert_eq!(seqs_of(&*store, ab).await, [5, 6, 7, 8]);
    // A later cutoff takes what became old (ab's 5, 6 and 7), still
    // keeping every conversation's newest.
    assert_eq!(walk(&*store, cutoff + 100, 3).await.0, 3);
    assert_eq!(seqs_of(&*store, ab).await, [8]);
    assert_eq!(seqs_of(&*store, group).await, [5]);
}

pub async fn retention_walk_ends_at_the_first_unexpired_message<S>(store: Arc<S>)
where
    S: MessageStore + ReceiptStore + ?Sized,
{
    let [a, b] = users();
    let ab = private(a, b);
    let prefix = unique_name("w");
    let key = |n: u64| format!("{prefix}-{n}");
    // Commit order: 1-3 old, 4 young, 5-6 old again (a clock behind on
    // another node), 7 young.
    let times = [1_000, 1_001, 1_002, 50_000, 1_003, 1_004, 50_001];
    for (i, &time) in times.iter().enumerate() {
        let seq = i as u64 + 1;
        store.append(&[message(ab, a, seq, &key(seq), time)]).await.unwrap();
    }
    // Nothing is older than the cutoff: one step, nothing deleted.
    let step = store.expire_messages(500, 0, 100).await.unwrap();
    assert_eq!((step.deleted, step.done), (0, true));

    // A window of two old messages goes on...
    let first = store.expire_messages(10_000, 0, 2).await.unwrap();
    assert_eq!((first.deleted, first.done), (2, false));
    // ...one that meets the young message ends the walk; the old message
    // right before the young one stays.
    let second = store.expire_messages(10_000, first.next, 2).await.unwrap();
    assert_eq!((second.deleted, second.done), (0, true));
    assert!(second.next > first.next);
    assert_eq!(seqs_of(&*store, ab).await, [3, 4, 5, 6, 7]);
    // The next walk ends there again; the old ones past it (5, 6) wait...
    assert_eq!(walk(&*store, 10_000, 2).await, (0, 1));
    // ...unless they are in the same window: 5 goes (its successor 6 is
    // expired), 6 stays (its successor 7 is not).
    assert_eq!(walk(&*store, 10_000, 100).await, (1, 1));
    assert_eq!(seqs_of(&*store, ab).await, [3, 4, 6, 7]);
    // Past the end of the store: nothing examined, done, position kept.
    let end = store.expire_messages(10_000, u64::MAX >> 12, 2).await.unwrap();
    assert_eq!(end, ExpiryStep { deleted: 0, next: u64::MAX >> 12, done: true });
}

pub async fn retention_walks_on_two_nodes_delete_each_message_once<S>(store: Arc<S>)
where
    S: MessageStore + ReceiptStore + ?Sized,
{
    let [a, b, c, d] = users();
    let conversations = [private(a, b), private(a, c), private(b, c)];
    let prefix = unique_name("n");
    let key = |n: u64| format!("{prefix}-{n}");
    let mut batch = Vec::new();
    for seq in 1..=40u64 {
        for (i, &conversation) in conversations.iter().enumerate() {
            let sender = if conversation == conversations[2] { b } else { a };
            batch.push(message(conversation, sender, seq, &key(i as u64 * 100 + seq), 1_000 + seq as i64));
        }
    }
    // a:b goes on after the cutoff.
    batch.push(message(conversations[0], b, 41, &key(41), 200_000));
    store.append(&batch).await.unwrap();
    // Two walks at once, as two nodes run them, with appends beside them.
    let walks =
        [store.clone(), store.clone()].map(|store| tokio::spawn(async move { walk(&*store, 100_000, 7).await.0 }));
    let ad = private(a, d);
    for seq in 1..=10u64 {
        store.append(&[message(ad, d, seq, &key(1_000 + seq), 200_000 + seq as i64)]).await.unwrap();
    }
    let mut deleted = 0;
    for handle in walks {
        deleted += handle.await.unwrap();
    }
    // Each old message but the last, once, whoever deleted it: a:b keeps
    // the last before its young 41, a:c and b:c their newest.
    assert_eq!(deleted, 3 * 39);
    assert_eq!(seqs_of(&*store, conversations[0]).await, [40, 41]);
    assert_eq!(seqs_of(&*store, conversations[1]).await, [40]);
    assert_eq!(seqs_of(&*store, conversations[2]).await, [40]);
    assert_eq!(seqs_of(&*store, ad).await, (1..=10).collect::<Vec<_>>());
}

pub async fn retention_deletes_skipped_seq_records_older_than_the_cutoff<S>(store: Arc<S>)
where
    S: MessageStore + ReceiptStore + ?Sized,
{
    let [a, b] = users();
    let ab = private(a, b);
    let prefix = unique_name("g");
    let key = |n: u64| format!("{prefix}-{n}");
    let cutoff = 10_000;
    // 1 is old but stays (its successor is young); the holes at 2 and 4
    // were recorded, 2 before the cutoff and 4 after it.
    let batch =
        [message(ab, a, 1, &key(1), 1_000), message(ab, a, 3, &key(3), cutoff), message(ab, a, 5, &key(5), cutoff)];
    store.append(&batch).await.unwrap();
    store.record_skipped(&[(ab, Seq(2))], 1_000).await.unwrap();
    store.record_skipped(&[(ab, Seq(4))], cutoff + 5).await.unwrap();
    let skipped = |page: im_core::message::Page| page.skipped.iter().map(|s| s.0).collect::<Vec<_>>();
    assert_eq!(skipped(store.fetch(ab, Seq::ZERO, 10).await.unwrap()), [2, 4]);

    assert_eq!(walk(&*store, cutoff, 3).await.0, 0);
    assert_eq!(seqs_of(&*store, ab).await, [1, 3, 5]);
    assert_eq!(skipped(store.fetch(ab, Seq::ZERO, 10).await.unwrap()), [4], "the old record went");
}
