//! The `route_outbox` table (batches whose routing is not settled yet), as
//! both SQL stores write and read it: which entries a commit keeps, the
//! `entries` column, and the statements.

use std::collections::HashSet;
use std::fmt::Write as _;

use im_core::error::BackendError;
use im_core::ports::{BackendResult, OfflineEntry, OutboxRow};
use im_core::{MessageId, Seq, UserId};

use super::MultiRow;

/// The insert of a batch's row.
pub(crate) const INSERT: &str = "INSERT INTO route_outbox (id, created_ms, entries) VALUES (?, ?, ?)";

/// The oldest rows created before a time.
pub(crate) const ABANDONED: &str =
    "SELECT id, created_ms, entries FROM route_outbox WHERE created_ms < ? ORDER BY created_ms, id LIMIT ?";

/// The delete of settled rows, by id.
pub(crate) fn delete_statement() -> MultiRow {
    MultiRow::new("DELETE FROM route_outbox WHERE id IN (", "?", ",", ")")
}

/// The `entries` column of `row` for the messages stored now (`stored`;
/// `None`: all of them): `None` when no entry remains, so no row is written.
/// A duplicate's entry went with its first send.
pub(crate) fn entries_of_stored(row: &OutboxRow, stored: Option<HashSet<MessageId>>) -> Option<String> {
    let mut column = String::new();
    for entry in row.entries.iter().filter(|e| stored.as_ref().is_none_or(|stored| stored.contains(&e.msg_id))) {
        if !column.is_empty() {
            column.push(';');
        }
        let OfflineEntry { user, conversation, seq, msg_id, server_time_ms } = entry;
        // A conversation id holds neither ',' nor ';' ("p:1:2", "g:7").
        // Written in place: one string per commit, not one per message.
        let _ = write!(column, "{},{conversation},{},{},{server_time_ms}", user.0, seq.0, msg_id.0);
    }
    (!column.is_empty()).then_some(column)
}

/// The entries of an `entries` column.
pub(crate) fn entries_from_column(column: &str) -> BackendResult<Vec<OfflineEntry>> {
    let malformed = || BackendError::Other(format!("route_outbox entries {column:?} are malformed"));
    column
        .split(';')
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let fields: Vec<&str> = entry.split(',').collect();
            let [user, conversation, seq, msg_id, server_time_ms] = fields[..] else {
                return Err(malformed());
            };
            Ok(OfflineEntry {
                user: UserId(user.parse().map_err(|_| malformed())?),
                conversation: conversation.parse().map_err(|_| malformed())?,
                seq: Seq(seq.parse().map_err(|_| malformed())?),
                msg_id: MessageId(msg_id.parse().map_err(|_| malformed())?),
                server_time_ms: server_time_ms.parse().map_err(|_| malformed())?,
            })
        })
        .collect()
}

/// A row as read back.
pub(crate) fn row_from_columns(id: u64, created_ms: i64, entries: &str) -> BackendResult<OutboxRow> {
    Ok(OutboxRow { id, created_ms, entries: entries_from_column(entries)? })
}

#[cfg(test)]
mod tests {
    use im_core::ConversationId;

    use super::*;

    fn entry(user: u64, peer: u64, seq: u64) -> OfflineEntry {
        OfflineEntry {
            user: UserId(user),
            conversation: ConversationId::private(UserId(user), UserId(peer)).unwrap(),
            seq: Seq(seq),
            msg_id: MessageId(1000 + seq),
            server_time_ms: 1_700_000_000_000 + seq as i64,
        }
    }

    #[test]
    fn entries_round_trip_through_the_column() {
        let row = OutboxRow { id: 1, created_ms: 5, entries: vec![entry(1, 2, 1), entry(3, 2, 9)] };
        let column = entries_of_stored(&row, None).unwrap();
        assert_eq!(entries_from_column(&column).unwrap(), row.entries);
    }

    #[test]
    fn only_the_stored_messages_entries_are_kept() {
        let row = OutboxRow { id: 1, created_ms: 5, entries: vec![entry(1, 2, 1), entry(3, 2, 9)] };
        let column = entries_of_stored(&row, Some(HashSet::from([MessageId(1009)]))).unwrap();
        assert_eq!(entries_from_column(&column).unwrap(), vec![entry(3, 2, 9)]);
        assert_eq!(entries_of_stored(&row, Some(HashSet::new())), None, "nothing stored, no row");
    }

    #[test]
    fn a_malformed_column_is_an_error_not_a_guess() {
        for column in ["1,p:1:2,3,4", "x,p:1:2,3,4,5", "1,p:1:2,3,4,5,6"] {
            assert!(entries_from_column(column).is_err(), "{column}");
        }
    }
}
