//! The `OfflineStore` suite. What is pending depends on read positions, so
//! the suite runs against a store that is a `ReceiptStore` too.

use std::sync::Arc;

use im_core::ports::{CommitExtras, MessageStore, OfflineEntry, OfflineStore, OutboxRow, PendingOffline, ReceiptStore};
use im_core::{ConversationId, MessageId, NewMessage, Seq, UserId};

use super::fixtures::{message, private, unique, users};

/// Stamps out the `OfflineStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! offline_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            offline_store,
            $make,
            [
                nothing_is_pending_at_first,
                entries_are_pending_per_user_and_conversation,
                recording_again_stores_once,
                only_entries_above_the_read_position_are_pending,
                clear_forgets_entries_up_to_a_seq,
                limit_keeps_the_latest_conversations,
                a_large_batch_is_recorded_whole,
                concurrent_redeliveries_store_once,
                a_commit_keeps_the_outbox_entries_of_the_messages_it_stores,
                settling_records_the_entries_and_deletes_the_rows,
                abandoned_rows_are_those_older_than_the_cutoff,
            ]
        );
    };
}

/// The entry for `user` of the message at `seq`, sent at `time_ms`.
fn entry(user: UserId, conversation: ConversationId, seq: u64, time_ms: i64) -> OfflineEntry {
    OfflineEntry { user, conversation, seq: Seq(seq), msg_id: MessageId(unique()), server_time_ms: time_ms }
}

fn pending(conversation: ConversationId, count: u64, first: u64, last: u64, last_time_ms: i64) -> PendingOffline {
    PendingOffline { conversation, count, first_seq: Seq(first), last_seq: Seq(last), last_time_ms }
}

pub async fn nothing_is_pending_at_first<S: OfflineStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![]);
    // An empty batch is a no-op, and clearing nothing removes nothing.
    store.record_offline(&[]).await.unwrap();
    assert_eq!(store.clear_offline(a, private(a, b), Seq(100)).await.unwrap(), 0);
}

pub async fn entries_are_pending_per_user_and_conversation<S: OfflineStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    store
        .record_offline(&[
            entry(a, ab, 1, 1001),
            entry(a, ab, 2, 1002),
            entry(a, ab, 5, 1005),
            entry(a, ac, 7, 2007),
            entry(b, ab, 3, 1003),
        ])
        .await
        .unwrap();
    // Latest entry first; seqs need not be contiguous (delivered ones are
    // not recorded).
    assert_eq!(
        store.pending_offline(a, 10).await.unwrap(),
        vec![pending(ac, 1, 7, 7, 2007), pending(ab, 3, 1, 5, 1005)]
    );
    assert_eq!(store.pending_offline(b, 10).await.unwrap(), vec![pending(ab, 1, 3, 3, 1003)]);
    assert_eq!(store.pending_offline(c, 10).await.unwrap(), vec![]);
}

pub async fn recording_again_stores_once<S: OfflineStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let batch: Vec<_> = (1..=4).map(|seq| entry(a, ab, seq, 1000 + seq as i64)).collect();
    store.record_offline(&batch).await.unwrap();
    // A redelivery of the batch, and a batch repeating an entry within
    // itself beside new ones.
    store.record_offline(&batch).await.unwrap();
    let mut again = vec![batch[1].clone(), entry(a, ab, 5, 1005), entry(a, ab, 5, 1005), batch[3].clone()];
    again.push(entry(a, ab, 6, 1006));
    store.record_offline(&again).await.unwrap();
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![pending(ab, 6, 1, 6, 1006)]);
}

pub async fn only_entries_above_the_read_position_are_pending<S: OfflineStore + ReceiptStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    store.record_offline(&[entry(a, ab, 1, 1001), entry(a, ab, 2, 1002), entry(a, ab, 3, 1003)]).await.unwrap();
    store.mark_read(a, ab, Seq(2)).await.unwrap();
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![pending(ab, 1, 3, 3, 1003)]);
    // The other side's read position is not `a`'s.
    store.mark_read(b, ab, Seq(3)).await.unwrap();
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![pending(ab, 1, 3, 3, 1003)]);
    store.mark_read(a, ab, Seq(3)).await.unwrap();
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![]);
    // An entry recorded after it was read (the worker lagging behind the
    // reader) is not pending either.
    store.record_offline(&[entry(a, ab, 2, 1002), entry(a, ab, 4, 1004)]).await.unwrap();
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![pending(ab, 1, 4, 4, 1004)]);
}

