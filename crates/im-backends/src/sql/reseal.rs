//! `imctl keys reencrypt`'s walk (`ResealStore`): the statements both SQL
//! stores share.

/// The next window of rows whose body is not sealed with key `?2`, after
/// storage position `?1`, at most `?3`: a range scan of the primary key.
/// `sealed_with` has no index (it would cost every append an index write
/// for an admin walk), so a window may read past rows already current.
pub(crate) const WINDOW: &str = "SELECT id, conversation, seq, msg_id, sender, client_msg_id, body, content_type, \
     server_time_ms, sealed_with FROM messages \
     WHERE id > ? AND (sealed_with IS NULL OR sealed_with <> ?) ORDER BY id LIMIT ?";
