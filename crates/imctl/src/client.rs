//! A small WebSocket client for the client protocol (`im.client.v1`): one
//! binary frame carries one protobuf `ClientFrame` / `ServerFrame`.
//!
//! Two layers:
//! - [`connect_raw`], [`encode`], [`decode`]: the socket and the codec, for
//!   callers that run their own loop (the load generator).
//! - [`Client`] + [`Events`]: requests matched to responses by `req_id`
//!   (`client.send(..).await`), and the stream of server pushes (messages,
//!   receipts). A background task reads the socket and routes each frame.
//!
//! The token travels in the `Authorization` header, never in the URL, so
//! URLs can be printed in errors.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use im_proto::client::{self, ClientFrame, ServerFrame, client_frame, server_frame};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::tls::{self, CaBundle};

use crate::error::RemoteError;

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where and as whom to connect. `Debug` hides the token.
#[derive(Clone)]
pub struct ConnectOptions {
    pub url: String,
    pub token: String,
    pub device: Option<String>,
    /// Bounds the handshake and every request.
    pub timeout: Duration,
    /// Trusted for `wss://` (`--ca`); none: the system's roots.
    pub ca: Option<CaBundle>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("device", &self.device)
            .field("timeout", &self.timeout)
            .field("ca", &self.ca)
            .finish()
    }
}

/// Opens an authenticated WebSocket (Nagle off: every frame is latency-sensitive).
pub async fn connect_raw(opts: &ConnectOptions) -> anyhow::Result<WsStream> {
    let url = url_with_device(&opts.url, opts.device.as_deref());
    let shown = redact_url(&url);
    let mut request = url.as_str().into_client_request().with_context(|| format!("invalid WebSocket URL {shown}"))?;
    let mut authorization = HeaderValue::try_from(format!("Bearer {}", opts.token))
        .map_err(|_| anyhow!("the token contains characters that cannot go in an HTTP header"))?;
    authorization.set_sensitive(true);
    request.headers_mut().insert("authorization", authorization);

    let connector = tls::websocket(opts.ca.as_ref());
    let connect = tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config()), true, connector);
    match tokio::time::timeout(opts.timeout, connect).await {
        Err(_) => bail!("cannot connect to {shown}: no answer within {:?}", opts.timeout),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let body = body.trim();
            let detail = if body.is_empty() { String::new() } else { format!(": {}", truncate(body, 300)) };
            bail!("the server at {shown} refused the WebSocket connection: HTTP {}{detail}", response.status())
        }
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot connect to {shown}")),
    }
}

/// Frames of this protocol are small. tungstenite zero-fills its whole read
/// buffer before every read (128 KiB by default), which made that memset the
/// load generator's top cost; a small buffer keeps reads cheap, and larger
/// frames still arrive over several reads.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER_SIZE)
}

const READ_BUFFER_SIZE: usize = 8 * 1024;

/// Appends `device=<id>` to the query of `url`.
pub fn url_with_device(url: &str, device: Option<&str>) -> String {
    match device {
        None => url.to_owned(),
        Some(device) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}device={}", percent_encode(device))
        }
    }
}

fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` with the value of any `token=` query parameter hidden.
pub fn redact_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| if pair.starts_with("token=") { "token=<redacted>".to_owned() } else { pair.to_owned() })
        .collect();
    format!("{base}?{}", query.join("&"))
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Encodes `frame` into `buf` (whose allocation is reused once earlier frames
/// are dropped) and wraps it as a binary WebSocket message.
pub fn encode(frame: &ClientFrame, buf: &mut BytesMut) -> Message {
    buf.reserve(frame.encoded_len());
    frame.encode(buf).expect("reserved enough capacity");
    Message::Binary(buf.split().freeze())
}

/// Decodes one binary frame. Byte fields borrow from `data` (no copy).
pub fn decode(data: Bytes) -> Result<ServerFrame, prost::DecodeError> {
    ServerFrame::decode(data)
}

/// Where a message goes: a user (private) or a group the sender is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    User(u64),
    Group(u64),
}

impl Recipient {
    /// Sets `to_user` or `to_group` of `send`, and the other one to 0.
    pub fn address(self, send: &mut client::SendRequest) {
        (send.to_user, send.to_group) = match self {
            Self::User(user) => (user, 0),
            Self::Group(group) => (0, group),
        };
    }

    /// A send request to this recipient.
    pub fn message(self, client_msg_id: String, body: Bytes, content_type: String) -> client::SendRequest {
        let mut send = client::SendRequest { client_msg_id, body, content_type, ..Default::default() };
        self.address(&mut send);
        send
    }

    /// The conversation's id when the recipient alone names it: `g:{group}`.
    /// A private one also depends on the sender (`p:{low}:{high}`).
    pub fn group_conversation(self) -> Option<String> {
        match self {
            Self::User(_) => None,
            Self::Group(group) => Some(format!("g:{group}")),
        }
    }
}

/// Something the server sent on its own (req_id 0).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new message in one of the user's conversations.
    Message(client::Message),
    /// Someone (the peer, or this user on another device) read up to a seq.
    Receipt(client::ReadReceipt),
    /// An error not tied to a request.
    Error(RemoteError),
}

/// What the reader task and the requesters share.
#[derive(Debug, Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<server_frame::Body>>,
    /// Set once the socket is gone: why. No request is registered after that.
    closed: Option<String>,
}

/// The request side of a connection. Requests may run concurrently (`&self`).
pub struct Client {
    sink: tokio::sync::Mutex<SplitSink<WsStream, Message>>,
    state: Arc<Mutex<State>>,
    next_req_id: AtomicU64,
    timeout: Duration,
    /// Taken by `close`; aborted on drop.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// The push side of a connection: messages and receipts, in arrival order.
/// Pushes are buffered from the moment of connecting, so none is missed
/// while the caller is busy syncing.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    state: Arc<Mutex<State>>,
}

impl Events {
    /// The next push; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<String> {
        lock(&self.state).closed.clone()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // The state stays consistent even if a holder panicked: plain inserts and removes.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Client {
    /// Connects and starts routing frames: responses to their requests, the rest to [`Events`].
    pub async fn connect(opts: &ConnectOptions) -> anyhow::Result<(Client, Events)> {
        let ws = connect_raw(opts).await?;
        let (sink, stream) = ws.split();
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(stream, state.clone(), tx));
        let client = Client {
            sink: tokio::sync::Mutex::new(sink),
            state: state.clone(),
            next_req_id: AtomicU64::new(1),
            timeout: opts.timeout,
            reader: Some(reader),
        };
        Ok((client, Events { rx, state }))
    }

    /// Sends one request and waits for the frame with the same req_id. An
    /// error frame becomes a [`RemoteError`].
    pub async fn request(&self, body: client_frame::Body) -> anyhow::Result<server_frame::Body> {
        let req_id = self.next_req_id.fetch_add(1, Ordering::Relaxed);
        let kind = request_kind(&body);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = lock(&self.state);
            if let Some(reason) = &state.closed {
                bail!("cannot send {kind}: {reason}");
            }
            state.pending.insert(req_id, tx);
        }
        let frame = ClientFrame { req_id, body: Some(body) };
        let message = encode(&frame, &mut BytesMut::new());
        // One deadline for writing and for the answer: a server that stops
        // reading must not hang the caller either.
        let exchange = async {
            let sent = self.sink.lock().await.send(message).await;
            sent.with_context(|| format!("cannot send {kind}"))?;
            rx.await.map_err(|_| {
                let reason = lock(&self.state).closed.clone().unwrap_or_else(|| "connection closed".into());
                anyhow!("no response to {kind}: {reason}")
            })
        };
        let response = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                lock(&self.state).pending.remove(&req_id);
                return Err(e);
            }
            Err(_) => {
                lock(&self.state).pending.remove(&req_id);
                bail!("no response to {kind} within {:?}", self.timeout);
            }
        };
        match response {
            server_frame::Body::Error(e) => Err(RemoteError::from_frame(&e).into()),
            body => Ok(body),
        }
    }

    /// Sends a message; returns its ack (given once the message is durable).
    pub async fn send(&self, request: client::SendRequest) -> anyhow::Result<client::SendAck> {
        match self.request(client_frame::Body::Send(request)).await? {
            server_frame::Body::Ack(ack) => Ok(ack),
            other => Err(unexpected("send", &other)),
        }
    }

    /// One page of a conversation: messages with seq > `after_seq`.
    pub async fn sync(
        &self,
        conversation_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> anyhow::Result<client::SyncResponse> {
        let request = client::SyncRequest { conversation_id: conversation_id.to_owned(), after_seq, limit };
        match self.request(client_frame::Body::Sync(request)).await? {
            server_frame::Body::Sync(page) => Ok(page),
            other => Err(unexpected("sync", &other)),
        }
    }

    /// Every message of a conversation after `after_seq`, page by page, in
    /// seq order. Returns the last seq seen (or `after_seq`).
    pub async fn sync_all(
        &self,
        conversation_id: &str,
        after_seq: u64,
        limit: u32,
        mut each: impl FnMut(client::Message) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let mut cursor = after_seq;
        loop {
            let page = self.sync(conversation_id, cursor, limit).await?;
            let has_more = page.has_more;
            let before = cursor;
            for message in page.messages {
                cursor = cursor.max(message.seq);
                each(message)?;
            }
            if !has_more {
                return Ok(cursor);
            }
            if cursor == before {
                bail!("the server said more messages follow seq {cursor} in {conversation_id} but sent none");
            }
        }
    }

    /// Moves the read position forward; returns the position after the request.
    pub async fn mark_read(&self, conversation_id: &str, seq: u64) -> anyhow::Result<client::MarkReadResponse> {
        let request = client::MarkReadRequest { conversation_id: conversation_id.to_owned(), seq };
        match self.request(client_frame::Body::MarkRead(request)).await? {
            server_frame::Body::MarkRead(read) => Ok(read),
            other => Err(unexpected("mark_read", &other)),
        }
    }

    /// The user's conversations with their max seq, read seq and unread count
    /// (`groups_unchecked`: the server could not ask its group directory).
    pub async fn list_conversations(&self) -> anyhow::Result<client::ConversationList> {
        match self.request(client_frame::Body::ListConversations(client::ListConversationsRequest {})).await? {
            server_frame::Body::Conversations(list) => Ok(list),
            other => Err(unexpected("list_conversations", &other)),
        }
    }

    pub async fn ping(&self, nonce: u64) -> anyhow::Result<u64> {
        match self.request(client_frame::Body::Ping(client::Ping { nonce })).await? {
            server_frame::Body::Pong(pong) => Ok(pong.nonce),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// Sends a close frame and waits briefly for the server to close its side.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.sink.lock().await.close().await;
        })
        .await;
        // The reader ends when the server closes its side.
        if let Some(mut reader) = self.reader.take()
            && tokio::time::timeout(Duration::from_secs(1), &mut reader).await.is_err()
        {
            reader.abort();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

fn request_kind(body: &client_frame::Body) -> &'static str {
    match body {
        client_frame::Body::Send(_) => "send",
        client_frame::Body::Sync(_) => "sync",
        client_frame::Body::MarkRead(_) => "mark_read",
        client_frame::Body::ListConversations(_) => "list_conversations",
        client_frame::Body::Ping(_) => "ping",
        client_frame::Body::Users(_) => "users",
        client_frame::Body::CreateGroup(_) => "create_group",
        client_frame::Body::AddMembers(_) => "add_members",
        client_frame::Body::RemoveMember(_) => "remove_member",
        client_frame::Body::LeaveGroup(_) => "leave_group",
        client_frame::Body::ListMembers(_) => "list_members",
        client_frame::Body::ListGroups(_) => "list_groups",
        client_frame::Body::ReadStatus(_) => "read_status",
    }
}

fn unexpected(kind: &str, body: &server_frame::Body) -> anyhow::Error {
    let got = match body {
        server_frame::Body::Ack(_) => "ack",
        server_frame::Body::Push(_) => "push",
        server_frame::Body::Sync(_) => "sync",
        server_frame::Body::Receipt(_) => "receipt",
        server_frame::Body::Error(_) => "error",
        server_frame::Body::Pong(_) => "pong",
        server_frame::Body::Conversations(_) => "conversations",
        server_frame::Body::MarkRead(_) => "mark_read",
        server_frame::Body::Users(_) => "users",
        server_frame::Body::Group(_) => "group",
        server_frame::Body::GroupChanged(_) => "group_changed",
        server_frame::Body::Groups(_) => "groups",
        server_frame::Body::ReadStatus(_) => "read_status",
    };
    anyhow!("the server answered {kind} with a {got} frame")
}

async fn read_loop(mut stream: SplitStream<WsStream>, state: Arc<Mutex<State>>, events: mpsc::UnboundedSender<Event>) {
    let reason = loop {
        let data = match stream.next().await {
            None => break "the server closed the connection".to_owned(),
            Some(Err(e)) => break format!("connection lost: {e}"),
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Close(frame))) => break close_reason(frame.as_ref()),
            // Pings are answered by tungstenite; nothing else is part of the protocol.
            Some(Ok(_)) => continue,
        };
        let frame = match decode(data) {
            Ok(frame) => frame,
            Err(e) => break format!("the server sent a frame that is not a ServerFrame: {e}"),
        };
        let Some(body) = frame.body else { continue };
        if frame.req_id != 0 {
            // A response nobody waits for any more (timed out) is dropped.
            if let Some(waiter) = lock(&state).pending.remove(&frame.req_id) {
                let _ = waiter.send(body);
            }
            continue;
        }
        let event = match body {
            server_frame::Body::Push(m) => Event::Message(m),
            server_frame::Body::Receipt(r) => Event::Receipt(r),
            server_frame::Body::Error(e) => Event::Error(RemoteError::from_frame(&e)),
            _ => continue,
        };
        let _ = events.send(event);
    };
    let mut state = lock(&state);
    state.closed = Some(reason);
    // Dropping the waiters tells every pending request the connection is gone.
    state.pending.clear();
}

fn close_reason(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if !f.reason.is_empty() => {
            format!("the server closed the connection ({}: {})", u16::from(f.code), f.reason.as_str())
        }
        Some(f) => format!("the server closed the connection ({})", u16::from(f.code)),
        None => "the server closed the connection".to_owned(),
    }
}

/// A random idempotency key shaped like a UUID (version 4 layout).
pub fn random_client_msg_id() -> String {
    let v: u128 = rand::random();
    let v = (v & !(0xF000 << 64) | (0x4000 << 64)) & !(0xC000 << 48) | (0x8000 << 48);
    let hex = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_goes_into_the_query_encoded() {
        assert_eq!(url_with_device("ws://h/ws", None), "ws://h/ws");
        assert_eq!(url_with_device("ws://h/ws", Some("phone")), "ws://h/ws?device=phone");
        assert_eq!(url_with_device("ws://h/ws?x=1", Some("my phone/2")), "ws://h/ws?x=1&device=my%20phone%2F2");
    }

    #[test]
    fn tokens_in_urls_are_redacted() {
        assert_eq!(redact_url("ws://h/ws?token=abc&device=d"), "ws://h/ws?token=<redacted>&device=d");
        assert_eq!(redact_url("ws://h/ws"), "ws://h/ws");
    }

    #[test]
    fn frames_round_trip_through_the_codec() {
        let frame = ClientFrame { req_id: 7, body: Some(client_frame::Body::Ping(client::Ping { nonce: 3 })) };
        let mut buf = BytesMut::new();
        let Message::Binary(data) = encode(&frame, &mut buf) else { panic!("not binary") };
        assert_eq!(ClientFrame::decode(data).unwrap(), frame);
        let server = ServerFrame { req_id: 7, body: Some(server_frame::Body::Pong(client::Pong { nonce: 3 })) };
        assert_eq!(decode(server.encode_to_vec().into()).unwrap(), server);
    }

    #[test]
    fn recipients_set_exactly_one_address() {
        let to_user = Recipient::User(7).message("c".into(), Bytes::from_static(b"hi"), "text/plain".into());
        assert_eq!((to_user.to_user, to_user.to_group, &to_user.body[..]), (7, 0, &b"hi"[..]));
        let mut to_group = to_user.clone();
        Recipient::Group(3).address(&mut to_group);
        assert_eq!((to_group.to_user, to_group.to_group), (0, 3));
        assert_eq!(Recipient::Group(3).group_conversation().as_deref(), Some("g:3"));
        assert_eq!(Recipient::User(7).group_conversation(), None);
    }

    #[test]
    fn client_msg_ids_look_like_uuids_and_differ() {
        let a = random_client_msg_id();
        let b = random_client_msg_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert_eq!(a.split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
    }

    #[test]
    fn options_debug_hides_the_token() {
        let opts = ConnectOptions {
            url: "ws://h/ws".into(),
            token: "secret-jwt".into(),
            device: None,
            timeout: Duration::from_secs(1),
            ca: None,
        };
        assert!(!format!("{opts:?}").contains("secret-jwt"));
    }
}
