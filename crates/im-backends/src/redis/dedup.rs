//! [`RedisDedupCache`]: first acks by `(sender, client_msg_id)` in Redis, with
//! a TTL, shared by every node.

use std::time::Duration;

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, DedupCache};
use im_core::{Ack, ClientMsgId, ConversationId, FirstSend, MessageId, RequestDigest, Seq, UserId};

use super::connection::RedisConnection;
use crate::telemetry::RedisOperation;

/// Remembers the first ack of each `(sender, client_msg_id)` for `ttl`, under
/// the key `{prefix}:{sender}:{client_msg_id}`. One atomic `SET NX GET PX` per
/// put, so concurrent nodes agree on the first ack. A forgotten key (expired,
/// evicted, flushed) is safe: the store's unique key catches the resend (G3).
/// A stored value that does not decode is an error, never a miss.
#[derive(Debug)]
pub struct RedisDedupCache {
    redis: RedisConnection,
    ttl: Duration,
    prefix: String,
}

impl RedisDedupCache {
    /// # Panics
    /// If `ttl` is under a millisecond (Redis expiries are in ms) or
    /// `key_prefix` is empty.
    pub fn new(redis: RedisConnection, ttl: Duration, key_prefix: impl Into<String>) -> Self {
        assert!(ttl >= Duration::from_millis(1), "dedup TTL must be at least 1 ms");
        let prefix = key_prefix.into();
        assert!(!prefix.is_empty(), "the Redis key prefix must not be empty");
        Self { redis, ttl, prefix }
    }

    fn key(&self, sender: UserId, client_msg_id: &ClientMsgId) -> String {
        format!("{}:{sender}:{}", self.prefix, client_msg_id.as_str())
    }

    fn decode(&self, key: &str, stored: &[u8]) -> BackendResult<FirstSend> {
        decode_first_send(stored).ok_or_else(|| {
            BackendError::other(format!(
                "redis at {}: dedup entry {key:?} does not decode as an ack",
                self.redis.addr()
            ))
        })
    }
}

#[async_trait]
impl DedupCache for RedisDedupCache {
    async fn get(&self, sender: UserId, client_msg_id: &ClientMsgId) -> BackendResult<Option<FirstSend>> {
        let key = self.key(sender, client_msg_id);
        let stored: Option<Vec<u8>> = self
            .redis
            .call(RedisOperation::DedupGet, "GET", |mut con| {
                let key = key.clone();
                async move { ::redis::cmd("GET").arg(key).query_async(&mut con).await }
            })
            .await?;
        stored.map(|stored| self.decode(&key, &stored)).transpose()
    }

    /// Records the first send unless one is already recorded; returns the
    /// recorded one.
    async fn put_if_absent(
        &self,
        sender: UserId,
        client_msg_id: &ClientMsgId,
        first_send: FirstSend,
    ) -> BackendResult<FirstSend> {
        let key = self.key(sender, client_msg_id);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        // `GET` with `NX` (Redis 7): the value already there, or nil when
        // this call stored `ack`.
        let first: Option<Vec<u8>> = self
            .redis
            .call(RedisOperation::DedupSet, "SET NX", |mut con| {
                let key = key.clone();
                async move {
                    ::redis::cmd("SET")
                        .arg(key)
                        .arg(encode_first_send(&first_send))
                        .arg("NX")
                        .arg("GET")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async(&mut con)
                        .await
                }
            })
            .await?;
        match first {
            Some(stored) => self.decode(&key, &stored),
            None => Ok(first_send),
        }
    }

