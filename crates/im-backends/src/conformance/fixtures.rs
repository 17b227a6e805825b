//! Values for test cases: ids and names no other case (or earlier run against
//! a shared server) uses, and messages.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use im_core::{ClientMsgId, ConversationId, GroupId, MessageId, NewMessage, Seq, UserId};

/// A number no earlier call in this process returned, and unlikely to have
/// been returned by an earlier process: counting starts from the clock.
/// Stays below 2^52, so it fits every store's signed integers.
pub fn unique() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        // 2^36 µs is 19 hours: a process started later starts elsewhere.
        // ×2^16 leaves each process room for 65,536 ids: nextest runs every
        // case in a process of its own, microseconds apart, and a case that
        // makes a group of 5,000 users ran into the next process's range
        // with the ×1024 this had (a shared MariaDB then said the name was
        // taken).
        // The process id too: two processes that start in the same
        // microsecond (nextest on two cores) drew the very same ids, and one
        // found the other's rows in the shared MariaDB (fresh-clone run
        // r10: a first append answered as a duplicate of itself).
        let pid = u64::from(std::process::id());
        AtomicU64::new(((micros ^ (pid << 16)) % (1 << 36)) * (1 << 16) + 1)
    })
    .fetch_add(1, Ordering::Relaxed)
}

/// `N` distinct users, ordered by id.
pub fn users<const N: usize>() -> [UserId; N] {
    std::array::from_fn(|_| UserId(unique()))
}

/// A name (user, topic, group) with `prefix`, used by no other case.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", unique())
}

/// The private conversation of two distinct users.
pub fn private(a: UserId, b: UserId) -> ConversationId {
    ConversationId::private(a, b).expect("fixtures pass distinct users")
}

/// The conversation of a group no other case uses.
pub fn group_conversation() -> ConversationId {
    ConversationId::Group(GroupId(unique()))
}

/// A message from `sender` in `conversation` at `seq`, with a fresh msg_id
/// and a body naming its place.
pub fn message(
    conversation: ConversationId,
    sender: UserId,
    seq: u64,
    client_msg_id: &str,
    server_time_ms: i64,
) -> NewMessage {
    NewMessage {
        msg_id: MessageId(unique()),
        conversation,
        seq: Seq(seq),
        sender,
        client_msg_id: ClientMsgId::parse(client_msg_id).expect("fixtures pass valid client_msg_ids"),
        body: Bytes::from(format!("{conversation}#{seq} from {sender}")),
        content_type: "text/plain".to_owned(),
        server_time_ms,
        sealed_with: None,
    }
}
