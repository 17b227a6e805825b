//! A hash map split into shards with a lock each, so callers touching
//! different keys rarely wait for each other. Critical sections are a map
//! operation: never held across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

use parking_lot::RwLock;

const SHARDS: usize = 32;

#[derive(Debug)]
pub(crate) struct Sharded<K, V> {
    shards: Box<[RwLock<HashMap<K, V>>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    fn shard(&self, key: &K) -> &RwLock<HashMap<K, V>> {
        // The shard count is a power of two: the low bits pick the shard.
        let index = self.hasher.hash_one(key) as usize & (SHARDS - 1);
        &self.shards[index]
    }

    /// Runs `f` on the value of `key` under the shard's read lock.
    pub fn read<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        f(self.shard(key).read().get(key))
    }

    /// Runs `f` on the shard holding `key` under its write lock.
    pub fn write<R>(&self, key: &K, f: impl FnOnce(&mut HashMap<K, V>) -> R) -> R {
        f(&mut self.shard(key).write())
    }
}
