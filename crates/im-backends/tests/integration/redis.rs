//! The Redis backends against real servers: the conformance suites on the
//! shared Redis at 127.0.0.1:6379 (scripts/servers.sh starts it), each case
//! under its own key prefix; and the faults of DESIGN.md §4 and G9 — a
//! flush, an old snapshot restored, Redis down — each on a private
//! `redis-server` this file starts on a free port, so the shared one is never
//! flushed or stopped. A test that cannot reach or start Redis panics.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;
use async_trait::async_trait;
use im_backends::conformance::SeqAllocatorHarness;
use im_backends::conformance::fixtures::{private, unique_name, users};
use im_backends::{MemoryCeilingStore, RedisConnection, RedisDedupCache, RedisSeqAllocator, SqliteStore};
use im_config::RedisConfig;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CeilingStore, DedupCache, EpochStore, SeqAllocator};
use im_core::{Ack, ClientMsgId, ConversationId, FirstSend, MessageId, RequestDigest, Seq, UserId};
use tempfile::TempDir;
use tokio::sync::Notify;

use crate::fixtures::free_port;

const SHARED_ADDR: &str = "127.0.0.1:6379";

/// A small interval, so the suites cross many ceilings.
const TEST_INTERVAL: u64 = 7;

fn config(addr: &str) -> RedisConfig {
    RedisConfig {
        addr: addr.to_owned(),
        dial_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_millis(500),
        ..RedisConfig::default()
    }
}

/// A plain connection for what the tests do behind the backends' back.
async fn admin(addr: &str) -> MultiplexedConnection {
    let client = ::redis::Client::open(format!("redis://{addr}/")).expect("a valid Redis URL");
    let connect = tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection());
    match connect.await {
        Ok(Ok(mut con)) => {
            let pong: Result<String, _> = ::redis::cmd("PING").query_async(&mut con).await;
            match pong {
                Ok(_) => con,
                Err(e) => panic!("Redis at {addr} does not answer PING ({e}); start it with scripts/servers.sh"),
            }
        }
        Ok(Err(e)) => panic!("Redis is not reachable at {addr} ({e}); start it with scripts/servers.sh"),
        Err(_) => panic!("Redis at {addr} did not accept a connection within 3 s; start it with scripts/servers.sh"),
    }
}

/// Deletes every key under `prefix`.
/// A SCAN for the keys under `prefix`, a thousand keys looked at per round
/// trip: the shared Redis keeps what earlier runs left (about 90,000 keys
/// after a day of runs), and SCAN's default of 10 per call turned each
/// clean-up into thousands of round trips (a case went from 0.4 to 6.4 s).
fn keys_under(prefix: &str) -> ::redis::ScanOptions {
    ::redis::ScanOptions::default().with_pattern(format!("{prefix}:*")).with_count(1000)
}

async fn delete_keys(con: &mut MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = {
        let mut iter: ::redis::AsyncIter<String> = con.scan_options(keys_under(prefix)).await.unwrap();
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
        keys
    };
    if !keys.is_empty() {
        let _: () = con.del(keys).await.unwrap();
    }
}

/// Removes a case's keys from the shared Redis when the case ends.
pub struct SharedKeys(String);

impl Drop for SharedKeys {
    fn drop(&mut self) {
        let Ok(client) = ::redis::Client::open(format!("redis://{SHARED_ADDR}/")) else { return };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else { return };
        let keys: Vec<String> = ::redis::Commands::scan_options::<String>(&mut con, keys_under(&self.0))
            .map(|iter| iter.filter_map(Result::ok).collect())
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = ::redis::Commands::del(&mut con, keys);
        }
    }
}

/// `RedisSeqAllocator`s on the shared Redis over one durable store `S`
/// (ceilings and epochs). A start is a new allocator, as after a process
/// restart; with `forget_counters` it also finds Redis without the counters
/// (as after a flush).
pub struct RedisAllocators<S> {
    store: Arc<S>,
    prefix: String,
    forget_counters: bool,
}

