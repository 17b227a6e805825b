-- Seqs known never to be stored (MessageStore::record_skipped): allocated to
-- messages of a committed batch that the store did not store. SQLite's sync
-- steps over every gap at once anyway (one process writes, grace 0); the
-- table keeps the port's contract the same on both stores. Retention deletes
-- them by age.
CREATE TABLE seq_gaps (
    conversation TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    recorded_ms  INTEGER NOT NULL,
    PRIMARY KEY (conversation, seq)
);
CREATE INDEX seq_gaps_by_age ON seq_gaps (recorded_ms);
