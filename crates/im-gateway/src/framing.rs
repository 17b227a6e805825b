//! How a connection's frames carry the client protocol: binary protobuf (the
//! default), or the canonical proto3 JSON mapping of the same messages in
//! text frames, for clients without a protobuf library (a browser page).
//!
//! A client asks for JSON with the WebSocket subprotocol
//! [`JSON_SUBPROTOCOL`]; the gateway answers with it when it agrees. Nothing
//! else changes: the same `ClientFrame` and `ServerFrame`, the same requests
//! and answers. Inside, everything stays protobuf (replies and pushes are
//! encoded once, a push for all its recipients); a JSON connection transcodes
//! its own frames at its edge, which costs a decode and an encode per frame on
//! that connection only.

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use im_core::ImError;
use im_proto::client::{ClientFrame, ServerFrame};
use prost::Message as _;

/// The subprotocol of proto3 JSON frames.
pub const JSON_SUBPROTOCOL: &str = "im.v1.json";

/// The framing a connection speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// One binary frame per protobuf message.
    #[default]
    Protobuf,
    /// One text frame per message, in proto3's JSON mapping (64-bit integers
    /// as strings, `bytes` as base64, field names in lowerCamelCase).
    Json,
}

/// A data frame as read: the request it carries, or why it carries none
/// (answered under the frame's `req_id` when that much could be read).
pub(crate) enum Incoming {
    Request(ClientFrame),
    Unreadable { req_id: u64, error: ImError },
}

impl Framing {
    /// The framing of a subprotocol the client was given.
    pub fn of_subprotocol(protocol: Option<&str>) -> Self {
        match protocol {
            Some(JSON_SUBPROTOCOL) => Self::Json,
            _ => Self::Protobuf,
        }
    }

    /// Reads a binary or text frame (other kinds never reach here).
    pub(crate) fn read(self, message: &Message) -> Incoming {
        match (self, message) {
            (Self::Protobuf, Message::Binary(data)) => match ClientFrame::decode(data.clone()) {
                Ok(frame) => Incoming::Request(frame),
                Err(error) => match protobuf_req_id(data) {
                    0 => Incoming::Unreadable {
                        req_id: 0,
                        error: ImError::invalid("the frame is not a valid protobuf im.client.v1.ClientFrame"),
                    },
                    req_id => Incoming::Unreadable {
                        req_id,
                        error: ImError::invalid(format!(
                            "the request does not decode as im.client.v1.ClientFrame: {error}"
                        )),
                    },
                },
            },
            (Self::Json, Message::Text(text)) => match serde_json::from_str::<ClientFrame>(text) {
                Ok(frame) => Incoming::Request(frame),
                Err(error) => Incoming::Unreadable {
                    req_id: json_req_id(text),
                    error: ImError::invalid(format!(
                        "the frame is not im.client.v1.ClientFrame in proto3 JSON: {error}"
                    )),
                },
            },
            (Self::Protobuf, _) => Incoming::Unreadable {
                req_id: 0,
                error: ImError::invalid(format!(
                    "text frames are not part of the protocol: send binary frames holding a ClientFrame, or ask for \
                     the {JSON_SUBPROTOCOL} subprotocol"
                )),
            },
            (Self::Json, _) => Incoming::Unreadable {
                req_id: 0,
                error: ImError::invalid(format!(
                    "binary frames are not part of the {JSON_SUBPROTOCOL} subprotocol: send text frames"
                )),
            },
        }
    }

    /// The frame that carries `encoded`, an encoded `ServerFrame`.
    pub(crate) fn frame(self, encoded: &Bytes) -> Message {
        match self {
            Self::Protobuf => Message::Binary(encoded.clone()),
            Self::Json => Message::Text(Utf8Bytes::from(server_frame_json(encoded))),
        }
    }
}

/// `encoded` (a `ServerFrame` this gateway encoded) in proto3 JSON.
fn server_frame_json(encoded: &Bytes) -> String {
    let json = ServerFrame::decode(encoded.clone())
        .map_err(|e| e.to_string())
        .and_then(|frame| serde_json::to_string(&frame).map_err(|e| e.to_string()));
    json.unwrap_or_else(|error| {
        // Not expected: the frame was encoded here from a valid message.
        tracing::error!(%error, "a server frame does not transcode to JSON");
        r#"{"error":{"code":"INTERNAL","message":"a server frame could not be sent as JSON"}}"#.to_owned()
    })
}

