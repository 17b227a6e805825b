//! [`MemoryCeilingStore`]: ceilings in a map. For tests and for wiring where
//! no durability is wanted; a real deployment keeps ceilings in the store.

use std::collections::HashMap;

use async_trait::async_trait;
use im_core::ports::{BackendResult, CeilingStore};
use im_core::{ConversationId, Seq};
use parking_lot::Mutex;

/// A `CeilingStore` in memory: "durable" for the life of the value, which is
/// what a test that restarts an allocator over it needs.
#[derive(Debug, Default)]
pub struct MemoryCeilingStore {
    ceilings: Mutex<HashMap<ConversationId, Seq>>,
}

impl MemoryCeilingStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CeilingStore for MemoryCeilingStore {
    /// The stored ceiling, `Seq::ZERO` if none.
    async fn load_ceiling(&self, conversation: ConversationId) -> BackendResult<Seq> {
        Ok(self.ceilings.lock().get(&conversation).copied().unwrap_or(Seq::ZERO))
    }

    /// Raises the ceiling to `ceiling` durably. A lower value than the stored
    /// one leaves the stored one: ceilings never move down.
    async fn raise_ceiling(&self, conversation: ConversationId, ceiling: Seq) -> BackendResult<()> {
        let mut ceilings = self.ceilings.lock();
        let stored = ceilings.entry(conversation).or_insert(Seq::ZERO);
        *stored = (*stored).max(ceiling);
        Ok(())
    }
}
