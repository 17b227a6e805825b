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
}

/// A message with its seq and id assigned, about to be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub msg_id: MessageId,
    pub conversation: ConversationId,
    pub seq: Seq,
    pub sender: UserId,
    pub recipient: UserId,
    pub client_msg_id: ClientMsgId,
    pub body: Bytes,
    pub content_type: String,
    pub server_time_ms: i64,
}

impl NewMessage {
    pub fn ack(&self) -> Ack {
        Ack { msg_id: self.msg_id, conversation: self.conversation, seq: self.seq, server_time_ms: self.server_time_ms }
    }
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
}

/// One conversation as a member sees it in their list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation: ConversationId,
    pub max_seq: Seq,
    pub read_seq: Seq,
    /// Messages from others after `read_seq`.
    pub unread: u64,
}

/// A page of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<StoredMessage>,
    pub has_more: bool,
}
