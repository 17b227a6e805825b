-- Users' password hashes (argon2id, PHC strings), apart from the users rows
-- so that no user query reads them. A user without a row has no password:
-- it signs in only with a token an admin issued.
CREATE TABLE user_passwords (
    user_id    BIGINT UNSIGNED NOT NULL,
    hash       VARBINARY(255)  NOT NULL,
    updated_ms BIGINT          NOT NULL,
    PRIMARY KEY (user_id),
    CONSTRAINT user_passwords_user FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