#[async_trait]
impl<S: CeilingStore + EpochStore> SeqAllocatorHarness for RedisAllocators<S> {
    async fn start(&self) -> BackendResult<Arc<dyn SeqAllocator>> {
        if self.forget_counters {
            delete_keys(&mut admin(SHARED_ADDR).await, &self.prefix).await;
        }
        let redis = RedisConnection::open(&config(SHARED_ADDR))?;
        let allocator =
            RedisSeqAllocator::new(redis, self.store.clone(), self.store.clone(), TEST_INTERVAL, &self.prefix).await?;
        Ok(Arc::new(allocator))
    }

    fn ceilings(&self) -> &dyn CeilingStore {
        &*self.store
    }

    fn interval(&self) -> u64 {
        TEST_INTERVAL
    }
}

async fn allocators<S: CeilingStore + EpochStore>(
    store: S,
    forget_counters: bool,
) -> (Arc<RedisAllocators<S>>, SharedKeys) {
    admin(SHARED_ADDR).await;
    let prefix = unique_name("im-test-seq");
    let keys = SharedKeys(prefix.clone());
    (Arc::new(RedisAllocators { store: Arc::new(store), prefix, forget_counters }), keys)
}

pub async fn redis_allocators_over_memory() -> (Arc<RedisAllocators<MemoryCeilingStore>>, SharedKeys) {
    allocators(MemoryCeilingStore::new(), false).await
}

pub async fn redis_allocators_losing_counters() -> (Arc<RedisAllocators<MemoryCeilingStore>>, SharedKeys) {
    allocators(MemoryCeilingStore::new(), true).await
}

pub async fn redis_allocators_over_sqlite() -> (Arc<RedisAllocators<SqliteStore>>, (SharedKeys, TempDir)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("im.db")).await.expect("open the SQLite store");
    let (harness, keys) = allocators(store, false).await;
    (harness, (keys, dir))
}

pub async fn redis_dedup() -> (Arc<RedisDedupCache>, SharedKeys) {
    admin(SHARED_ADDR).await;
    let prefix = unique_name("im-test-dedup");
    let redis = RedisConnection::open(&config(SHARED_ADDR)).expect("redis connection");
    (Arc::new(RedisDedupCache::new(redis, Duration::from_secs(600), &prefix)), SharedKeys(prefix))
}

mod redis_seq_allocator_over_memory {
    im_backends::seq_allocator_suite!(super::redis_allocators_over_memory);
}

mod redis_seq_allocator_losing_counters {
    im_backends::seq_allocator_suite!(super::redis_allocators_losing_counters);
}

mod redis_seq_allocator_over_sqlite {
    im_backends::seq_allocator_suite!(super::redis_allocators_over_sqlite);
}

mod redis_dedup_cache {
    im_backends::dedup_cache_suite!(super::redis_dedup);
}

fn ack(seq: u64) -> FirstSend {
    let [a, b] = users();
    let ack = Ack {
        msg_id: MessageId(seq * 10),
        conversation: private(a, b),
        seq: Seq(seq),
        server_time_ms: 1000 + seq as i64,
        body_masked: false,
    };
    FirstSend { ack, digest: Some(RequestDigest(seq)) }
}

