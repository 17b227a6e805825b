-- Seqs known never to be stored (MessageStore::record_skipped): allocated to
-- messages of a committed batch that the store did not store (a resend the
-- dedup cache missed, a reused client_msg_id). Sync steps over them at once
-- instead of waiting SYNC_GAP_GRACE for another node to commit them.
-- Retention deletes them by age.
CREATE TABLE seq_gaps (
    conversation VARCHAR(64)     NOT NULL,
    seq          BIGINT UNSIGNED NOT NULL,
    recorded_ms  BIGINT          NOT NULL,
    PRIMARY KEY (conversation, seq),
    KEY seq_gaps_by_age (recorded_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
