//! Which conversations already have their `conversation_members` rows.
//!
//! Every append must make sure both members of each conversation it touches
//! have a row. Writing them for every conversation of every batch costs index
//! work and bytes per message, though after its first message a
//! conversation's rows are always there. So a store remembers the
//! conversations whose rows it has committed, and an append writes rows only
//! for the others.

use std::collections::HashSet;

use im_core::ConversationId;
use parking_lot::Mutex;

/// Beyond this many, the set is emptied and refills as conversations come
/// back (each then costs one redundant no-op insert). About 40 bytes per
/// entry: a few MiB.
const MAX_KNOWN: usize = 100_000;

/// Conversations whose member rows are committed. Rows are never deleted, so
/// a conversation in the set always has its rows; one missing from it may
/// have them too.
#[derive(Debug, Default)]
pub(crate) struct KnownConversations {
    known: Mutex<HashSet<ConversationId>>,
}

impl KnownConversations {
    /// The distinct conversations among `conversations` not known to have
    /// rows, sorted (so concurrent appends lock their rows in one order).
    pub fn unknown(&self, conversations: impl Iterator<Item = ConversationId>) -> Vec<ConversationId> {
        let known = self.known.lock();
        let mut unknown: Vec<ConversationId> = conversations.filter(|c| !known.contains(c)).collect();
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    /// Records that the rows of `conversations` are committed.
    pub fn committed(&self, conversations: &[ConversationId]) {
        let mut known = self.known.lock();
        if known.len() + conversations.len() > MAX_KNOWN {
            known.clear();
        }
        known.extend(conversations.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::UserId;

    fn private(a: u64, b: u64) -> ConversationId {
        ConversationId::private(UserId(a), UserId(b)).unwrap()
    }

    #[test]
    fn only_committed_conversations_are_known() {
        let known = KnownConversations::default();
        let (ab, ac) = (private(1, 2), private(1, 3));
        assert_eq!(known.unknown([ac, ab, ab].into_iter()), vec![ab, ac]);
        known.committed(&[ab]);
        assert_eq!(known.unknown([ab, ac].into_iter()), vec![ac]);
    }
}
