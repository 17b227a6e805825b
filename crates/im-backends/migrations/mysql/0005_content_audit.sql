-- What the sensitive-word filter found in the messages it let through
-- unchanged (FILTER_ACTION=audit), for compliance review (`imctl audit
-- list`; in production the same records are also published on the
-- `content_audit` topic). Written in the same transaction as the message,
-- so a stored message that matched always has its row. `entries` holds the
-- matched list entries, one per line (a list entry is one line of the word
-- list, so it holds no newline).
CREATE TABLE content_audit (
    msg_id         BIGINT UNSIGNED NOT NULL,
    conversation   VARCHAR(64)     NOT NULL,
    seq            BIGINT UNSIGNED NOT NULL,
    sender         BIGINT UNSIGNED NOT NULL,
    entries        MEDIUMTEXT      NOT NULL,
    server_time_ms BIGINT          NOT NULL,
    PRIMARY KEY (msg_id),
    -- One conversation's records, newest first.
    KEY content_audit_by_conversation (conversation, msg_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
