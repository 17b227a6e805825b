//! The `content_audit` table (what the sensitive-word filter found in the
//! messages it let through), as both SQL stores write and read it: which
//! records a batch stores, and the `entries` column.

use std::collections::HashSet;

use im_core::{AuditRecord, MessageId};

use super::MultiRow;

/// The multi-row insert of audit records: six columns per row.
pub(crate) fn insert_statement() -> MultiRow {
    MultiRow::new(
        "INSERT INTO content_audit (msg_id, conversation, seq, sender, entries, server_time_ms) VALUES",
        "(?,?,?,?,?,?)",
        ",",
        "",
    )
}

/// The records of `audits` whose message is among those stored now
/// (`stored`): a message that turned out a duplicate was recorded when it
/// was first sent. Audits are rare, so most batches return at once.
pub(crate) fn of_stored(audits: &[AuditRecord], stored: impl Iterator<Item = MessageId>) -> Vec<&AuditRecord> {
    if audits.is_empty() {
        return Vec::new();
    }
    let stored: HashSet<MessageId> = stored.collect();
    audits.iter().filter(|audit| stored.contains(&audit.msg_id)).collect()
}

/// The `entries` column: the matched entries, one per line. A list entry is
/// one line of the word list, so none holds a newline and the join is
/// lossless.
pub(crate) fn entries_column(entries: &[String]) -> String {
    entries.join("\n")
}

pub(crate) fn entries_from_column(column: &str) -> Vec<String> {
    if column.is_empty() { Vec::new() } else { column.split('\n').map(str::to_owned).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_column() {
        for entries in [vec![], vec!["one".to_owned()], vec!["a b".to_owned(), "敏感".to_owned()]] {
            assert_eq!(entries_from_column(&entries_column(&entries)), entries);
        }
    }
}
