-- Offline entries (DESIGN.md §3): messages that reached none of their
-- addressee's devices, recorded by the offline worker. The primary key makes
-- a redelivered entry a no-op; its order serves both reads: a user's entries
-- by conversation (pending), and one conversation's up to a seq (clear).
CREATE TABLE offline_entries (
    user_id        BIGINT UNSIGNED NOT NULL,
    conversation   VARCHAR(64)     NOT NULL,
    seq            BIGINT UNSIGNED NOT NULL,
    msg_id         BIGINT UNSIGNED NOT NULL,
    server_time_ms BIGINT          NOT NULL,
    PRIMARY KEY (user_id, conversation, seq),
    CONSTRAINT offline_entries_seq_positive CHECK (seq > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
