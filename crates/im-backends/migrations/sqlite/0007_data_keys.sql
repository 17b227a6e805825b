-- Envelope encryption's data keys (DEKs), only ever in wrapped form
-- (encrypted under the master key, in the KMS or the data dir): the
-- plaintext key never reaches this file. Every key ever activated stays, so
-- a body sealed under a retired key stays readable; bodies name their key by
-- `id`. AUTOINCREMENT: ids start at 1 and are never reused, even after the
-- newest row is deleted (a restored backup, a hand edit), so an old body
-- never names a newer key.
CREATE TABLE data_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    wrapped       BLOB    NOT NULL,
    master_key_id TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    -- When another key became active (the activation's created_ms).
    retired_ms    INTEGER
);

-- Which key new bodies are sealed with: one row, present from the start with
-- no key, so every activation is a compare-and-swap of this row's `dek_id`
-- under the write lock (`BEGIN IMMEDIATE`), never an insert that two nodes
-- could race on.
CREATE TABLE active_data_key (
    slot   INTEGER PRIMARY KEY CHECK (slot = 1),
    dek_id INTEGER REFERENCES data_keys (id)
);

INSERT INTO active_data_key (slot, dek_id) VALUES (1, NULL);
