//! What an append works out before it touches a store: which messages of a
//! batch repeat an earlier message of the same batch (same sender and
//! client_msg_id). Only the first message of each key is sent to the store,
//! whose unique key decides whether it is new; a repeat then gets the first
//! one's ack (G3). Keeping repeats out of the insert also means every row of an
//! insert has a distinct key, so an insert that stores fewer rows than it was
//! given has met a key stored by an earlier batch.

use std::collections::HashMap;

use im_core::message::AppendOutcome;
use im_core::{FirstSend, NewMessage, RequestDigest, UserId};

/// The outcome of a message whose key `first` already holds: a resend when
/// it is the same request (or either digest is unknown), a conflict when
/// the key was used for another request.
pub(crate) fn resend_outcome(first: FirstSend, digest: Option<RequestDigest>) -> AppendOutcome {
    match digest {
        Some(digest) if !first.is_repeated_by(digest) => AppendOutcome::Conflict(first.ack),
        _ => AppendOutcome::Duplicate(first.ack),
    }
}

/// The first message of each key in a batch, and the repeats.
#[derive(Debug)]
pub(crate) struct BatchPlan {
    /// Indexes of the messages to insert, in batch order.
    pub firsts: Vec<usize>,
    /// For each message of the batch, the index of the earlier message with
    /// the same key, if any.
    repeats: Vec<Option<usize>>,
}

impl BatchPlan {
    pub fn new(batch: &[NewMessage]) -> Self {
        let mut first_of: HashMap<(UserId, &str), usize> = HashMap::with_capacity(batch.len());
        let mut firsts = Vec::with_capacity(batch.len());
        let mut repeats = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            let key = (message.sender, message.client_msg_id.as_str());
            match first_of.get(&key) {
                Some(&first) => repeats.push(Some(first)),
                None => {
                    first_of.insert(key, i);
                    firsts.push(i);
                    repeats.push(None);
                }
            }
        }
        Self { firsts, repeats }
    }

    /// The outcomes of the whole batch, in batch order, from what the store
    /// found under the key of each first message (`found[k]` for
    /// `batch[firsts[k]]`: `None` when it stored the message now). A message
    /// whose key holds a first send (found stored, or stored now by an
    /// earlier message of the batch) is a resend of it, or a conflict when
    /// `digests` (one per message, or empty) tell two different requests.
    pub fn outcomes(
        &self,
        batch: &[NewMessage],
        digests: &[RequestDigest],
        found: Vec<Option<FirstSend>>,
    ) -> Vec<AppendOutcome> {
        debug_assert_eq!(found.len(), self.firsts.len());
        let mut firsts: Vec<Option<FirstSend>> = vec![None; batch.len()];
        let mut outcomes: Vec<Option<AppendOutcome>> = vec![None; batch.len()];
        for (&i, found) in self.firsts.iter().zip(found) {
            outcomes[i] = Some(match found {
                Some(first) => resend_outcome(first, digests.get(i).copied()),
                None => AppendOutcome::Stored,
            });
            // What a repeat of this key is measured against.
            firsts[i] = Some(found.unwrap_or(FirstSend { ack: batch[i].ack(), digest: digests.get(i).copied() }));
        }
        for (i, repeat_of) in self.repeats.iter().enumerate() {
            if let Some(first) = *repeat_of {
                let first = firsts[first].expect("a repeat follows its first message");
                outcomes[i] = Some(resend_outcome(first, digests.get(i).copied()));
            }
        }
        outcomes.into_iter().map(|outcome| outcome.expect("every message of a batch is a first or a repeat")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use im_core::{Ack, ClientMsgId, ConversationId, MessageId, Seq};

    fn message(sender: u64, key: &str, seq: u64) -> NewMessage {
        NewMessage {
            msg_id: MessageId(seq),
            conversation: ConversationId::private(UserId(sender), UserId(99)).unwrap(),
            seq: Seq(seq),
            sender: UserId(sender),
            client_msg_id: ClientMsgId::parse(key).unwrap(),
            body: Bytes::from_static(b"x"),
            content_type: String::new(),
            server_time_ms: 0,
            sealed_with: None,
        }
    }

    #[test]
    fn repeats_point_at_the_first_message_of_their_key() {
        let batch = [message(1, "a", 1), message(2, "a", 2), message(1, "a", 3), message(1, "b", 4)];
        let plan = BatchPlan::new(&batch);
        assert_eq!(plan.firsts, vec![0, 1, 3]);
        assert_eq!(plan.repeats, vec![None, None, Some(0), None]);
    }

    #[test]
    fn a_repeat_carries_the_ack_its_first_message_ends_with() {
        let batch = [message(1, "a", 1), message(1, "a", 2), message(1, "b", 3), message(1, "b", 4)];
        let plan = BatchPlan::new(&batch);
        let earlier: Ack = message(1, "b", 77).ack();
        let found = vec![None, Some(FirstSend { ack: earlier, digest: None })];
        let outcomes = plan.outcomes(&batch, &[], found);
        assert_eq!(
            outcomes,
            vec![
                AppendOutcome::Stored,
                AppendOutcome::Duplicate(batch[0].ack()),
                AppendOutcome::Duplicate(earlier),
                AppendOutcome::Duplicate(earlier),
            ]
        );
    }

    #[test]
    fn a_repeat_of_another_request_is_a_conflict() {
        let batch =
            [message(1, "a", 1), message(1, "a", 2), message(1, "a", 3), message(1, "b", 4), message(1, "b", 5)];
        let digests = [1, 1, 2, 3, 4].map(RequestDigest);
        let plan = BatchPlan::new(&batch);
        // "b" was stored earlier by request 4.
        let earlier: Ack = message(1, "b", 77).ack();
        let found = vec![None, Some(FirstSend { ack: earlier, digest: Some(RequestDigest(4)) })];
        let outcomes = plan.outcomes(&batch, &digests, found);
        assert_eq!(
            outcomes,
            vec![
                AppendOutcome::Stored,
                AppendOutcome::Duplicate(batch[0].ack()),
                AppendOutcome::Conflict(batch[0].ack()),
                AppendOutcome::Conflict(earlier),
                // A repeat is measured against what is stored, not its first.
                AppendOutcome::Duplicate(earlier),
            ]
        );
    }
}
