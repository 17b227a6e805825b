//! Messages as the pipeline carries them and as the store keeps them.

use bytes::Bytes;

use crate::{ClientMsgId, ConversationId, MessageId, Seq, UserId};

/// What a sender gets back once the message is durable (G1). A resend with
/// the same client_msg_id gets the same ack (G3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub msg_id: MessageId,
    pub conversation: ConversationId,
    pub seq: Seq,
    pub server_time_ms: i64,
    /// The sensitive-word filter masked part of the body before it was
    /// stored: what was delivered differs from what was sent. Decided by
    /// each send (a resend is filtered again), so never stored with the ack.
    pub body_masked: bool,
}

/// A message with its seq and id assigned, about to be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub msg_id: MessageId,
    pub conversation: ConversationId,
    pub seq: Seq,
    pub sender: UserId,
    pub client_msg_id: ClientMsgId,
    pub body: Bytes,
    pub content_type: String,
    pub server_time_ms: i64,
    /// The data key `body` is sealed with (encryption at rest, as stored
    /// and as read back from the store); `None`: `body` is the clear text,
    /// as every message that reaches a client is.
    pub sealed_with: Option<u64>,
}

impl NewMessage {
    /// The addressee of a private message (the sender's peer); none for a
    /// group message, which goes to the group's members.
    pub fn recipient(&self) -> Option<UserId> {
        self.conversation.peer_of(self.sender)
    }

    pub fn ack(&self) -> Ack {
        Ack {
            msg_id: self.msg_id,
            conversation: self.conversation,
            seq: self.seq,
            server_time_ms: self.server_time_ms,
            body_masked: false,
        }
    }
}

/// What the sensitive-word filter found in a message it let through
/// unchanged (`FILTER_ACTION=audit`): stored in the same transaction as the
/// message, so a stored message that matched always has its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub msg_id: MessageId,
    pub conversation: ConversationId,
    pub seq: Seq,
    pub sender: UserId,
    /// The list entries that matched, as written in the list, each once.
    pub entries: Vec<String>,
    /// When the message was accepted, as its `server_time_ms`.
    pub server_time_ms: i64,
}

/// A message read back from the store. Same fields as [`NewMessage`].
pub type StoredMessage = NewMessage;

/// Result of appending one message: stored now, or already there under the
/// same `(sender, client_msg_id)` — in which case nothing new was stored and
/// the first ack is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    Stored,
    Duplicate(Ack),
    /// The key was stored by another request (a different conversation,
    /// content type or body, by their [`RequestDigest`]s): nothing was
    /// stored, and the sender must not be told this message was (the first
    /// ack is kept for the record).
    Conflict(Ack),
}

/// A fingerprint of a send request: its conversation, content type and body
/// as the client sent them. Kept with the first ack of its
/// `(sender, client_msg_id)`, so that a resend is recognised only when it is
/// the same request, as payment APIs do with idempotency keys; the same
/// client_msg_id with another request is refused, not answered with the
/// first one's ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestDigest(pub u64);

/// A first send as recorded beside its key (the dedup cache): its ack, and
/// its request's digest (`None` for entries written before digests were).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstSend {
    pub ack: Ack,
    pub digest: Option<RequestDigest>,
}

impl FirstSend {
    /// Whether a send with `digest` repeats this one. An entry without a
    /// digest cannot tell, and counts as the same (as every entry did
    /// before digests).
    pub fn is_repeated_by(&self, digest: RequestDigest) -> bool {
        self.digest.is_none_or(|first| first == digest)
    }
}

/// One conversation as a member sees it in their list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation: ConversationId,
    pub max_seq: Seq,
    pub read_seq: Seq,
    /// Messages from others after `read_seq`.
    pub unread: u64,
    /// How far the other member of a private conversation has read, so that
    /// a client shows "read" on its own messages after a restart, not only
    /// from live receipts. Zero in a group (members ask `GetReadStatus`).
    pub peer_read_seq: Seq,
}

/// A user's conversation list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationList {
    pub summaries: Vec<ConversationSummary>,
    /// The group directory could not be asked: the groups listed are those
    /// this node had cached (some may be missing, or no longer the user's);
    /// the private conversations are complete.
    pub groups_unchecked: bool,
}

/// Who read a message of a group (G5 for groups).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStatus {
    /// Members whose read position is at or past the message.
    pub read_count: u64,
    /// Which members, when the group is small enough to tell
    /// (`group.read_receipt_details_max`); empty otherwise.
    pub readers: Vec<crate::UserId>,
    /// Whether `readers` lists them (the group is small enough).
    pub detailed: bool,
}

/// What one step of the retention walk (`MessageStore::expire_messages`)
/// did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiryStep {
    /// Messages deleted by this step.
    pub deleted: u64,
    /// Where the next step starts: the storage position of the last message
    /// this step examined (the `after` it was given when it examined none).
    pub next: u64,
    /// The walk is over: this step met a message not older than the cutoff,
    /// or the end of the store. Messages after it are younger (storage order
    /// is commit order, give or take the clock skew between nodes), and the
    /// next walk starts from the beginning again.
    pub done: bool,
}

/// A page of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<StoredMessage>,
    pub has_more: bool,
    /// Seqs known never to be stored (`MessageStore::record_skipped`)
    /// between the cursor and the last message of the page, ascending: holes
    /// sync steps over at once. A page whose messages follow each other
    /// without a hole has none; a store that knows of none leaves it empty
    /// (sync then waits out the grace on every hole).
    pub skipped: Vec<crate::Seq>,
}

