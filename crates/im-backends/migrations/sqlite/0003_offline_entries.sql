-- Offline entries (DESIGN.md §3): messages that reached none of their
-- addressee's devices, recorded by the offline worker. The key makes a
-- redelivered entry a no-op; its order serves both reads: a user's entries
-- by conversation (pending), and one conversation's up to a seq (clear).
CREATE TABLE offline_entries (
    user_id        INTEGER NOT NULL,
    conversation   TEXT    NOT NULL,
    seq            INTEGER NOT NULL CHECK (seq > 0),
    msg_id         INTEGER NOT NULL,
    server_time_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, conversation, seq)
) WITHOUT ROWID;
