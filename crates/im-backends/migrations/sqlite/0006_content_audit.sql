-- What the sensitive-word filter found in the messages it let through
-- unchanged (FILTER_ACTION=audit), for compliance review (`imctl audit
-- list`). Written in the same transaction as the message, so a stored
-- message that matched always has its row. Keyed by msg_id: listing pages
-- walk it newest first. `entries` holds the matched list entries, one per
-- line (a list entry is one line of the word list, so it holds no newline).
CREATE TABLE content_audit (
    msg_id         INTEGER PRIMARY KEY,
    conversation   TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    sender         INTEGER NOT NULL,
    entries        TEXT    NOT NULL,
    server_time_ms INTEGER NOT NULL
);

-- One conversation's records, newest first.
CREATE INDEX content_audit_by_conversation ON content_audit (conversation, msg_id);
