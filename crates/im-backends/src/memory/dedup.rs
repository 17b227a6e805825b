//! [`MemoryDedupCache`]: recent first sends by `(sender, client_msg_id)`,
//! bounded in count and age.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use im_core::ports::{BackendResult, DedupCache};
use im_core::{ClientMsgId, FirstSend, UserId};
use parking_lot::Mutex;
use tokio::time::Instant;

type Key = (UserId, ClientMsgId);

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

#[derive(Debug, Default)]
struct Entries {
    acks: HashMap<Key, FirstSend>,
    /// Keys in insertion order with their expiry. An ack is never replaced and
    /// every entry lives `ttl`, so insertion order is also expiry order: the
    /// expired and the oldest entries are always at the front.
    order: VecDeque<(Key, Instant)>,
}

impl Entries {
    fn forget_expired(&mut self, now: Instant) {
        while let Some((key, _)) = self.order.front().filter(|(_, expires)| *expires <= now) {
            self.acks.remove(key);
            self.order.pop_front();
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
        Ok(entries.acks.get(&(sender, client_msg_id.clone())).copied())
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
        let key = (sender, client_msg_id.clone());
        if let Some(first) = entries.acks.get(&key) {
            return Ok(*first);
        }
        entries.acks.insert(key.clone(), first_send);
        entries.order.push_back((key, now + self.ttl));
        if entries.order.len() > self.capacity
            && let Some((oldest, _)) = entries.order.pop_front()
        {
            entries.acks.remove(&oldest);
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
