-- Envelope encryption's data keys (DEKs), only ever in wrapped form
-- (encrypted under the master key, in the KMS): the plaintext key never
-- reaches the database. Every key ever activated stays, so a body sealed
-- under a retired key stays readable; bodies name their key by `id`. Ids come
-- from AUTO_INCREMENT: they start at 1 and are not reused, also after a
-- restart (both servers persist the counter). `master_key_id` (a KMS key id
-- or ARN, up to 2048 bytes) is VARBINARY: it comes back byte for byte, as in
-- SQLite. `wrapped` is a BLOB: up to 65,535 bytes.
CREATE TABLE data_keys (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    wrapped       BLOB            NOT NULL,
    master_key_id VARBINARY(2048) NOT NULL,
    created_ms    BIGINT          NOT NULL,
    -- When another key became active (the activation's created_ms).
    retired_ms    BIGINT          NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Which key new bodies are sealed with: one row, present from the start with
-- no key. An activation locks it (`SELECT ... FOR UPDATE`), compares its
-- `dek_id` with what the caller expects and swaps it in the same
-- transaction, so activations on every node run one at a time and exactly one
-- of several racing ones wins. The row exists before any activation: a
-- locking read of a missing row takes gap locks, and two nodes both inserting
-- the first row under them would deadlock.
CREATE TABLE active_data_key (
    slot   TINYINT UNSIGNED NOT NULL,
    dek_id BIGINT UNSIGNED  NULL,
    PRIMARY KEY (slot),
    CONSTRAINT active_data_key_one_row CHECK (slot = 1),
    CONSTRAINT active_data_key_dek FOREIGN KEY (dek_id) REFERENCES data_keys (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO active_data_key (slot, dek_id) VALUES (1, NULL);
