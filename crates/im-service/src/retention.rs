//! Message retention (`database.message_retention_days`,
//! `MESSAGE_RETENTION_DAYS`): a background job that deletes messages whose
//! server time is older than the retention, in bounded steps with a pause
//! between them, through `MessageStore::expire_messages`.
//!
//! - **Every node may run it.** A walk reads a window of messages by primary
//!   key without locks and deletes by primary key; two nodes walking at once
//!   delete each message once (the conformance suite runs two walks side by
//!   side). No leader, no lease.
//! - **It never stalls the send path.** A step is one short transaction of
//!   at most [`RetentionSettings::batch`] rows (on SQLite it takes the one
//!   write connection the pipeline's group commits use); after each step the
//!   job pauses at least as long as the step took, so it holds the store's
//!   write path at most half the time even when the store is slow, and
//!   `im_retention_step_seconds` shows how long steps take.
//! - **Seqs and read state keep their meaning.** Each conversation's newest
//!   message stays whatever its age (see `expire_messages`): `max_seq`, the
//!   conversation list and its order, and the check that a read position is
//!   not past the last message all read the newest stored message. Seqs come
//!   from the ceilings (`seq_ceilings`), never from the messages, so nothing
//!   is reissued; join boundaries come from the allocator too.
//! - **It stops promptly.** The shutdown token ends a step in flight (its
//!   transaction is rolled back) and the pause.

use std::sync::Arc;
use std::time::{Duration, Instant};

use im_core::ports::MessageStore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How the job paces itself.
#[derive(Clone, Copy, Debug)]
pub struct RetentionSettings {
    /// Between the end of one walk and the start of the next.
    pub interval: Duration,
    /// Messages examined per step (one transaction).
    pub batch: u32,
    /// The shortest pause between two steps of a walk; the pause is at least
    /// as long as the step before it.
    pub min_pause: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        // A step of 500 rows is one statement of each kind (below the 512
        // rows of the stores' multi-row statements).
        Self { interval: Duration::from_secs(600), batch: 500, min_pause: Duration::from_millis(20) }
    }
}

/// The clock the cutoff is taken from, in Unix milliseconds (tests move it).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(crate::clock::unix_ms)
}

pub struct RetentionJob {
    pub store: Arc<dyn MessageStore>,
    pub metrics: Arc<Metrics>,
    /// Messages older than this go.
    pub retention: Duration,
    pub settings: RetentionSettings,
    pub clock: Clock,
}

impl RetentionJob {
    /// The job for `days` of retention, or none when `days` is 0 (off).
    pub fn from_days(days: u32, store: Arc<dyn MessageStore>, metrics: Arc<Metrics>) -> Option<Self> {
        (days > 0).then(|| Self {
            store,
            metrics,
            retention: Duration::from_secs(u64::from(days) * 24 * 3600),
            settings: RetentionSettings::default(),
            clock: system_clock(),
        })
    }

    /// Walks the store at start, then every `interval`, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(retention = ?self.retention, interval = ?self.settings.interval, "message retention on");
        loop {
            match self.walk(&stop).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "expired messages deleted"),
                // The store is down or refused: the next walk tries again.
                Err(error) => tracing::warn!(%error, "message retention walk failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }

    /// One walk from the start of the store to its first unexpired message;
    /// returns how many messages it deleted. Ends early, without error, when
    /// `stop` is cancelled.
    pub async fn walk(&self, stop: &CancellationToken) -> Result<u64, im_core::error::BackendError> {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let before_ms = (self.clock)().saturating_sub(retention_ms);
        let (mut after, mut deleted) = (0, 0);
        loop {
            let started = Instant::now();
            let step = tokio::select! {
                () = stop.cancelled() => return Ok(deleted),
                step = self.store.expire_messages(before_ms, after, self.settings.batch) => step?,
            };
            let took = started.elapsed();
            self.metrics.retention_step_seconds.observe(took.as_secs_f64());
            self.metrics.messages_expired.inc_by(step.deleted);
            deleted += step.deleted;
            if step.done {
                return Ok(deleted);
            }
            after = step.next;
            tokio::select! {
                () = stop.cancelled() => return Ok(deleted),
                () = tokio::time::sleep(took.max(self.settings.min_pause)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use bytes::Bytes;
    use im_backends::SqliteStore;
    use im_core::{ClientMsgId, ConversationId, MessageId, NewMessage, Seq, UserId};

    use super::*;

    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn message(conversation: ConversationId, seq: u64, server_time_ms: i64) -> NewMessage {
        NewMessage {
            msg_id: MessageId(seq),
            conversation,
            seq: Seq(seq),
            sender: UserId(1),
            client_msg_id: ClientMsgId::parse(&format!("{conversation}-{seq}")).unwrap(),
            body: Bytes::from_static(b"x"),
            content_type: "text/plain".into(),
            server_time_ms,
            sealed_with: None,
        }
    }

    /// A job over a fresh SQLite store whose clock the test moves.
    async fn job(batch: u32) -> (RetentionJob, Arc<SqliteStore>, Arc<AtomicI64>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("im.db")).await.unwrap());
        let now = Arc::new(AtomicI64::new(100 * DAY_MS));
        let clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst)) as Clock
        };
        let mut job = RetentionJob::from_days(30, store.clone(), Arc::new(Metrics::new())).unwrap();
        job.clock = clock;
        job.settings = RetentionSettings { interval: Duration::from_millis(50), batch, min_pause: Duration::ZERO };
        (job, store, now, dir)
    }

