//! A WebSocket frame from a client, as the gateway reads it: decoded as a
//! `ClientFrame` (binary protobuf, and the same bytes as the proto3 JSON of
//! the `im.v1.json` subprotocol when they are UTF-8), then each request
//! converted as the gateway converts it before calling the service. Any
//! bytes: an error, never a panic.
#![no_main]

use im_proto::client::{ClientFrame, client_frame};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(frame) = serde_json::from_str::<ClientFrame>(text)
    {
        convert(frame);
    }
    if let Ok(frame) = ClientFrame::decode(data) {
        convert(frame);
    }
});

fn convert(frame: ClientFrame) {
    match frame.body {
        Some(client_frame::Body::Send(send)) => {
            let _ = im_proto::convert::send_command(send);
        }
        Some(client_frame::Body::Sync(sync)) => {
            let _ = sync.conversation_id.parse::<im_core::ConversationId>();
            let _ = im_core::limits::sync_page_size(sync.limit);
        }
        Some(client_frame::Body::MarkRead(mark)) => {
            let _ = mark.conversation_id.parse::<im_core::ConversationId>();
        }
        _ => {}
    }
}
