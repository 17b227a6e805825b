//! Conversions between the domain (`im-core`) and the wire. Every boundary
//! (gateway frames, gRPC servers and clients) uses these, so a field is mapped
//! in exactly one place.
//!
//! - here: messages, acks, conversations, errors, pushes, sends, and the
//!   `offline_msg` record;
//! - [`group`]: groups, rosters, the directory's requests, and the
//!   `membership_change` record;
//! - [`fanout`]: the `group_msg` record and the gateway's `FanOut` events.
//! - [`audit`]: the `content_audit` record.
//! - [`client_group`]: groups and users as the client protocol shows them.

mod audit;
mod client_group;
mod fanout;
mod group;

pub use audit::{decode_audit_record, encode_audit_record};
pub use client_group::{client_group_list, client_read_status, client_roster};
pub use fanout::{decode_group_message_event, encode_group_message_event};
pub use group::{
    ChangeRequest, add_members_op, decode_membership_change, encode_membership_change, from_group_memberships,
    group_id, group_memberships, new_group, role_from_pb, role_to_pb, user_id, users_from_wire,
};

use im_core::message::{ConversationList, ConversationSummary};
use im_core::ports::{Addressee, Event, OfflineEntry, PushEvent, SendCommand};
use std::collections::HashMap;

use im_core::{
    Ack, ConversationId, DeviceId, ErrorCode, ErrorReason, GroupId, ImError, MessageId, NewMessage, Seq, UserId,
};
use prost::Message as _;
use tonic_types::{ErrorDetails, StatusExt};

use crate::{client, gateway, offline};

impl From<&NewMessage> for client::Message {
    fn from(m: &NewMessage) -> Self {
        client::Message {
            msg_id: m.msg_id.0,
            conversation_id: m.conversation.to_string(),
            seq: m.seq.0,
            from_user: m.sender.0,
            to_user: m.recipient().map_or(0, |user| user.0),
            client_msg_id: m.client_msg_id.as_str().to_owned(),
            body: m.body.clone(),
            content_type: m.content_type.clone(),
            server_time_ms: m.server_time_ms,
        }
    }
}

impl TryFrom<client::Message> for NewMessage {
    type Error = ImError;

    fn try_from(m: client::Message) -> Result<Self, ImError> {
        Ok(NewMessage {
            msg_id: MessageId(m.msg_id),
            conversation: m.conversation_id.parse()?,
            seq: Seq(m.seq),
            sender: UserId(m.from_user),
            client_msg_id: im_core::ClientMsgId::parse(&m.client_msg_id)?,
            body: m.body,
            content_type: m.content_type,
            server_time_ms: m.server_time_ms,
            sealed_with: None,
        })
    }
}

impl From<Ack> for client::SendAck {
    fn from(a: Ack) -> Self {
        client::SendAck {
            msg_id: a.msg_id.0,
            conversation_id: a.conversation.to_string(),
            seq: a.seq.0,
            server_time_ms: a.server_time_ms,
            body_masked: a.body_masked,
        }
    }
}

impl TryFrom<client::SendAck> for Ack {
    type Error = ImError;

    fn try_from(a: client::SendAck) -> Result<Self, ImError> {
        Ok(Ack {
            msg_id: MessageId(a.msg_id),
            conversation: a.conversation_id.parse()?,
            seq: Seq(a.seq),
            server_time_ms: a.server_time_ms,
            body_masked: a.body_masked,
        })
    }
}

/// A conversation as `viewer` sees it in their list (the peer is the other
/// member).
pub fn conversation_summary(s: &ConversationSummary, viewer: UserId) -> client::ConversationSummary {
    client::ConversationSummary {
        conversation_id: s.conversation.to_string(),
        peer: s.conversation.peer_of(viewer).map_or(0, |peer| peer.0),
        max_seq: s.max_seq.0,
        read_seq: s.read_seq.0,
        unread: s.unread,
        group_id: s.conversation.group().map_or(0, |group| group.0),
        peer_read_seq: s.peer_read_seq.0,
    }
}

