//! Domain values to and from SQLite columns. SQLite integers are i64; ids and
//! seqs are u64 in the domain, so every crossing is checked rather than cast.

use im_core::error::BackendError;
use im_core::{ConversationId, Seq};

/// A value about to be stored. Out of range is refused: storing it would
/// corrupt ordering.
pub(super) fn to_column(value: u64, what: &str) -> Result<i64, BackendError> {
    i64::try_from(value).map_err(|_| BackendError::Other(format!("{what} {value} does not fit a SQLite integer")))
}

/// A bound in a query (a cursor, a read position): values past the column
/// range compare like the largest column value.
pub(super) fn to_bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A value read back. Negative means the file was written by something else.
pub(super) fn from_column(value: i64, what: &str) -> Result<u64, BackendError> {
    u64::try_from(value).map_err(|_| BackendError::Other(format!("stored {what} {value} is negative")))
}

pub(super) fn seq_from_column(value: i64) -> Result<Seq, BackendError> {
    from_column(value, "seq").map(Seq)
}

pub(super) fn conversation_from_column(text: &str) -> Result<ConversationId, BackendError> {
    text.parse().map_err(|_| BackendError::Other(format!("stored conversation id {text:?} is malformed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused_or_clamped() {
        assert!(to_column(u64::MAX, "seq").is_err());
        assert_eq!(to_column(7, "seq").unwrap(), 7);
        assert_eq!(to_bound(u64::MAX), i64::MAX);
        assert!(from_column(-1, "seq").is_err());
        assert!(conversation_from_column("p:2:1").is_err());
    }
}
