//! What a step of the retention walk (`MessageStore::expire_messages`, 500
//! messages) costs, and what it does to appends running beside it: the
//! figures behind the retention job's batch size and pause (im-service
//! `retention.rs`, docs/operations.md).
//!
//! Fills a fresh store with 100,000 expired messages over 1,000
//! conversations (or CONVERSATIONS: 10 makes them 10,000 seqs deep) and 10,000 young ones, measures appends of 64 young
//! messages alone, then the same appends while one walk deletes the expired
//! messages with the job's pacing (a pause at least as long as each step,
//! 20 ms at least).
//!
//! `cargo bench -p im-backends --bench retention_step -- sqlite [STEP [CONVERSATIONS]]`
//! (STEP: messages per step, 500 by default)
//! `cargo bench -p im-backends --bench retention_step -- mysql [STEP [CONVERSATIONS]]` (MariaDB or
//! MySQL at 127.0.0.1:3306 as root, or `IM_TEST_MYSQL_HOST`, `_USER`,
//! `_PASSWORD`; a database of its own, dropped at the end)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use im_backends::{MysqlStore, SqliteStore};
use im_core::ports::MessageStore;
use im_core::{ClientMsgId, ConversationId, MessageId, NewMessage, Seq, UserId};

const EXPIRED: u64 = 100_000;
const YOUNG: u64 = 10_000;
const APPEND_BATCH: u64 = 64;
const APPENDS: usize = 300;
const BODY: [u8; 100] = [b'x'; 100];
const CUTOFF_MS: i64 = 1_000_000_000;

struct Messages {
    next: u64,
    seqs: Vec<u64>,
    conversations: u64,
}

impl Messages {
    fn batch(&mut self, size: u64, server_time_ms: i64) -> Vec<NewMessage> {
        (0..size)
            .map(|_| {
                self.next += 1;
                let pair = self.next % self.conversations;
                let (sender, recipient) = (UserId(2 * pair + 1), UserId(2 * pair + 2));
                self.seqs[pair as usize] += 1;
                NewMessage {
                    msg_id: MessageId(self.next),
                    conversation: ConversationId::private(sender, recipient).unwrap(),
                    seq: Seq(self.seqs[pair as usize]),
                    sender,
                    client_msg_id: ClientMsgId::parse(&format!("ret-{}", self.next)).unwrap(),
                    body: Bytes::from_static(&BODY),
                    content_type: "text/plain".to_owned(),
                    server_time_ms,
                    sealed_with: None,
                }
            })
            .collect()
    }
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    println!(
        "{name:<28} n={:<5} p50={:>8.2?} p99={:>8.2?} max={:>8.2?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

async fn appends(store: &dyn MessageStore, messages: &mut Messages, count: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(count);
    for _ in 0..count {
        let batch = messages.batch(APPEND_BATCH, CUTOFF_MS + 1);
        let started = Instant::now();
        store.append(&batch).await.unwrap();
        took.push(started.elapsed());
    }
    took
}

async fn measure(store: Arc<dyn MessageStore>, step_size: u32, conversations: u64) {
    let mut messages = Messages { next: 0, seqs: vec![0; conversations as usize], conversations };
    for _ in 0..EXPIRED / 500 {
        store.append(&messages.batch(500, 1_000)).await.unwrap();
    }
    for _ in 0..YOUNG / 500 {
        store.append(&messages.batch(500, CUTOFF_MS + 1)).await.unwrap();
    }
    percentiles("append of 64, alone", appends(&*store, &mut messages, APPENDS).await);

    let walking = Arc::new(AtomicBool::new(true));
    let walk = {
        let (store, walking) = (store.clone(), walking.clone());
        tokio::spawn(async move {
            let (mut after, mut deleted, mut steps) = (0, 0, Vec::new());
            let started = Instant::now();
            loop {
                let begun = Instant::now();
                let step = store.expire_messages(CUTOFF_MS, after, step_size).await.unwrap();
                let took = begun.elapsed();
                steps.push(took);
                deleted += step.deleted;
                if step.done {
                    break;
                }
                after = step.next;
                tokio::time::sleep(took.max(Duration::from_millis(20))).await;
            }
            walking.store(false, Ordering::SeqCst);
            (deleted, steps, started.elapsed())
        })
    };
    let mut during = Vec::new();
    while walking.load(Ordering::SeqCst) {
        during.extend(appends(&*store, &mut messages, 10).await);
    }
    let (deleted, steps, walk_took) = walk.await.unwrap();
    percentiles("append of 64, beside a walk", during);
    percentiles(&format!("step of {step_size}"), steps);
    println!("walk: {deleted} deleted in {walk_took:.1?}");
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() {
    let which = std::env::args().skip(1).find(|a| a == "sqlite" || a == "mysql").unwrap_or_else(|| "sqlite".into());
    let numbers: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let step_size = numbers.first().map_or(500, |&n| n as u32);
    let conversations = numbers.get(1).copied().unwrap_or(1000);
    println!("steps of {step_size}, {conversations} conversations");
    match which.as_str() {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("im.db")).await.unwrap();
            println!("SQLite in {}", dir.path().display());
            measure(Arc::new(store), step_size, conversations).await;
        }
        _ => {
            let config = im_config::DatabaseConfig {
                host: env_or("IM_TEST_MYSQL_HOST", "127.0.0.1:3306"),
                user: env_or("IM_TEST_MYSQL_USER", "root"),
                password: env_or("IM_TEST_MYSQL_PASSWORD", "").into(),
                name: format!("im_bench_retention_{}", std::process::id()),
                ..im_config::DatabaseConfig::default()
            };
            let store = MysqlStore::connect(&config).await.expect("a MySQL/MariaDB server (scripts/servers.sh)");
            println!("MySQL/MariaDB at {}, database {}", config.host, config.name);
            measure(Arc::new(store.clone()), step_size, conversations).await;
            store.close().await;
            let mut conn = {
                use sqlx::Connection;
                let url = format!("mysql://{}@{}/", config.user, config.host);
                sqlx::MySqlConnection::connect(&url).await.unwrap()
            };
            sqlx::raw_sql(&format!("DROP DATABASE `{}`", config.name)).execute(&mut conn).await.unwrap();
        }
    }
}
