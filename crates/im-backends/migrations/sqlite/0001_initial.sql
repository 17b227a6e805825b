-- The embedded store's schema. Integers are SQLite's i64; the store checks
-- every u64 id and seq on the way in and out. Conversations are stored in the
-- canonical text form of `ConversationId` (`p:{low}:{high}`).

-- The timeline. A rowid table: rows are appended in commit order at the
-- right edge of the table's B-tree, and only the two small index entries land
-- on random pages. (WITHOUT ROWID keyed by (conversation, seq) put whole rows
-- on a random page per conversation: measured 5x the WAL bytes per commit
-- with many active conversations.)
CREATE TABLE messages (
    id             INTEGER PRIMARY KEY,
    conversation   TEXT    NOT NULL,
    seq            INTEGER NOT NULL CHECK (seq > 0),
    msg_id         INTEGER NOT NULL,
    sender         INTEGER NOT NULL,
    recipient      INTEGER NOT NULL,
    client_msg_id  TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    content_type   TEXT    NOT NULL,
    server_time_ms INTEGER NOT NULL
);
-- Sync is a range scan of this index.
CREATE UNIQUE INDEX messages_by_conversation ON messages (conversation, seq);
-- G3: a resend is caught here even when the dedup cache forgot it.
CREATE UNIQUE INDEX messages_by_client_msg_id ON messages (sender, client_msg_id);

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
