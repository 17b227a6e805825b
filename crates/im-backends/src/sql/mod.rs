//! What the SQL stores (`sqlite`, `mysql`) share: multi-row statements cut in
//! power-of-two chunks, the set of conversations known to have their member
//! rows, what a group change may do (`groups`), the retention walk
//! (`expiry`), the seqs recorded as never to be stored (`gaps`), the
//! filter's audit records (`audit`), the route outbox (`outbox`), and the
//! re-encryption walk (`reseal`).

pub(crate) mod audit;
pub(crate) mod expiry;
pub(crate) mod gaps;
pub(crate) mod groups;
mod known_conversations;
mod multi_row;
pub(crate) mod outbox;
pub(crate) mod reseal;

pub(crate) use known_conversations::KnownConversations;
pub(crate) use multi_row::{MultiRow, chunks, chunks_within};
