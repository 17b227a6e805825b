//! The `MessageStore` suite.

use std::sync::Arc;

use im_core::message::{AppendOutcome, ConversationSummary};
use im_core::ports::{AuditQuery, CommitExtras, MessageStore};
use im_core::{AuditRecord, ClientMsgId, NewMessage, RequestDigest, Seq};

use super::fixtures::{group_conversation, message, private, unique, unique_name, users};

/// Stamps out the `MessageStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! message_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            message_store,
            $make,
            [
                batch_is_fetched_in_seq_order_and_paginated,
                unknown_conversation_is_empty,
                resend_within_a_batch_gets_the_first_ack,
                resend_in_a_later_batch_gets_the_first_ack_and_stores_nothing,
                a_key_reused_for_another_request_is_a_conflict_and_stores_nothing,
                a_key_stored_without_a_digest_answers_every_resend,
                client_msg_ids_are_per_sender,
                ack_is_found_by_client_msg_id,
                seq_conflict_fails_the_whole_batch,
                conversations_are_listed_most_recent_first_with_unread_counts,
                empty_batch_is_a_no_op,
                unread_counts_skip_the_readers_own_messages,
                group_messages_are_stored_once_and_listed_by_no_member,
                the_key_a_body_is_sealed_with_round_trips,
                rows_by_key_counts_the_rows_each_data_key_seals,
                audit_records_are_stored_with_their_messages_only,
                audit_records_are_listed_newest_first_by_page_and_conversation,
                skipped_seqs_are_reported_within_the_fetched_range,
            ]
        );
    };
}

fn seqs(page: &im_core::message::Page) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq.0).collect()
}

pub async fn batch_is_fetched_in_seq_order_and_paginated<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    let key = |n| unique_name(&format!("k{n}"));
    // Two conversations interleaved, one of them out of seq order.
    let batch = vec![
        message(ab, a, 3, &key(1), 1003),
        message(ac, c, 1, &key(2), 1001),
        message(ab, b, 1, &key(3), 1001),
        message(ab, a, 2, &key(4), 1002),
        message(ac, a, 2, &key(5), 1002),
        message(ab, b, 4, &key(6), 1004),
        message(ab, b, 5, &key(7), 1005),
    ];
    let outcomes = store.append(&batch).await.unwrap();
    assert_eq!(outcomes, vec![AppendOutcome::Stored; batch.len()]);

    let page = store.fetch(ab, Seq::ZERO, 2).await.unwrap();
    assert_eq!((seqs(&page), page.has_more), (vec![1, 2], true));
    // Every field round-trips.
    assert_eq!(page.messages[0], batch[2]);
    assert_eq!(page.messages[1], batch[3]);
    let page = store.fetch(ab, Seq(2), 2).await.unwrap();
    assert_eq!((seqs(&page), page.has_more), (vec![3, 4], true));
    let page = store.fetch(ab, Seq(4), 2).await.unwrap();
    assert_eq!((seqs(&page), page.has_more), (vec![5], false));
    // A page that ends exactly at the last message has nothing more.
    let page = store.fetch(ab, Seq(3), 2).await.unwrap();
    assert_eq!((seqs(&page), page.has_more), (vec![4, 5], false));
    let page = store.fetch(ac, Seq::ZERO, 100).await.unwrap();
    assert_eq!(page.messages, vec![batch[1].clone(), batch[4].clone()]);
    assert!(!page.has_more);

    // A later batch continues the timeline.
    let later = message(ab, a, 6, &key(8), 1006);
    store.append(std::slice::from_ref(&later)).await.unwrap();
    assert_eq!(store.fetch(ab, Seq(5), 10).await.unwrap().messages, vec![later]);
    assert_eq!(store.max_seq(ab).await.unwrap(), Seq(6));
    assert_eq!(store.max_seq(ac).await.unwrap(), Seq(2));
}

pub async fn unknown_conversation_is_empty<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let page = store.fetch(private(a, b), Seq::ZERO, 10).await.unwrap();
    assert!(page.messages.is_empty());
    assert!(!page.has_more);
    assert_eq!(store.max_seq(private(a, b)).await.unwrap(), Seq::ZERO);
    assert!(store.conversations_of(a).await.unwrap().is_empty());
}

