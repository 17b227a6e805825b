-- The digest of the request that first stored each (sender, client_msg_id):
-- a later send with the same key is a resend only if its digest is the same
-- (conversation, content type and body); otherwise it is refused as
-- client_msg_id_reused instead of being answered with this message's ack.
-- NULL for rows stored before digests: their key still answers every resend.
ALTER TABLE messages ADD COLUMN request_digest BIGINT UNSIGNED NULL;
