-- Groups and their membership (DESIGN.md G6), in SQL that runs on MySQL 8
-- and MariaDB 10.11 alike. A group's messages are one timeline (`g:{id}`) in
-- `messages`; these tables say who may read it, and from which seq on.
--
-- `groups` is a reserved word in MySQL 8 (window frames): every statement
-- quotes it.

-- Ids come from AUTO_INCREMENT: they start at 1 and are not reused, also
-- after a restart (both servers persist the counter), so a stale `g:{id}`
-- never names a new group. `version` counts the membership changes; every
-- change bumps it by one, under this row's lock. The name is VARBINARY: it
-- comes back byte for byte, as in SQLite.
CREATE TABLE `groups` (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name            VARBINARY(255)  NOT NULL,
    owner           BIGINT UNSIGNED NOT NULL,
    history_visible BOOLEAN         NOT NULL,
    created_at_ms   BIGINT          NOT NULL,
    version         BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT groups_version_positive CHECK (version > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A member sees the group's messages with seq > `joined_after`. Clustered by
-- group: a roster is one range scan.
CREATE TABLE group_members (
    group_id     BIGINT UNSIGNED NOT NULL,
    user_id      BIGINT UNSIGNED NOT NULL,
    role         VARCHAR(8)      NOT NULL,
    joined_after BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (group_id, user_id),
    -- A user's groups (`groups_of`), in group order.
    KEY group_members_by_user (user_id, group_id),
    CONSTRAINT group_members_group FOREIGN KEY (group_id) REFERENCES `groups` (id),
    CONSTRAINT group_members_role CHECK (role IN ('member', 'admin', 'owner'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
