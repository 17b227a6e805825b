//! What the commands print: the JSON shapes (one object per line) and the
//! human chat lines. Field names here are the scriptable interface of imctl.
//! The `group` commands' shapes and text are in [`group`].

pub mod group;

use std::fmt::Write as _;
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
    /// How far the peer read (private conversations).
    pub peer_read_seq: u64,
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
            peer_read_seq: c.peer_read_seq,
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

/// `imctl user get|disable|enable|revoke-tokens`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct UserJson<'a> {
    pub id: u64,
    pub name: &'a str,
    pub created_at_ms: i64,
    pub disabled: bool,
    /// Tokens issued below this generation are refused.
    pub token_generation: u64,
}

impl<'a> From<&'a im_proto::user::User> for UserJson<'a> {
    fn from(user: &'a im_proto::user::User) -> Self {
        Self {
            id: user.id,
            name: &user.name,
            created_at_ms: user.created_at_ms,
            disabled: user.disabled,
            token_generation: user.token_generation,
        }
    }
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

/// `imctl keys status --json`: one data key.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DataKeyJson<'a> {
    pub id: u64,
    pub active: bool,
    pub created_ms: i64,
    /// Null while the key is active.
    pub retired_ms: Option<i64>,
    pub age_secs: i64,
    pub master_key_id: &'a str,
    /// Message rows sealed with this key.
    pub rows: u64,
}

impl<'a> DataKeyJson<'a> {
    pub fn of(key: &'a im_proto::keys::DataKey, now_ms: i64) -> Self {
        Self {
            id: key.id,
            active: key.active,
            created_ms: key.created_ms,
            retired_ms: (key.retired_ms != 0).then_some(key.retired_ms),
            age_secs: (now_ms - key.created_ms).max(0) / 1000,
            master_key_id: &key.master_key_id,
            rows: key.rows,
        }
    }
}

/// `imctl keys status --json`: the last line, after the keys.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct KeyRowsJson<'a> {
    /// Message rows stored in clear.
    pub clear_rows: u64,
    /// Message rows sealed with a key the key store does not have.
    pub orphan_rows: u64,
    /// The master key the node wraps new data keys with.
    pub master_key_id: &'a str,
}

/// `imctl keys status`: a table of the keys, then the rows in clear.
pub fn keys_status_text(status: &im_proto::keys::StatusResponse) -> String {
    let rows = status.keys.iter().map(|key| {
        vec![
            key.id.to_string(),
            if key.active { "yes" } else { "no" }.to_owned(),
            age(status.now_ms - key.created_ms),
            key.master_key_id.clone(),
            key.rows.to_string(),
        ]
    });
    let mut s = table(&["ID", "ACTIVE", "AGE", "MASTER KEY", "ROWS"], rows);
    let _ = writeln!(s, "{} row(s) in clear", status.clear_rows);
    if status.orphan_rows > 0 {
        let _ = writeln!(s, "{} row(s) sealed with a data key that is not in the key store", status.orphan_rows);
    }
    if status.keys.iter().any(|key| key.master_key_id != status.master_key_id) {
        let _ = writeln!(
            s,
            "some keys are wrapped by another master key than this node's ({}): imctl keys rewrap",
            status.master_key_id
        );
    }
    s
}

/// `imctl keys rotate --json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RotatedJson<'a> {
    pub id: u64,
    pub previous_id: Option<u64>,
    pub master_key_id: &'a str,
    pub created_ms: i64,
}

/// `imctl keys rotate`.
pub fn rotated_text(rotated: &RotatedJson<'_>) -> String {
    let previous = match rotated.previous_id {
        Some(previous) => format!("; data key {previous} retired (still readable)"),
        None => String::new(),
    };
    format!("data key {} is active now (master key {}){previous}\n", rotated.id, rotated.master_key_id)
}

/// `imctl keys rewrap --json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RewrapJson<'a> {
    pub rewrapped: u64,
    pub already_current: u64,
    pub failed: u64,
    pub failures: &'a [String],
    pub master_key_id: &'a str,
}

impl<'a> From<&'a im_proto::keys::RewrapResponse> for RewrapJson<'a> {
    fn from(r: &'a im_proto::keys::RewrapResponse) -> Self {
        Self {
            rewrapped: r.rewrapped,
            already_current: r.already_current,
            failed: r.failed,
            failures: &r.failures,
            master_key_id: &r.master_key_id,
        }
    }
}