pub async fn resend_within_a_batch_gets_the_first_ack<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let (k1, k2) = (unique_name("k1"), unique_name("k2"));
    let first = message(ab, a, 1, &k1, 1000);
    let resend = message(ab, a, 2, &k1, 1001);
    let other = message(ab, a, 3, &k2, 1002);
    let resend_again = message(ab, a, 4, &k1, 1003);
    let outcomes = store.append(&[first.clone(), resend, other.clone(), resend_again]).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            AppendOutcome::Stored,
            AppendOutcome::Duplicate(first.ack()),
            AppendOutcome::Stored,
            AppendOutcome::Duplicate(first.ack()),
        ]
    );
    assert_eq!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().messages, vec![first, other]);
}

pub async fn resend_in_a_later_batch_gets_the_first_ack_and_stores_nothing<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let (k1, k2) = (unique_name("k1"), unique_name("k2"));
    let first = message(ab, a, 1, &k1, 1000);
    assert_eq!(store.append(std::slice::from_ref(&first)).await.unwrap(), vec![AppendOutcome::Stored]);

    // The resend got a new seq and msg_id (the dedup cache forgot it); the
    // store still answers with the first ack, and within the batch a repeat
    // of the resend gets the same.
    let mut resend = message(ab, a, 2, &k1, 2000);
    resend.body = "changed".into();
    let fresh = message(ab, b, 3, &k2, 2001);
    let repeat = message(ab, a, 4, &k1, 2002);
    let outcomes = store.append(&[resend, fresh.clone(), repeat]).await.unwrap();
    assert_eq!(
        outcomes,
        vec![AppendOutcome::Duplicate(first.ack()), AppendOutcome::Stored, AppendOutcome::Duplicate(first.ack())]
    );
    assert_eq!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().messages, vec![first.clone(), fresh]);

    // The very same message appended again (a retried batch) stores nothing.
    assert_eq!(store.append(std::slice::from_ref(&first)).await.unwrap(), vec![AppendOutcome::Duplicate(first.ack())]);
    assert_eq!(store.max_seq(ab).await.unwrap(), Seq(3));
}

/// `batch` appended with `digests` (one per message).
async fn append_digested<S: MessageStore + ?Sized>(
    store: &S,
    batch: &[NewMessage],
    digests: &[u64],
) -> Vec<AppendOutcome> {
    let digests: Vec<RequestDigest> = digests.iter().copied().map(RequestDigest).collect();
    store.append_with(batch, &CommitExtras { digests: &digests, ..CommitExtras::default() }).await.unwrap()
}

pub async fn a_key_reused_for_another_request_is_a_conflict_and_stores_nothing<S: MessageStore + ?Sized>(
    store: Arc<S>,
) {
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    let key = unique_name("k");
    // Digests span the 64 bits: the stored column keeps every one.
    let (to_bob, to_carol) = (u64::MAX, 1u64 << 63);
    let first = message(ab, a, 1, &key, 1000);
    assert_eq!(append_digested(&*store, std::slice::from_ref(&first), &[to_bob]).await, vec![AppendOutcome::Stored]);

    // The same key for another request, alone and then with a repeat of it
    // and a resend of the first in one batch.
    let other = message(ac, a, 1, &key, 2000);
    assert_eq!(
        append_digested(&*store, std::slice::from_ref(&other), &[to_carol]).await,
        vec![AppendOutcome::Conflict(first.ack())]
    );
    let fresh = message(ac, c, 2, &unique_name("k"), 2001);
    let batch = [other, fresh.clone(), message(ab, a, 3, &key, 2002)];
    assert_eq!(
        append_digested(&*store, &batch, &[to_carol, 7, to_bob]).await,
        vec![AppendOutcome::Conflict(first.ack()), AppendOutcome::Stored, AppendOutcome::Duplicate(first.ack())]
    );
    assert_eq!(
        store.fetch(ac, Seq::ZERO, 10).await.unwrap().messages,
        vec![fresh],
        "the conflicting message was stored"
    );
    assert_eq!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().messages, vec![first]);

    // Two different requests under one new key in one batch: the first wins.
    let (key, ad) = (unique_name("k"), private(a, c));
    let (one, two) = (message(ad, a, 3, &key, 3000), message(ad, a, 4, &key, 3001));
    assert_eq!(
        append_digested(&*store, &[one.clone(), two], &[1, 2]).await,
        vec![AppendOutcome::Stored, AppendOutcome::Conflict(one.ack())]
    );
}

