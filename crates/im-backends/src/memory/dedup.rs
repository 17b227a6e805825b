//! [`MemoryDedupCache`]: recent first sends by `(sender, client_msg_id)`,
//! bounded in count and age.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use async_trait::async_trait;
use hashbrown::HashTable;
use im_core::ports::{BackendResult, DedupCache};
use im_core::{ClientMsgId, FirstSend, UserId};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Remembers the first ack of each `(sender, client_msg_id)` for `ttl`, and at
/// most `capacity` of them, forgetting the oldest first. A forgotten key is
/// safe: the store's unique key catches the resend (G3).
///
/// Time is tokio's, so tests can pause and advance it.
#[derive(Debug)]
pub struct MemoryDedupCache {
    capacity: usize,
    ttl: Duration,
    entries: Mutex<Entries>,
}

/// One remembered first send.
#[derive(Debug)]
struct Entry {
    sender: UserId,
    client_msg_id: ClientMsgId,
    first: FirstSend,
    expires: Instant,
}

impl Entry {
    fn is(&self, sender: UserId, client_msg_id: &ClientMsgId) -> bool {
        self.sender == sender && self.client_msg_id == *client_msg_id
    }
}

/// The entries in insertion order, and an index from key to position. Each
/// key is held once (in its entry), so an entry costs its own size plus 8
/// bytes of index, about half of a map beside an order queue of keys. An ack
/// is never replaced and every entry lives `ttl`, so insertion order is
/// also expiry order: the expired and the oldest are always at the front.
#[derive(Debug, Default)]
struct Entries {
    order: VecDeque<Entry>,
    /// Position of `order`'s front in the sequence of all entries ever
    /// added: the index holds sequence numbers, which stay valid as the
    /// front is dropped.
    front: u64,
    /// Sequence numbers, hashed by their entry's key.
    index: HashTable<u64>,
    /// Keyed per process: client-chosen ids cannot be made to collide.
    hasher: RandomState,
}

/// The index's hash of a key; also used to rehash when the index grows.
fn key_hash(hasher: &RandomState, sender: UserId, client_msg_id: &ClientMsgId) -> u64 {
    hasher.hash_one((sender, client_msg_id))
}

impl Entries {
    fn hash(&self, sender: UserId, client_msg_id: &ClientMsgId) -> u64 {
        key_hash(&self.hasher, sender, client_msg_id)
    }

    fn get(&self, sender: UserId, client_msg_id: &ClientMsgId) -> Option<&Entry> {
        let hash = self.hash(sender, client_msg_id);
        let position = self.index.find(hash, |&n| self.at(n).is(sender, client_msg_id))?;
        Some(self.at(*position))
    }

    fn at(&self, sequence: u64) -> &Entry {
        &self.order[(sequence - self.front) as usize]
    }

    fn push(&mut self, entry: Entry) {
        let hash = self.hash(entry.sender, &entry.client_msg_id);
        let sequence = self.front + self.order.len() as u64;
        self.order.push_back(entry);
        let Self { order, front, index, hasher } = self;
        index.insert_unique(hash, sequence, |&n| {
            let entry = &order[(n - *front) as usize];
            key_hash(hasher, entry.sender, &entry.client_msg_id)
        });
    }

    fn pop_front(&mut self) {
        let Some(entry) = self.order.front() else { return };
        let hash = self.hash(entry.sender, &entry.client_msg_id);
        let front = self.front;
        if let Ok(found) = self.index.find_entry(hash, |&n| n == front) {
            found.remove();
        }
        self.order.pop_front();
        self.front += 1;
    }

    fn forget_expired(&mut self, now: Instant) {
        while self.order.front().is_some_and(|entry| entry.expires <= now) {
            self.pop_front();
        }
    }
}

impl MemoryDedupCache {
    /// # Panics
    /// If `capacity` is 0: such a cache would forget every ack at once.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        assert!(capacity > 0, "dedup cache capacity must be positive");
        Self { capacity, ttl, entries: Mutex::new(Entries::default()) }
    }
}

