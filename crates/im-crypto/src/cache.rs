//! [`DekCache`]: plaintext data keys by id, each kept for a TTL after it was fetched.
//!
//! The clock is tokio's ([`tokio::time::Instant`]): a test with paused time
//! (`tokio::time::pause`, `advance`) drives expiry without sleeping, and [`DekCache::get_at`] /
//! [`DekCache::insert_at`] take the time explicitly for tests without a runtime.
//!
//! An expired key is dropped from the map (and so wiped, once no caller holds its `Arc`) when it
//! is next looked up, and every expired key is dropped at each insert.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::envelope::DataKey;

/// Plaintext data keys by id, each kept for a TTL (`DEK_CACHE_TTL`) after it was fetched;
/// [`get`](Self::get) counts hits and misses.
#[derive(Debug)]
pub struct DekCache {
    ttl: Duration,
    keys: RwLock<HashMap<u64, Cached>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
struct Cached {
    key: Arc<DataKey>,
    expires: Instant,
}

impl DekCache {
    /// An empty cache whose keys live `ttl` after they are inserted.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, keys: RwLock::new(HashMap::new()), hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The key with this id if it was inserted less than the TTL ago (a hit), else `None` (a miss).
    pub fn get(&self, id: u64) -> Option<Arc<DataKey>> {
        self.get_at(id, Instant::now())
    }

    /// [`get`](Self::get) as if the time were `now`.
    pub fn get_at(&self, id: u64, now: Instant) -> Option<Arc<DataKey>> {
        let found = {
            let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
            keys.get(&id).map(|cached| (cached.expires > now).then(|| Arc::clone(&cached.key)))
        };
        match found {
            Some(Some(key)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(key)
            }
            Some(None) => {
                let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
                // Another thread may have inserted a fresh copy meanwhile: remove only an expired one.
                if keys.get(&id).is_some_and(|cached| cached.expires <= now) {
                    keys.remove(&id);
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Caches `key` for the TTL from now (replacing a cached key of the same id) and returns it.
    pub fn insert(&self, key: DataKey) -> Arc<DataKey> {
        self.insert_at(key, Instant::now())
    }

    /// [`insert`](Self::insert) as if the time were `now`.
    pub fn insert_at(&self, key: DataKey, now: Instant) -> Arc<DataKey> {
        let key = Arc::new(key);
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.retain(|_, cached| cached.expires > now);
        keys.insert(key.id(), Cached { key: Arc::clone(&key), expires: now + self.ttl });
        key
    }

    /// How many keys the cache holds, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether the cache holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups that found a live key (`im_dek_cache_hits_total`).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that found no key or an expired one (`im_dek_cache_misses_total`).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    fn key(id: u64) -> DataKey {
        DataKey::new(id, Zeroizing::new([id as u8; 32]))
    }

    #[test]
    fn a_key_lives_for_the_ttl_after_it_was_fetched() {
        let cache = DekCache::new(TTL);
        let t0 = Instant::now();
        assert!(cache.get_at(1, t0).is_none());
        assert_eq!((cache.hits(), cache.misses()), (0, 1));

        let inserted = cache.insert_at(key(1), t0);
        let found = cache.get_at(1, t0 + TTL - Duration::from_millis(1)).expect("still live");
        assert!(Arc::ptr_eq(&found, &inserted));
        assert_eq!((cache.hits(), cache.misses()), (1, 1));

        assert!(cache.get_at(1, t0 + TTL).is_none(), "expired at exactly the TTL");
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
        assert!(cache.is_empty(), "the expired key was dropped");
        assert_eq!(found.id(), 1, "a caller's Arc outlives the entry");
    }

    #[test]
    fn a_refetched_key_gets_a_new_ttl() {
        let cache = DekCache::new(TTL);
        let t0 = Instant::now();
        cache.insert_at(key(1), t0);
        cache.insert_at(key(1), t0 + TTL / 2);
        assert!(cache.get_at(1, t0 + TTL).is_some());
        assert!(cache.get_at(1, t0 + TTL + TTL / 2).is_none());
    }

    #[test]
    fn keys_expire_independently_and_inserts_sweep_expired_ones() {
        let cache = DekCache::new(TTL);
        let t0 = Instant::now();
        cache.insert_at(key(1), t0);
        cache.insert_at(key(2), t0 + TTL / 2);
        assert_eq!(cache.len(), 2);
        cache.insert_at(key(3), t0 + TTL);
        assert_eq!(cache.len(), 2, "key 1 expired and was swept");
        assert!(cache.get_at(2, t0 + TTL).is_some());
        assert!(cache.get_at(3, t0 + TTL).is_some());
        assert_eq!((cache.hits(), cache.misses()), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn paused_tokio_time_drives_expiry() {
        let cache = DekCache::new(TTL);
        cache.insert(key(9));
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert!(cache.get(9).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache.get(9).is_none());
    }
}
