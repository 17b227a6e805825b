//! What the commands print: the JSON shapes (one object per line) and the
//! human chat lines. Field names here are the scriptable interface of imctl.
//! The `group` commands' shapes and text are in [`group`].

pub mod group;

use std::io::Write;

use im_proto::client;
use serde::Serialize;

/// `imctl send`: the ack of a durably stored message.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AckJson<'a> {
    pub msg_id: u64,
    pub conversation_id: &'a str,
    pub seq: u64,
    pub server_time_ms: i64,
    /// The server's sensitive-word filter masked part of the body.
    pub body_masked: bool,
}

impl<'a> From<&'a client::SendAck> for AckJson<'a> {
    fn from(a: &'a client::SendAck) -> Self {
        Self {
            msg_id: a.msg_id,
            conversation_id: &a.conversation_id,
            seq: a.seq,
            server_time_ms: a.server_time_ms,
            body_masked: a.body_masked,
        }
    }
}

/// `imctl sync`: one message. The body is shown as UTF-8, invalid bytes replaced.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct MessageJson<'a> {
    pub msg_id: u64,
    pub conversation_id: &'a str,
    pub seq: u64,
    pub from: u64,
    pub to: u64,
    pub client_msg_id: &'a str,
    pub body: std::borrow::Cow<'a, str>,
    pub content_type: &'a str,
    pub server_time_ms: i64,
}

impl<'a> From<&'a client::Message> for MessageJson<'a> {
    fn from(m: &'a client::Message) -> Self {
        Self {
            msg_id: m.msg_id,
            conversation_id: &m.conversation_id,
            seq: m.seq,
            from: m.from_user,
            to: m.to_user,
            client_msg_id: &m.client_msg_id,
            body: String::from_utf8_lossy(&m.body),
            content_type: &m.content_type,
            server_time_ms: m.server_time_ms,
        }
    }
}

/// `imctl conversations`: one conversation. `peer` is 0 for a group,
/// `group` 0 for a private conversation.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ConversationJson<'a> {
    pub id: &'a str,
    pub peer: u64,
    pub group: u64,
    pub max_seq: u64,
    pub read_seq: u64,
    pub unread: u64,
}

impl<'a> From<&'a client::ConversationSummary> for ConversationJson<'a> {
    fn from(c: &'a client::ConversationSummary) -> Self {
        Self {
            id: &c.conversation_id,
            peer: c.peer,
            group: c.group_id,
            max_seq: c.max_seq,
            read_seq: c.read_seq,
            unread: c.unread,
        }
    }
}

/// `imctl read`: the read position after the request.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReadJson<'a> {
    pub conversation_id: &'a str,
    pub read_seq: u64,
}

/// `imctl user create --json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CreatedUserJson<'a> {
    pub id: u64,
    pub name: &'a str,
    pub token: &'a str,
}

/// `imctl user token --json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TokenJson<'a> {
    pub id: u64,
    pub token: &'a str,
}

/// `imctl user get`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct UserJson<'a> {
    pub id: u64,
    pub name: &'a str,
    pub created_at_ms: i64,
}

/// `imctl audit list`: one record of the sensitive-word filter.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AuditJson<'a> {
    pub msg_id: u64,
    pub conversation_id: &'a str,
    pub seq: u64,
    pub sender: u64,
    pub entries: &'a [String],
    pub server_time_ms: i64,
}

impl<'a> From<&'a im_proto::audit::AuditRecord> for AuditJson<'a> {
    fn from(r: &'a im_proto::audit::AuditRecord) -> Self {
        Self {
            msg_id: r.msg_id,
            conversation_id: &r.conversation_id,
            seq: r.seq,
            sender: r.sender,
            entries: &r.entries,
            server_time_ms: r.server_time_ms,
        }
    }
}

/// Writes `value` as one JSON line.
pub fn json_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A chat line: `[HH:MM:SS] <from>: text`, the time in UTC.
pub fn chat_line(m: &client::Message) -> String {
    format!("[{}] {}: {}", clock_utc(m.server_time_ms), m.from_user, String::from_utf8_lossy(&m.body))
}

/// `HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub fn clock_utc(unix_ms: i64) -> String {
    let secs_of_day = unix_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_value(v: &impl Serialize) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    fn message() -> client::Message {
        client::Message {
            msg_id: 42,
            conversation_id: "p:3:7".into(),
            seq: 5,
            from_user: 3,
            to_user: 7,
            client_msg_id: "c-1".into(),
            body: bytes::Bytes::from_static(b"hi \xff"),
            content_type: "text/plain".into(),
            server_time_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn ack_shape() {
        let ack = client::SendAck {
            msg_id: 42,
            conversation_id: "p:3:7".into(),
            seq: 5,
            server_time_ms: 99,
            body_masked: false,
        };
        assert_eq!(
            to_value(&AckJson::from(&ack)),
            json!({"msg_id": 42, "conversation_id": "p:3:7", "seq": 5, "server_time_ms": 99, "body_masked": false})
        );
    }

    #[test]
    fn message_shape_with_lossy_body() {
        assert_eq!(
            to_value(&MessageJson::from(&message())),
            json!({
                "msg_id": 42, "conversation_id": "p:3:7", "seq": 5, "from": 3, "to": 7, "client_msg_id": "c-1",
                "body": "hi \u{fffd}", "content_type": "text/plain", "server_time_ms": 1_700_000_000_123_i64
            })
        );
    }

    #[test]
    fn conversation_read_and_user_shapes() {
        let c = client::ConversationSummary {
            conversation_id: "p:3:7".into(),
            peer: 7,
            max_seq: 9,
            read_seq: 4,
            unread: 5,
            group_id: 0,
        };
        assert_eq!(
            to_value(&ConversationJson::from(&c)),
            json!({"id": "p:3:7", "peer": 7, "group": 0, "max_seq": 9, "read_seq": 4, "unread": 5})
        );
        let g = client::ConversationSummary { conversation_id: "g:5".into(), peer: 0, group_id: 5, ..c };
        assert_eq!(to_value(&ConversationJson::from(&g))["group"], 5);
        assert_eq!(
            to_value(&ReadJson { conversation_id: "p:3:7", read_seq: 9 }),
            json!({"conversation_id": "p:3:7", "read_seq": 9})
        );
        assert_eq!(
            to_value(&CreatedUserJson { id: 3, name: "alice", token: "t" }),
            json!({"id": 3, "name": "alice", "token": "t"})
        );
        assert_eq!(to_value(&TokenJson { id: 3, token: "t" }), json!({"id": 3, "token": "t"}));
    }

    #[test]
    fn json_lines_end_with_newline() {
        let mut out = Vec::new();
        json_line(&mut out, &ReadJson { conversation_id: "p:1:2", read_seq: 1 }).unwrap();
        json_line(&mut out, &ReadJson { conversation_id: "p:1:2", read_seq: 2 }).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn chat_lines_show_utc_time_sender_and_text() {
        // 1_700_000_000 s is 2023-11-14 22:13:20 UTC.
        assert_eq!(chat_line(&message()), "[22:13:20] 3: hi \u{fffd}");
        assert_eq!(clock_utc(0), "00:00:00");
        assert_eq!(clock_utc(-1000), "23:59:59");
    }
}