    #[test]
    fn zero_days_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = Arc::new(SqliteStore::open(&dir.path().join("im.db")).await.unwrap());
            assert!(RetentionJob::from_days(0, store.clone(), Arc::new(Metrics::new())).is_none());
            let job = RetentionJob::from_days(7, store, Arc::new(Metrics::new())).unwrap();
            assert_eq!(job.retention, Duration::from_secs(7 * 86_400));
        });
    }

    #[tokio::test]
    async fn retention_walk_deletes_what_is_older_than_the_retention_in_steps_and_counts_it() {
        let (job, store, now, _dir) = job(4).await;
        let (ab, ac) =
            (ConversationId::private(UserId(1), UserId(2)).unwrap(), ConversationId::Group(im_core::GroupId(9)));
        // 40 and 31 days old, then 29 and 1 day old, at "day 100".
        let mut batch = Vec::new();
        for seq in 1..=10 {
            batch.push(message(ab, seq, 60 * DAY_MS + seq as i64));
        }
        for seq in 1..=3 {
            batch.push(message(ac, seq, 69 * DAY_MS + seq as i64));
        }
        batch.push(message(ab, 11, 71 * DAY_MS));
        batch.push(message(ab, 12, 99 * DAY_MS));
        store.append(&batch).await.unwrap();

        let stop = CancellationToken::new();
        // ab 1-9 (10 stays: the last expired one before the young 11), ac 1-2.
        assert_eq!(job.walk(&stop).await.unwrap(), 9 + 2);
        assert_eq!(job.metrics.messages_expired.get(), 11);
        let seqs = |page: im_core::message::Page| page.messages.iter().map(|m| m.seq.0).collect::<Vec<_>>();
        assert_eq!(seqs(store.fetch(ab, Seq::ZERO, 100).await.unwrap()), [10, 11, 12]);
        assert_eq!(seqs(store.fetch(ac, Seq::ZERO, 100).await.unwrap()), [3]);
        // 15 messages, 4 per step: the fourth step meets seq 11.
        let text = job.metrics.render();
        assert!(text.contains("im_retention_step_seconds_count 4"), "{text}");
        assert!(text.contains("im_messages_expired_total 11"), "{text}");

        // Two days later seq 11 is past the retention too: 10 goes.
        now.fetch_add(2 * DAY_MS, Ordering::SeqCst);
        assert_eq!(job.walk(&stop).await.unwrap(), 1);
        assert_eq!(seqs(store.fetch(ab, Seq::ZERO, 100).await.unwrap()), [11, 12]);
        // Long after, only the newest stays.
        now.fetch_add(365 * DAY_MS, Ordering::SeqCst);
        assert_eq!(job.walk(&stop).await.unwrap(), 1);
        assert_eq!(job.walk(&stop).await.unwrap(), 0);
        assert_eq!(seqs(store.fetch(ab, Seq::ZERO, 100).await.unwrap()), [12]);
        assert_eq!(store.max_seq(ab).await.unwrap(), Seq(12));
    }

    #[tokio::test]
    async fn retention_job_runs_every_interval_and_stops_promptly() {
        let (job, store, now, _dir) = job(500).await;
        let ab = ConversationId::private(UserId(1), UserId(2)).unwrap();
        store
            .append(&[message(ab, 1, 10 * DAY_MS), message(ab, 2, 11 * DAY_MS), message(ab, 3, 99 * DAY_MS)])
            .await
            .unwrap();
        let metrics = job.metrics.clone();
        let stop = CancellationToken::new();
        let running = tokio::spawn(job.run(stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.messages_expired.get() < 1 {
            assert!(Instant::now() < deadline, "the first walk did not run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Later walks of the same job take what expires later (2 and 3).
        store.append(&[message(ab, 4, 99 * DAY_MS + 1)]).await.unwrap();
        now.fetch_add(60 * DAY_MS, Ordering::SeqCst);
        while metrics.messages_expired.get() < 3 {
            assert!(Instant::now() < deadline, "no later walk ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopping = Instant::now();
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), running).await.expect("stops within a second").unwrap();
        assert!(stopping.elapsed() < Duration::from_secs(1));
        assert_eq!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().messages.len(), 1);
    }
}
