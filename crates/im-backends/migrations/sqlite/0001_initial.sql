-- The embedded store's schema. Integers are SQLite's i64; the store checks
-- every u64 id and seq on the way in and out. Conversations are stored in the
-- canonical text form of `ConversationId` (`p:{low}:{high}`).

-- The timeline. WITHOUT ROWID: rows live in the (conversation, seq) B-tree,
-- so a sync is one range scan and an insert writes one B-tree plus the
-- idempotency index.
CREATE TABLE messages (
    conversation   TEXT    NOT NULL,
    seq            INTEGER NOT NULL CHECK (seq > 0),
    msg_id         INTEGER NOT NULL,
    sender         INTEGER NOT NULL,
    recipient      INTEGER NOT NULL,
    client_msg_id  TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    content_type   TEXT    NOT NULL,
    server_time_ms INTEGER NOT NULL,
    PRIMARY KEY (conversation, seq),
    -- G3: a resend is caught here even when the dedup cache forgot it.
    UNIQUE (sender, client_msg_id)
) WITHOUT ROWID;

-- Who is in which conversation, for the conversation list. Written by append.
CREATE TABLE conversation_members (
    user_id      INTEGER NOT NULL,
    conversation TEXT    NOT NULL,
    PRIMARY KEY (user_id, conversation)
) WITHOUT ROWID;

-- Read positions (G5): only ever raised.
CREATE TABLE receipts (
    user_id      INTEGER NOT NULL,
    conversation TEXT    NOT NULL,
    read_seq     INTEGER NOT NULL,
    PRIMARY KEY (user_id, conversation)
) WITHOUT ROWID;

-- Seq ceilings (DESIGN.md §4): no seq above a conversation's ceiling has
-- been handed out. Only ever raised.
CREATE TABLE seq_ceilings (
    conversation TEXT    NOT NULL PRIMARY KEY,
    ceiling      INTEGER NOT NULL
) WITHOUT ROWID;

-- The built-in user directory. AUTOINCREMENT: ids start at 1 and are never
-- reused, even after the highest row is deleted.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);