/// What only the Redis dedup cache promises: entries expire after the TTL
/// (Redis's own clock), and a value that does not decode is an error, never
/// a miss that would let a resend through the cache.
#[tokio::test]
async fn dedup_entries_carry_the_ttl_and_garbage_is_an_error() {
    let (cache, keys) = redis_dedup().await;
    let mut con = admin(SHARED_ADDR).await;
    let [a] = users();
    let key = ClientMsgId::parse(&unique_name("k")).unwrap();
    cache.put_if_absent(a, &key, ack(1)).await.unwrap();
    let redis_key = format!("{}:{a}:{}", keys.0, key.as_str());
    let ttl_ms: i64 = con.pttl(&redis_key).await.unwrap();
    assert!(ttl_ms > 590_000 && ttl_ms <= 600_000, "TTL {ttl_ms} ms, expected about 600 s");

    let _: () = con.set(&redis_key, "not an ack").await.unwrap();
    assert!(matches!(cache.get(a, &key).await, Err(BackendError::Other(_))));
    assert!(matches!(cache.put_if_absent(a, &key, ack(2)).await, Err(BackendError::Other(_))));

    // A short TTL really expires.
    let short =
        RedisDedupCache::new(RedisConnection::open(&config(SHARED_ADDR)).unwrap(), Duration::from_millis(50), &keys.0);
    let other = ClientMsgId::parse(&unique_name("k")).unwrap();
    short.put_if_absent(a, &other, ack(3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(short.get(a, &other).await.unwrap(), None);
}

// ---------------------------------------------------------------------------
// Faults, on a private redis-server.

/// A `redis-server` of this test alone: a free port, its own dir, no
/// automatic saves. Killed (`-9`) when dropped.
struct PrivateRedis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = free_port();
        let mut server = Self { port, dir: tempfile::tempdir().expect("temp dir"), child: None };
        server.run().await;
        server
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and dir; it loads
    /// `dump.rdb` if the dir has one.
    async fn run(&mut self) {
        assert!(self.child.is_none(), "the private Redis is already running");
        let dir = self.dir.path().to_str().expect("a UTF-8 temp dir").to_owned();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir", &dir])
            .args(["--save", "", "--appendonly", "no", "--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); install it with scripts/servers.sh"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = ::redis::Client::open(format!("redis://{}/", self.addr())).unwrap();
        loop {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                let pong: Result<String, _> = ::redis::cmd("PING").query_async(&mut con).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s (log: {}); see scripts/servers.sh",
                self.port,
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: no shutdown save.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn admin(&self) -> MultiplexedConnection {
        admin(&self.addr()).await
    }

    async fn run_id(&self) -> String {
        let info: String = ::redis::cmd("INFO").arg("server").query_async(&mut self.admin().await).await.unwrap();
        info.lines().find_map(|l| l.strip_prefix("run_id:")).expect("run_id in INFO").trim().to_owned()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn sqlite_store() -> (Arc<SqliteStore>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("im.db")).await.expect("open the SQLite store");
    (Arc::new(store), dir)
}

/// A node's allocator on `addr`, over the shared durable `store`.
async fn node(addr: &str, store: &Arc<SqliteStore>, interval: u64, prefix: &str) -> Arc<RedisSeqAllocator> {
    let redis = RedisConnection::open(&config(addr)).unwrap();
    Arc::new(RedisSeqAllocator::new(redis, store.clone(), store.clone(), interval, prefix).await.unwrap())
}

/// What the tests of one conversation start from: a private Redis, a SQLite
/// store and a key prefix of the test alone, and the conversation of two new
/// users `a` and `b`.
struct OneConversation {
    server: PrivateRedis,
    store: Arc<SqliteStore>,
    _dir: TempDir,
    prefix: String,
    a: UserId,
    ab: ConversationId,
}

impl OneConversation {
    async fn start() -> Self {
        let server = PrivateRedis::start().await;
        let (store, _dir) = sqlite_store().await;
        let prefix = unique_name("seq");
        let [a, b] = users();
        Self { server, store, _dir, prefix, a, ab: private(a, b) }
    }

    /// A node's allocator on the private Redis, over the store.
    async fn node(&self, interval: u64) -> Arc<RedisSeqAllocator> {
        node(&self.server.addr(), &self.store, interval, &self.prefix).await
    }
}

/// A deterministic batch: `len` picks from `conversations`, repeats allowed.
fn batch(conversations: &[ConversationId], rng: &mut u64, len: usize) -> Vec<ConversationId> {
    (0..len)
        .map(|_| {
            *rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            conversations[(*rng >> 33) as usize % conversations.len()]
        })
        .collect()
}

/// Everything handed out, per node, in the order each node received it.
#[derive(Default)]
struct Handouts {
    per_node: Vec<Vec<(ConversationId, Seq)>>,
}

impl Handouts {
    fn new(nodes: usize) -> Self {
        Self { per_node: vec![Vec::new(); nodes] }
    }

    fn record(&mut self, node: usize, batch: &[ConversationId], seqs: &[Seq]) {
        assert_eq!(batch.len(), seqs.len());
        self.per_node[node].extend(batch.iter().copied().zip(seqs.iter().copied()));
    }

    /// Asserts the contract: per conversation every seq distinct, and
    /// strictly increasing in each node's order; returns the count of seqs
    /// and the largest gap between neighbours of one conversation.
    fn check(&self) -> (usize, u64) {
        let mut all: HashMap<ConversationId, HashSet<Seq>> = HashMap::new();
        for (node, handed) in self.per_node.iter().enumerate() {
            let mut last: HashMap<ConversationId, Seq> = HashMap::new();
            for &(conversation, seq) in handed {
                if let Some(&before) = last.get(&conversation) {
                    assert!(seq > before, "node {node}: {conversation} went from {before} to {seq}");
                }
                last.insert(conversation, seq);
                assert!(all.entry(conversation).or_default().insert(seq), "{conversation}: seq {seq} handed out twice");
            }
        }
        let mut largest_gap = 0;
        for seqs in all.values() {
            let mut sorted: Vec<u64> = seqs.iter().map(|s| s.0).collect();
            sorted.sort_unstable();
            largest_gap = sorted.windows(2).map(|w| w[1] - w[0]).fold(largest_gap, u64::max);
        }
        (all.values().map(HashSet::len).sum(), largest_gap)
    }
}

/// Calls `next_seqs` until it succeeds (Redis coming back); every failure must
/// be `Unavailable`. Returns the seqs and the number of failed calls.
async fn until_served(allocator: &RedisSeqAllocator, batch: &[ConversationId]) -> (Vec<Seq>, u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failures = 0;
    loop {
        match allocator.next_seqs(batch).await {
            Ok(seqs) => return (seqs, failures),
            Err(BackendError::Unavailable(_)) if Instant::now() < deadline => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("allocation failed for good: {e}"),
        }
    }
}

/// `rounds` times a batch of 5 on each node in turn, waiting out Redis
/// being away; returns how many calls failed meanwhile.
async fn allocate_rounds(
    nodes: &[Arc<RedisSeqAllocator>],
    conversations: &[ConversationId],
    rng: &mut u64,
    handouts: &mut Handouts,
    rounds: usize,
) -> u32 {
    let mut failures = 0;
    for _ in 0..rounds {
        for (n, allocator) in nodes.iter().enumerate() {
            let batch = batch(conversations, rng, 5);
            let (seqs, failed) = until_served(allocator, &batch).await;
            failures += failed;
            handouts.record(n, &batch, &seqs);
        }
    }
    failures
}

/// (a) Two nodes allocate concurrently for the same conversations while
/// Redis is flushed twice under them: every seq is distinct per conversation
/// and increases in each node's order; the flushes cost bounded gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_through_flushes_never_repeat_a_seq() {
    const NODES: usize = 2;
    const BATCHES: usize = 400;
    const INTERVAL: u64 = 50;
    let server = PrivateRedis::start().await;
    let (store, _dir) = sqlite_store().await;
    let prefix = unique_name("seq");
    let conversations: Vec<ConversationId> = {
        let [a, b, c, d] = users();
        vec![private(a, b), private(a, c), private(a, d), private(b, c), private(c, d)]
    };
    let progress = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..NODES {
        let allocator = node(&server.addr(), &store, INTERVAL, &prefix).await;
        let (conversations, progress) = (conversations.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = n as u64 + 1;
            let mut handed = Vec::new();
            for i in 0..BATCHES {
                let batch = batch(&conversations, &mut rng, 1 + i % 13);
                let seqs = allocator.next_seqs(&batch).await.unwrap();
                handed.push((batch, seqs));
                progress.fetch_add(1, Ordering::Relaxed);
            }
            handed
        }));
    }
    let mut flushed_at = Vec::new();
    let mut con = server.admin().await;
    for threshold in [NODES * BATCHES / 3, 2 * NODES * BATCHES / 3] {
        while progress.load(Ordering::Relaxed) < threshold {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _: () = ::redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
        flushed_at.push(progress.load(Ordering::Relaxed));
    }
    let mut handouts = Handouts::new(NODES);
    for (n, task) in tasks.into_iter().enumerate() {
        for (batch, seqs) in task.await.unwrap() {
            handouts.record(n, &batch, &seqs);
        }
    }
    let (count, largest_gap) = handouts.check();
    println!(
        "{NODES} nodes, {} batches, flushes after {flushed_at:?}: {count} seqs over {} conversations, none repeated, largest gap {largest_gap}",
        NODES * BATCHES,
        conversations.len()
    );
    assert!(flushed_at.iter().all(|&at| at < NODES * BATCHES), "a flush came after the run");
    assert!(largest_gap >= 2, "the flushes left no gap: were they in the middle of the run?");
    assert!(largest_gap <= 2 * INTERVAL, "gap {largest_gap} above twice the interval {INTERVAL}");
}

/// (b) An old snapshot restored under running nodes: the restored counters
/// moved back, the nodes notice the new Redis process, bump the epoch, and
/// restart every counter from its stored ceiling, so no seq is repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_snapshot_restored_under_running_nodes_never_repeats_a_seq() {
    // An interval bigger than everything handed out after the snapshot: the
    // restored counters are under their ceilings and would repeat seqs.
    const INTERVAL: u64 = 1000;
    let mut server = PrivateRedis::start().await;
    let (store, _dir) = sqlite_store().await;
    let prefix = unique_name("seq");
    let conversations: Vec<ConversationId> = {
        let [a, b, c] = users();
        vec![private(a, b), private(a, c), private(b, c)]
    };
    let nodes =
        [node(&server.addr(), &store, INTERVAL, &prefix).await, node(&server.addr(), &store, INTERVAL, &prefix).await];
    let mut handouts = Handouts::new(nodes.len());
    let mut rng = 7;

    allocate_rounds(&nodes, &conversations, &mut rng, &mut handouts, 10).await;
    let old_epoch = nodes[0].epoch();
    let _: () = ::redis::cmd("SAVE").query_async(&mut server.admin().await).await.unwrap();
    let snapshot = server.dir.path().join("old.rdb");
    std::fs::copy(server.dir.path().join("dump.rdb"), &snapshot).unwrap();
    allocate_rounds(&nodes, &conversations, &mut rng, &mut handouts, 20).await;
    let run_before = server.run_id().await;

    server.kill();
    std::fs::copy(&snapshot, server.dir.path().join("dump.rdb")).unwrap();
    server.run().await;
    assert_ne!(server.run_id().await, run_before);
    // The restored counter really moved back.
    let restored: u64 =
        server.admin().await.hget(nodes[0].counter_key(old_epoch, conversations[0]), "n").await.unwrap();
    let highest =
        handouts.per_node.iter().flatten().filter(|(c, _)| *c == conversations[0]).map(|(_, s)| s.0).max().unwrap();
    assert!(restored < highest, "the snapshot's counter {restored} is not behind {highest}");

    // The same allocator objects: they reconnect by themselves.
    let failures = allocate_rounds(&nodes, &conversations, &mut rng, &mut handouts, 20).await;
    let (count, largest_gap) = handouts.check();
    let new_epoch = store.current_epoch(&prefix).await.unwrap();
    println!(
        "snapshot restored: epoch {old_epoch} -> {new_epoch}, {failures} calls failed while Redis was away, {count} seqs, none repeated, largest gap {largest_gap}"
    );
    assert!(new_epoch > old_epoch, "the epoch was not bumped");
    assert!(nodes.iter().all(|n| n.epoch() == new_epoch));
}

/// (c) Redis down: calls fail fast as unavailable, also on an allocator
/// created while it is down; once it is back they succeed again, on the same
/// objects, and seqs continue above everything handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_redis_fails_fast_and_recovers_by_itself() {
    const INTERVAL: u64 = 100;
    // dial + read + write timeouts of `config`, and slack for a loaded machine.
    const FAST: Duration = Duration::from_millis(2500);
    let mut test = OneConversation::start().await;
    let (a, ab) = (test.a, test.ab);
    let allocator = test.node(INTERVAL).await;
    let redis = RedisConnection::open(&config(&test.server.addr())).unwrap();
    let dedup = RedisDedupCache::new(redis.clone(), Duration::from_secs(60), unique_name("dedup"));
    let key = ClientMsgId::parse("k1").unwrap();
    let before = allocator.next_seqs(&[ab, ab, ab]).await.unwrap();
    dedup.put_if_absent(a, &key, ack(3)).await.unwrap();

    test.server.kill();
    let late = test.node(INTERVAL).await;
    let mut failed_fast = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let outcomes = [
            timed(allocator.next_seq(ab)).await,
            timed(late.next_seq(ab)).await,
            timed(async { dedup.get(a, &key).await.map(|_| Seq::ZERO) }).await,
            timed(async { dedup.put_if_absent(a, &key, ack(4)).await.map(|_| Seq::ZERO) }).await,
            timed(async { redis.ping().await.map(|()| Seq::ZERO) }).await,
        ];
        for (outcome, took) in outcomes {
            assert!(matches!(outcome, Err(BackendError::Unavailable(_))), "{outcome:?} while Redis was down");
            assert!(took < FAST, "a call took {took:?} to fail while Redis was down");
            slowest = slowest.max(took);
            failed_fast += 1;
        }
    }

    test.server.run().await;
    let (after, failures) = until_served(&allocator, &[ab]).await;
    let (on_late, late_failures) = until_served(&late, &[ab]).await;
    let recovered = Instant::now() + Duration::from_secs(5);
    let fresh = ack(5);
    while dedup.put_if_absent(a, &key, fresh).await.is_err() {
        assert!(Instant::now() < recovered, "the dedup cache did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "Redis down: {failed_fast} calls failed as unavailable, the slowest in {slowest:?}; back: served after {failures} + {late_failures} failed calls, seqs {before:?} then {after:?}, {on_late:?}"
    );
    assert!(after[0] > before[2] && on_late[0] > after[0], "seqs went back after Redis came back");
    // The restarted Redis lost its data; the cache starts empty.
    assert_eq!(dedup.get(a, &key).await.unwrap(), Some(fresh));
}

async fn timed<T>(call: impl Future<Output = BackendResult<T>>) -> (BackendResult<T>, Duration) {
    let started = Instant::now();
    let outcome = call.await;
    (outcome, started.elapsed())
}

/// Counts the ceiling store's calls.
#[derive(Default)]
struct CountingStore {
    inner: MemoryCeilingStore,
    loads: AtomicU64,
    raises: AtomicU64,
}

#[async_trait]
impl CeilingStore for CountingStore {
    async fn load_ceilings(&self, conversations: &[ConversationId]) -> BackendResult<Vec<Seq>> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.inner.load_ceilings(conversations).await
    }

    async fn raise_ceilings(&self, raises: &[(ConversationId, Seq)]) -> BackendResult<()> {
        self.raises.fetch_add(1, Ordering::Relaxed);
        self.inner.raise_ceilings(raises).await
    }
}

#[async_trait]
impl EpochStore for CountingStore {
    async fn current_epoch(&self, scope: &str) -> BackendResult<u64> {
        self.inner.current_epoch(scope).await
    }

    async fn bump_epoch(&self, scope: &str, seen: u64) -> BackendResult<u64> {
        self.inner.bump_epoch(scope, seen).await
    }
}

/// Batch-first: a batch of many conversations costs one script call while
/// its counters have room, and one load, one raise and two script calls when
/// they are new or run out.
#[tokio::test]
async fn a_batch_costs_one_round_trip_and_at_most_one_load_and_one_raise() {
    const INTERVAL: u64 = 10;
    let server = PrivateRedis::start().await;
    let store = Arc::new(CountingStore::default());
    let redis = RedisConnection::open(&config(&server.addr())).unwrap();
    let allocator =
        RedisSeqAllocator::new(redis, store.clone(), store.clone(), INTERVAL, unique_name("seq")).await.unwrap();
    let conversations: Vec<ConversationId> = (0..50)
        .map(|_| {
            let [a, b] = users();
            private(a, b)
        })
        .collect();
    // Loads the script into this server first.
    let [a, b] = users();
    allocator.next_seq(private(a, b)).await.unwrap();
    let mut con = server.admin().await;

    let mut cost = async |batch: &[ConversationId]| {
        store.loads.store(0, Ordering::Relaxed);
        store.raises.store(0, Ordering::Relaxed);
        let _: () = ::redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut con).await.unwrap();
        let seqs = allocator.next_seqs(batch).await.unwrap();
        let stats: String = ::redis::cmd("INFO").arg("commandstats").query_async(&mut con).await.unwrap();
        let scripts: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap());
        (seqs, scripts, store.loads.load(Ordering::Relaxed), store.raises.load(Ordering::Relaxed))
    };

    // New conversations: one load of their floors, one raise, two scripts.
    let (seqs, scripts, loads, raises) = cost(&conversations).await;
    assert_eq!(seqs, vec![Seq(1); 50]);
    assert_eq!((scripts, loads, raises), (2, 1, 1));
    // Room under every ceiling: one script, nothing from the store.
    let twice: Vec<ConversationId> = conversations.iter().flat_map(|&c| [c, c]).collect();
    let (seqs, scripts, loads, raises) = cost(&twice).await;
    assert_eq!(&seqs[..2], &[Seq(2), Seq(3)]);
    assert_eq!((scripts, loads, raises), (1, 0, 0));
    // Every counter runs out: one raise for all of them.
    let many: Vec<ConversationId> = conversations.iter().flat_map(|&c| [c; 10]).collect();
    let (seqs, scripts, loads, raises) = cost(&many).await;
    assert_eq!(&seqs[..10], &(4..14).map(Seq).collect::<Vec<_>>()[..]);
    assert_eq!((scripts, loads, raises), (2, 0, 1));
    let ceilings = store.load_ceilings(&conversations).await.unwrap();
    assert!(ceilings.iter().all(|&c| c == Seq(20)), "{ceilings:?}");
    println!("50 conversations: new 2 scripts/1 load/1 raise, warm 1 script, out of room 2 scripts/1 raise");
}