/// The conversation list of `viewer`.
pub fn conversation_list(list: &ConversationList, viewer: UserId) -> client::ConversationList {
    client::ConversationList {
        conversations: list.summaries.iter().map(|s| conversation_summary(s, viewer)).collect(),
        groups_unchecked: list.groups_unchecked,
    }
}

/// A conversation list back in domain terms (a gateway relaying the IM
/// service's answer; the peer is implied by the conversation id).
pub fn conversation_summaries(list: client::ConversationList) -> Result<ConversationList, ImError> {
    let summaries = list
        .conversations
        .into_iter()
        .map(|s| {
            Ok(ConversationSummary {
                conversation: s.conversation_id.parse()?,
                max_seq: Seq(s.max_seq),
                read_seq: Seq(s.read_seq),
                unread: s.unread,
                peer_read_seq: Seq(s.peer_read_seq),
            })
        })
        .collect::<Result<_, ImError>>()?;
    Ok(ConversationList { summaries, groups_unchecked: list.groups_unchecked })
}

/// A read receipt as the client protocol carries it.
pub fn receipt(conversation: ConversationId, reader: UserId, read_seq: Seq) -> client::ReadReceipt {
    client::ReadReceipt { conversation_id: conversation.to_string(), reader: reader.0, read_seq: read_seq.0 }
}

/// The server frame that tells a device about `event`.
pub fn event_frame(event: &Event) -> client::ServerFrame {
    let body = match event {
        Event::Message(m) => client::server_frame::Body::Push(m.as_ref().into()),
        Event::Receipt { conversation, reader, read_seq } => {
            client::server_frame::Body::Receipt(receipt(*conversation, *reader, *read_seq))
        }
    };
    client::ServerFrame { req_id: 0, body: Some(body) }
}

impl From<ErrorCode> for client::ErrorCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument => client::ErrorCode::InvalidArgument,
            ErrorCode::PermissionDenied => client::ErrorCode::PermissionDenied,
            ErrorCode::NotFound => client::ErrorCode::NotFound,
            ErrorCode::ResourceExhausted => client::ErrorCode::ResourceExhausted,
            ErrorCode::FailedPrecondition => client::ErrorCode::FailedPrecondition,
            ErrorCode::Unavailable => client::ErrorCode::Unavailable,
            ErrorCode::Unauthenticated => client::ErrorCode::Unauthenticated,
            ErrorCode::Internal => client::ErrorCode::Internal,
            ErrorCode::DataLoss => client::ErrorCode::DataLoss,
        }
    }
}

impl From<&ImError> for client::Error {
    fn from(e: &ImError) -> Self {
        client::Error {
            code: client::ErrorCode::from(e.code) as i32,
            message: e.message.clone(),
            reason: e.reason.map(|reason| reason.as_str().to_owned()).unwrap_or_default(),
            retry_after_ms: e.retry_after_ms().map_or(0, |ms| u32::try_from(ms).unwrap_or(u32::MAX)),
        }
    }
}

/// A domain error back from its wire form (an answer on the relay stream).
/// A code this version does not know is `INTERNAL`, not guessed at.
impl From<client::Error> for ImError {
    fn from(e: client::Error) -> Self {
        // The inverse of the mapping above, so the two cannot drift apart.
        let code = ErrorCode::ALL
            .into_iter()
            .find(|&code| client::ErrorCode::from(code) as i32 == e.code)
            .unwrap_or(ErrorCode::Internal);
        let mut error = ImError::new(code, e.message);
        error.retry_after = (e.retry_after_ms > 0).then(|| std::time::Duration::from_millis(e.retry_after_ms.into()));
        match ErrorReason::parse(&e.reason) {
            Some(reason) => error.with_reason(reason),
            None => error,
        }
    }
}

/// The gRPC code for a domain error code.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::Internal => tonic::Code::Internal,
        ErrorCode::DataLoss => tonic::Code::DataLoss,
    }
}

/// The `ErrorInfo.domain` of this service's error reasons.
pub const ERROR_DOMAIN: &str = "im";

