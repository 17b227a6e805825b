-- A user's standing (im_core::UserStatus): disabled by an admin, and the
-- generation below which its tokens were revoked. Both 0 for every user
-- nobody has stopped.
ALTER TABLE users
    ADD COLUMN disabled         BOOLEAN         NOT NULL DEFAULT FALSE,
    ADD COLUMN token_generation BIGINT UNSIGNED NOT NULL DEFAULT 0;
