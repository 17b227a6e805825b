-- Groups and their membership (DESIGN.md G6), the built-in user directory's
-- side of groups. A group's messages are one timeline (`g:{id}`) in
-- `messages`; these tables say who may read it, and from which seq on.

-- AUTOINCREMENT: group ids start at 1 and are never reused, even after the
-- highest row is deleted (a stale `g:{id}` must never name a new group).
-- `version` counts the membership changes; every change bumps it by one.
CREATE TABLE groups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL,
    owner           INTEGER NOT NULL,
    history_visible INTEGER NOT NULL CHECK (history_visible IN (0, 1)),
    created_at_ms   INTEGER NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0)
);

-- A member sees the group's messages with seq > `joined_after`. Keyed by
-- group: a roster is one range scan.
CREATE TABLE group_members (
    group_id     INTEGER NOT NULL REFERENCES groups (id),
    user_id      INTEGER NOT NULL,
    role         TEXT    NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
    joined_after INTEGER NOT NULL CHECK (joined_after >= 0),
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
-- A user's groups (`groups_of`), in group order.
CREATE INDEX group_members_by_user ON group_members (user_id, group_id);