/// A ceiling store that, once armed, answers its next load with what it read
/// only when the test releases it: a node "slow" between reading a floor and
/// using it.
#[derive(Default)]
struct PausingStore {
    inner: MemoryCeilingStore,
    armed: AtomicBool,
    loaded: Notify,
    release: Notify,
}

#[async_trait]
impl CeilingStore for PausingStore {
    async fn load_ceilings(&self, conversations: &[ConversationId]) -> BackendResult<Vec<Seq>> {
        let stored = self.inner.load_ceilings(conversations).await;
        if self.armed.swap(false, Ordering::AcqRel) {
            self.loaded.notify_one();
            self.release.notified().await;
        }
        stored
    }

    async fn raise_ceilings(&self, raises: &[(ConversationId, Seq)]) -> BackendResult<()> {
        self.inner.raise_ceilings(raises).await
    }
}

#[async_trait]
impl EpochStore for PausingStore {
    async fn current_epoch(&self, scope: &str) -> BackendResult<u64> {
        self.inner.current_epoch(scope).await
    }

    async fn bump_epoch(&self, scope: &str, seen: u64) -> BackendResult<u64> {
        self.inner.bump_epoch(scope, seen).await
    }
}

/// The race the marker closes: node A reads a conversation's floor, node B
/// starts the counter and hands out seqs, Redis is flushed, and only then
/// does A try to start the counter from its (now stale) floor. A must not:
/// its floor predates seqs that were handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floor_read_before_a_flush_is_never_used_after_it() {
    let server = PrivateRedis::start().await;
    let store = Arc::new(PausingStore::default());
    let prefix = unique_name("seq");
    let open = async || {
        let redis = RedisConnection::open(&config(&server.addr())).unwrap();
        Arc::new(RedisSeqAllocator::new(redis, store.clone(), store.clone(), 10, &prefix).await.unwrap())
    };
    let (a, b) = (open().await, open().await);
    let [x, y] = users();
    let xy = private(x, y);

    store.armed.store(true, Ordering::Release);
    let slow = tokio::spawn({
        let a = a.clone();
        async move { a.next_seq(xy).await.unwrap() }
    });
    store.loaded.notified().await;
    let mut by_b = Vec::new();
    for _ in 0..5 {
        by_b.push(b.next_seq(xy).await.unwrap());
    }
    let _: () = ::redis::cmd("FLUSHALL").query_async(&mut server.admin().await).await.unwrap();
    store.release.notify_one();
    let by_a = slow.await.unwrap();
    let after = b.next_seq(xy).await.unwrap();
    println!("B handed out {by_b:?}, then after the flush A got {by_a}, then B {after}");
    assert_eq!(by_b, (1..=5).map(Seq).collect::<Vec<_>>());
    assert!(by_a > Seq(5), "A started the counter from a floor read before the flush: {by_a}");
    assert!(after > by_a);
}