pub async fn clear_forgets_entries_up_to_a_seq<S: OfflineStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    let batch: Vec<_> = (1..=4).map(|seq| entry(a, ab, seq, 1000 + seq as i64)).collect();
    store.record_offline(&batch).await.unwrap();
    store.record_offline(&[entry(a, ac, 1, 500), entry(b, ab, 1, 1001)]).await.unwrap();

    assert_eq!(store.clear_offline(a, ab, Seq(2)).await.unwrap(), 2);
    assert_eq!(store.clear_offline(a, ab, Seq(2)).await.unwrap(), 0, "cleared already");
    assert_eq!(
        store.pending_offline(a, 10).await.unwrap(),
        vec![pending(ab, 2, 3, 4, 1004), pending(ac, 1, 1, 1, 500)],
        "only that conversation's entries up to the seq"
    );
    assert_eq!(store.pending_offline(b, 10).await.unwrap(), vec![pending(ab, 1, 1, 1, 1001)], "only that user's");
    assert_eq!(store.clear_offline(a, ab, Seq(u64::MAX)).await.unwrap(), 2);
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![pending(ac, 1, 1, 1, 500)]);
}

pub async fn limit_keeps_the_latest_conversations<S: OfflineStore + ?Sized>(store: Arc<S>) {
    let [a] = users();
    let peers: [UserId; 5] = users();
    let batch: Vec<_> = peers.iter().enumerate().map(|(i, &peer)| entry(a, private(a, peer), 1, i as i64)).collect();
    store.record_offline(&batch).await.unwrap();
    let latest: Vec<_> = store.pending_offline(a, 2).await.unwrap().into_iter().map(|p| p.conversation).collect();
    assert_eq!(latest, vec![private(a, peers[4]), private(a, peers[3])]);
    assert_eq!(store.pending_offline(a, 10).await.unwrap().len(), 5);
}

pub async fn a_large_batch_is_recorded_whole<S: OfflineStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    // More rows than one statement holds.
    let batch: Vec<_> =
        (1..=1100).flat_map(|seq| [entry(a, ab, seq, seq as i64), entry(a, ac, seq, 10_000 + seq as i64)]).collect();
    store.record_offline(&batch).await.unwrap();
    assert_eq!(
        store.pending_offline(a, 10).await.unwrap(),
        vec![pending(ac, 1100, 1, 1100, 11_100), pending(ab, 1100, 1, 1100, 1100)]
    );
}

pub async fn concurrent_redeliveries_store_once<S: OfflineStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let batch: Arc<Vec<_>> = Arc::new((1..=200).map(|seq| entry(a, ab, seq, seq as i64)).collect());
    // The same records handled by two workers at once (a rebalance hands a
    // partition over while its old owner still writes).
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (store, batch) = (store.clone(), batch.clone());
            tokio::spawn(async move {
                let mut mine = batch.to_vec();
                if i % 2 == 1 {
                    mine.reverse();
                }
                store.record_offline(&mine).await.unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![pending(ab, 200, 1, 200, 200)]);
}

// ---------------------------------------------------------------------------
// The route outbox. Rows of every case share one table: each case finds its
// own by id, among rows of a creation time far in the past no live row has.

/// The outbox entry of a private message: for its addressee.
fn outbox_entry(message: &NewMessage) -> OfflineEntry {
    OfflineEntry::of(message).expect("a private message")
}

/// The outbox row of `batch`, created at `created_ms`.
fn outbox_row(batch: &[NewMessage], created_ms: i64) -> OutboxRow {
    OutboxRow { id: unique(), created_ms, entries: batch.iter().map(outbox_entry).collect() }
}

/// The abandoned row `id`, if it is there (created before `before_ms`).
async fn abandoned<S: OfflineStore + ?Sized>(store: &S, before_ms: i64, id: u64) -> Option<OutboxRow> {
    store.abandoned_outbox(before_ms, 10_000).await.unwrap().into_iter().find(|row| row.id == id)
}

