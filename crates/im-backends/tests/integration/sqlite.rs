//! What only the SQLite store promises.

use im_backends::SqliteStore;
use im_backends::conformance::fixtures::{message, private, unique_name, users};
use im_core::Seq;
use im_core::message::AppendOutcome;
use im_core::ports::{CeilingStore, CreateUser, MessageStore, ReceiptStore, UserStore};

/// Everything acknowledged is in the file: a store opened again after the
/// first was dropped (not closed) finds it, and the schema migration is not
/// run twice.
#[tokio::test]
async fn everything_acknowledged_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.db");
    let [a, b] = users();
    let ab = private(a, b);
    let batch: Vec<_> = (1..=100).map(|seq| message(ab, a, seq, &unique_name("k"), 1000 + seq as i64)).collect();

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.append(&batch).await.unwrap(), vec![AppendOutcome::Stored; 100]);
    store.mark_read(b, ab, Seq(40)).await.unwrap();
    store.raise_ceiling(ab, Seq(128)).await.unwrap();
    let CreateUser::Created(alice) = store.create_user("alice").await.unwrap() else { panic!("alice is free") };
    drop(store);

    let store = SqliteStore::open(&path).await.unwrap();
    let page = store.fetch(ab, Seq::ZERO, 500).await.unwrap();
    assert_eq!(page.messages, batch);
    assert_eq!(store.read_position(b, ab).await.unwrap(), Seq(40));
    assert_eq!(store.load_ceiling(ab).await.unwrap(), Seq(128));
    assert_eq!(store.user_by_name("alice").await.unwrap(), Some(alice.clone()));
    // The unique keys are still there: a resend after the restart is caught,
    // and a taken name stays taken.
    assert_eq!(store.append(&batch[..1]).await.unwrap(), vec![AppendOutcome::Duplicate(batch[0].ack())]);
    assert_eq!(store.create_user("alice").await.unwrap(), CreateUser::NameTaken);
    // Ids are not reused after a reopen.
    let CreateUser::Created(bob) = store.create_user("bob").await.unwrap() else { panic!("bob is free") };
    assert!(bob.id > alice.id);
    store.close().await;
}

/// A batch larger than one multi-row statement is still one all-or-nothing
/// transaction: a seq clash in its last chunk leaves nothing of its first.
#[tokio::test]
async fn a_batch_spanning_many_statements_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("im.db")).await.unwrap();
    let [a, b] = users();
    let ab = private(a, b);
    let mut batch: Vec<_> = (1..=1300).map(|seq| message(ab, a, seq, &unique_name("k"), seq as i64)).collect();
    batch.push(message(ab, b, 1300, &unique_name("k"), 1301));
    assert!(store.append(&batch).await.is_err());
    assert_eq!(store.max_seq(ab).await.unwrap(), Seq::ZERO);

    batch.pop();
    let outcomes = store.append(&batch).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == AppendOutcome::Stored));
    let page = store.fetch(ab, Seq::ZERO, 2000).await.unwrap();
    assert_eq!(page.messages.len(), 1300);
    assert_eq!(page.messages, batch);
}

/// A path that cannot be opened fails `open` with an error, not a panic.
#[tokio::test]
async fn opening_an_unusable_path_fails() {
    let dir = tempfile::tempdir().unwrap();
    assert!(SqliteStore::open(&dir.path().join("missing").join("im.db")).await.is_err());
}

/// A resend deep inside a large batch (past the first multi-row statement)
/// is found, and the messages around it are stored once.
#[tokio::test]
async fn a_resend_in_a_later_statement_of_a_batch_gets_the_first_ack() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("im.db")).await.unwrap();
    let [a, b] = users();
    let ab = private(a, b);
    let earlier = message(ab, b, 1, &unique_name("k"), 1);
    store.append(std::slice::from_ref(&earlier)).await.unwrap();

    let mut batch: Vec<_> = (2..=700).map(|seq| message(ab, a, seq, &unique_name("k"), seq as i64)).collect();
    let mut resend = message(ab, b, 701, earlier.client_msg_id.as_str(), 701);
    resend.body = "resent".into();
    batch.insert(600, resend);
    let outcomes = store.append(&batch).await.unwrap();
    for (i, outcome) in outcomes.iter().enumerate() {
        let expected = if i == 600 { AppendOutcome::Duplicate(earlier.ack()) } else { AppendOutcome::Stored };
        assert_eq!(*outcome, expected, "message {i}");
    }
    let page = store.fetch(ab, Seq::ZERO, 1000).await.unwrap();
    assert_eq!(page.messages.len(), 700);
    assert_eq!(page.messages[0], earlier);
    assert_eq!(store.max_seq(ab).await.unwrap(), Seq(700));
}