/// How much of a fetched page a reader may see (G4 with several writers).
///
/// A node allocates a seq, then commits; two nodes writing one conversation
/// can commit N+1 before N. A reader that saw N+1 would move its cursor past
/// N and never sync it. So a page stops before a gap whose next message is
/// younger than `grace_ms` (by its server time): within the grace the missing
/// seq may still be committed; after it, the gap is permanent (a failed
/// send, a lost allocation) and the reader moves past it. `grace_ms` must
/// exceed the longest a commit can take after its seqs were allocated.
///
/// A seq of `skipped` (ascending: seqs recorded as never to be stored, as
/// [`Page::skipped`]) counts as present: a hole made only of those never
/// makes the reader wait.
///
/// Returns how many messages of `messages` (ascending seqs, all after
/// `after`) are visible at `now_ms`.
pub fn visible_prefix(
    messages: &[StoredMessage],
    skipped: &[crate::Seq],
    after: crate::Seq,
    now_ms: i64,
    grace_ms: i64,
) -> usize {
    let mut skipped = skipped.iter().map(|seq| seq.0).skip_while(|&seq| seq <= after.0).peekable();
    let mut expected = after.0 + 1;
    for (index, message) in messages.iter().enumerate() {
        // Step over the recorded seqs that fill the hole from its bottom.
        while skipped.peek().is_some_and(|&seq| seq < message.seq.0) {
            if skipped.peek() == Some(&expected) {
                expected += 1;
            }
            skipped.next();
        }
        if message.seq.0 != expected && now_ms - message.server_time_ms < grace_ms {
            return index;
        }
        expected = message.seq.0 + 1;
    }
    messages.len()
}

#[cfg(test)]
mod visible_prefix_tests {
    use super::*;
    use crate::{ClientMsgId, ConversationId, MessageId, Seq, UserId};

    fn at(seq: u64, server_time_ms: i64) -> StoredMessage {
        NewMessage {
            msg_id: MessageId(seq),
            conversation: ConversationId::private(UserId(1), UserId(2)).unwrap(),
            seq: Seq(seq),
            sender: UserId(1),
            client_msg_id: ClientMsgId::parse(&format!("c{seq}")).unwrap(),
            body: bytes::Bytes::new(),
            content_type: String::new(),
            server_time_ms,
            sealed_with: None,
        }
    }

    #[test]
    fn a_page_without_gaps_is_all_visible() {
        let page = [at(4, 1000), at(5, 1000), at(6, 1000)];
        assert_eq!(visible_prefix(&page, &[], Seq(3), 1000, 5000), 3);
    }

    #[test]
    fn a_young_gap_hides_what_follows_it() {
        // 5 may still be committed by another node: 6 and 7 wait.
        let page = [at(4, 1000), at(6, 1000), at(7, 1000)];
        assert_eq!(visible_prefix(&page, &[], Seq(3), 2000, 5000), 1);
        // The gap can be right after the cursor.
        assert_eq!(visible_prefix(&page[1..], &[], Seq(4), 2000, 5000), 0);
    }

    #[test]
    fn a_recorded_hole_is_stepped_over_at_once() {
        let page = [at(4, 1000), at(7, 1000), at(8, 1000)];
        // 5 and 6 were recorded as never to be stored: no wait.
        assert_eq!(visible_prefix(&page, &[Seq(5), Seq(6)], Seq(3), 1000, 5000), 3);
        // A hole right after the cursor, too.
        assert_eq!(visible_prefix(&page[1..], &[Seq(5), Seq(6)], Seq(4), 1000, 5000), 2);
        // Recorded seqs at or below the cursor change nothing.
        assert_eq!(visible_prefix(&page[1..], &[Seq(2), Seq(5), Seq(6)], Seq(4), 1000, 5000), 2);
    }

    #[test]
    fn a_hole_recorded_only_in_part_still_waits() {
        let page = [at(4, 1000), at(8, 1000), at(10, 1000)];
        // 5 and 7 are recorded, 6 is not: it may still come.
        assert_eq!(visible_prefix(&page, &[Seq(5), Seq(7)], Seq(3), 1000, 5000), 1);
        // 6 and 7 recorded, 5 not: the bottom of the hole is still open.
        assert_eq!(visible_prefix(&page, &[Seq(6), Seq(7)], Seq(3), 1000, 5000), 1);
        // 5, 6 and 7 recorded; 9 is not: 10 waits.
        assert_eq!(visible_prefix(&page, &[Seq(5), Seq(6), Seq(7)], Seq(3), 1000, 5000), 2);
        // Until the grace runs out.
        assert_eq!(visible_prefix(&page, &[Seq(5), Seq(6), Seq(7)], Seq(3), 9000, 5000), 3);
        // A recorded 9 as well: all of it.
        assert_eq!(visible_prefix(&page, &[Seq(5), Seq(6), Seq(7), Seq(9)], Seq(3), 1000, 5000), 3);
    }

    #[test]
    fn an_old_gap_is_permanent_and_skipped() {
        let page = [at(4, 1000), at(6, 1000), at(9, 9000)];
        // 5 never came within the grace; 7 and 8 may still come.
        assert_eq!(visible_prefix(&page, &[], Seq(3), 10_000, 5000), 2);
        assert_eq!(visible_prefix(&page, &[], Seq(3), 20_000, 5000), 3);
    }
}
