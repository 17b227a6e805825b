//! Multi-row statements (`INSERT ... VALUES (..), (..), ...`, `WHERE (..) OR
//! (..)`): one statement for many rows is one round trip to the server rather
//! than one per row.
//!
//! A batch is cut into chunks whose row counts are powers of two, so a
//! connection prepares (and caches) at most `log2(MAX_ROWS) + 1` statements
//! per kind whatever the batch sizes are. [`chunks_within`] also keeps a
//! chunk under a byte budget (MySQL's `max_allowed_packet`).

use std::ops::Range;

/// Rows per statement. SQLite allows 32766 bound parameters and a MySQL
/// prepared statement 65535; 512 rows of the widest statement (10 columns)
/// bind 5120.
pub(crate) const MAX_ROWS: usize = 512;

/// One statement text per power-of-two row count up to [`MAX_ROWS`].
#[derive(Debug)]
pub(crate) struct MultiRow {
    by_log2: Vec<String>,
}

impl MultiRow {
    /// `head` up to the rows, `row` the placeholders of one row, `separator`
    /// between rows (`,` for VALUES, ` OR ` for conditions), `tail` what
    /// follows the rows (an `ON DUPLICATE KEY UPDATE`, a `FOR UPDATE`).
    pub fn new(head: &str, row: &str, separator: &str, tail: &str) -> Self {
        let by_log2 = (0..=MAX_ROWS.ilog2())
            .map(|log2| {
                let rows = 1usize << log2;
                let mut sql = String::with_capacity(head.len() + tail.len() + rows * (row.len() + separator.len()) + 2);
                sql.push_str(head);
                sql.push(' ');
                for i in 0..rows {
                    if i > 0 {
                        sql.push_str(separator);
                    }
                    sql.push_str(row);
                }
                if !tail.is_empty() {
                    sql.push(' ');
                    sql.push_str(tail);
                }
                sql
            })
            .collect();
        Self { by_log2 }
    }

    /// The statement for a chunk of `rows` rows, as cut by [`chunks`] or
    /// [`chunks_within`].
    pub fn sql(&self, rows: usize) -> &str {
        debug_assert!(rows.is_power_of_two() && rows <= MAX_ROWS, "{rows} rows is not a chunk size");
        &self.by_log2[rows.ilog2() as usize]
    }
}

/// Cuts `0..len` into consecutive ranges of power-of-two lengths, at most
/// [`MAX_ROWS`] each, largest first.
pub(crate) fn chunks(len: usize) -> impl Iterator<Item = Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = len - start;
        if left == 0 {
            return None;
        }
        let size = if left >= MAX_ROWS { MAX_ROWS } else { 1 << left.ilog2() };
        let range = start..start + size;
        start += size;
        Some(range)
    })
}

/// Like [`chunks`] over rows of `sizes` bytes, each range also holding at
/// most `budget` bytes, unless it is a single row larger than that (a row
/// cannot be cut).
pub(crate) fn chunks_within(sizes: &[usize], budget: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = sizes.len() - start;
        if left == 0 {
            return None;
        }
        let mut size = if left >= MAX_ROWS { MAX_ROWS } else { 1 << left.ilog2() };
        while size > 1 && sizes[start..start + size].iter().sum::<usize>() > budget {
            size /= 2;
        }
        let range = start..start + size;
        start += size;
        Some(range)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_batch_in_power_of_two_pieces() {
        let sizes = |len| chunks(len).map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(7), vec![4, 2, 1]);
        assert_eq!(sizes(1100), vec![512, 512, 64, 8, 4]);
        let covered: Vec<usize> = chunks(1100).flatten().collect();
        assert_eq!(covered, (0..1100).collect::<Vec<_>>());
    }

    #[test]
    fn chunks_within_a_budget_split_large_rows_apart() {
        let lens = |sizes: &[usize], budget| chunks_within(sizes, budget).map(|r| r.len()).collect::<Vec<_>>();
        // Small rows: the same cut as by count.
        assert_eq!(lens(&[1; 1100], 10_000), vec![512, 512, 64, 8, 4]);
        // 3 bytes at most per chunk.
        assert_eq!(lens(&[1, 1, 1, 1, 1, 1, 1], 3), vec![2, 2, 2, 1]);
        // A row over the budget goes alone.
        assert_eq!(lens(&[1, 9, 1, 1], 3), vec![1, 1, 2]);
        let sizes = [5usize; 40];
        let covered: Vec<usize> = chunks_within(&sizes, 12).flatten().collect();
        assert_eq!(covered, (0..40).collect::<Vec<_>>());
        assert!(chunks_within(&sizes, 12).all(|r| r.len() <= 2));
    }

    #[test]
    fn statements_have_one_placeholder_tuple_per_row() {
        let values = MultiRow::new("INSERT INTO t (a, b) VALUES", "(?,?)", ",", "ON DUPLICATE KEY UPDATE a = a");
        assert_eq!(values.sql(1), "INSERT INTO t (a, b) VALUES (?,?) ON DUPLICATE KEY UPDATE a = a");
        assert_eq!(values.sql(4).matches("(?,?)").count(), 4);
        assert_eq!(values.sql(MAX_ROWS).matches('?').count(), 2 * MAX_ROWS);
        let conditions = MultiRow::new("SELECT a FROM t WHERE", "(a = ? AND b = ?)", " OR ", "FOR UPDATE");
        assert_eq!(conditions.sql(2), "SELECT a FROM t WHERE (a = ? AND b = ?) OR (a = ? AND b = ?) FOR UPDATE");
    }
}
