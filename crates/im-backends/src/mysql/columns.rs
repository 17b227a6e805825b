//! Domain values to and from MySQL columns. Ids, seqs, ceilings and epochs are
//! `BIGINT UNSIGNED`, the domain's u64, so they cross unchanged. Text comes
//! back as bytes: sqlx will not decode a column with a binary collation
//! (`utf8mb4_bin`, `VARBINARY`) as a `String`, so each value is checked as
//! UTF-8 here instead.

use im_core::error::BackendError;
use im_core::{ClientMsgId, ConversationId};

/// Text read back. Not UTF-8 means the row was written by something else.
pub(super) fn text_from_column(bytes: Vec<u8>, what: &str) -> Result<String, BackendError> {
    String::from_utf8(bytes).map_err(|e| BackendError::Other(format!("stored {what} is not UTF-8: {e}")))
}

pub(super) fn conversation_from_column(bytes: Vec<u8>) -> Result<ConversationId, BackendError> {
    let text = text_from_column(bytes, "conversation id")?;
    text.parse().map_err(|_| BackendError::Other(format!("stored conversation id {text:?} is malformed")))
}

pub(super) fn client_msg_id_from_column(bytes: Vec<u8>) -> Result<ClientMsgId, BackendError> {
    let text = text_from_column(bytes, "client_msg_id")?;
    ClientMsgId::parse(&text).map_err(|_| BackendError::Other(format!("stored client_msg_id {text:?} is malformed")))
}

/// `COUNT(*)` is a signed BIGINT; a count is never negative.
pub(super) fn count_from_column(value: i64, what: &str) -> Result<u64, BackendError> {
    u64::try_from(value).map_err(|_| BackendError::Other(format!("{what} {value} is negative")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_columns_are_refused() {
        assert!(text_from_column(vec![0xff, 0xfe], "name").is_err());
        assert!(conversation_from_column(b"p:2:1".to_vec()).is_err());
        assert_eq!(conversation_from_column(b"p:1:2".to_vec()).unwrap().to_string(), "p:1:2");
        assert!(client_msg_id_from_column(Vec::new()).is_err());
        assert!(count_from_column(-1, "unread count").is_err());
        assert_eq!(count_from_column(3, "unread count").unwrap(), 3);
    }
}
