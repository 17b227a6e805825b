//! The retention walk (`MessageStore::expire_messages`) as both SQL stores
//! run it: read a window of messages in primary-key (commit) order without
//! locks, read the newest seq of each conversation that has an expired
//! message in it, then delete the expired messages that are not their
//! conversation's newest, by primary key.
//!
//! Why this is safe beside appends and other walks: a conversation's newest
//! seq only grows, so a message below a newest seq read at any time stays
//! below the newest forever; the row holding the newest seq is never among
//! those deleted (every walk deletes only seqs below a newest it read). Two
//! nodes deleting the same window delete each row once (the DELETE names
//! primary keys; a row already gone matches nothing). The DELETE checks the
//! cutoff again, so a row it names cannot be younger than the cutoff.

use std::collections::HashMap;
use std::sync::LazyLock;

use im_core::message::ExpiryStep;

use super::MultiRow;

/// The newest seq of each listed conversation: one index probe each.
pub(crate) static NEWEST_SEQS: LazyLock<MultiRow> = LazyLock::new(|| {
    MultiRow::new(
        "SELECT conversation, MAX(seq) FROM messages WHERE conversation IN (",
        "?",
        ",",
        ") GROUP BY conversation",
    )
});

/// Deletes the listed messages by primary key, if still older than the
/// cutoff (the first parameter).
pub(crate) static DELETE_EXPIRED: LazyLock<MultiRow> =
    LazyLock::new(|| MultiRow::new("DELETE FROM messages WHERE server_time_ms < ? AND id IN (", "?", ",", ")"));

/// The window read first, by primary key.
pub(crate) const WINDOW: &str =
    "SELECT id, conversation, seq, server_time_ms FROM messages WHERE id > ? ORDER BY id LIMIT ?";

/// One message of a window.
pub(crate) struct WindowRow {
    pub id: u64,
    pub conversation: String,
    pub seq: u64,
    pub server_time_ms: i64,
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

    fn expired(&self) -> impl Iterator<Item = &WindowRow> {
        self.rows.iter().filter(|row| row.server_time_ms < self.before_ms)
    }

    /// The conversations with an expired message in the window, each once.
    pub fn expired_conversations(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.expired().map(|row| row.conversation.as_str()).filter(|c| seen.insert(*c)).collect()
    }

    /// The ids to delete: expired messages below their conversation's
    /// newest seq (`newest`, read after the window). A conversation missing
    /// from `newest` has nothing stored any more, so nothing of it is
    /// deleted.
    pub fn doomed(&self, newest: &HashMap<String, u64>) -> Vec<u64> {
        self.expired()
            .filter(|row| newest.get(&row.conversation).is_some_and(|&newest| row.seq < newest))
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

    fn row(id: u64, conversation: &str, seq: u64, server_time_ms: i64) -> WindowRow {
        WindowRow { id, conversation: conversation.to_owned(), seq, server_time_ms }
    }

    #[test]
    fn only_expired_messages_below_their_conversations_newest_are_doomed() {
        let window = Window::new(
            10,
            5,
            100,
            vec![
                row(11, "a", 1, 50),
                row(12, "b", 1, 50),
                row(13, "a", 2, 60),
                row(14, "c", 7, 99),
                row(15, "a", 3, 100),
            ],
        );
        assert_eq!(window.expired_conversations(), ["a", "b", "c"]);
        // b's newest is its only message; c has a newer one elsewhere; a's
        // seq 3 is not expired.
        let newest = HashMap::from([("a".to_owned(), 3), ("b".to_owned(), 1), ("c".to_owned(), 9)]);
        assert_eq!(window.doomed(&newest), [11, 13, 14]);
        assert_eq!(window.step(3), ExpiryStep { deleted: 3, next: 15, done: true });
    }

    #[test]
    fn a_full_window_of_expired_messages_goes_on_and_an_empty_one_ends() {
        let full = Window::new(0, 2, 100, vec![row(1, "a", 1, 1), row(2, "a", 2, 2)]);
        assert_eq!(full.step(1), ExpiryStep { deleted: 1, next: 2, done: false });
        let empty = Window::new(7, 2, 100, Vec::new());
        assert_eq!(empty.step(0), ExpiryStep { deleted: 0, next: 7, done: true });
        let short = Window::new(0, 2, 100, vec![row(1, "a", 1, 1)]);
        assert!(short.step(0).done);
    }
}
