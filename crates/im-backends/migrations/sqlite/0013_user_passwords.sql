-- Users' password hashes (argon2id, PHC strings), apart from the users rows
-- so that no user query reads them. A user without a row has no password:
-- it signs in only with a token an admin issued.
CREATE TABLE user_passwords (
    user_id    INTEGER PRIMARY KEY REFERENCES users (id),
    hash       TEXT    NOT NULL,
    updated_ms INTEGER NOT NULL
);