#[async_trait]
impl DedupCache for MemoryDedupCache {
    async fn get(&self, sender: UserId, client_msg_id: &ClientMsgId) -> BackendResult<Option<FirstSend>> {
        let mut entries = self.entries.lock();
        entries.forget_expired(Instant::now());
        Ok(entries.get(sender, client_msg_id).map(|entry| entry.first))
    }

    /// Records the first send unless one is already recorded; returns the
    /// recorded one.
    async fn put_if_absent(
        &self,
        sender: UserId,
        client_msg_id: &ClientMsgId,
        first_send: FirstSend,
    ) -> BackendResult<FirstSend> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        entries.forget_expired(now);
        if let Some(entry) = entries.get(sender, client_msg_id) {
            return Ok(entry.first);
        }
        entries.push(Entry {
            sender,
            client_msg_id: client_msg_id.clone(),
            first: first_send,
            expires: now + self.ttl,
        });
        if entries.order.len() > self.capacity {
            entries.pop_front();
        }
        Ok(first_send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::{Ack, ConversationId, MessageId, RequestDigest, Seq};

    fn ack(n: u64) -> FirstSend {
        let ack = Ack {
            msg_id: MessageId(n),
            conversation: ConversationId::private(UserId(1), UserId(2)).unwrap(),
            seq: Seq(n),
            server_time_ms: 0,
            body_masked: false,
        };
        FirstSend { ack, digest: Some(RequestDigest(n)) }
    }

    fn key(raw: &str) -> ClientMsgId {
        ClientMsgId::parse(raw).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn acks_are_forgotten_after_the_ttl() {
        let cache = MemoryDedupCache::new(10, Duration::from_secs(60));
        cache.put_if_absent(UserId(1), &key("a"), ack(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(cache.get(UserId(1), &key("a")).await.unwrap(), Some(ack(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(UserId(1), &key("a")).await.unwrap(), None);
        // Once forgotten, a new ack may be recorded under the key.
        assert_eq!(cache.put_if_absent(UserId(1), &key("a"), ack(2)).await.unwrap(), ack(2));
    }

    /// Over many evictions (the index's sequence numbers far past the
    /// capacity) and repeated puts, exactly the newest `capacity` keys are
    /// remembered, each with its own first ack.
    #[tokio::test]
    async fn the_newest_keys_are_remembered_each_with_its_first_ack() {
        const CAPACITY: usize = 100;
        let cache = MemoryDedupCache::new(CAPACITY, Duration::from_secs(60));
        let sender = |n: u64| UserId(1 + n % 3);
        for n in 0..1_000u64 {
            let raw = format!("id-{n}");
            assert_eq!(cache.put_if_absent(sender(n), &key(&raw), ack(n)).await.unwrap(), ack(n));
            // A put of a remembered key keeps the first ack.
            assert_eq!(cache.put_if_absent(sender(n), &key(&raw), ack(n + 5_000)).await.unwrap(), ack(n));
        }
        for n in 0..1_000u64 {
            let found = cache.get(sender(n), &key(&format!("id-{n}"))).await.unwrap();
            let expected = (n >= 1_000 - CAPACITY as u64).then(|| ack(n));
            assert_eq!(found, expected, "key {n}");
            // The same id from another sender is another key.
            assert_eq!(cache.get(UserId(99), &key(&format!("id-{n}"))).await.unwrap(), None);
        }
        assert_eq!(cache.entries.lock().index.len(), CAPACITY);
    }

    #[tokio::test]
    async fn the_oldest_ack_is_forgotten_first_when_full() {
        let cache = MemoryDedupCache::new(2, Duration::from_secs(60));
        for (i, raw) in ["a", "b", "c"].into_iter().enumerate() {
            cache.put_if_absent(UserId(1), &key(raw), ack(i as u64)).await.unwrap();
        }
        assert_eq!(cache.get(UserId(1), &key("a")).await.unwrap(), None);
        assert_eq!(cache.get(UserId(1), &key("b")).await.unwrap(), Some(ack(1)));
        assert_eq!(cache.get(UserId(1), &key("c")).await.unwrap(), Some(ack(2)));
    }
}