pub async fn a_key_stored_without_a_digest_answers_every_resend<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let key = unique_name("k");
    // As stored before digests were (or by a caller that has none).
    let first = message(ab, a, 1, &key, 1000);
    assert_eq!(store.append(std::slice::from_ref(&first)).await.unwrap(), vec![AppendOutcome::Stored]);
    let mut resend = message(ab, a, 2, &key, 2000);
    resend.body = "whatever it says".into();
    assert_eq!(append_digested(&*store, &[resend], &[42]).await, vec![AppendOutcome::Duplicate(first.ack())]);
}

pub async fn client_msg_ids_are_per_sender<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let key = unique_name("shared");
    let batch = [message(ab, a, 1, &key, 1000), message(ab, b, 2, &key, 1001)];
    assert_eq!(store.append(&batch).await.unwrap(), vec![AppendOutcome::Stored, AppendOutcome::Stored]);
    assert_eq!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().messages, batch.to_vec());
}

pub async fn ack_is_found_by_client_msg_id<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let key = ClientMsgId::parse(&unique_name("k")).unwrap();
    assert_eq!(store.find_by_client_msg_id(a, &key).await.unwrap(), None);
    let stored = message(private(a, b), a, 1, key.as_str(), 1000);
    store.append(std::slice::from_ref(&stored)).await.unwrap();
    assert_eq!(store.find_by_client_msg_id(a, &key).await.unwrap(), Some(stored.ack()));
    // The key is the sender's, not the conversation's.
    assert_eq!(store.find_by_client_msg_id(b, &key).await.unwrap(), None);
}

pub async fn seq_conflict_fails_the_whole_batch<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let first = message(ab, a, 1, &unique_name("k"), 1000);
    store.append(std::slice::from_ref(&first)).await.unwrap();

    // Two messages claiming one seq is an allocator bug: refuse it loudly and
    // store nothing of the batch, not even its valid messages.
    let valid = message(ab, b, 2, &unique_name("k"), 1001);
    let clash_with_stored = message(ab, b, 1, &unique_name("k"), 1002);
    assert!(store.append(&[valid.clone(), clash_with_stored]).await.is_err());
    let clash_in_batch = message(ab, a, 2, &unique_name("k"), 1003);
    assert!(store.append(&[valid.clone(), clash_in_batch]).await.is_err());

    assert_eq!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().messages, vec![first]);
    assert_eq!(store.find_by_client_msg_id(b, &valid.client_msg_id).await.unwrap(), None);
    // The store still works, and the valid message can go in on its own.
    assert_eq!(store.append(std::slice::from_ref(&valid)).await.unwrap(), vec![AppendOutcome::Stored]);
}

pub async fn conversations_are_listed_most_recent_first_with_unread_counts<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    let key = || unique_name("k");
    store
        .append(&[message(ab, b, 1, &key(), 1000), message(ac, a, 1, &key(), 2000), message(ac, c, 2, &key(), 2500)])
        .await
        .unwrap();
    let summary = |conversation, max_seq, unread| ConversationSummary {
        conversation,
        max_seq: Seq(max_seq),
        read_seq: Seq::ZERO,
        unread,
        peer_read_seq: Seq::ZERO,
    };
    // Only messages from the other side are unread.
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(ac, 2, 1), summary(ab, 1, 1)]);
    assert_eq!(store.conversations_of(c).await.unwrap(), vec![summary(ac, 2, 1)]);

    // New activity moves a conversation to the top.
    store.append(&[message(ab, a, 2, &key(), 3000)]).await.unwrap();
    assert_eq!(store.conversations_of(a).await.unwrap(), vec![summary(ab, 2, 1), summary(ac, 2, 1)]);
    assert_eq!(store.conversations_of(b).await.unwrap(), vec![summary(ab, 2, 1)]);
}

