//! The HTTP side: `GET /ws` authenticates, then upgrades to a WebSocket
//! served by [`Gateway::serve_framed`] (binary protobuf frames, or proto3
//! JSON when the client asks for the `im.v1.json` subprotocol).

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;

use crate::framing::{Framing, JSON_SUBPROTOCOL};
use crate::{Gateway, auth};

/// Bytes read from a socket at a time. Each connection holds this much
/// (tungstenite zero-fills it, so it is resident): 2 KiB, not 8, took an
/// idle connection from 19.8 to 13.7 KB, 1 KiB another ~1 KB; a frame of a
/// few hundred bytes still arrives in one read, a bigger one takes several
/// (BENCHMARKS.md, "Memory per idle connection").
const READ_BUFFER: usize = 1024;

/// Room above `max_message_size` for the rest of a frame (ids, content
/// type, protobuf tags): a body a little too large still arrives and is
/// refused by the service with `RESOURCE_EXHAUSTED`, not by a dropped socket.
pub const FRAME_OVERHEAD: usize = 4096;

impl Gateway {
    /// `GET /ws`, and the browser app at `/`. Merge it into the service's
    /// router, or serve it alone.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().route("/ws", get(upgrade)).with_state(self.clone()).merge(crate::web::router())
    }
}

async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Authenticate before anything else, including the upgrade checks: a
    // request without a valid token learns nothing more than 401.
    let handshake = match auth::handshake(&gateway.tokens, &headers, query.as_deref()) {
        Ok(handshake) => handshake,
        Err(error) => {
            gateway.stats().handshake_rejected();
            tracing::debug!(reason = %error, "handshake refused");
            return error.into_response();
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let user = handshake.identity.user;
    // Checked again when the connection enters the hub (two upgrades may
    // race); here the client still gets an HTTP answer it can read.
    if !gateway.hub.has_room(user, &handshake.device, gateway.limits.connections_per_user) {
        gateway.stats().connection_refused_per_user();
        tracing::debug!(user = %user, "handshake refused: too many connections of this user");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many connections: this user has {} here, the most allowed (LIMIT_CONNECTIONS_PER_USER)",
                gateway.limits.connections_per_user
            ),
        )
            .into_response();
    }
    let max_frame = max_frame(gateway.limits.max_message_size, asks_for_json(&headers));
    ws.protocols([JSON_SUBPROTOCOL])
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        // tungstenite zero-fills its read buffer before every read: at the
        // 128 KiB default that memset was 12 % of the server's CPU at 5000
        // msgs/s (perf). Frames here are a few hundred bytes; bigger ones
        // simply take several reads.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let framing = Framing::of_subprotocol(socket.protocol().and_then(|p| p.to_str().ok()));
            let (sink, stream) = socket.split();
            gateway.serve_framed(&handshake.identity, handshake.device, framing, sink, stream).await;
        })
}

/// The largest frame a connection reads: a body of `max_message_size`, in
/// base64 (a third more) when it comes as JSON, and the rest of the frame.
fn max_frame(max_message_size: usize, json: bool) -> usize {
    let body = if json { max_message_size.saturating_mul(4) / 3 + 4 } else { max_message_size };
    body.saturating_add(FRAME_OVERHEAD)
}

