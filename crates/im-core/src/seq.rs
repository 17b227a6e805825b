//! Seq reservation by ceilings (DESIGN.md §4, WeChat seqsvr).
//!
//! The store keeps a ceiling per conversation: no seq above it is ever handed
//! out. A counter (in process, or in Redis) hands out seqs under the ceiling;
//! before it would pass it, the ceiling is raised by the snapshot interval in
//! the store. A counter that is lost (restart, Redis flush) restarts from the
//! stored ceiling, never from zero, so a seq is never reused and a loss costs
//! at most one interval of gap.
//!
//! [`SeqBlock`] is that rule for one conversation, without I/O: the caller
//! persists the ceiling it asks for before using the seqs under it.

use crate::Seq;

/// What the block needs before it can hand out the next seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Use this seq.
    Seq(Seq),
    /// Persist this ceiling durably, then call [`SeqBlock::ceiling_raised`].
    RaiseCeiling(Seq),
}

/// The allocation state of one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqBlock {
    /// The last seq handed out.
    last: Seq,
    /// The highest seq that may be handed out without touching the store.
    ceiling: Seq,
    interval: u64,
}

impl SeqBlock {
    /// Resumes from a stored ceiling (`Seq::ZERO` for a new conversation).
    /// Everything up to the old ceiling may have been handed out by a previous
    /// life of the counter, so allocation restarts above it.
    pub fn resume(stored_ceiling: Seq, interval: u64) -> Self {
        assert!(interval > 0, "snapshot interval must be positive");
        Self { last: stored_ceiling, ceiling: stored_ceiling, interval }
    }

    /// The next seq, or the ceiling to persist first.
    pub fn next_seq(&mut self) -> Next {
        if self.last < self.ceiling {
            self.last = self.last.next();
            Next::Seq(self.last)
        } else {
            Next::RaiseCeiling(Seq(self.ceiling.0 + self.interval))
        }
    }

    /// Plans handing out the next `count` seqs (consecutive) without changing
    /// the block: a batch asks once, persists `raise_to` (if any) for all its
    /// conversations in one write, then [`SeqBlock::apply`]s the plan.
    pub fn reserve(&self, count: u64) -> Reservation {
        let last = Seq(self.last.0 + count);
        let raise_to = (last > self.ceiling).then(|| {
            let missing = last.0 - self.ceiling.0;
            Seq(self.ceiling.0 + missing.div_ceil(self.interval) * self.interval)
        });
        Reservation { first: self.last.next(), last, raise_to }
    }

    /// Takes the seqs of `reservation`, whose `raise_to` is now durable.
    pub fn apply(&mut self, reservation: Reservation) {
        debug_assert_eq!(reservation.first, self.last.next(), "a reservation is applied to the block it came from");
        if let Some(ceiling) = reservation.raise_to {
            self.ceiling_raised(ceiling);
        }
        debug_assert!(reservation.last <= self.ceiling);
        self.last = reservation.last;
    }

    /// Records that `ceiling` is now durable.
    pub fn ceiling_raised(&mut self, ceiling: Seq) {
        debug_assert!(ceiling > self.ceiling, "ceilings only move up");
        self.ceiling = self.ceiling.max(ceiling);
    }

    pub fn last(&self) -> Seq {
        self.last
    }

    pub fn ceiling(&self) -> Seq {
        self.ceiling
    }
}

/// Seqs `first..=last` of one conversation, usable once `raise_to` (when
/// present) is the durable ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub first: Seq,
    pub last: Seq,
    pub raise_to: Option<Seq>,
}

/// A read position only moves forward (G5): the stored position after a
/// mark-read of `requested`.
pub fn advance_read_position(current: Seq, requested: Seq) -> Seq {
    current.max(requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn take(block: &mut SeqBlock, stored: &mut Seq) -> Seq {
        loop {
            match block.next_seq() {
                Next::Seq(s) => return s,
                Next::RaiseCeiling(c) => {
                    *stored = c;
                    block.ceiling_raised(c);
                }
            }
        }
    }

    #[test]
    fn new_conversation_starts_at_one_and_raises_once_per_interval() {
        let mut stored = Seq::ZERO;
        let mut block = SeqBlock::resume(stored, 3);
        let seqs: Vec<u64> = (0..7).map(|_| take(&mut block, &mut stored).0).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(stored, Seq(9));
    }

    #[test]
    fn resumed_block_starts_above_the_stored_ceiling() {
        let mut stored = Seq(20);
        let mut block = SeqBlock::resume(stored, 10);
        assert_eq!(take(&mut block, &mut stored), Seq(21));
        assert_eq!(stored, Seq(30));
    }

    #[test]
    fn read_position_never_moves_back() {
        assert_eq!(advance_read_position(Seq(5), Seq(3)), Seq(5));
        assert_eq!(advance_read_position(Seq(5), Seq(8)), Seq(8));
    }

    #[test]
    fn a_reservation_raises_by_whole_intervals_only_when_needed() {
        let block = SeqBlock::resume(Seq(20), 10);
        assert_eq!(block.reserve(3), Reservation { first: Seq(21), last: Seq(23), raise_to: Some(Seq(30)) });
        assert_eq!(block.reserve(25).raise_to, Some(Seq(50)));
        let mut block = block;
        block.apply(block.reserve(3));
        assert_eq!(block.reserve(7), Reservation { first: Seq(24), last: Seq(30), raise_to: None });
    }

    proptest! {
        // Batched reservations hand out exactly what one-at-a-time would,
        // and never a seq above the durable ceiling.
        #[test]
        fn reservations_match_single_steps(counts in prop::collection::vec(1u64..40, 1..30), interval in 1u64..20) {
            let mut batched = SeqBlock::resume(Seq::ZERO, interval);
            let mut single = SeqBlock::resume(Seq::ZERO, interval);
            let mut stored = Seq::ZERO;
            for count in counts {
                let r = batched.reserve(count);
                let durable = r.raise_to.unwrap_or(batched.ceiling());
                batched.apply(r);
                prop_assert!(r.last <= durable);
                for expected in r.first.0..=r.last.0 {
                    prop_assert_eq!(take(&mut single, &mut stored), Seq(expected));
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Take,
        Restart,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(prop_oneof![8 => Just(Op::Take), 1 => Just(Op::Restart)], 1..300)
    }

    proptest! {
        // Model: the set of seqs ever handed out. Against it: strictly
        // increasing, never reused across restarts, gaps only at a restart and
        // bounded by the interval.
        #[test]
        fn seqs_strictly_increase_across_restarts(ops in ops(), interval in 1u64..20) {
            let mut stored = Seq::ZERO;
            let mut block = SeqBlock::resume(stored, interval);
            let mut last_handed = Seq::ZERO;
            for op in ops {
                match op {
                    Op::Take => {
                        let s = take(&mut block, &mut stored);
                        prop_assert!(s > last_handed, "seq {s} after {last_handed}");
                        prop_assert!(s <= stored, "seq {s} above durable ceiling {stored}");
                        last_handed = s;
                    }
                    Op::Restart => {
                        block = SeqBlock::resume(stored, interval);
                        let s = take(&mut block, &mut stored);
                        prop_assert!(s > last_handed);
                        prop_assert!(s.0 - last_handed.0 <= interval, "gap {} larger than the interval", s.0 - last_handed.0);
                        last_handed = s;
                    }
                }
            }
        }
    }
}