    /// One `MGET` for the batch.
    async fn get_many(&self, keys: &[(UserId, &ClientMsgId)]) -> BackendResult<Vec<Option<FirstSend>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|&(sender, id)| self.key(sender, id)).collect();
        let stored: Vec<Option<Vec<u8>>> = self
            .redis
            .call(RedisOperation::DedupGetMany, "MGET", |mut con| {
                let keys = keys.clone();
                async move { ::redis::cmd("MGET").arg(keys).query_async(&mut con).await }
            })
            .await?;
        keys.iter().zip(stored).map(|(key, stored)| stored.map(|s| self.decode(key, &s)).transpose()).collect()
    }

    /// One pipeline of `SET NX PX` for the batch.
    async fn put_many_if_absent(&self, entries: &[(UserId, &ClientMsgId, FirstSend)]) -> BackendResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = ::redis::pipe();
        for (sender, client_msg_id, first_send) in entries {
            pipe.cmd("SET")
                .arg(self.key(*sender, client_msg_id))
                .arg(encode_first_send(first_send))
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        self.redis
            .call(RedisOperation::DedupSetMany, "SET NX pipeline", |mut con| {
                let pipe = pipe.clone();
                async move { pipe.query_async::<()>(&mut con).await }
            })
            .await
    }
}

/// Version 2: `2:{msg_id}:{seq}:{server_time_ms}:{digest}:{conversation}` —
/// text, so an operator can read it in `redis-cli`; the conversation last,
/// in its canonical form (which contains `:`). Version 1 entries (no
/// digest) still decode, with no digest.
fn encode_first_send(first: &FirstSend) -> String {
    let ack = &first.ack;
    match first.digest {
        Some(RequestDigest(digest)) => {
            format!("2:{}:{}:{}:{digest}:{}", ack.msg_id.0, ack.seq.0, ack.server_time_ms, ack.conversation)
        }
        None => format!("1:{}:{}:{}:{}", ack.msg_id.0, ack.seq.0, ack.server_time_ms, ack.conversation),
    }
}

fn decode_first_send(stored: &[u8]) -> Option<FirstSend> {
    let text = std::str::from_utf8(stored).ok()?;
    let (version, rest) = text.split_once(':')?;
    let fields = match version {
        "1" => 4,
        "2" => 5,
        _ => return None,
    };
    let mut fields = rest.splitn(fields, ':');
    let msg_id = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let server_time_ms = fields.next()?.parse().ok()?;
    let digest = match version {
        "2" => Some(RequestDigest(fields.next()?.parse().ok()?)),
        _ => None,
    };
    let conversation: ConversationId = fields.next()?.parse().ok()?;
    let ack = Ack { msg_id: MessageId(msg_id), conversation, seq: Seq(seq), server_time_ms, body_masked: false };
    Some(FirstSend { ack, digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack() -> Ack {
        Ack {
            msg_id: MessageId(u64::MAX),
            conversation: ConversationId::private(UserId(9), UserId(4)).unwrap(),
            seq: Seq(1 << 40),
            server_time_ms: -5,
            body_masked: false,
        }
    }

    #[test]
    fn first_sends_round_trip() {
        let first = FirstSend { ack: ack(), digest: Some(RequestDigest(u64::MAX - 1)) };
        let encoded = encode_first_send(&first);
        assert_eq!(encoded, format!("2:{}:{}:-5:{}:p:4:9", u64::MAX, 1u64 << 40, u64::MAX - 1));
        assert_eq!(decode_first_send(encoded.as_bytes()), Some(first));
    }

    #[test]
    fn entries_written_before_digests_decode_without_one() {
        let old = format!("1:{}:{}:-5:p:4:9", u64::MAX, 1u64 << 40);
        assert_eq!(decode_first_send(old.as_bytes()), Some(FirstSend { ack: ack(), digest: None }));
        let first = FirstSend { ack: ack(), digest: None };
        assert_eq!(encode_first_send(&first), old);
    }

    #[test]
    fn malformed_entries_do_not_decode() {
        for bad in [
            "",
            "1:",
            "3:1:2:3:p:1:2",
            "1:1:2:3",
            "1:x:2:3:p:1:2",
            "1:1:2:3:p:2:1",
            "1:1:2:3:p:1:2:9",
            "2:1:2:3:p:1:2",
            "2:1:2:3:x:p:1:2",
        ] {
            assert_eq!(decode_first_send(bad.as_bytes()), None, "{bad:?} decoded");
        }
        assert_eq!(decode_first_send(&[0xff, 0xfe]), None);
    }
}