/// `current_seq` when Redis lost the counters (a flush) or holds counters it
/// must not trust (restarted from a snapshot older than the last seqs): it
/// answers from the stored ceiling, never from the lost or stale counter,
/// so the boundary is at least every seq handed out, and below the next.
#[tokio::test]
async fn current_seq_is_not_fooled_by_a_flush_or_an_old_snapshot() {
    let mut test = OneConversation::start().await;
    let ab = test.ab;
    let allocator = test.node(10).await;
    for expected in 1..=3 {
        assert_eq!(allocator.next_seq(ab).await.unwrap(), Seq(expected));
    }
    assert_eq!(allocator.current_seq(ab).await.unwrap(), Seq(3));

    let _: () = ::redis::cmd("FLUSHALL").query_async(&mut test.server.admin().await).await.unwrap();
    let boundary = allocator.current_seq(ab).await.unwrap();
    assert_eq!(boundary, Seq(10), "after a flush: the stored ceiling");
    let next = allocator.next_seq(ab).await.unwrap();
    assert!(next > boundary, "seq {next} handed out after current_seq answered {boundary}");

    // A snapshot that has the counter at `next`, then seqs it does not have.
    let _: () = ::redis::cmd("SAVE").query_async(&mut test.server.admin().await).await.unwrap();
    let mut last = next;
    for _ in 0..5 {
        last = allocator.next_seq(ab).await.unwrap();
    }
    test.server.kill();
    test.server.run().await;
    let stale: String =
        test.server.admin().await.hget(allocator.counter_key(allocator.epoch(), ab), "n").await.unwrap();
    assert_eq!(stale, next.0.to_string(), "the restored counter is behind");
    // The first call after the restart may find the old connection broken.
    let deadline = Instant::now() + Duration::from_secs(15);
    let boundary = loop {
        match allocator.current_seq(ab).await {
            Ok(boundary) => break boundary,
            Err(BackendError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("current_seq failed for good: {e}"),
        }
    };
    assert!(boundary >= last, "current_seq {boundary} trusted a stale counter below seq {last}");
    let after = allocator.next_seq(ab).await.unwrap();
    assert!(after > boundary, "seq {after} handed out after current_seq answered {boundary}");
}

/// `current_seq` reads the counter of the epoch Redis allocates in: a node
/// whose epoch was bumped in the store reads the old epoch's counter while
/// nodes still allocate there, and a node behind a bump reads the new one.
#[tokio::test]
async fn current_seq_reads_the_epoch_redis_allocates_in() {
    let test = OneConversation::start().await;
    let ab = test.ab;
    let old = test.node(10).await;
    assert_eq!(old.next_seq(ab).await.unwrap(), Seq(1));
    test.store.bump_epoch(&test.prefix, old.epoch()).await.unwrap();
    let new = test.node(10).await;
    assert!(new.epoch() > old.epoch());
    // No script ran in the bumped epoch: the old node still allocates.
    assert_eq!(new.current_seq(ab).await.unwrap(), Seq(1));
    assert_eq!(old.next_seq(ab).await.unwrap(), Seq(2));
    assert_eq!(new.current_seq(ab).await.unwrap(), Seq(2));
    // The new epoch's counter starts from the stored ceiling; the old node
    // reads it from then on.
    assert_eq!(new.next_seq(ab).await.unwrap(), Seq(11));
    assert_eq!(old.current_seq(ab).await.unwrap(), Seq(11));
    assert_eq!(old.epoch(), new.epoch());
    assert_eq!(old.next_seq(ab).await.unwrap(), Seq(12));
    assert_eq!(new.current_seq(ab).await.unwrap(), Seq(12));
}

/// The counters follow the store's epoch: a node that starts after a bump
/// (done by another node) allocates in the new epoch, and one still in an
/// older epoch moves up when Redis tells it.
#[tokio::test]
async fn nodes_follow_the_newest_epoch() {
    let test = OneConversation::start().await;
    let ab = test.ab;
    let old = test.node(10).await;
    assert_eq!(old.next_seq(ab).await.unwrap(), Seq(1));
    let bumped = test.store.bump_epoch(&test.prefix, old.epoch()).await.unwrap();
    let new = test.node(10).await;
    assert_eq!(new.epoch(), bumped);
    // The new epoch's counter starts from the stored ceiling.
    assert_eq!(new.next_seq(ab).await.unwrap(), Seq(11));
    // The old node is told, and continues above.
    assert_eq!(old.next_seq(ab).await.unwrap(), Seq(12));
    assert_eq!(old.epoch(), bumped);
    let mut taken = Vec::new();
    for allocator in [&old, &new, &old] {
        taken.push(allocator.next_seq(ab).await.unwrap().0);
    }
    assert_eq!(taken, vec![13, 14, 15]);
}
