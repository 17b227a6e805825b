-- Encryption at rest (ENCRYPTION_ENABLED): the data key a row's body is
-- sealed with (data_keys.id); NULL for a body stored in clear, as every row
-- written before encryption was turned on. The per-row marker keeps old
-- rows readable whichever way the setting goes, and tells `imctl keys
-- status` how many rows each key holds. Adding a nullable column rewrites
-- nothing.
ALTER TABLE messages ADD COLUMN sealed_with INTEGER;
