//! The `seq_gaps` table (`MessageStore::record_skipped`): seqs known never
//! to be stored, so sync steps over them at once. What both SQL stores share.

use std::sync::LazyLock;

use im_core::{NewMessage, Seq};

use super::MultiRow;

/// Records skipped seqs; one already recorded is left as it is.
pub(crate) static INSERT_MYSQL: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "INSERT INTO seq_gaps (conversation, seq, recorded_ms) VALUES",
        "(?,?,?)",
        ",",
        "ON DUPLICATE KEY UPDATE seq = seq",
    )
});

/// [`INSERT_MYSQL`] for SQLite.
pub(crate) static INSERT_SQLITE: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "INSERT INTO seq_gaps (conversation, seq, recorded_ms) VALUES",
        "(?,?,?)",
        ",",
        "ON CONFLICT DO NOTHING",
    )
});

/// The recorded seqs of a conversation strictly between two seqs: a range
/// scan of the primary key.
pub(crate) const BETWEEN: &str = "SELECT seq FROM seq_gaps WHERE conversation = ? AND seq > ? AND seq < ? ORDER BY seq";

/// Deletes at most `?` records older than `?` (oldest first), for MySQL.
pub(crate) const DELETE_OLD_MYSQL: &str =
    "DELETE FROM seq_gaps WHERE recorded_ms < ? ORDER BY recorded_ms, conversation, seq LIMIT ?";

/// [`DELETE_OLD_MYSQL`] for SQLite (no `DELETE ... LIMIT` by default).
pub(crate) const DELETE_OLD_SQLITE: &str = "DELETE FROM seq_gaps WHERE rowid IN \
     (SELECT rowid FROM seq_gaps WHERE recorded_ms < ? ORDER BY recorded_ms LIMIT ?)";

/// The seq below which a fetched page may have recorded gaps to look up:
/// its last message's, when its messages leave a hole after `after`; none
/// when they follow each other (then there is no hole to fill and no query
/// to run).
pub(crate) fn hole_below(after: Seq, messages: &[NewMessage]) -> Option<Seq> {
    let last = messages.last()?.seq;
    (last.0 - after.0 != messages.len() as u64).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::fixtures::{message, private, users};

    fn at(seq: u64) -> NewMessage {
        let [a, b] = users();
        message(private(a, b), a, seq, &format!("c{seq}"), 0)
    }

    #[test]
    fn only_a_page_with_a_hole_is_looked_up() {
        assert_eq!(hole_below(Seq(3), &[]), None);
        assert_eq!(hole_below(Seq(3), &[at(4), at(5)]), None);
        assert_eq!(hole_below(Seq(3), &[at(5)]), Some(Seq(5)));
        assert_eq!(hole_below(Seq(3), &[at(4), at(6), at(7)]), Some(Seq(7)));
    }
}
