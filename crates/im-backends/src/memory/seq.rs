//! [`MemorySeqAllocator`]: the seq counters of DESIGN.md §4 held in process.

use std::sync::Arc;

use async_trait::async_trait;
use im_core::ports::{BackendResult, CeilingStore, SeqAllocator};
use im_core::seq::{Next, SeqBlock};
use im_core::{ConversationId, Seq};
use tokio::sync::Mutex;

use super::sharded::Sharded;

/// One conversation's counter; `None` until its ceiling has been loaded.
/// A tokio mutex because a ceiling raise is awaited while it is held: callers
/// of the same conversation must wait for the raise, others must not.
type Slot = Arc<Mutex<Option<SeqBlock>>>;

/// Hands out seqs from in-memory [`SeqBlock`]s. The first use of a
/// conversation in this process resumes above the ceiling stored in the
/// [`CeilingStore`]; a seq is handed out only once the ceiling above it is
/// durable there, so a restart never reuses one (G2) and skips at most
/// `interval` seqs.
///
/// Exactly one allocator may serve a conversation at a time: two allocators
/// over one ceiling store (two processes on one SQLite file) would hand out
/// the same seqs.
pub struct MemorySeqAllocator {
    ceilings: Arc<dyn CeilingStore>,
    interval: u64,
    slots: Sharded<ConversationId, Slot>,
}

impl std::fmt::Debug for MemorySeqAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySeqAllocator").field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl MemorySeqAllocator {
    /// `interval` is `SEQUENCE_SNAPSHOT_INTERVAL`: seqs reserved per ceiling
    /// write, and the largest gap a restart can leave.
    ///
    /// # Panics
    /// If `interval` is 0 (config validation rejects it first).
    pub fn new(ceilings: Arc<dyn CeilingStore>, interval: u64) -> Self {
        assert!(interval > 0, "SEQUENCE_SNAPSHOT_INTERVAL must be positive");
        Self { ceilings, interval, slots: Sharded::new() }
    }

    fn slot(&self, conversation: ConversationId) -> Slot {
        if let Some(slot) = self.slots.read(&conversation, |slot| slot.cloned()) {
            return slot;
        }
        self.slots.write(&conversation, |slots| slots.entry(conversation).or_default().clone())
    }
}

#[async_trait]
impl SeqAllocator for MemorySeqAllocator {
    async fn next_seq(&self, conversation: ConversationId) -> BackendResult<Seq> {
        let slot = self.slot(conversation);
        let mut guard = slot.lock().await;
        let block = match &mut *guard {
            Some(block) => block,
            None => {
                // Left `None` if loading fails, so the next call tries again.
                let stored = self.ceilings.load_ceiling(conversation).await?;
                guard.insert(SeqBlock::resume(stored, self.interval))
            }
        };
        loop {
            match block.next_seq() {
                Next::Seq(seq) => return Ok(seq),
                Next::RaiseCeiling(ceiling) => {
                    // On failure the block keeps its old ceiling and the next
                    // call asks for the raise again.
                    self.ceilings.raise_ceiling(conversation, ceiling).await?;
                    block.ceiling_raised(ceiling);
                }
            }
        }
    }
}