pub async fn empty_batch_is_a_no_op<S: MessageStore + ?Sized>(store: Arc<S>) {
    assert_eq!(store.append(&[]).await.unwrap(), Vec::<AppendOutcome>::new());
}

pub async fn unread_counts_skip_the_readers_own_messages<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let (group, ab) = (group_conversation(), private(a, b));
    let senders = [b, a, c, b, a, c, c];
    let batch: Vec<_> = (1..)
        .zip(senders)
        .map(|(seq, sender)| message(group, sender, seq, &unique_name("k"), 1000 + seq as i64))
        .collect();
    store.append(&batch).await.unwrap();
    store.append(&[message(ab, b, 1, &unique_name("k"), 2000)]).await.unwrap();

    assert_eq!(store.count_unread(group, a, Seq::ZERO).await.unwrap(), 5);
    assert_eq!(store.count_unread(group, a, Seq(3)).await.unwrap(), 3);
    assert_eq!(store.count_unread(group, c, Seq(3)).await.unwrap(), 2);
    assert_eq!(store.count_unread(group, b, Seq(7)).await.unwrap(), 0);
    assert_eq!(store.count_unread(group, b, Seq(u64::MAX)).await.unwrap(), 0);
    // Conversations are counted apart, private ones alike.
    assert_eq!(store.count_unread(ab, a, Seq::ZERO).await.unwrap(), 1);
    assert_eq!(store.count_unread(ab, b, Seq::ZERO).await.unwrap(), 0);
    assert_eq!(store.count_unread(group_conversation(), a, Seq::ZERO).await.unwrap(), 0);
}

pub async fn group_messages_are_stored_once_and_listed_by_no_member<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let group = group_conversation();
    let batch = [message(group, a, 1, &unique_name("k"), 1000), message(group, b, 2, &unique_name("k"), 1001)];
    assert_eq!(store.append(&batch).await.unwrap(), vec![AppendOutcome::Stored; 2]);
    // Every field round-trips; a group message has no recipient.
    let page = store.fetch(group, Seq::ZERO, 10).await.unwrap();
    assert_eq!(page.messages, batch.to_vec());
    assert_eq!(page.messages[0].recipient(), None);
    assert_eq!(store.max_seq(group).await.unwrap(), Seq(2));
    assert_eq!(store.find_by_client_msg_id(b, &batch[1].client_msg_id).await.unwrap(), Some(batch[1].ack()));
    // Groups are listed from their membership, not from the messages.
    assert!(store.conversations_of(a).await.unwrap().is_empty());
    assert!(store.conversations_of(b).await.unwrap().is_empty());
}

/// The audit record of `message`, naming `entries`.
fn audit_of(message: &NewMessage, entries: &[&str]) -> AuditRecord {
    AuditRecord {
        msg_id: message.msg_id,
        conversation: message.conversation,
        seq: message.seq,
        sender: message.sender,
        entries: entries.iter().map(|&entry| entry.to_owned()).collect(),
        server_time_ms: message.server_time_ms,
    }
}

fn in_conversation(conversation: im_core::ConversationId) -> AuditQuery {
    AuditQuery { before: None, conversation: Some(conversation), limit: 100 }
}

pub async fn audit_records_are_stored_with_their_messages_only<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let (k1, k2) = (unique_name("k1"), unique_name("k2"));
    let flagged = message(ab, a, 1, &k1, 1000);
    let clean = message(ab, b, 2, &k2, 1001);
    let record = audit_of(&flagged, &["bad", "敏感"]);
    let outcomes = store.append_audited(&[flagged.clone(), clean], std::slice::from_ref(&record)).await.unwrap();
    assert_eq!(outcomes, vec![AppendOutcome::Stored; 2]);
    assert_eq!(store.audit_records(&in_conversation(ab)).await.unwrap(), vec![record.clone()]);

    // A resend of the flagged message (new seq and msg_id: the dedup cache
    // forgot it) is a duplicate: its record is not stored, the first stays.
    let resend = message(ab, a, 3, &k1, 2000);
    let outcomes = store.append_audited(std::slice::from_ref(&resend), &[audit_of(&resend, &["bad"])]).await.unwrap();
    assert_eq!(outcomes, vec![AppendOutcome::Duplicate(flagged.ack())]);
    assert_eq!(store.audit_records(&in_conversation(ab)).await.unwrap(), vec![record]);

    // A batch that fails stores no record either.
    let (k3, k4) = (unique_name("k3"), unique_name("k4"));
    let valid = message(ab, b, 4, &k3, 3000);
    let clash = message(ab, a, 4, &k4, 3001);
    assert!(store.append_audited(&[valid.clone(), clash], &[audit_of(&valid, &["bad"])]).await.is_err());
    assert_eq!(store.audit_records(&in_conversation(ab)).await.unwrap().len(), 1);
}

