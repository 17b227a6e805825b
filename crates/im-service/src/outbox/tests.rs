//! The settler over a SQLite store: settlements written together, abandoned
//! rows swept whole, young rows left to their node, a failing store retried.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use im_backends::SqliteStore;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CommitExtras, MessageStore, OutboxRow, PendingOffline};
use im_core::{ClientMsgId, ConversationId, MessageId, NewMessage, Seq, UserId};
use tempfile::TempDir;

use super::*;

/// A SQLite store whose outbox writes fail while `down` is set.
struct FlakyStore {
    inner: SqliteStore,
    down: AtomicBool,
}

#[async_trait]
impl OfflineStore for FlakyStore {
    async fn record_offline(&self, entries: &[OfflineEntry]) -> BackendResult<()> {
        self.inner.record_offline(entries).await
    }

    async fn pending_offline(&self, user: UserId, limit: u32) -> BackendResult<Vec<PendingOffline>> {
        self.inner.pending_offline(user, limit).await
    }

    async fn clear_offline(&self, user: UserId, conversation: ConversationId, up_to: Seq) -> BackendResult<u64> {
        self.inner.clear_offline(user, conversation, up_to).await
    }

    async fn settle_outbox(&self, entries: &[OfflineEntry], settled: &[u64]) -> BackendResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::unavailable("store down"));
        }
        self.inner.settle_outbox(entries, settled).await
    }

    async fn abandoned_outbox(&self, before_ms: i64, limit: u32) -> BackendResult<Vec<OutboxRow>> {
        self.inner.abandoned_outbox(before_ms, limit).await
    }
}

async fn store() -> (Arc<FlakyStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("im.db")).await.unwrap();
    (Arc::new(FlakyStore { inner, down: AtomicBool::new(false) }), dir)
}

/// Commits one private message from 1 to `to` at `seq`, created at
/// `created_ms`, with its outbox row; returns the row's id and its entry.
async fn commit(store: &FlakyStore, to: u64, seq: u64, created_ms: i64) -> (u64, OfflineEntry) {
    let message = NewMessage {
        msg_id: MessageId(1000 * to + seq),
        conversation: ConversationId::private(UserId(1), UserId(to)).unwrap(),
        seq: Seq(seq),
        sender: UserId(1),
        client_msg_id: ClientMsgId::parse(&format!("c-{to}-{seq}")).unwrap(),
        body: bytes::Bytes::from_static(b"hi"),
        content_type: "text/plain".into(),
        server_time_ms: created_ms,
        sealed_with: None,
    };
    let entry = OfflineEntry::of(&message).unwrap();
    let row = OutboxRow { id: message.msg_id.0, created_ms, entries: vec![entry.clone()] };
    store
        .inner
        .append_with(&[message], &CommitExtras { audits: &[], outbox: Some(&row), ..CommitExtras::default() })
        .await
        .unwrap();
    (row.id, entry)
}

async fn pending(store: &FlakyStore, user: u64) -> u64 {
    store.pending_offline(UserId(user), 10).await.unwrap().iter().map(|p| p.count).sum()
}

async fn rows(store: &FlakyStore) -> usize {
    store.abandoned_outbox(i64::MAX, 1000).await.unwrap().len()
}

#[tokio::test]
async fn settlements_record_the_unreached_and_delete_their_rows_in_one_write() {
    let (store, _dir) = store().await;
    let metrics = Arc::new(Metrics::new());
    let now = crate::clock::unix_ms();
    let (reached, _) = commit(&store, 2, 1, now).await;
    let (unreached, entry) = commit(&store, 3, 1, now).await;
    let (settler, settlements, input) = Settler::new(store.clone(), metrics.clone(), Duration::from_secs(60));
    settlements.settle(Settlement { outbox: reached, unreached: vec![] });
    settlements.settle(Settlement { outbox: unreached, unreached: vec![entry] });
    drop(settlements);
    settler.run(input, CancellationToken::new()).await;

    assert_eq!((pending(&store, 2).await, pending(&store, 3).await), (0, 1));
    assert_eq!(rows(&store).await, 0, "both rows settled");
    assert_eq!(metrics.outbox_settled.get(), 2);
}

#[tokio::test]
async fn a_sweep_records_rows_older_than_the_grace_whole_and_leaves_younger_ones() {
    let (store, _dir) = store().await;
    let metrics = Arc::new(Metrics::new());
    let now = crate::clock::unix_ms();
    // Left by a node killed a minute ago, and one of a node busy now.
    commit(&store, 2, 1, now - 60_000).await;
    commit(&store, 3, 1, now).await;
    let (settler, settlements, input) = Settler::new(store.clone(), metrics.clone(), Duration::from_secs(30));
    let stop = CancellationToken::new();
    let run = tokio::spawn(settler.run(input, stop.clone()));
    // The first sweep runs at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pending(&store, 2).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the abandoned row was not swept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pending(&store, 3).await, 0, "a young row is its node's to settle");
    assert_eq!(rows(&store).await, 1);
    assert_eq!(metrics.outbox_swept.get(), 1);
    stop.cancel();
    run.await.unwrap();
    drop(settlements);
}

#[tokio::test]
async fn a_failed_settlement_is_kept_and_written_once_the_store_is_back() {
    let (store, _dir) = store().await;
    let metrics = Arc::new(Metrics::new());
    let (row, entry) = commit(&store, 2, 1, crate::clock::unix_ms()).await;
    store.down.store(true, Ordering::SeqCst);
    let (settler, settlements, input) = Settler::new(store.clone(), metrics.clone(), Duration::from_secs(60));
    let run = tokio::spawn(settler.run(input, CancellationToken::new()));
    settlements.settle(Settlement { outbox: row, unreached: vec![entry] });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.outbox_write_failures.get() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no retried write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.down.store(false, Ordering::SeqCst);
    drop(settlements);
    run.await.unwrap();
    assert_eq!(pending(&store, 2).await, 1);
    assert_eq!(rows(&store).await, 0);
}