pub async fn a_commit_keeps_the_outbox_entries_of_the_messages_it_stores<S>(store: Arc<S>)
where
    S: OfflineStore + MessageStore + ?Sized,
{
    let [a, b] = users();
    let ab = private(a, b);
    let created_ms = 1_000 + (unique() % 1_000) as i64;
    let first = [message(ab, a, 1, "c1", 5), message(ab, b, 2, "c2", 6)];
    let row = outbox_row(&first, created_ms);
    store
        .append_with(&first, &CommitExtras { audits: &[], outbox: Some(&row), ..CommitExtras::default() })
        .await
        .unwrap();
    assert_eq!(abandoned(&*store, created_ms + 1, row.id).await, Some(row.clone()), "both entries, as given");
    assert_eq!(abandoned(&*store, created_ms, row.id).await, None, "not created before its own time");

    // A resend of c1 (a new msg_id, as a node gives it) beside a new
    // message: the duplicate's entry went with its first send.
    let mut resend = message(ab, a, 3, "c1", 7);
    resend.msg_id = MessageId(unique());
    let second = [resend, message(ab, a, 4, "c3", 8)];
    let row2 = outbox_row(&second, created_ms);
    store
        .append_with(&second, &CommitExtras { audits: &[], outbox: Some(&row2), ..CommitExtras::default() })
        .await
        .unwrap();
    let kept = abandoned(&*store, created_ms + 1, row2.id).await.expect("the new message's entry");
    assert_eq!(kept.entries, vec![outbox_entry(&second[1])]);

    // Nothing stored, nothing to settle: no row.
    let mut again = second[1].clone();
    again.msg_id = MessageId(unique());
    let row3 = outbox_row(std::slice::from_ref(&again), created_ms);
    store
        .append_with(
            std::slice::from_ref(&again),
            &CommitExtras { audits: &[], outbox: Some(&row3), ..CommitExtras::default() },
        )
        .await
        .unwrap();
    assert_eq!(abandoned(&*store, created_ms + 1, row3.id).await, None);
    store.settle_outbox(&[], &[row.id, row2.id]).await.unwrap();
}

pub async fn settling_records_the_entries_and_deletes_the_rows<S>(store: Arc<S>)
where
    S: OfflineStore + MessageStore + ?Sized,
{
    let [a, b] = users();
    let ab = private(a, b);
    let created_ms = 2_000 + (unique() % 1_000) as i64;
    let batch = [message(ab, a, 1, "c1", 5), message(ab, a, 2, "c2", 6), message(ab, b, 3, "c3", 7)];
    let row = outbox_row(&batch, created_ms);
    store
        .append_with(&batch, &CommitExtras { audits: &[], outbox: Some(&row), ..CommitExtras::default() })
        .await
        .unwrap();

    // b's device got the first message; the second reached none of b's, and
    // the third none of a's.
    let unreached = [outbox_entry(&batch[1]), outbox_entry(&batch[2])];
    store.settle_outbox(&unreached, &[row.id]).await.unwrap();
    assert_eq!(abandoned(&*store, i64::MAX, row.id).await, None, "settled");
    assert_eq!(store.pending_offline(b, 10).await.unwrap(), vec![pending(ab, 1, 2, 2, 6)]);
    assert_eq!(store.pending_offline(a, 10).await.unwrap(), vec![pending(ab, 1, 3, 3, 7)]);

    // Settling again (a sweep that raced the node) changes nothing.
    store.settle_outbox(&unreached, &[row.id]).await.unwrap();
    assert_eq!(store.pending_offline(b, 10).await.unwrap(), vec![pending(ab, 1, 2, 2, 6)]);
    store.settle_outbox(&[], &[]).await.unwrap();
}

pub async fn abandoned_rows_are_those_older_than_the_cutoff<S>(store: Arc<S>)
where
    S: OfflineStore + MessageStore + ?Sized,
{
    let [a, b] = users();
    let ab = private(a, b);
    let old_ms = 3_000 + (unique() % 1_000) as i64;
    let older = [message(ab, a, 1, "c1", 5)];
    let newer = [message(ab, a, 2, "c2", 6)];
    let (old_row, new_row) = (outbox_row(&older, old_ms), outbox_row(&newer, old_ms + 100));
    store
        .append_with(&older, &CommitExtras { audits: &[], outbox: Some(&old_row), ..CommitExtras::default() })
        .await
        .unwrap();
    store
        .append_with(&newer, &CommitExtras { audits: &[], outbox: Some(&new_row), ..CommitExtras::default() })
        .await
        .unwrap();

    let before = store.abandoned_outbox(old_ms + 50, 10_000).await.unwrap();
    assert!(before.iter().any(|row| row.id == old_row.id), "the older row");
    assert!(!before.iter().any(|row| row.id == new_row.id), "not the newer one");
    assert!(before.windows(2).all(|w| w[0].created_ms <= w[1].created_ms), "oldest first");
    assert_eq!(store.abandoned_outbox(old_ms + 50, 1).await.unwrap().len(), 1, "the limit holds");
    store.settle_outbox(&[], &[old_row.id, new_row.id]).await.unwrap();
}