pub async fn audit_records_are_listed_newest_first_by_page_and_conversation<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    // Made in this order, so their msg_ids ascend.
    let mut batch: Vec<NewMessage> = (1..=3).map(|n| message(ab, a, n, &unique_name("k"), 1000 + n as i64)).collect();
    batch.push(message(ac, a, 1, &unique_name("k"), 1004));
    let records: Vec<AuditRecord> = batch.iter().map(|m| audit_of(m, &["w"])).collect();
    store.append_audited(&batch, &records).await.unwrap();

    let first_page = store.audit_records(&AuditQuery { limit: 2, ..in_conversation(ab) }).await.unwrap();
    assert_eq!(first_page, vec![records[2].clone(), records[1].clone()]);
    let before = first_page.last().map(|record| record.msg_id);
    let second_page = store.audit_records(&AuditQuery { before, limit: 2, ..in_conversation(ab) }).await.unwrap();
    assert_eq!(second_page, vec![records[0].clone()]);
    assert_eq!(store.audit_records(&in_conversation(ac)).await.unwrap(), vec![records[3].clone()]);
    // Without a conversation: every conversation's, newest first (other
    // cases' records may come first on a shared store).
    let everything =
        store.audit_records(&AuditQuery { before: None, conversation: None, limit: 10_000 }).await.unwrap();
    let ours: Vec<&AuditRecord> = everything.iter().filter(|r| records.contains(r)).collect();
    assert_eq!(ours, vec![&records[3], &records[2], &records[1], &records[0]]);
}

pub async fn the_key_a_body_is_sealed_with_round_trips<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let clear = message(ab, a, 1, &unique_name("k"), 1000);
    let sealed = NewMessage {
        body: bytes::Bytes::from_static(b"\x01\x00\x00\x00\x00\x00\x00\x00\x07ciphertext"),
        sealed_with: Some(7),
        ..message(ab, b, 2, &unique_name("k"), 1001)
    };
    let large_id = NewMessage { sealed_with: Some(i64::MAX as u64), ..message(ab, a, 3, &unique_name("k"), 1002) };
    store.append(&[clear.clone(), sealed.clone(), large_id.clone()]).await.unwrap();
    assert_eq!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().messages, vec![clear, sealed, large_id]);
}

pub async fn rows_by_key_counts_the_rows_each_data_key_seals<S: MessageStore + ?Sized>(store: Arc<S>) {
    // Key ids no other case uses (cases may share the store and run at the
    // same time): their counts are exact, the clear rows only grow.
    let (k1, k2, unused) = (unique(), unique(), unique());
    let count =
        |rows: &[(Option<u64>, u64)], key: Option<u64>| rows.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n);
    let before = store.rows_by_key().await.unwrap();
    assert_eq!((count(&before, Some(k1)), count(&before, Some(k2))), (0, 0));

    let [a, b] = users();
    let (ab, group) = (private(a, b), group_conversation());
    let sealed = |conversation, seq, key| NewMessage {
        sealed_with: Some(key),
        ..message(conversation, a, seq, &unique_name("k"), 1000 + seq as i64)
    };
    let batch = vec![
        message(ab, a, 1, &unique_name("k"), 1000),
        sealed(ab, 2, k1),
        sealed(ab, 3, k1),
        sealed(group, 1, k1),
        sealed(ab, 4, k2),
        message(group, b, 2, &unique_name("k"), 1005),
    ];
    store.append(&batch).await.unwrap();
    // A resend stores nothing, so counts nothing.
    store.append(&batch[1..2]).await.unwrap();

    let after = store.rows_by_key().await.unwrap();
    assert_eq!(count(&after, Some(k1)), 3, "{after:?}");
    assert_eq!(count(&after, Some(k2)), 1, "{after:?}");
    assert!(!after.iter().any(|(k, _)| *k == Some(unused)), "a key sealing nothing is not listed: {after:?}");
    assert!(count(&after, None) >= count(&before, None) + 2, "clear rows: {before:?} then {after:?}");
    // One entry per key.
    let mut keys: Vec<Option<u64>> = after.iter().map(|(k, _)| *k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), after.len(), "{after:?}");
}

