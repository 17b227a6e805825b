//! What an append costs the SQLite store per message, for batches of 1, 64
//! and 512 messages of 100-byte bodies spread over many conversations (as a
//! group commit of a busy server sees them). Every batch is one fsynced
//! transaction, so wall time includes the disk's fsync latency.
//!
//! After criterion's wall-clock figures, the bench prints CPU time per
//! message (all threads of the process: the caller and SQLite's worker),
//! which is what the server's per-message budget is about.
//!
//! Each measurement starts from an empty database. The cost per message
//! grows with the database: the `(sender, client_msg_id)` unique index takes
//! its keys in no useful order, so its working set is the whole index.
//!
//! `cargo bench -p im-backends --bench sqlite_append`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use im_backends::SqliteStore;
use im_core::ports::MessageStore;
use im_core::{ClientMsgId, ConversationId, MessageId, NewMessage, Seq, UserId};

const BATCH_SIZES: [u64; 3] = [1, 64, 512];
const CONVERSATIONS: u64 = 1000;
const BODY: [u8; 100] = [b'x'; 100];

/// Messages with fresh ids and keys, round robin over the conversations.
struct Messages {
    next: u64,
    seqs: Vec<u64>,
}

impl Messages {
    fn new() -> Self {
        Self { next: 0, seqs: vec![0; CONVERSATIONS as usize] }
    }

    fn batch(&mut self, size: u64) -> Vec<NewMessage> {
        (0..size)
            .map(|_| {
                self.next += 1;
                let pair = self.next % CONVERSATIONS;
                let (sender, recipient) = (UserId(2 * pair + 1), UserId(2 * pair + 2));
                self.seqs[pair as usize] += 1;
                NewMessage {
                    msg_id: MessageId(self.next),
                    conversation: ConversationId::private(sender, recipient).unwrap(),
                    seq: Seq(self.seqs[pair as usize]),
                    sender,
                    client_msg_id: ClientMsgId::parse(&format!("bench-{}", self.next)).unwrap(),
                    body: Bytes::from_static(&BODY),
                    content_type: "text/plain".to_owned(),
                    server_time_ms: self.next as i64,
                    sealed_with: None,
                }
            })
            .collect()
    }
}

/// CPU time of the whole process so far, from /proc (Linux; clock ticks of
/// 10 ms, so measure over seconds).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux only)");
    // Fields after the command name (which may hold spaces) start at state.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

struct Bench {
    runtime: tokio::runtime::Runtime,
    store: Arc<SqliteStore>,
    messages: Messages,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(runtime.block_on(SqliteStore::open(&dir.path().join("bench.db"))).unwrap());
        Self { runtime, store, messages: Messages::new(), _dir: dir }
    }

    /// Appends `batches` (built beforehand, outside the measurement) and
    /// returns the wall time taken.
    fn append_all(&self, batches: &[Vec<NewMessage>]) -> Duration {
        self.runtime.block_on(async {
            let started = Instant::now();
            for batch in batches {
                self.store.append(batch).await.unwrap();
            }
            started.elapsed()
        })
    }
}

fn wall_clock(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("sqlite_append");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for size in BATCH_SIZES {
        let mut bench = Bench::new();
        group.throughput(Throughput::Elements(size));
        group.bench_with_input(BenchmarkId::new("batch", size), &size, |b, &size| {
            b.iter_custom(|iters| {
                let batches: Vec<_> = (0..iters).map(|_| bench.messages.batch(size)).collect();
                bench.append_all(&batches)
            })
        });
    }
    group.finish();
}

fn cpu_per_message() {
    for size in BATCH_SIZES {
        let mut bench = Bench::new();
        // About 20k messages, at least 200 batches: seconds of work.
        let batches: Vec<_> = (0..(20_000 / size).max(200)).map(|_| bench.messages.batch(size)).collect();
        let count = batches.len() as u64 * size;
        let cpu_before = process_cpu();
        let wall = bench.append_all(&batches);
        let cpu = process_cpu() - cpu_before;
        println!(
            "sqlite_append batch={size:<4} {count} messages: wall {:.1} µs/message, cpu {:.1} µs/message",
            wall.as_secs_f64() * 1e6 / count as f64,
            cpu.as_secs_f64() * 1e6 / count as f64,
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    wall_clock(&mut criterion);
    // `cargo test --benches` runs each benchmark once as a smoke test.
    if !std::env::args().any(|arg| arg == "--test" || arg == "--list") {
        cpu_per_message();
    }
    criterion.final_summary();
}
