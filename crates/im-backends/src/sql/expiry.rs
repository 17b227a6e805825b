//! The retention walk (`MessageStore::expire_messages`) as both SQL stores
//! run it: read a window of messages in primary-key (commit) order without
//! locks, each with the server time of the next stored message of its
//! conversation (its successor: one probe of the `(conversation, seq)`
//! index), then delete by primary key the expired messages whose successor
//! is expired too.
//!
//! The rule keeps, in every conversation, its newest message (it has no
//! successor) and the last expired message before the first unexpired one.
//! So a gap that retention leaves in a conversation's seqs always lies just
//! below an expired message — days old, far older than `SYNC_GAP_GRACE` —
//! and sync (`im_core::message::visible_prefix`) steps over it at once
//! instead of waiting for a seq that another node might still commit. By
//! induction: a message is deleted only while its successor is expired;
//! once it is gone, the message above the gap is that successor, or, if
//! that one goes too, its own expired successor.
//!
//! Safe beside appends and other walks: appends add seqs above every
//! expired message, so a successor never changes to a younger message; two
//! nodes deleting the same window delete each row once (the DELETE names
//! primary keys; a row already gone matches nothing). The DELETE checks the
//! cutoff again, so a row it names cannot be younger than the cutoff.
//!
//! The step that ends a walk also deletes the `seq_gaps` records older than
//! the cutoff (`sql::gaps`), a bounded batch per walk: without its record a
//! hole falls back to `SYNC_GAP_GRACE`, so deleting one is always safe.

use std::sync::LazyLock;

use im_core::message::ExpiryStep;

use super::MultiRow;

/// Deletes the listed messages by primary key, if still older than the
/// cutoff (the first parameter).
pub(crate) static DELETE_EXPIRED: LazyLock<MultiRow> =
    LazyLock::new(|| MultiRow::new("DELETE FROM messages WHERE server_time_ms < ? AND id IN (", "?", ",", ")"));

/// The window read first, by primary key, with the server time of each
/// message's successor (NULL for a conversation's newest), for SQLite: its
/// planner runs the correlated subquery as a seek on `(conversation, seq)`
/// (`SEARCH n USING INDEX messages_by_conversation (conversation=? AND
/// seq>?)`).
pub(crate) const WINDOW_WITH_SUCCESSORS: &str = "SELECT m.id, m.server_time_ms, \
         (SELECT n.server_time_ms FROM messages n WHERE n.conversation = m.conversation AND n.seq > m.seq \
           ORDER BY n.seq LIMIT 1) \
     FROM messages m WHERE m.id > ? ORDER BY m.id LIMIT ?";

/// The window alone, for MySQL: there the same correlated subquery is a
/// `ref` scan of the conversation's index entries from its first seq on, so
/// its cost grows with the conversation (measured on MariaDB 10.11: 1.1 s for
/// 500 rows 20,000 seqs deep, against 13 ms at the start).
pub(crate) const WINDOW: &str =
    "SELECT id, conversation, seq, server_time_ms FROM messages WHERE id > ? ORDER BY id LIMIT ?";

/// The successors of listed messages, for MySQL: one part per message
/// (`id`, `conversation`, `seq`), each a range seek on `(conversation, seq)`
/// with constants (16 ms for 500 on the same table), answering its `id` and
/// the successor's server time; none for a conversation's newest.
pub(crate) static SUCCESSORS: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "",
        "(SELECT CAST(? AS UNSIGNED), server_time_ms FROM messages WHERE conversation = ? AND seq > ? \
          ORDER BY seq LIMIT 1)",
        " UNION ALL ",
        "",
    )
});

/// One message of a window.
pub(crate) struct WindowRow {
    pub id: u64,
    pub server_time_ms: i64,
    /// The server time of the next stored message of the same
    /// conversation; none for the newest.
    pub successor_time_ms: Option<i64>,
}

/// The messages a step examined.
pub(crate) struct Window {
    after: u64,
    limit: u32,
    before_ms: i64,
    rows: Vec<WindowRow>,
}

impl Window {
    pub fn new(after: u64, limit: u32, before_ms: i64, rows: Vec<WindowRow>) -> Self {
        Self { after, limit, before_ms, rows }
    }

    /// The ids to delete: expired messages whose successor is expired too.
    pub fn doomed(&self) -> Vec<u64> {
        let expired = |time: i64| time < self.before_ms;
        self.rows
            .iter()
            .filter(|row| expired(row.server_time_ms) && row.successor_time_ms.is_some_and(expired))
            .map(|row| row.id)
            .collect()
    }

    /// The step's outcome once `deleted` rows are gone.
    pub fn step(&self, deleted: u64) -> ExpiryStep {
        let reached_young = self.rows.iter().any(|row| row.server_time_ms >= self.before_ms);
        ExpiryStep {
            deleted,
            next: self.rows.last().map_or(self.after, |row| row.id),
            done: reached_young || self.rows.len() < self.limit as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, server_time_ms: i64, successor_time_ms: Option<i64>) -> WindowRow {
        WindowRow { id, server_time_ms, successor_time_ms }
    }

    #[test]
    fn expired_messages_go_when_their_successor_is_expired_too() {
        let window = Window::new(
            10,
            5,
            100,
            // 11: successor expired; 12: the newest; 13: successor young;
            // 14: young; 15: expired, successor expired.
            vec![
                row(11, 50, Some(60)),
                row(12, 50, None),
                row(13, 60, Some(100)),
                row(14, 100, None),
                row(15, 99, Some(99)),
            ],
        );
        assert_eq!(window.doomed(), [11, 15]);
        assert_eq!(window.step(2), ExpiryStep { deleted: 2, next: 15, done: true });
    }

    #[test]
    fn a_full_window_of_expired_messages_goes_on_and_an_empty_one_ends() {
        let full = Window::new(0, 2, 100, vec![row(1, 1, Some(2)), row(2, 2, None)]);
        assert_eq!(full.doomed(), [1]);
        assert_eq!(full.step(1), ExpiryStep { deleted: 1, next: 2, done: false });
        let empty = Window::new(7, 2, 100, Vec::new());
        assert_eq!(empty.step(0), ExpiryStep { deleted: 0, next: 7, done: true });
        let short = Window::new(0, 2, 100, vec![row(1, 1, None)]);
        assert!(short.step(0).done);
    }
}
