//! Group messages on their way out: the `group_msg` record
//! (`im.fanout.v1.GroupMessageEvent`) and the gateway's `FanOutEvent`.

use bytes::Bytes;
use im_core::ports::FanOut;
use im_core::{DeviceId, ImError, NewMessage, Seq, UserId};
use prost::Message as _;

use super::{message_event, receipt_event, wire_event};
use crate::{fanout, gateway};

/// The payload of a `group_msg` record: a committed group message and the
/// device that sent it (which has it already).
pub fn encode_group_message_event(message: &NewMessage, sender_device: &DeviceId) -> Bytes {
    fanout::GroupMessageEvent {
        message: Some(message.into()),
        sender_device: sender_device.0.clone(),
        sealed_with: message.sealed_with.unwrap_or(0),
    }
    .encode_to_vec()
    .into()
}

/// A `group_msg` payload back in domain terms. Refused as `INVALID_ARGUMENT`:
/// bytes that are not a `GroupMessageEvent`, and records no node publishes —
/// without a message or a sending device, with seq 0, or of a conversation
/// that is not a group (private messages are pushed by the router, never
/// fanned out).
pub fn decode_group_message_event(payload: &[u8]) -> Result<(NewMessage, DeviceId), ImError> {
    let event = fanout::GroupMessageEvent::decode(payload)
        .map_err(|e| ImError::invalid(format!("not an im.fanout.v1.GroupMessageEvent: {e}")))?;
    let mut message: NewMessage =
        event.message.ok_or_else(|| ImError::invalid("a group message event without its message"))?.try_into()?;
    message.sealed_with = (event.sealed_with != 0).then_some(event.sealed_with);
    if message.conversation.group().is_none() {
        return Err(ImError::invalid(format!("{} is not a group conversation", message.conversation)));
    }
    if message.seq == Seq::ZERO {
        return Err(ImError::invalid("seq 0 is no message"));
    }
    if event.sender_device.is_empty() {
        return Err(ImError::invalid("a group message event without the sending device"));
    }
    Ok((message, DeviceId(event.sender_device)))
}

impl From<&FanOut> for gateway::FanOutEvent {
    fn from(f: &FanOut) -> Self {
        use gateway::fan_out_event::Event as Arm;
        let (skip_user, skip_device) = f.skip.as_ref().map_or((0, String::new()), |(user, d)| (user.0, d.0.clone()));
        gateway::FanOutEvent {
            users: f.users.iter().map(|user| user.0).collect(),
            skip_user,
            skip_device,
            event: Some(wire_event(&f.event, Arm::Message, Arm::Receipt)),
        }
    }
}

impl TryFrom<gateway::FanOutEvent> for FanOut {
    type Error = ImError;

    fn try_from(f: gateway::FanOutEvent) -> Result<Self, ImError> {
        use gateway::fan_out_event::Event as Arm;
        let event = match f.event.ok_or_else(|| ImError::invalid("fan-out event without an event"))? {
            Arm::Message(m) => message_event(m)?,
            Arm::Receipt(r) => receipt_event(r)?,
        };
        // The proto skips a device only when both halves are set.
        let skip =
            (f.skip_user != 0 && !f.skip_device.is_empty()).then(|| (UserId(f.skip_user), DeviceId(f.skip_device)));
        Ok(FanOut { event, users: f.users.into_iter().map(UserId).collect(), skip })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use im_core::ports::Event;
    use im_core::{ClientMsgId, ConversationId, ErrorCode, GroupId, MessageId};

    use super::*;

    fn group_message() -> NewMessage {
        NewMessage {
            msg_id: MessageId(9),
            conversation: ConversationId::Group(GroupId(4)),
            seq: Seq(3),
            sender: UserId(1),
            client_msg_id: ClientMsgId::parse("c-1").unwrap(),
            body: Bytes::from_static(b"hi all"),
            content_type: "text/plain".into(),
            server_time_ms: 1234,
            sealed_with: None,
        }
    }

    fn code(result: Result<(NewMessage, DeviceId), ImError>) -> ErrorCode {
        result.unwrap_err().code
    }

    #[test]
    fn group_message_events_round_trip() {
        let device = DeviceId("phone".into());
        let payload = encode_group_message_event(&group_message(), &device);
        assert_eq!(decode_group_message_event(&payload).unwrap(), (group_message(), device.clone()));
        let sealed = NewMessage { sealed_with: Some(12), body: Bytes::from_static(b"\x01sealed"), ..group_message() };
        let payload = encode_group_message_event(&sealed, &device);
        assert_eq!(decode_group_message_event(&payload).unwrap(), (sealed, device));
    }

    #[test]
    fn impossible_group_message_events_are_refused() {
        let device = DeviceId("phone".into());
        let private =
            NewMessage { conversation: ConversationId::private(UserId(1), UserId(2)).unwrap(), ..group_message() };
        let refused = [
            encode_group_message_event(&private, &device),
            encode_group_message_event(&NewMessage { seq: Seq::ZERO, ..group_message() }, &device),
            encode_group_message_event(&group_message(), &DeviceId(String::new())),
            fanout::GroupMessageEvent { message: None, sender_device: "phone".into(), sealed_with: 0 }
                .encode_to_vec()
                .into(),
            Bytes::from_static(b"\xff\xff not protobuf"),
        ];
        for payload in refused {
            assert_eq!(code(decode_group_message_event(&payload)), ErrorCode::InvalidArgument);
        }
    }

    #[test]
    fn fan_outs_round_trip() {
        let message = FanOut {
            event: Event::Message(Arc::new(group_message())),
            users: vec![UserId(1), UserId(2), UserId(3)],
            skip: Some((UserId(1), DeviceId("phone".into()))),
        };
        let receipt = FanOut {
            event: Event::Receipt {
                conversation: ConversationId::Group(GroupId(4)),
                reader: UserId(2),
                read_seq: Seq(3),
            },
            users: vec![UserId(2)],
            skip: None,
        };
        for fan_out in [message, receipt] {
            assert_eq!(FanOut::try_from(gateway::FanOutEvent::from(&fan_out)).unwrap(), fan_out);
        }
    }

    #[test]
    fn a_half_skip_skips_nothing_and_an_empty_event_is_refused() {
        let mut wire = gateway::FanOutEvent::from(&FanOut {
            event: Event::Message(Arc::new(group_message())),
            users: vec![UserId(2)],
            skip: Some((UserId(1), DeviceId("phone".into()))),
        });
        wire.skip_device.clear();
        assert_eq!(FanOut::try_from(wire.clone()).unwrap().skip, None);
        wire.event = None;
        assert_eq!(FanOut::try_from(wire).unwrap_err().code, ErrorCode::InvalidArgument);
    }
}
