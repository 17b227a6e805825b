//! [`MemoryCeilingStore`]: ceilings (and allocator epochs) in maps. For tests and for wiring where
//! no durability is wanted; a real deployment keeps ceilings in the store.

use std::collections::HashMap;

use async_trait::async_trait;
use im_core::ports::{BackendResult, CeilingStore, EpochStore};
use im_core::{ConversationId, Seq};
use parking_lot::Mutex;

/// A `CeilingStore` in memory: "durable" for the life of the value, which is
/// what a test that restarts an allocator over it needs.
#[derive(Debug, Default)]
pub struct MemoryCeilingStore {
    ceilings: Mutex<HashMap<ConversationId, Seq>>,
    epochs: Mutex<HashMap<String, u64>>,
}

impl MemoryCeilingStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CeilingStore for MemoryCeilingStore {
    /// The stored ceilings, in the order asked, `Seq::ZERO` where none.
    async fn load_ceilings(&self, conversations: &[ConversationId]) -> BackendResult<Vec<Seq>> {
        let ceilings = self.ceilings.lock();
        Ok(conversations.iter().map(|c| ceilings.get(c).copied().unwrap_or(Seq::ZERO)).collect())
    }

    /// Raises every listed ceiling durably, in one write: when this returns
    /// all of them are on disk (on error, none may be relied on). A value
    /// lower than the stored one leaves the stored one: ceilings never move
    /// down.
    async fn raise_ceilings(&self, raises: &[(ConversationId, Seq)]) -> BackendResult<()> {
        let mut ceilings = self.ceilings.lock();
        for &(conversation, ceiling) in raises {
            let stored = ceilings.entry(conversation).or_insert(Seq::ZERO);
            *stored = (*stored).max(ceiling);
        }
        Ok(())
    }
}

#[async_trait]
impl EpochStore for MemoryCeilingStore {
    /// The stored epoch of `scope`, 0 when never bumped.
    async fn current_epoch(&self, scope: &str) -> BackendResult<u64> {
        Ok(self.epochs.lock().get(scope).copied().unwrap_or(0))
    }

    /// Durably moves `scope`'s epoch past `seen` and returns the stored epoch:
    /// `max(stored, seen + 1)`.
    async fn bump_epoch(&self, scope: &str, seen: u64) -> BackendResult<u64> {
        let mut epochs = self.epochs.lock();
        let stored = epochs.entry(scope.to_owned()).or_insert(0);
        *stored = (*stored).max(seen + 1);
        Ok(*stored)
    }
}
