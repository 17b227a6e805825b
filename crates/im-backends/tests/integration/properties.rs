//! Random operation sequences against trivial models (DESIGN.md §7).
//!
//! - The seq allocator, with restarts, over a memory and a SQLite ceiling
//!   store: seqs strictly increase per conversation (so none is reused across
//!   a restart), follow each other without a gap unless a restart came in
//!   between, and then skip at most the interval; none is above the stored
//!   ceiling.
//! - The dedup cache, with time passing: it answers what a list of
//!   `(key, ack, inserted_at)` in insertion order answers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use im_backends::conformance::fixtures::{private, users};
use im_backends::{MemoryCeilingStore, MemoryDedupCache, MemorySeqAllocator, SqliteStore};
use im_core::ports::{CeilingStore, DedupCache, SeqAllocator};
use im_core::{Ack, ClientMsgId, ConversationId, FirstSend, MessageId, RequestDigest, Seq, UserId};
use proptest::prelude::*;

fn runtime(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(paused).build().unwrap()
}

#[derive(Clone, Debug)]
enum AllocatorOp {
    Take(usize),
    Restart,
}

const CONVERSATIONS: usize = 3;

fn allocator_ops(max_len: usize) -> impl Strategy<Value = Vec<AllocatorOp>> {
    let op = prop_oneof![
        8 => (0..CONVERSATIONS).prop_map(AllocatorOp::Take),
        1 => Just(AllocatorOp::Restart),
    ];
    prop::collection::vec(op, 1..max_len)
}

/// What the model knows of one conversation.
#[derive(Clone, Copy, Default)]
struct Handed {
    last: Seq,
    restarted_since: bool,
}

async fn check_allocator(
    ceilings: Arc<dyn CeilingStore>,
    interval: u64,
    ops: Vec<AllocatorOp>,
) -> Result<(), TestCaseError> {
    let conversations: Vec<ConversationId> = {
        let [a, b, c, d] = users();
        vec![private(a, b), private(a, c), private(c, d)]
    };
    let mut model = [Handed::default(); CONVERSATIONS];
    let mut allocator = MemorySeqAllocator::new(ceilings.clone(), interval);
    for op in ops {
        match op {
            AllocatorOp::Take(i) => {
                let seq = allocator.next_seq(conversations[i]).await.unwrap();
                let handed = &mut model[i];
                prop_assert!(seq > handed.last, "seq {} after {} (reused)", seq, handed.last);
                if handed.restarted_since && handed.last > Seq::ZERO {
                    prop_assert!(
                        seq.0 - handed.last.0 <= interval,
                        "restart gap {} > {}",
                        seq.0 - handed.last.0,
                        interval
                    );
                } else {
                    prop_assert_eq!(seq, handed.last.next(), "a gap without a restart");
                }
                let ceiling = ceilings.load_ceiling(conversations[i]).await.unwrap();
                prop_assert!(seq <= ceiling, "seq {} above the stored ceiling {}", seq, ceiling);
                *handed = Handed { last: seq, restarted_since: false };
            }
            AllocatorOp::Restart => {
                drop(allocator);
                allocator = MemorySeqAllocator::new(ceilings.clone(), interval);
                model.iter_mut().for_each(|handed| handed.restarted_since = true);
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn allocator_over_memory_ceilings_matches_the_model(ops in allocator_ops(300), interval in 1u64..20) {
        runtime(false).block_on(check_allocator(Arc::new(MemoryCeilingStore::new()), interval, ops))?;
    }
}

proptest! {
    // Every ceiling raise is an fsync: fewer, shorter cases.
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn allocator_over_sqlite_ceilings_matches_the_model(ops in allocator_ops(120), interval in 1u64..20) {
        runtime(false).block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("im.db")).await.unwrap();
            check_allocator(Arc::new(store), interval, ops).await
        })?;
    }
}

#[derive(Clone, Debug)]
enum DedupOp {
    Put { sender: u64, key: u8 },
    Get { sender: u64, key: u8 },
    Wait(Duration),
}

fn dedup_ops() -> impl Strategy<Value = Vec<DedupOp>> {
    let op = prop_oneof![
        4 => (1..3u64, 0..6u8).prop_map(|(sender, key)| DedupOp::Put { sender, key }),
        4 => (1..3u64, 0..6u8).prop_map(|(sender, key)| DedupOp::Get { sender, key }),
        1 => (0..40u64).prop_map(|secs| DedupOp::Wait(Duration::from_secs(secs))),
    ];
    prop::collection::vec(op, 1..200)
}

/// The cache as a list in insertion order.
struct DedupModel {
    capacity: usize,
    ttl: Duration,
    now: Duration,
    entries: VecDeque<((UserId, u8), FirstSend, Duration)>,
}

impl DedupModel {
    fn live(&mut self) -> &mut VecDeque<((UserId, u8), FirstSend, Duration)> {
        let (now, ttl) = (self.now, self.ttl);
        self.entries.retain(|(_, _, at)| *at + ttl > now);
        &mut self.entries
    }

    fn get(&mut self, key: (UserId, u8)) -> Option<FirstSend> {
        self.live().iter().find(|(k, _, _)| *k == key).map(|(_, ack, _)| *ack)
    }

    fn put(&mut self, key: (UserId, u8), ack: FirstSend) -> FirstSend {
        if let Some(first) = self.get(key) {
            return first;
        }
        let (now, capacity) = (self.now, self.capacity);
        let entries = self.live();
        entries.push_back((key, ack, now));
        if entries.len() > capacity {
            entries.pop_front();
        }
        ack
    }
}

proptest! {
    #[test]
    fn dedup_cache_matches_the_model(ops in dedup_ops(), capacity in 1usize..8) {
        const TTL: Duration = Duration::from_secs(60);
        runtime(true).block_on(async {
            let cache = MemoryDedupCache::new(capacity, TTL);
            let mut model = DedupModel { capacity, ttl: TTL, now: Duration::ZERO, entries: VecDeque::new() };
            let conversation = private(UserId(1), UserId(2));
            let client_msg_id = |key: u8| ClientMsgId::parse(&format!("k{key}")).unwrap();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    DedupOp::Put { sender, key } => {
                        let (msg_id, seq) = (MessageId(n as u64), Seq(n as u64));
                        let ack = Ack { msg_id, conversation, seq, server_time_ms: 0, body_masked: false };
                        let ack = FirstSend { ack, digest: Some(RequestDigest(n as u64)) };
                        let recorded = cache.put_if_absent(UserId(sender), &client_msg_id(key), ack).await.unwrap();
                        prop_assert_eq!(recorded, model.put((UserId(sender), key), ack));
                    }
                    DedupOp::Get { sender, key } => {
                        let found = cache.get(UserId(sender), &client_msg_id(key)).await.unwrap();
                        prop_assert_eq!(found, model.get((UserId(sender), key)));
                    }
                    DedupOp::Wait(for_) => {
                        tokio::time::advance(for_).await;
                        model.now += for_;
                    }
                }
            }
            Ok(())
        })?;
    }
}
