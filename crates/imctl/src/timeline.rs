//! What a client shows of each conversation: every message once, in seq order
//! when it can be, never lost.
//!
//! Pushes carry the seq. A push right after the last shown seq is shown; a
//! push beyond it means messages are missing, so the caller syncs the gap
//! first (DESIGN.md G4); a push already shown is dropped. A message that
//! arrives after a later one was shown (a gap that sync could not fill yet)
//! is still shown, late, rather than dropped.

use std::collections::{BTreeSet, HashMap};

/// What to do with a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Already shown, or older than where this view started.
    Skip,
    /// Show it now.
    Show,
    /// Sync the conversation after this seq first, then show what is new.
    SyncAfter(u64),
}

#[derive(Debug, Default)]
struct Conversation {
    /// Seqs at or below this were there before this view started.
    floor: u64,
    /// Highest seq shown.
    last: u64,
    /// Seqs above `floor` that were shown.
    shown: BTreeSet<u64>,
}

#[derive(Debug)]
pub struct Timeline {
    conversations: HashMap<String, Conversation>,
    /// Where a conversation first seen through a push starts.
    default_floor: u64,
}

impl Timeline {
    /// `default_floor`: for a conversation not started explicitly, messages at
    /// or below this seq are not shown.
    pub fn new(default_floor: u64) -> Self {
        Self { conversations: HashMap::new(), default_floor }
    }

    /// Starts a conversation's view after `floor` (e.g. where a sync began).
    pub fn start(&mut self, conversation_id: &str, floor: u64) {
        let c = self.conversations.entry(conversation_id.to_owned()).or_default();
        c.floor = floor;
        c.last = c.last.max(floor);
    }

    fn conversation(&mut self, conversation_id: &str) -> &mut Conversation {
        let floor = self.default_floor;
        self.conversations.entry(conversation_id.to_owned()).or_insert_with(|| Conversation {
            floor,
            last: floor,
            shown: BTreeSet::new(),
        })
    }

    /// What to do with a pushed message `seq` of `conversation_id`.
    pub fn step(&mut self, conversation_id: &str, seq: u64) -> Step {
        let c = self.conversation(conversation_id);
        if seq <= c.floor || c.shown.contains(&seq) {
            Step::Skip
        } else if seq == c.last + 1 || seq < c.last {
            Step::Show
        } else {
            Step::SyncAfter(c.last)
        }
    }

    /// Whether `seq` should be shown (not shown yet, above the floor). For
    /// messages that come from a sync.
    pub fn is_new(&mut self, conversation_id: &str, seq: u64) -> bool {
        let c = self.conversation(conversation_id);
        seq > c.floor && !c.shown.contains(&seq)
    }

    /// Records that `seq` was shown (or is known to the user, like their own sends).
    pub fn shown(&mut self, conversation_id: &str, seq: u64) {
        let c = self.conversation(conversation_id);
        if seq > c.floor {
            c.shown.insert(seq);
            c.last = c.last.max(seq);
        }
    }

    /// Highest seq shown in the conversation (or its floor).
    pub fn last(&self, conversation_id: &str) -> u64 {
        self.conversations.get(conversation_id).map_or(self.default_floor, |c| c.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_pushes_are_shown_once() {
        let mut t = Timeline::new(0);
        t.start("p:1:2", 4);
        assert_eq!(t.step("p:1:2", 5), Step::Show);
        t.shown("p:1:2", 5);
        assert_eq!(t.step("p:1:2", 5), Step::Skip);
        assert_eq!(t.step("p:1:2", 3), Step::Skip, "before the view started");
        assert_eq!(t.step("p:1:2", 6), Step::Show);
    }

    #[test]
    fn a_gap_asks_for_a_sync_from_the_last_shown() {
        let mut t = Timeline::new(0);
        t.start("p:1:2", 4);
        assert_eq!(t.step("p:1:2", 7), Step::SyncAfter(4));
        // The sync returned 5 and 7; 6 was not durable yet.
        for seq in [5, 7] {
            assert!(t.is_new("p:1:2", seq));
            t.shown("p:1:2", seq);
        }
        assert_eq!(t.last("p:1:2"), 7);
        // 6 arrives late: shown, not dropped.
        assert_eq!(t.step("p:1:2", 6), Step::Show);
        t.shown("p:1:2", 6);
        assert_eq!(t.step("p:1:2", 6), Step::Skip);
        assert_eq!(t.step("p:1:2", 8), Step::Show);
    }

    #[test]
    fn own_sends_move_the_view_without_a_sync() {
        let mut t = Timeline::new(0);
        t.start("p:1:2", 0);
        t.shown("p:1:2", 1); // acked send of our own
        assert_eq!(t.step("p:1:2", 2), Step::Show);
    }

    #[test]
    fn unknown_conversations_start_at_the_default_floor() {
        let mut t = Timeline::new(0);
        assert_eq!(t.step("p:3:9", 1), Step::Show);
        assert_eq!(t.step("p:3:9", 3), Step::SyncAfter(0));
        let mut t = Timeline::new(10);
        assert_eq!(t.step("p:3:9", 10), Step::Skip);
        assert_eq!(t.step("p:3:9", 11), Step::Show);
    }
}
