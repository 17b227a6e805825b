//! [`MemoryRegistry`]: which gateways a user is connected to, in process.

use async_trait::async_trait;
use im_core::ports::{BackendResult, Registry};
use im_core::{GatewayId, UserId};

use super::sharded::Sharded;

/// User → gateways, for one process that is its own gateway (or a test).
/// `gateways_of` is on the path of every push, so it takes a shard's read
/// lock and copies the (usually one-element) list out.
#[derive(Debug)]
pub struct MemoryRegistry {
    gateways: Sharded<UserId, Vec<GatewayId>>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self { gateways: Sharded::new() }
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    /// Records that `user` has a device on `gateway`.
    async fn register(&self, user: UserId, gateway: &GatewayId) -> BackendResult<()> {
        self.gateways.write(&user, |users| {
            let gateways = users.entry(user).or_default();
            // A user is on a handful of gateways at most: a Vec is the set.
            if !gateways.contains(gateway) {
                gateways.push(gateway.clone());
            }
        });
        Ok(())
    }

    /// Removes the record for `user` on `gateway` (its last device left).
    async fn unregister(&self, user: UserId, gateway: &GatewayId) -> BackendResult<()> {
        self.gateways.write(&user, |users| {
            if let Some(gateways) = users.get_mut(&user) {
                gateways.retain(|g| g != gateway);
                if gateways.is_empty() {
                    users.remove(&user);
                }
            }
        });
        Ok(())
    }

    /// The gateways `user` is connected to, from a local view (no round trip
    /// per message in production: a watched cache).
    fn gateways_of(&self, user: UserId) -> Vec<GatewayId> {
        self.gateways.read(&user, |gateways| gateways.cloned().unwrap_or_default())
    }
}