pub async fn skipped_seqs_are_reported_within_the_fetched_range<S: MessageStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    let key = |n| unique_name(&format!("k{n}"));
    let batch: Vec<_> = [1, 2, 5, 8].into_iter().map(|seq| message(ab, a, seq, &key(seq), 1000 + seq as i64)).collect();
    store.append(&batch).await.unwrap();
    store.append(&[message(ac, a, 1, &key(100), 1000)]).await.unwrap();
    let skipped = |page: &im_core::message::Page| page.skipped.iter().map(|s| s.0).collect::<Vec<_>>();

    // No record yet: the holes are just holes.
    assert!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().skipped.is_empty());
    // 6 is not recorded (it may still come); 10 lies past the last message;
    // ac's 3 is another conversation's. Recording again changes nothing.
    store.record_skipped(&[(ab, Seq(3)), (ab, Seq(7)), (ab, Seq(10)), (ac, Seq(3))], 5000).await.unwrap();
    store.record_skipped(&[(ab, Seq(4)), (ab, Seq(3))], 6000).await.unwrap();
    store.record_skipped(&[], 6000).await.unwrap();

    let page = store.fetch(ab, Seq::ZERO, 10).await.unwrap();
    assert_eq!((seqs(&page), skipped(&page)), (vec![1, 2, 5, 8], vec![3, 4, 7]));
    // Only those between the cursor and the last message returned.
    let page = store.fetch(ab, Seq(3), 10).await.unwrap();
    assert_eq!((seqs(&page), skipped(&page)), (vec![5, 8], vec![4, 7]));
    let page = store.fetch(ab, Seq::ZERO, 2).await.unwrap();
    assert_eq!((seqs(&page), skipped(&page), page.has_more), (vec![1, 2], vec![], true));
    let page = store.fetch(ab, Seq::ZERO, 3).await.unwrap();
    assert_eq!((seqs(&page), skipped(&page)), (vec![1, 2, 5], vec![3, 4]));
    let page = store.fetch(ab, Seq(8), 10).await.unwrap();
    assert_eq!((seqs(&page), skipped(&page)), (vec![], vec![]));
    let page = store.fetch(ac, Seq::ZERO, 10).await.unwrap();
    assert_eq!((seqs(&page), skipped(&page)), (vec![1], vec![]));
    // A message past the recorded 10 brings it into range.
    store.append(&[message(ab, b, 11, &key(11), 2000)]).await.unwrap();
    let page = store.fetch(ab, Seq(8), 10).await.unwrap();
    assert_eq!((seqs(&page), skipped(&page)), (vec![11], vec![10]));

    // Sync steps over the recorded holes at once, and waits on 6 only.
    let visible = |page: &im_core::message::Page, after| {
        im_core::message::visible_prefix(&page.messages, &page.skipped, after, 2000, 5000)
    };
    let page = store.fetch(ab, Seq::ZERO, 10).await.unwrap();
    assert_eq!(visible(&page, Seq::ZERO), 3, "8 waits for 6");
    let page = store.fetch(ab, Seq(8), 10).await.unwrap();
    assert_eq!(visible(&page, Seq(8)), 0, "11 waits for 9");
    store.record_skipped(&[(ab, Seq(9))], 7000).await.unwrap();
    let page = store.fetch(ab, Seq(8), 10).await.unwrap();
    assert_eq!((visible(&page, Seq(8)), skipped(&page)), (1, vec![9, 10]));
}
