//! The `content_audit` record (`im.audit.v1.AuditRecord`): the topic's
//! payload and the admin API's list entries.

use bytes::Bytes;
use im_core::{AuditRecord, ImError, MessageId, Seq, UserId};
use prost::Message as _;

use crate::audit as pb;

impl From<&AuditRecord> for pb::AuditRecord {
    fn from(r: &AuditRecord) -> Self {
        pb::AuditRecord {
            msg_id: r.msg_id.0,
            conversation_id: r.conversation.to_string(),
            seq: r.seq.0,
            sender: r.sender.0,
            entries: r.entries.clone(),
            server_time_ms: r.server_time_ms,
        }
    }
}

impl TryFrom<pb::AuditRecord> for AuditRecord {
    type Error = ImError;

    fn try_from(r: pb::AuditRecord) -> Result<Self, ImError> {
        Ok(AuditRecord {
            msg_id: MessageId(r.msg_id),
            conversation: r.conversation_id.parse()?,
            seq: Seq(r.seq),
            sender: UserId(r.sender),
            entries: r.entries,
            server_time_ms: r.server_time_ms,
        })
    }
}

/// The payload of a `content_audit` record.
pub fn encode_audit_record(record: &AuditRecord) -> Bytes {
    pb::AuditRecord::from(record).encode_to_vec().into()
}

pub fn decode_audit_record(payload: &[u8]) -> Result<AuditRecord, ImError> {
    pb::AuditRecord::decode(payload)
        .map_err(|e| ImError::invalid(format!("not a content_audit record: {e}")))?
        .try_into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::ConversationId;

    #[test]
    fn a_record_round_trips_through_its_payload() {
        let record = AuditRecord {
            msg_id: MessageId(77),
            conversation: ConversationId::private(UserId(3), UserId(9)).unwrap(),
            seq: Seq(12),
            sender: UserId(9),
            entries: vec!["bad".into(), "敏感".into()],
            server_time_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_audit_record(&encode_audit_record(&record)).unwrap(), record);
        assert!(decode_audit_record(b"\xff\xff").is_err());
    }
}
