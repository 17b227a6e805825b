-- Allocator epochs (DESIGN.md §4): one row per counter namespace, only ever
-- moved up.
CREATE TABLE allocator_epochs (
    scope TEXT    NOT NULL PRIMARY KEY,
    epoch INTEGER NOT NULL
) WITHOUT ROWID;
