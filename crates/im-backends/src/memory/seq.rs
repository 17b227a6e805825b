//! [`MemorySeqAllocator`]: the seq counters of DESIGN.md §4 held in process.

use std::sync::Arc;

use async_trait::async_trait;
use im_core::ports::{BackendResult, CeilingStore, SeqAllocator};
use std::collections::{BTreeMap, HashMap};

use im_core::seq::{Reservation, SeqBlock};
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
    /// One seq per entry, in order; a conversation listed several times gets
    /// increasing seqs. The whole batch costs at most one ceiling load and one
    /// durable ceiling write. On error no seq of the batch was handed out.
    async fn next_seqs(&self, conversations: &[ConversationId]) -> BackendResult<Vec<Seq>> {
        // How many seqs each distinct conversation needs, in a fixed order:
        // slots are locked in that order, so concurrent batches cannot
        // deadlock.
        let mut wanted: BTreeMap<ConversationId, u64> = BTreeMap::new();
        for &conversation in conversations {
            *wanted.entry(conversation).or_default() += 1;
        }
        let slots: Vec<Slot> = wanted.keys().map(|&c| self.slot(c)).collect();
        let mut guards = Vec::with_capacity(slots.len());
        for slot in &slots {
            guards.push(slot.lock().await);
        }

        // Conversations first seen by this process resume above their stored
        // ceiling; left `None` if loading fails, so a later call retries.
        let unloaded: Vec<ConversationId> =
            wanted.keys().zip(&guards).filter(|(_, g)| g.is_none()).map(|(&c, _)| c).collect();
        if !unloaded.is_empty() {
            let stored = self.ceilings.load_ceilings(&unloaded).await?;
            let mut stored = stored.into_iter();
            for guard in guards.iter_mut().filter(|g| g.is_none()) {
                **guard = Some(SeqBlock::resume(stored.next().expect("one ceiling per conversation"), self.interval));
            }
        }

        // Plan every conversation's seqs, persist the raised ceilings in one
        // write, and only then take the seqs: on failure nothing was taken.
        let plans: Vec<Reservation> = guards
            .iter()
            .zip(wanted.values())
            .map(|(guard, &count)| guard.as_ref().expect("loaded above").reserve(count))
            .collect();
        let raises: Vec<(ConversationId, Seq)> =
            wanted.keys().zip(&plans).filter_map(|(&c, plan)| plan.raise_to.map(|to| (c, to))).collect();
        self.ceilings.raise_ceilings(&raises).await?;

        let mut next: HashMap<ConversationId, Seq> = HashMap::with_capacity(plans.len());
        for ((&conversation, guard), plan) in wanted.keys().zip(guards.iter_mut()).zip(plans) {
            guard.as_mut().expect("loaded above").apply(plan);
            next.insert(conversation, plan.first);
        }
        Ok(conversations
            .iter()
            .map(|c| {
                let seq = next.get_mut(c).expect("planned above");
                let taken = *seq;
                *seq = seq.next();
                taken
            })
            .collect())
    }

    /// A boundary in `conversation`'s seqs, for group membership changes
    /// (`im_core::group`): at least every seq handed out before this call
    /// (on any node), and below every seq handed out after it returns. Hands
    /// nothing out and writes nothing.
    async fn current_seq(&self, conversation: ConversationId) -> BackendResult<Seq> {
        // The slot's lock orders this call with every allocation of the
        // conversation: one in flight has handed out all of its seqs or none.
        let slot = self.slot(conversation);
        let mut guard = slot.lock().await;
        if let Some(block) = guard.as_ref() {
            return Ok(block.last());
        }
        // Not used by this process yet: the first allocation resumes above
        // the stored ceiling, which is at least every seq a previous life
        // handed out. Loaded under the lock, so no allocation can start from
        // another value meanwhile; kept, as that allocation would.
        let ceiling = self.ceilings.load_ceiling(conversation).await?;
        *guard = Some(SeqBlock::resume(ceiling, self.interval));
        Ok(ceiling)
    }
}