/// Whether the client offers the JSON subprotocol (it gets it if so).
fn asks_for_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == JSON_SUBPROTOCOL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use futures::SinkExt;
    use im_core::{DeviceId, UserId};
    use im_proto::client::{self, ServerFrame, server_frame::Body};
    use prost::Message as _;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

    type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    async fn start(kit: &Kit) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = kit.gateway.router();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    async fn connect(addr: SocketAddr, query: &str, bearer: Option<&str>) -> Result<Client, tungstenite::Error> {
        let mut request = format!("ws://{addr}/ws{query}").into_client_request().unwrap();
        if let Some(token) = bearer {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
    }

    fn refused(result: Result<Client, tungstenite::Error>) -> (u16, String) {
        match result {
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().clone().map(|b| String::from_utf8(b).unwrap()).unwrap_or_default();
                (response.status().as_u16(), body)
            }
            Err(other) => panic!("expected an HTTP refusal, got {other}"),
            Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
        }
    }

    async fn request(ws: &mut Client, frame: client::ClientFrame) -> ServerFrame {
        ws.send(tungstenite::Message::Binary(frame.encode_to_vec().into())).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap() {
                tungstenite::Message::Binary(data) => return ServerFrame::decode(data).unwrap(),
                tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn missing_or_bad_tokens_get_401_before_the_upgrade() {
        let kit = Kit::new();
        let addr = start(&kit).await;

        let (status, body) = refused(connect(addr, "", None).await);
        assert_eq!(status, 401);
        assert!(body.contains("missing token"), "{body}");

        let (status, body) = refused(connect(addr, "?token=not.a.jwt", None).await);
        assert_eq!(status, 401);
        assert!(body.contains("malformed"), "{body}");

        let other = im_auth::Tokens::new(b"another-secret-another-secret-xx").unwrap();
        let foreign = other.issue_user(UserId(5), "mallory", Duration::from_secs(60));
        assert_eq!(refused(connect(addr, "", Some(&foreign)).await).0, 401);

        let token = kit.tokens.issue_user(UserId(5), "alice", Duration::from_secs(60));
        assert_eq!(refused(connect(addr, "?device=bad%20id", Some(&token)).await).0, 400);

        // Nothing was connected or registered.
        assert_eq!(kit.gateway.stats().snapshot().connections_opened, 0);
        assert_eq!(kit.gateway.stats().snapshot().handshakes_rejected, 4);
        assert!(kit.registry.calls().is_empty());

        // A plain GET without a token is refused the same way.
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    }

    #[tokio::test]
    async fn a_disabled_user_gets_403_and_a_revoked_token_401_and_nothing_connects() {
        use im_core::ports::UserStatusBoard;
        use im_core::{StatusChange, UserStatus};
        let kit = Kit::new();
        let addr = start(&kit).await;
        let old = kit.tokens.issue_user(UserId(5), "alice", Duration::from_secs(60));

        kit.statuses.publish(UserId(5), UserStatus::default().after(StatusChange::Disable)).await.unwrap();
        let (status, body) = refused(connect(addr, "", Some(&old)).await);
        assert_eq!(status, 403);
        assert!(body.contains("disabled"), "{body}");

        let revoked = UserStatus::default().after(StatusChange::RevokeTokens);
        kit.statuses.publish(UserId(5), revoked).await.unwrap();
        let (status, body) = refused(connect(addr, "", Some(&old)).await);
        assert_eq!(status, 401);
        assert!(body.contains("revoked"), "{body}");
        assert_eq!(kit.gateway.stats().snapshot().handshakes_rejected, 2);
        assert_eq!(kit.gateway.stats().snapshot().connections_opened, 0);

        // A token issued after the revocation connects.
        let new = kit.tokens.issue_user(UserId(5), "alice", Duration::from_secs(60));
        let mut ws = connect(addr, "", Some(&new)).await.unwrap();
        assert_eq!(request(&mut ws, send_frame(1, 6, "c-1", b"hi")).await.req_id, 1);
    }

    #[tokio::test]
    async fn a_good_token_connects_as_its_user_whatever_else_the_client_says() {
        let kit = Kit::new();
        let addr = start(&kit).await;
        let token = kit.tokens.issue_user(UserId(5), "alice", Duration::from_secs(60));

        let mut ws = connect(addr, &format!("?user=6&device=web-1&token={token}"), None).await.unwrap();
        let reply = request(&mut ws, send_frame(11, 6, "c-1", b"hi bob")).await;
        assert_eq!(reply.req_id, 11);
        let Some(Body::Ack(ack)) = reply.body else { panic!("expected an ack, got {reply:?}") };
        assert_eq!(ack.conversation_id, "p:5:6");
        let sends = kit.messaging.sends();
        assert_eq!((sends[0].0, &sends[0].1), (UserId(5), &DeviceId("web-1".into())));
        assert_eq!(kit.registry.calls(), vec![("register", 5)]);

        // A push reaches the socket.
        kit.gateway.hub().deliver(&[message_event(6, 5, None)]);
        let frame = loop {
            match ws.next().await.unwrap().unwrap() {
                tungstenite::Message::Binary(data) => break ServerFrame::decode(data).unwrap(),
                _ => continue,
            }
        };
        assert!(matches!(frame.body, Some(Body::Push(ref m)) if m.from_user == 6 && m.to_user == 5));

        ws.close(None).await.unwrap();
        for _ in 0..100 {
            if kit.registry.calls().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(kit.registry.calls(), vec![("register", 5), ("unregister", 5)]);
    }

    #[tokio::test]
    async fn frame_size_allows_a_typed_refusal_and_drops_anything_larger() {
        let kit = Kit::new();
        let addr = start(&kit).await;
        let token = kit.tokens.issue_user(UserId(5), "alice", Duration::from_secs(60));
        let mut ws = connect(addr, "", Some(&token)).await.unwrap();
        let max = kit.gateway.limits().max_message_size;

        let reply = request(&mut ws, send_frame(1, 6, "c-big", &vec![b'x'; max + 1])).await;
        assert_eq!(reply.req_id, 1);
        assert_error(&reply, client::ErrorCode::ResourceExhausted);

        let huge = send_frame(2, 6, "c-huge", &vec![b'x'; max + FRAME_OVERHEAD + 1]);
        ws.send(tungstenite::Message::Binary(huge.encode_to_vec().into())).await.unwrap();
        let end =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an oversize frame was accepted");
        assert!(matches!(end, None | Some(Err(_)) | Some(Ok(tungstenite::Message::Close(_)))), "{end:?}");
    }
}
