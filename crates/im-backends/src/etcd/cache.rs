//! The local view of the registry: user → gateways, read on every push
//! without a round trip. Split into independently locked shards so readers
//! of different users rarely meet; a shard's lock is held for one map
//! operation, never across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use im_core::{GatewayId, UserId};
use parking_lot::RwLock;

const SHARDS: usize = 32;

type Shard = HashMap<UserId, Vec<GatewayId>>;

#[derive(Debug)]
pub(super) struct Cache {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
}

impl Cache {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    fn index(&self, user: UserId) -> usize {
        // The shard count is a power of two: the low bits pick the shard.
        self.hasher.hash_one(user) as usize & (SHARDS - 1)
    }

    pub fn gateways_of(&self, user: UserId) -> Vec<GatewayId> {
        self.shards[self.index(user)].read().get(&user).cloned().unwrap_or_default()
    }

    /// Records `user` on `gateway`; recording it again changes nothing, so a
    /// watch event for a write this process already applied is harmless.
    pub fn add(&self, user: UserId, gateway: GatewayId) {
        let mut shard = self.shards[self.index(user)].write();
        let gateways = shard.entry(user).or_default();
        // A user is on a handful of gateways at most: a Vec is the set.
        if !gateways.contains(&gateway) {
            gateways.push(gateway);
        }
    }

    pub fn remove(&self, user: UserId, gateway: &GatewayId) {
        let mut shard = self.shards[self.index(user)].write();
        if let Some(gateways) = shard.get_mut(&user) {
            gateways.retain(|g| g != gateway);
            if gateways.is_empty() {
                shard.remove(&user);
            }
        }
    }

    /// Replaces the whole view with `entries` (a fresh listing). Each shard
    /// is swapped under its lock, so a reader sees a user's old or new
    /// gateways, never an empty list in between.
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (UserId, GatewayId)>) {
        let mut fresh: Vec<Shard> = (0..SHARDS).map(|_| HashMap::new()).collect();
        for (user, gateway) in entries {
            let gateways = fresh[self.index(user)].entry(user).or_default();
            if !gateways.contains(&gateway) {
                gateways.push(gateway);
            }
        }
        for (shard, fresh) in self.shards.iter().zip(fresh) {
            *shard.write() = fresh;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(name: &str) -> GatewayId {
        GatewayId(name.to_owned())
    }

    #[test]
    fn adding_twice_is_adding_once_and_removing_the_last_gateway_forgets_the_user() {
        let cache = Cache::new();
        cache.add(UserId(1), gw("a"));
        cache.add(UserId(1), gw("a"));
        cache.add(UserId(1), gw("b"));
        assert_eq!(cache.gateways_of(UserId(1)), vec![gw("a"), gw("b")]);
        cache.remove(UserId(1), &gw("a"));
        cache.remove(UserId(1), &gw("b"));
        assert!(cache.gateways_of(UserId(1)).is_empty());
        assert!(cache.shards.iter().all(|shard| shard.read().is_empty()));
    }

    #[test]
    fn a_listing_replaces_everything_known_before() {
        let cache = Cache::new();
        cache.add(UserId(1), gw("a"));
        cache.add(UserId(2), gw("a"));
        cache.replace_all([(UserId(2), gw("b")), (UserId(3), gw("c")), (UserId(3), gw("c"))]);
        assert!(cache.gateways_of(UserId(1)).is_empty());
        assert_eq!(cache.gateways_of(UserId(2)), vec![gw("b")]);
        assert_eq!(cache.gateways_of(UserId(3)), vec![gw("c")]);
    }
}