/// The gRPC status for a domain error. A reason travels as the standard
/// `google.rpc.ErrorInfo` detail and a retry hint as `google.rpc.RetryInfo`,
/// so any gRPC client library can read them.
pub fn status(e: ImError) -> tonic::Status {
    if e.reason.is_none() && e.retry_after.is_none() {
        return tonic::Status::new(grpc_code(e.code), e.message);
    }
    let mut details = ErrorDetails::new();
    if let Some(reason) = e.reason {
        details.set_error_info(reason.as_str(), ERROR_DOMAIN, HashMap::new());
    }
    if let Some(after) = e.retry_after {
        details.set_retry_info(Some(after));
    }
    tonic::Status::with_error_details(grpc_code(e.code), e.message, details)
}

/// The domain error for a gRPC status (a client of a peer service).
pub fn from_status(s: &tonic::Status) -> ImError {
    let code = match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
        tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
        tonic::Code::NotFound => ErrorCode::NotFound,
        tonic::Code::ResourceExhausted => ErrorCode::ResourceExhausted,
        tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
        tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
        tonic::Code::DataLoss => ErrorCode::DataLoss,
        // Unknown is what a transport failure mid-call (the peer died) looks
        // like; services never answer with it themselves.
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => {
            ErrorCode::Unavailable
        }
        _ => ErrorCode::Internal,
    };
    let mut error = ImError::new(code, s.message());
    error.retry_after = s.get_details_retry_info().and_then(|info| info.retry_delay);
    let reason = s
        .get_details_error_info()
        .filter(|info| info.domain == ERROR_DOMAIN)
        .and_then(|info| ErrorReason::parse(&info.reason));
    match reason {
        Some(reason) => error.with_reason(reason),
        None => error,
    }
}

/// The two kinds of event, as the push messages carry them: each push
/// message has its own oneof with these two arms.
fn wire_event<T>(
    event: &Event,
    message: impl FnOnce(client::Message) -> T,
    receipt_arm: impl FnOnce(client::ReadReceipt) -> T,
) -> T {
    match event {
        Event::Message(m) => message(m.as_ref().into()),
        Event::Receipt { conversation, reader, read_seq } => receipt_arm(receipt(*conversation, *reader, *read_seq)),
    }
}

fn message_event(m: client::Message) -> Result<Event, ImError> {
    Ok(Event::Message(std::sync::Arc::new(m.try_into()?)))
}

fn receipt_event(r: client::ReadReceipt) -> Result<Event, ImError> {
    Ok(Event::Receipt { conversation: r.conversation_id.parse()?, reader: UserId(r.reader), read_seq: Seq(r.read_seq) })
}

impl From<&PushEvent> for gateway::PushEvent {
    fn from(e: &PushEvent) -> Self {
        use gateway::push_event::Event as Arm;
        gateway::PushEvent {
            user: e.user.0,
            skip_device: e.skip_device.as_ref().map(|d| d.0.clone()).unwrap_or_default(),
            event: Some(wire_event(&e.event, Arm::Message, Arm::Receipt)),
        }
    }
}

impl TryFrom<gateway::PushEvent> for PushEvent {
    type Error = ImError;

    fn try_from(e: gateway::PushEvent) -> Result<Self, ImError> {
        use gateway::push_event::Event as Arm;
        let event = match e.event.ok_or_else(|| ImError::invalid("push event without an event"))? {
            Arm::Message(m) => message_event(m)?,
            Arm::Receipt(r) => receipt_event(r)?,
        };
        let skip_device = (!e.skip_device.is_empty()).then(|| DeviceId(e.skip_device));
        Ok(PushEvent { user: UserId(e.user), skip_device, event })
    }
}

/// The message a client asks to send. Exactly one addressee: a request
/// naming both, or neither, is refused rather than guessed at.
pub fn send_command(req: client::SendRequest) -> Result<SendCommand, ImError> {
    let to = match (req.to_user, req.to_group) {
        (0, 0) => return Err(ImError::invalid("set to_user (a private message) or to_group (a group message)")),
        (user, 0) => Addressee::User(UserId(user)),
        (0, group) => Addressee::Group(GroupId(group)),
        _ => return Err(ImError::invalid("set only one of to_user and to_group, not both")),
    };
    Ok(SendCommand { to, client_msg_id: req.client_msg_id, body: req.body, content_type: req.content_type })
}

