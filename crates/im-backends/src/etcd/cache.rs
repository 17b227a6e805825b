//! The local view of the registry: user → gateways, read on every push
//! without a round trip. Split into independently locked shards so readers
//! of different users rarely meet; a shard's lock is held for one map
//! operation, never across an `.await`. Also the gateways the view names
//! (how many users each), what a node falls back on while the view cannot
//! be kept current.

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
    /// Gateway → how many users the view has on it. Changed only on
    /// registrations (connects and disconnects), never read per push.
    gateways: parking_lot::Mutex<HashMap<GatewayId, usize>>,
}

impl Cache {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            gateways: parking_lot::Mutex::default(),
        }
    }

    /// Every gateway the view has a user on, sorted.
    pub fn gateways(&self) -> Vec<GatewayId> {
        let mut gateways: Vec<GatewayId> = self.gateways.lock().keys().cloned().collect();
        gateways.sort();
        gateways
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
        // Lock order, everywhere: the gateway counts, then a shard.
        let mut counts = self.gateways.lock();
        let mut shard = self.shards[self.index(user)].write();
        let gateways = shard.entry(user).or_default();
        // A user is on a handful of gateways at most: a Vec is the set.
        if !gateways.contains(&gateway) {
            *counts.entry(gateway.clone()).or_default() += 1;
            gateways.push(gateway);
        }
    }

    pub fn remove(&self, user: UserId, gateway: &GatewayId) {
        let mut counts = self.gateways.lock();
        let mut shard = self.shards[self.index(user)].write();
        if let Some(gateways) = shard.get_mut(&user) {
            let before = gateways.len();
            gateways.retain(|g| g != gateway);
            if gateways.len() < before
                && let Some(count) = counts.get_mut(gateway)
            {
                *count -= 1;
                if *count == 0 {
                    counts.remove(gateway);
                }
            }
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
        let mut counts: HashMap<GatewayId, usize> = HashMap::new();
        for (user, gateway) in entries {
            let gateways = fresh[self.index(user)].entry(user).or_default();
            if !gateways.contains(&gateway) {
                *counts.entry(gateway.clone()).or_default() += 1;
                gateways.push(gateway);
            }
        }
        // Held across the swap: an add or remove meanwhile waits, and counts
        // what the new view holds.
        let mut gateways = self.gateways.lock();
        for (shard, fresh) in self.shards.iter().zip(fresh) {
            *shard.write() = fresh;
        }
        *gateways = counts;
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
        assert!(cache.gateways().is_empty());
    }

    #[test]
    fn the_gateways_named_follow_adds_removes_and_listings() {
        let cache = Cache::new();
        cache.add(UserId(1), gw("b"));
        cache.add(UserId(2), gw("b"));
        cache.add(UserId(2), gw("a"));
        cache.add(UserId(2), gw("a"));
        assert_eq!(cache.gateways(), vec![gw("a"), gw("b")]);
        cache.remove(UserId(1), &gw("b"));
        cache.remove(UserId(1), &gw("b"));
        assert_eq!(cache.gateways(), vec![gw("a"), gw("b")], "user 2 is still on b");
        cache.remove(UserId(2), &gw("b"));
        assert_eq!(cache.gateways(), vec![gw("a")]);
        cache.replace_all([(UserId(5), gw("c")), (UserId(6), gw("c"))]);
        assert_eq!(cache.gateways(), vec![gw("c")]);
        cache.remove(UserId(5), &gw("c"));
        assert_eq!(cache.gateways(), vec![gw("c")]);
        cache.remove(UserId(6), &gw("c"));
        assert!(cache.gateways().is_empty());
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
