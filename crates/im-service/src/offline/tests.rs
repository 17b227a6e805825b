//! The worker and the publisher over the in-process bus and a SQLite store,
//! with an event log of writes and commits to check their order.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use im_backends::{MemoryBus, SqliteStore};
use im_core::ports::{BackendResult, PendingOffline, RecordHeaders};
use im_core::{ConversationId, MessageId, Seq, UserId};
use tempfile::TempDir;
use tokio_util::task::TaskTracker;

use super::*;
use crate::consumer::{Member, Members, dead_letter_topic};
use crate::metrics::ReasonLabel;
use crate::testkit::consumer_settings;

const TOPIC: &str = "offline";
const GROUP: &str = "workers";
/// Long enough for any step of these tests on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// Writes and commits, in the order they happened.
#[derive(Clone, Default)]
struct EventLog(Arc<Mutex<Vec<String>>>);

impl EventLog {
    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A SQLite store that logs each write, and first fails with the errors
/// queued in `failures`.
struct LoggedStore {
    inner: SqliteStore,
    log: EventLog,
    failures: Mutex<VecDeque<BackendError>>,
    /// Fails every write while set.
    down: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl OfflineStore for LoggedStore {
    async fn record_offline(&self, entries: &[OfflineEntry]) -> BackendResult<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            self.log.push("write failed".into());
            return Err(BackendError::unavailable("store down"));
        }
        let failure = self.failures.lock().unwrap().pop_front();
        if let Some(e) = failure {
            self.log.push("write failed".into());
            return Err(e);
        }
        let result = self.inner.record_offline(entries).await;
        self.log.push(match &result {
            Ok(()) => format!("write {}", entries.len()),
            Err(_) => format!("write {} refused", entries.len()),
        });
        result
    }

    async fn pending_offline(&self, user: UserId, limit: u32) -> BackendResult<Vec<PendingOffline>> {
        self.inner.pending_offline(user, limit).await
    }

    async fn clear_offline(&self, user: UserId, conversation: ConversationId, up_to: Seq) -> BackendResult<u64> {
        self.inner.clear_offline(user, conversation, up_to).await
    }

    async fn settle_outbox(&self, entries: &[OfflineEntry], settled: &[u64]) -> BackendResult<()> {
        self.inner.settle_outbox(entries, settled).await
    }

    async fn abandoned_outbox(&self, before_ms: i64, limit: u32) -> BackendResult<Vec<im_core::ports::OutboxRow>> {
        self.inner.abandoned_outbox(before_ms, limit).await
    }
}

/// Members of the in-process bus whose commits are logged (and fail while
/// `fail_commits` is set).
struct LoggedMembers {
    bus: Arc<MemoryBus>,
    log: EventLog,
    fail_commits: bool,
}

#[async_trait]
impl Members for LoggedMembers {
    async fn join(&self, topic: &str, group: &str) -> BackendResult<Member> {
        let inner = self.bus.subscribe(topic, group).await?;
        let consumer = LoggedConsumer { inner, log: self.log.clone(), fail_commits: self.fail_commits };
        Ok(Member { consumer: Box::new(consumer), lag: None })
    }
}

struct LoggedConsumer {
    inner: Box<dyn BusConsumer>,
    log: EventLog,
    fail_commits: bool,
}

#[async_trait]
impl BusConsumer for LoggedConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> BackendResult<Vec<BusRecord>> {
        self.inner.poll(max, timeout).await
    }

    async fn commit(&mut self, record: &BusRecord) -> BackendResult<()> {
        if self.fail_commits {
            self.log.push(format!("commit {} failed", record.offset));
            return Err(BackendError::unavailable("broker down"));
        }
        self.log.push(format!("commit {}", record.offset));
        self.inner.commit(record).await
    }
}