/// [`send_command`] back on the wire: a gateway forwarding a client's send.
pub fn send_request(cmd: SendCommand) -> client::SendRequest {
    let (to_user, to_group) = match cmd.to {
        Addressee::User(user) => (user.0, 0),
        Addressee::Group(group) => (0, group.0),
    };
    client::SendRequest {
        to_user,
        to_group,
        client_msg_id: cmd.client_msg_id,
        body: cmd.body,
        content_type: cmd.content_type,
    }
}

impl From<&OfflineEntry> for offline::OfflineEvent {
    fn from(e: &OfflineEntry) -> Self {
        offline::OfflineEvent {
            user: e.user.0,
            conversation_id: e.conversation.to_string(),
            seq: e.seq.0,
            msg_id: e.msg_id.0,
            server_time_ms: e.server_time_ms,
        }
    }
}

impl TryFrom<offline::OfflineEvent> for OfflineEntry {
    type Error = ImError;

    /// Refuses an entry that cannot be: a user outside the conversation, or
    /// seq 0 (seqs start at 1).
    fn try_from(e: offline::OfflineEvent) -> Result<Self, ImError> {
        let conversation: ConversationId = e.conversation_id.parse()?;
        let user = UserId(e.user);
        // Offline entries are for the addressee of a private message.
        if !conversation.is_pair_member(user) {
            return Err(ImError::invalid(format!("user {user} is not a member of {conversation}")));
        }
        if e.seq == 0 {
            return Err(ImError::invalid("seq 0 is no message"));
        }
        Ok(OfflineEntry {
            user,
            conversation,
            seq: Seq(e.seq),
            msg_id: MessageId(e.msg_id),
            server_time_ms: e.server_time_ms,
        })
    }
}

/// The payload of an `offline_msg` record.
pub fn encode_offline_event(entry: &OfflineEntry) -> bytes::Bytes {
    offline::OfflineEvent::from(entry).encode_to_vec().into()
}

