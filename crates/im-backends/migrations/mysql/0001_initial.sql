-- The production store's schema: the tables and keys of the SQLite store,
-- in SQL that runs on MySQL 8 and MariaDB 10.11 alike. InnoDB: row locks and
-- crash-safe commits (G1 also needs the server's settings, see mysql/mod.rs).
--
-- Ids, seqs, ceilings and epochs are BIGINT UNSIGNED, the domain's u64, so
-- they cross unchanged. Conversations are stored in the canonical text form
-- of `ConversationId` (`p:{low}:{high}`). Text is utf8mb4 with the binary
-- collation, so it compares and sorts byte by byte, as in SQLite. Keys that a
-- client or an admin picks (client_msg_id, user names, epoch scopes) are
-- VARBINARY: even utf8mb4_bin pads with spaces when it compares, under which
-- 'k' and 'k ' would be one key and a new message would pass for a resend.

-- The timeline. Clustered by an AUTO_INCREMENT id: rows are appended in
-- commit order at the right edge of the clustered index, and only the two
-- small secondary entries land on random pages (the SQLite store measured 5x
-- the bytes per commit when whole rows were clustered by conversation).
CREATE TABLE messages (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    conversation   VARCHAR(64)     NOT NULL,
    seq            BIGINT UNSIGNED NOT NULL,
    msg_id         BIGINT UNSIGNED NOT NULL,
    sender         BIGINT UNSIGNED NOT NULL,
    recipient      BIGINT UNSIGNED NOT NULL,
    client_msg_id  VARBINARY(64)   NOT NULL,
    -- MEDIUMBLOB (16 MiB): MAX_MESSAGE_SIZE may be up to 1 MiB, past BLOB's 64 KiB.
    body           MEDIUMBLOB      NOT NULL,
    content_type   VARCHAR(255)    NOT NULL,
    server_time_ms BIGINT          NOT NULL,
    PRIMARY KEY (id),
    -- Sync is a range scan of this index.
    UNIQUE KEY messages_by_conversation (conversation, seq),
    -- G3: a resend is caught here even when the dedup cache forgot it.
    UNIQUE KEY messages_by_client_msg_id (sender, client_msg_id),
    CONSTRAINT messages_seq_positive CHECK (seq > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Who is in which conversation, for the conversation list. Written by append.
CREATE TABLE conversation_members (
    user_id      BIGINT UNSIGNED NOT NULL,
    conversation VARCHAR(64)     NOT NULL,
    PRIMARY KEY (user_id, conversation)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Read positions (G5): only ever raised.
CREATE TABLE receipts (
    user_id      BIGINT UNSIGNED NOT NULL,
    conversation VARCHAR(64)     NOT NULL,
    read_seq     BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (user_id, conversation)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Seq ceilings (DESIGN.md §4): no seq above a conversation's ceiling has
-- been handed out. Only ever raised.
CREATE TABLE seq_ceilings (
    conversation VARCHAR(64)     NOT NULL,
    ceiling      BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (conversation)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Allocator epochs (DESIGN.md §4): one row per counter namespace, only ever
-- moved up.
CREATE TABLE allocator_epochs (
    scope VARBINARY(255)  NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (scope)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The built-in user directory. Ids come from AUTO_INCREMENT: they start at 1
-- and are not reused, also after a restart (both servers persist the counter
-- since MySQL 8.0 and MariaDB 10.2.4).
CREATE TABLE users (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name          VARBINARY(255)  NOT NULL,
    created_at_ms BIGINT          NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY users_by_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
