//! Multi-row statements (`INSERT ... VALUES (..), (..), ...`): one statement
//! for many rows is what makes an append cost microseconds per message rather
//! than a statement round trip each.
//!
//! A batch is cut into chunks whose row counts are powers of two, so a
//! connection caches at most `log2(MAX_ROWS) + 1` prepared statements per kind
//! whatever the batch sizes are.

use std::ops::Range;

/// Rows per statement. SQLite allows 32766 bound parameters; 512 rows of the
/// widest statement (9 columns) bind 4608.
pub(super) const MAX_ROWS: usize = 512;

/// One statement text per power-of-two row count up to [`MAX_ROWS`].
#[derive(Debug)]
pub(super) struct MultiRow {
    by_log2: Vec<String>,
}

impl MultiRow {
    /// `head` up to `VALUES`, `row` the placeholder tuple of one row, `tail`
    /// what follows the rows (an `ON CONFLICT`, a `RETURNING`).
    pub fn new(head: &str, row: &str, tail: &str) -> Self {
        let by_log2 = (0..=MAX_ROWS.ilog2())
            .map(|log2| {
                let rows = 1usize << log2;
                let mut sql = String::with_capacity(head.len() + tail.len() + rows * (row.len() + 1) + 2);
                sql.push_str(head);
                sql.push(' ');
                for i in 0..rows {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(row);
                }
                sql.push(' ');
                sql.push_str(tail);
                sql
            })
            .collect();
        Self { by_log2 }
    }

    /// The statement for a chunk of `rows` rows, as cut by [`chunks`].
    pub fn sql(&self, rows: usize) -> &str {
        debug_assert!(rows.is_power_of_two() && rows <= MAX_ROWS, "{rows} rows is not a chunk size");
        &self.by_log2[rows.ilog2() as usize]
    }
}

/// Cuts `0..len` into consecutive ranges of power-of-two lengths, at most
/// [`MAX_ROWS`] each, largest first.
pub(super) fn chunks(len: usize) -> impl Iterator<Item = Range<usize>> {
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
    fn statements_have_one_placeholder_tuple_per_row() {
        let statements = MultiRow::new("INSERT INTO t (a, b) VALUES", "(?,?)", "ON CONFLICT DO NOTHING");
        assert_eq!(statements.sql(1), "INSERT INTO t (a, b) VALUES (?,?) ON CONFLICT DO NOTHING");
        assert_eq!(statements.sql(4).matches("(?,?)").count(), 4);
        assert_eq!(statements.sql(MAX_ROWS).matches('?').count(), 2 * MAX_ROWS);
    }
}