/// An `offline_msg` payload back in domain terms; bytes that are not an
/// `OfflineEvent`, or one naming an impossible entry, are `INVALID_ARGUMENT`.
pub fn decode_offline_event(payload: &[u8]) -> Result<OfflineEntry, ImError> {
    let event = offline::OfflineEvent::decode(payload)
        .map_err(|e| ImError::invalid(format!("not an im.offline.v1.OfflineEvent: {e}")))?;
    event.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn message() -> NewMessage {
        NewMessage {
            msg_id: MessageId(9),
            conversation: ConversationId::private(UserId(1), UserId(2)).unwrap(),
            seq: Seq(3),
            sender: UserId(1),
            client_msg_id: im_core::ClientMsgId::parse("c-1").unwrap(),
            body: bytes::Bytes::from_static(b"hi"),
            content_type: "text/plain".into(),
            server_time_ms: 1234,
            sealed_with: None,
        }
    }

    #[test]
    fn an_error_round_trips_through_its_wire_form() {
        let reasons = ErrorReason::ALL.into_iter().map(Some).chain([None]);
        for (code, reason) in ErrorCode::ALL.into_iter().zip(reasons.cycle()) {
            let mut error = ImError::new(code, format!("{code:?} happened"));
            error.retry_after = Some(std::time::Duration::from_millis(1500));
            if let Some(reason) = reason {
                error = error.with_reason(reason);
            }
            assert_eq!(ImError::from(client::Error::from(&error)), error);
        }
        let unknown = client::Error { code: 99, message: "from a newer peer".into(), ..Default::default() };
        assert_eq!(ImError::from(unknown).code, ErrorCode::Internal);
    }

    #[test]
    fn message_round_trips() {
        let m = message();
        let wire: client::Message = (&m).into();
        assert_eq!(wire.conversation_id, "p:1:2");
        assert_eq!(NewMessage::try_from(wire).unwrap(), m);
    }

    #[test]
    fn push_event_round_trips() {
        let e = PushEvent {
            user: UserId(2),
            skip_device: Some(DeviceId("phone".into())),
            event: Event::Message(Arc::new(message())),
        };
        let wire: gateway::PushEvent = (&e).into();
        assert_eq!(PushEvent::try_from(wire).unwrap(), e);
    }

    #[test]
    fn offline_event_round_trips_and_refuses_impossible_entries() {
        let entry = OfflineEntry {
            user: UserId(2),
            conversation: ConversationId::private(UserId(1), UserId(2)).unwrap(),
            seq: Seq(3),
            msg_id: MessageId(9),
            server_time_ms: 1234,
        };
        assert_eq!(decode_offline_event(&encode_offline_event(&entry)).unwrap(), entry);

        let outsider = OfflineEntry { user: UserId(7), ..entry.clone() };
        assert!(decode_offline_event(&encode_offline_event(&outsider)).is_err());
        let seq_zero = OfflineEntry { seq: Seq::ZERO, ..entry };
        assert!(decode_offline_event(&encode_offline_event(&seq_zero)).is_err());
        assert_eq!(decode_offline_event(b"\xff\xff not protobuf").unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn a_send_names_exactly_one_addressee() {
        let request = |to_user, to_group| client::SendRequest {
            to_user,
            to_group,
            client_msg_id: "c-1".into(),
            body: bytes::Bytes::from_static(b"hi"),
            content_type: "text/plain".into(),
        };
        let private = send_command(request(2, 0)).unwrap();
        assert_eq!(private.to, Addressee::User(UserId(2)));
        assert_eq!((private.client_msg_id.as_str(), private.body.as_ref()), ("c-1", &b"hi"[..]));
        assert_eq!(private.content_type, "text/plain");
        assert_eq!(send_command(request(0, 7)).unwrap().to, Addressee::Group(GroupId(7)));
        for wire in [request(2, 0), request(0, 7)] {
            assert_eq!(send_request(send_command(wire.clone()).unwrap()), wire);
        }
        for (to_user, to_group) in [(0, 0), (2, 7)] {
            let error = send_command(request(to_user, to_group)).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument);
            assert!(error.message.contains("to_user") && error.message.contains("to_group"), "{}", error.message);
        }
    }

    #[test]
    fn receipt_push_events_round_trip() {
        let e = PushEvent {
            user: UserId(2),
            skip_device: None,
            event: Event::Receipt {
                conversation: ConversationId::Group(GroupId(5)),
                reader: UserId(3),
                read_seq: Seq(8),
            },
        };
        assert_eq!(PushEvent::try_from(gateway::PushEvent::from(&e)).unwrap(), e);
    }

    #[test]
    fn error_codes_map_to_grpc_and_back() {
        for code in
            [ErrorCode::InvalidArgument, ErrorCode::PermissionDenied, ErrorCode::NotFound, ErrorCode::Unavailable]
        {
            let s = status(ImError::new(code, "x"));
            assert_eq!(from_status(&s).code, code);
        }
    }

    /// A circuit breaker's retry hint crosses gRPC as `google.rpc.RetryInfo`
    /// (beside a reason, if any) and reaches the client protocol in ms.
    #[test]
    fn a_retry_hint_crosses_grpc_and_reaches_the_client() {
        let hint = std::time::Duration::from_millis(500);
        let refused = ImError::unavailable("mysql is unavailable").with_retry_after(hint);
        let s = status(refused.clone());
        assert_eq!(s.get_details_retry_info().and_then(|info| info.retry_delay), Some(hint));
        assert_eq!(from_status(&s), refused);
        assert_eq!(client::Error::from(&refused).retry_after_ms, 500);

        let both = ImError::content_blocked().with_retry_after(hint);
        assert_eq!(from_status(&status(both.clone())), both);
        assert_eq!(client::Error::from(&ImError::unavailable("x")).retry_after_ms, 0, "no hint: 0");
        let fraction = ImError::unavailable("x").with_retry_after(std::time::Duration::from_micros(199_100));
        assert_eq!(client::Error::from(&fraction).retry_after_ms, 200, "a part of a ms is rounded up");
    }
}