/// `ClientFrame`'s `req_id` alone (field 1): readable from a frame whose
/// request does not decode (a string that is not UTF-8, a bad nested field),
/// since the request is skipped unread.
#[derive(Clone, PartialEq, prost::Message)]
struct FrameHeader {
    #[prost(uint64, tag = "1")]
    req_id: u64,
}

fn protobuf_req_id(data: &[u8]) -> u64 {
    FrameHeader::decode(data).map_or(0, |header| header.req_id)
}

/// The `reqId` of a JSON frame whose request does not read (as a string or
/// a number, as proto3 JSON allows).
fn json_req_id(text: &str) -> u64 {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else { return 0 };
    let req_id = value.get("reqId").or_else(|| value.get("req_id"));
    match req_id {
        Some(serde_json::Value::String(text)) => text.parse().unwrap_or(0),
        Some(serde_json::Value::Number(number)) => number.as_u64().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use im_proto::client::{SendAck, SendRequest, client_frame, server_frame};

    use super::*;

    fn text(json: &str) -> Message {
        Message::Text(Utf8Bytes::from(json))
    }

    #[test]
    fn a_json_send_reads_as_the_same_request_as_its_protobuf() {
        let json =
            r#"{"reqId":"7","send":{"toUser":"2","clientMsgId":"c-1","body":"aGk=","contentType":"text/plain"}}"#;
        let Incoming::Request(frame) = Framing::Json.read(&text(json)) else { panic!("unreadable") };
        let expected = ClientFrame {
            req_id: 7,
            body: Some(client_frame::Body::Send(SendRequest {
                to_user: 2,
                client_msg_id: "c-1".into(),
                body: Bytes::from_static(b"hi"),
                content_type: "text/plain".into(),
                ..Default::default()
            })),
        };
        assert_eq!(frame, expected);
        let binary = Message::Binary(Bytes::from(expected.encode_to_vec()));
        assert!(matches!(Framing::Protobuf.read(&binary), Incoming::Request(f) if f == expected));
        // The .proto's own field names, and numbers for 64-bit integers, read too.
        let snake =
            r#"{"req_id":7,"send":{"to_user":2,"client_msg_id":"c-1","body":"aGk=","content_type":"text/plain"}}"#;
        assert!(matches!(Framing::Json.read(&text(snake)), Incoming::Request(f) if f == expected));
    }

    #[test]
    fn frames_of_the_other_kind_or_bad_json_are_refused_with_the_req_id_when_readable() {
        let Incoming::Unreadable { req_id, error } =
            Framing::Json.read(&text(r#"{"reqId":"9","send":{"toUser":"x"}}"#))
        else {
            panic!("read")
        };
        assert_eq!(req_id, 9);
        assert!(error.message.contains("proto3 JSON"), "{}", error.message);
        let Incoming::Unreadable { req_id, .. } = Framing::Json.read(&text("not json")) else { panic!("read") };
        assert_eq!(req_id, 0);
        let binary = Message::Binary(Bytes::from_static(b"\x08\x01"));
        assert!(matches!(Framing::Json.read(&binary), Incoming::Unreadable { req_id: 0, .. }));
        let Incoming::Unreadable { error, .. } = Framing::Protobuf.read(&text("{}")) else { panic!("read") };
        assert!(error.message.contains(JSON_SUBPROTOCOL), "{}", error.message);
    }

    #[test]
    fn a_server_frame_goes_out_as_proto3_json_text() {
        let frame = ServerFrame {
            req_id: 7,
            body: Some(server_frame::Body::Ack(SendAck {
                msg_id: 1 << 60,
                conversation_id: "p:1:2".into(),
                seq: 3,
                ..Default::default()
            })),
        };
        let encoded = Bytes::from(frame.encode_to_vec());
        let Message::Text(json) = Framing::Json.frame(&encoded) else { panic!("not text") };
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["reqId"], "7", "64-bit integers are strings");
        assert_eq!(value["ack"]["msgId"], (1u64 << 60).to_string());
        assert_eq!(value["ack"]["conversationId"], "p:1:2");
        assert_eq!(Framing::Protobuf.frame(&encoded), Message::Binary(encoded));
    }

    #[test]
    fn the_subprotocol_picks_the_framing() {
        assert_eq!(Framing::of_subprotocol(Some(JSON_SUBPROTOCOL)), Framing::Json);
        assert_eq!(Framing::of_subprotocol(Some("other")), Framing::Protobuf);
        assert_eq!(Framing::of_subprotocol(None), Framing::Protobuf);
    }
}
