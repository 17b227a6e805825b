//! The client protocol in proto3 JSON (issue 18, how a browser speaks it): a
//! client that asks for the `im.v1.json` subprotocol sends and receives text
//! frames holding the same `ClientFrame`s and `ServerFrame`s, while a
//! binary client talks to it as before, against a real node.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Node, ack};

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket that asked for (and got) the JSON subprotocol.
pub async fn json_client(url: &str, token: &str) -> Socket {
    let mut request = format!("{url}?device=browser").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.headers_mut().insert("sec-websocket-protocol", "im.v1.json".parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("connect");
    assert_eq!(response.headers()["sec-websocket-protocol"], "im.v1.json", "the gateway agreed");
    socket
}

/// The next text frame, as JSON (pings are skipped; a binary frame fails).
pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("a frame in time");
        match frame.expect("open").expect("readable") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_json_client_sends_and_receives_what_a_binary_client_does() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let mut browser = json_client(&node.ws_url(), &alice_token).await;

    // 64-bit integers are strings, bytes base64 ("hi bob").
    let send = json!({"reqId": "1", "send": {"toUser": bob.to_string(), "clientMsgId": "c-1", "body": "aGkgYm9i",
        "contentType": "text/plain"}});
    browser.send(Message::text(send.to_string())).await.unwrap();
    let answer = next_json(&mut browser).await;
    assert_eq!(answer["reqId"], "1", "{answer}");
    assert_eq!(answer["ack"]["seq"], "1", "{answer}");
    assert_eq!(answer["ack"]["conversationId"], format!("p:{alice}:{bob}"));
    let pushed = bob_phone.next_event(Duration::from_secs(5)).await.expect("bob's push");
    let im_proto::client::server_frame::Body::Push(message) = pushed else { panic!("{pushed:?}") };
    assert_eq!(&message.body[..], b"hi bob");

    // bob answers in binary; alice's push arrives as JSON.
    ack(bob_phone.send_text(alice, "c-2", "hi alice").await);
    let push = next_json(&mut browser).await;
    assert_eq!(push["push"]["body"], "aGkgYWxpY2U=", "{push}");
    assert_eq!(push["push"]["fromUser"], bob.to_string());

    // bob reads alice's message: her list says how far he read (a page
    // reloaded after the receipt push still shows "read").
    bob_phone.mark_read(&format!("p:{alice}:{bob}"), 1).await;
    browser.send(Message::text(json!({"reqId": "9", "listConversations": {}}).to_string())).await.unwrap();
    let listed = loop {
        let frame = next_json(&mut browser).await;
        if frame["reqId"] == "9" {
            break frame;
        }
    };
    let conversation = &listed["conversations"]["conversations"][0];
    assert_eq!(conversation["peerReadSeq"], "1", "{listed}");
    assert_eq!(conversation["peer"], bob.to_string());

    // A frame that is not a ClientFrame is refused under its reqId, and the
    // connection goes on.
    browser.send(Message::text(r#"{"reqId":"2","send":{"toUser":"not a number"}}"#)).await.unwrap();
    let refused = next_json(&mut browser).await;
    assert_eq!(refused["reqId"], "2");
    assert_eq!(refused["error"]["code"], "INVALID_ARGUMENT", "{refused}");
    browser.send(Message::text(json!({"reqId": "3", "ping": {"nonce": "5"}}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut browser).await["pong"]["nonce"], "5");
}