/// A bus, a store and a metrics registry for one test.
struct Fixture {
    bus: Arc<MemoryBus>,
    store: Arc<LoggedStore>,
    metrics: Arc<Metrics>,
    log: EventLog,
    _dir: TempDir,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("im.db")).await.unwrap();
        let log = EventLog::default();
        let store = Arc::new(LoggedStore {
            inner,
            log: log.clone(),
            failures: Mutex::default(),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        Self { bus: Arc::new(MemoryBus::new()), store, metrics: Arc::new(Metrics::new()), log, _dir: dir }
    }

    fn worker(&self, batch_size: usize, batch_timeout: Duration) -> OfflineWorker {
        OfflineWorker {
            bus: self.bus.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            settings: consumer_settings(TOPIC, GROUP, batch_size, batch_timeout),
        }
    }

    /// Starts `worker`, its members' commits logged (and failing with
    /// `fail_commits`); stop it with the returned token and tracker.
    async fn start(&self, worker: OfflineWorker, fail_commits: bool) -> (TaskTracker, CancellationToken) {
        let members = LoggedMembers { bus: self.bus.clone(), log: self.log.clone(), fail_commits };
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        worker.start(&members, &tracker, stop.clone()).await.unwrap();
        (tracker, stop)
    }

    async fn publish(&self, entries: &[OfflineEntry]) {
        for entry in entries {
            self.bus.publish(TOPIC, key(entry), encode_offline_event(entry)).await.unwrap();
        }
    }

    async fn pending(&self, user: UserId) -> Vec<PendingOffline> {
        self.store.pending_offline(user, 100).await.unwrap()
    }

    /// Waits until the log has `count` events.
    async fn wait_for_events(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let events = self.log.events();
            if events.len() >= count {
                return events;
            }
            assert!(Instant::now() < deadline, "only {events:?} within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn stop(tracker: TaskTracker, stop: CancellationToken) {
    stop.cancel();
    tracker.close();
    tokio::time::timeout(PATIENCE, tracker.wait()).await.expect("the worker stops");
}

fn key(entry: &OfflineEntry) -> Bytes {
    Bytes::from(entry.conversation.to_string())
}

/// Entries for user 2 from user 1, seqs `seqs`.
fn entries(seqs: std::ops::RangeInclusive<u64>) -> Vec<OfflineEntry> {
    let conversation = ConversationId::private(UserId(1), UserId(2)).unwrap();
    seqs.map(|seq| OfflineEntry {
        user: UserId(2),
        conversation,
        seq: Seq(seq),
        msg_id: MessageId(1000 + seq),
        server_time_ms: seq as i64,
    })
    .collect()
}

fn pending(count: u64, first: u64, last: u64) -> Vec<PendingOffline> {
    vec![PendingOffline {
        conversation: ConversationId::private(UserId(1), UserId(2)).unwrap(),
        count,
        first_seq: Seq(first),
        last_seq: Seq(last),
        last_time_ms: last as i64,
    }]
}

#[tokio::test]
async fn full_batches_are_written_at_once_and_the_rest_after_the_timeout() {
    let f = Fixture::new().await;
    f.publish(&entries(1..=25)).await;
    let began = Instant::now();
    let (tracker, token) = f.start(f.worker(10, Duration::from_millis(300)), false).await;

    let events = f.wait_for_events(6).await;
    assert_eq!(events, ["write 10", "commit 9", "write 10", "commit 19", "write 5", "commit 24"]);
    assert!(began.elapsed() >= Duration::from_millis(300), "the last 5 waited for the batch timeout");
    assert_eq!(f.pending(UserId(2)).await, pending(25, 1, 25));
    assert_eq!(f.metrics.offline_recorded.get(), 25);
    stop(tracker, token).await;
}

#[tokio::test]
async fn a_batch_fills_until_its_timeout() {
    let f = Fixture::new().await;
    let (tracker, token) = f.start(f.worker(100, Duration::from_millis(500)), false).await;
    // Three records in 100 ms: one batch, written after the timeout.
    for entry in entries(1..=3) {
        f.publish(&[entry]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.wait_for_events(2).await, ["write 3", "commit 2"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.log.events().len(), 2, "nothing else was written");
    stop(tracker, token).await;
}

#[tokio::test]
async fn the_offset_is_committed_only_after_the_write_returned() {
    let f = Fixture::new().await;
    f.store.failures.lock().unwrap().extend([BackendError::unavailable("down"), BackendError::unavailable("down")]);
    f.publish(&entries(1..=3)).await;
    let (tracker, token) = f.start(f.worker(3, Duration::from_millis(50)), false).await;

    assert_eq!(f.wait_for_events(4).await, ["write failed", "write failed", "write 3", "commit 2"]);
    assert_eq!(f.metrics.offline_write_failures.get(), 2);
    assert_eq!(f.metrics.offline_recorded.get(), 3);
    assert_eq!(f.pending(UserId(2)).await, pending(3, 1, 3));
    stop(tracker, token).await;
}

#[tokio::test]
async fn an_unavailable_store_holds_the_batch_uncommitted() {
    let f = Fixture::new().await;
    f.store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    f.publish(&entries(1..=3)).await;
    let (tracker, token) = f.start(f.worker(10, Duration::from_millis(20)), false).await;
    // Retried again and again (no bound: the store is down, not refusing),
    // never parked, never committed.
    f.wait_for_events(5).await;
    stop(tracker, token).await;
    assert!(f.log.events().iter().all(|e| e == "write failed"), "{:?}", f.log.events());
    assert_eq!(f.metrics.offline_dead_letters.get_or_create(&ReasonLabel { reason: "refused" }).get(), 0);

    // The group still holds them: the next worker records them.
    f.store.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let (tracker, token) = f.start(f.worker(10, Duration::from_millis(20)), false).await;
    let deadline = Instant::now() + PATIENCE;
    while f.pending(UserId(2)).await != pending(3, 1, 3) {
        assert!(Instant::now() < deadline, "the held batch was not recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(tracker, token).await;
}

#[tokio::test]
async fn poison_records_are_parked_and_the_offset_moves_on() {
    let f = Fixture::new().await;
    let mut dead_letters = f.bus.subscribe(&dead_letter_topic(TOPIC), "inspector").await.unwrap();
    let good = entries(1..=2);
    // Not protobuf; and an entry for a user outside its conversation.
    let garbage = Bytes::from_static(b"\xff\xff\xff");
    let outsider = OfflineEntry { user: UserId(7), ..good[0].clone() };
    f.publish(&good[..1]).await;
    f.bus.publish(TOPIC, Bytes::from_static(b"k"), garbage.clone()).await.unwrap();
    f.publish(std::slice::from_ref(&outsider)).await;
    f.publish(&good[1..]).await;
    let (tracker, token) = f.start(f.worker(10, Duration::from_millis(50)), false).await;

    assert_eq!(f.wait_for_events(2).await, ["write 2", "commit 3"]);
    let parked = dead_letters.poll(10, PATIENCE).await.unwrap();
    let parked: Vec<_> = parked.iter().map(|r| (r.key.clone(), r.payload.clone())).collect();
    assert_eq!(parked, [(Bytes::from_static(b"k"), garbage), (key(&outsider), encode_offline_event(&outsider))]);
    assert!(f.metrics.render().contains("im_offline_dead_letters_total{reason=\"undecodable\"} 2"));
    assert_eq!(f.pending(UserId(2)).await, pending(2, 1, 2));
    stop(tracker, token).await;

    // Committed past all four: a new member gets nothing again.
    let mut next = f.bus.subscribe(TOPIC, GROUP).await.unwrap();
    assert_eq!(next.poll(10, Duration::from_millis(50)).await.unwrap(), []);
}

#[tokio::test]
async fn a_record_the_store_keeps_refusing_is_parked_alone() {
    let f = Fixture::new().await;
    let mut dead_letters = f.bus.subscribe(&dead_letter_topic(TOPIC), "inspector").await.unwrap();
    let mut batch = entries(1..=3);
    // SQLite cannot hold this seq: a refusal, not an outage.
    let refused = OfflineEntry { seq: Seq(u64::MAX), ..batch[0].clone() };
    batch.insert(1, refused.clone());
    f.publish(&batch).await;
    let (tracker, token) = f.start(f.worker(10, Duration::from_millis(50)), false).await;

    let parked = dead_letters.poll(10, PATIENCE).await.unwrap();
    assert_eq!(parked.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), [encode_offline_event(&refused)]);
    let events = f.wait_for_events(REFUSED_ATTEMPTS as usize + 5).await;
    let refusals = vec!["write 4 refused".to_owned(); REFUSED_ATTEMPTS as usize];
    assert_eq!(events[..REFUSED_ATTEMPTS as usize], refusals[..], "the batch, {REFUSED_ATTEMPTS} times");
    assert_eq!(events.last().unwrap(), "commit 3");
    assert_eq!(f.pending(UserId(2)).await, pending(3, 1, 3), "the good records of the batch are recorded");
    assert!(f.metrics.render().contains("im_offline_dead_letters_total{reason=\"refused\"} 1"));
    stop(tracker, token).await;
}

#[tokio::test]
async fn records_delivered_again_after_a_crash_are_recorded_once() {
    let f = Fixture::new().await;
    f.publish(&entries(1..=5)).await;
    // The first worker writes but its commits fail, as if it crashed right
    // after the write: the group rewinds when it leaves.
    let (tracker, token) = f.start(f.worker(10, Duration::from_millis(20)), true).await;
    assert_eq!(f.wait_for_events(2).await, ["write 5", "commit 4 failed"]);
    stop(tracker, token).await;

    let (tracker, token) = f.start(f.worker(10, Duration::from_millis(20)), false).await;
    assert_eq!(f.wait_for_events(4).await[2..], ["write 5", "commit 4"]);
    assert_eq!(f.metrics.offline_recorded.get(), 10, "written twice");
    assert_eq!(f.pending(UserId(2)).await, pending(5, 1, 5), "stored once");
    stop(tracker, token).await;
}

#[tokio::test]
async fn a_stopping_member_drains_what_is_there() {
    let f = Fixture::new().await;
    // A batch timeout far beyond the test: only the drain writes the second batch.
    let (tracker, token) = f.start(f.worker(3, Duration::from_secs(60)), false).await;
    f.publish(&entries(1..=5)).await;
    assert_eq!(f.wait_for_events(2).await, ["write 3", "commit 2"]);
    stop(tracker, token).await;
    assert_eq!(f.log.events()[2..], ["write 2", "commit 4"]);
}

/// The in-process bus, failing the first `failures` publishes.
struct FlakyBus {
    inner: MemoryBus,
    failures: Mutex<u32>,
}

#[async_trait]
impl Bus for FlakyBus {
    async fn publish_with_headers(
        &self,
        topic: &str,
        key: Bytes,
        payload: Bytes,
        headers: RecordHeaders,
    ) -> BackendResult<()> {
        {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(BackendError::unavailable("broker down"));
            }
        }
        self.inner.publish_with_headers(topic, key, payload, headers).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> BackendResult<Box<dyn BusConsumer>> {
        self.inner.subscribe(topic, group).await
    }
}

#[tokio::test]
async fn failed_publishes_are_counted_and_retried() {
    let bus = Arc::new(FlakyBus { inner: MemoryBus::new(), failures: Mutex::new(3) });
    let mut reader = bus.subscribe(TOPIC, "reader").await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (mut publisher, queue) = OfflinePublisher::new(bus.clone(), TOPIC.into(), metrics.clone(), 100);
    publisher.backoff = Backoff { first: Duration::from_millis(5), max: Duration::from_millis(20) };
    let task = tokio::spawn(publisher.run(CancellationToken::new()));
    let sent = entries(1..=5);
    queue.enqueue(sent.clone());
    drop(queue);
    task.await.unwrap();

    let mut received = Vec::new();
    while received.len() < sent.len() {
        let records = reader.poll(10, PATIENCE).await.unwrap();
        assert!(!records.is_empty(), "only {} of {} published", received.len(), sent.len());
        received.extend(records.into_iter().map(|r| (r.key.clone(), decode_offline_event(&r.payload).unwrap())));
    }
    received.sort_by_key(|(_, entry)| entry.seq);
    assert_eq!(received, sent.iter().map(|e| (key(e), e.clone())).collect::<Vec<_>>());
    assert_eq!(metrics.offline_published.get(), 5);
    assert!(metrics.offline_publish_failures.get() >= 3);
    assert_eq!(metrics.offline_dropped.get(), 0);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let metrics = Arc::new(Metrics::new());
    let (_publisher, queue) = OfflinePublisher::new(Arc::new(MemoryBus::new()), TOPIC.into(), metrics.clone(), 2);
    queue.enqueue(entries(1..=5));
    assert_eq!(metrics.offline_dropped.get(), 3);
}

#[tokio::test]
async fn a_publisher_stopping_gives_up_on_a_bus_that_is_down() {
    let bus = Arc::new(FlakyBus { inner: MemoryBus::new(), failures: Mutex::new(u32::MAX) });
    let metrics = Arc::new(Metrics::new());
    let (publisher, queue) = OfflinePublisher::new(bus, TOPIC.into(), metrics.clone(), 100);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(publisher.run(shutdown.clone()));
    queue.enqueue(entries(1..=4));
    drop(queue);
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task).await.expect("stops").unwrap();
    assert_eq!(metrics.offline_dropped.get(), 4);
}

#[test]
fn backoff_doubles_up_to_its_max() {
    let backoff = Backoff { first: Duration::from_millis(100), max: Duration::from_secs(1) };
    let delays: Vec<_> = (1..=6).map(|retry| backoff.delay(retry).as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
}