/// `imctl keys rewrap`: the counts (the failures go to stderr).
pub fn rewrap_text(r: &RewrapJson<'_>) -> String {
    format!(
        "under master key {}: {} data key(s) re-wrapped, {} already current, {} failed\n",
        r.master_key_id, r.rewrapped, r.already_current, r.failed
    )
}

/// An age as its largest unit: `12s`, `5m`, `3h`, `91d`.
pub fn age(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Columns separated by two spaces, padded to the widest cell; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    all.extend(rows);
    let widths: Vec<usize> =
        (0..header.len()).map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    for row in &all {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<width$}  ", width = widths[i]);
            }
        }
        s.push('\n');
    }
    s
}

/// Writes `value` as one JSON line.
pub fn json_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A chat line: `[HH:MM:SS] <from>: text`, the time in UTC; `from` is how
/// the sender is shown (a name, or `user 17`).
pub fn chat_line(m: &client::Message, from: &str) -> String {
    format!("[{}] {from}: {}", clock_utc(m.server_time_ms), String::from_utf8_lossy(&m.body))
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
            peer_read_seq: 8,
        };
        assert_eq!(
            to_value(&ConversationJson::from(&c)),
            json!({"id": "p:3:7", "peer": 7, "group": 0, "max_seq": 9, "read_seq": 4, "unread": 5, "peer_read_seq": 8})
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
    fn keys_shapes_and_text() {
        use im_proto::keys::{DataKey, RewrapResponse, StatusResponse};
        const DAY: i64 = 86_400_000;
        let now = 100 * DAY;
        let old = DataKey {
            id: 1,
            master_key_id: "local:aa".into(),
            created_ms: 9 * DAY,
            retired_ms: 99 * DAY,
            active: false,
            rows: 7,
        };
        let new = DataKey {
            id: 2,
            master_key_id: "local:bb".into(),
            created_ms: now - 5000,
            retired_ms: 0,
            active: true,
            rows: 3,
        };
        assert_eq!(
            to_value(&DataKeyJson::of(&new, now)),
            json!({"id": 2, "active": true, "created_ms": now - 5000, "retired_ms": null, "age_secs": 5,
                   "master_key_id": "local:bb", "rows": 3})
        );
        assert_eq!(to_value(&DataKeyJson::of(&old, now))["retired_ms"], 99 * DAY);
        let status = StatusResponse {
            keys: vec![old, new],
            clear_rows: 4,
            master_key_id: "local:bb".into(),
            now_ms: now,
            orphan_rows: 0,
        };
        assert_eq!(
            keys_status_text(&status),
            "ID  ACTIVE  AGE  MASTER KEY  ROWS\n\
             1   no      91d  local:aa    7\n\
             2   yes     5s   local:bb    3\n\
             4 row(s) in clear\n\
             some keys are wrapped by another master key than this node's (local:bb): imctl keys rewrap\n"
        );
        let rotated = RotatedJson { id: 3, previous_id: Some(2), master_key_id: "local:bb", created_ms: now };
        assert_eq!(
            rotated_text(&rotated),
            "data key 3 is active now (master key local:bb); data key 2 retired (still readable)\n"
        );
        assert_eq!(
            to_value(&rotated),
            json!({"id": 3, "previous_id": 2, "master_key_id": "local:bb", "created_ms": now})
        );
        let rewrap = RewrapResponse {
            rewrapped: 2,
            already_current: 1,
            failed: 1,
            failures: vec!["data key 4: KMS unavailable".into()],
            master_key_id: "arn:k".into(),
        };
        assert_eq!(
            rewrap_text(&RewrapJson::from(&rewrap)),
            "under master key arn:k: 2 data key(s) re-wrapped, 1 already current, 1 failed\n"
        );
        assert_eq!(
            to_value(&RewrapJson::from(&rewrap)),
            json!({"rewrapped": 2, "already_current": 1, "failed": 1, "failures": ["data key 4: KMS unavailable"],
                   "master_key_id": "arn:k"})
        );
        assert_eq!(
            (age(59_999), age(60_000), age(3_600_000), age(DAY), age(-5)),
            ("59s".into(), "1m".into(), "1h".into(), "1d".into(), "0s".into())
        );
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
        assert_eq!(chat_line(&message(), "alice"), "[22:13:20] alice: hi \u{fffd}");
        assert_eq!(clock_utc(0), "00:00:00");
        assert_eq!(clock_utc(-1000), "23:59:59");
    }
}
