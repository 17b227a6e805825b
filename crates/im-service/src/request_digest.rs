//! The digest of a send request: what tells a resend of a `client_msg_id`
//! from another message that reuses it (issue 15). The conversation, the
//! content type and the body as the client sent them (before the filter
//! masks anything), each with its length, through SHA-256, of which 64 bits
//! are kept beside the first ack (dedup cache, `messages.request_digest`).
//!
//! SHA-256 rather than a faster hash: the digest is stored and compared by
//! every node and by later versions, so it must never change with a
//! library's choice, and a sender must not be able to craft two bodies
//! that pass for one request. 64 bits leave a chance of 2^-64 that two
//! different requests of one sender under one key pass for the same.

use im_core::{ConversationId, RequestDigest};
use sha2::{Digest, Sha256};

/// The digest of a send of `body` (of `content_type`) to `conversation`.
pub fn of(conversation: ConversationId, content_type: &str, body: &[u8]) -> RequestDigest {
    let conversation = conversation.to_string();
    let mut hasher = Sha256::new();
    // Each field with its length, so no two field splits hash alike.
    for field in [conversation.as_bytes(), content_type.as_bytes(), body] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    RequestDigest(u64::from_le_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::{GroupId, UserId};

    #[test]
    fn any_field_changes_the_digest_and_the_same_request_keeps_it() {
        let ab = ConversationId::private(UserId(1), UserId(2)).unwrap();
        let ac = ConversationId::private(UserId(1), UserId(3)).unwrap();
        let base = of(ab, "text/plain", b"hi");
        assert_eq!(base, of(ab, "text/plain", b"hi"));
        assert_ne!(base, of(ac, "text/plain", b"hi"));
        assert_ne!(base, of(ConversationId::Group(GroupId(2)), "text/plain", b"hi"));
        assert_ne!(base, of(ab, "text/html", b"hi"));
        assert_ne!(base, of(ab, "text/plain", b"hi!"));
        // Fields are delimited by their lengths.
        assert_ne!(of(ab, "ab", b"c"), of(ab, "a", b"bc"));
    }

    #[test]
    fn the_digest_is_stable_across_versions() {
        // Stored beside acks and compared by other nodes: it must not move.
        let ab = ConversationId::private(UserId(1), UserId(2)).unwrap();
        assert_eq!(of(ab, "text/plain", b"hi"), RequestDigest(STABLE));
    }

    /// `of(p:1:2, "text/plain", "hi")`, computed apart from this code:
    /// `h = sha256(); for f in [b"p:1:2", b"text/plain", b"hi"]:
    /// h.update(struct.pack("<Q", len(f)) + f)`, the first 8 bytes read
    /// little-endian (Python's hashlib).
    const STABLE: u64 = 3_984_644_209_991_869_212;
}
