//! A stand-in for im-service, in memory, just faithful enough to the client
//! protocol (client.proto), the user service (user.proto), the group
//! service (im/v1/group.proto, in `fake_groups.rs`) and the audit service
//! (im/audit/v1/audit.proto, in `fake_audit.rs`) to test imctl without the
//! real server: tokens are `tok-<user id>` (admin: `admin-secret`), seqs are
//! per conversation, pushes go to every other device of both users (of every
//! member, in a group `g:{id}`).
//!
//! It is not a reference implementation; the real server is tested by its own
//! suites, and imctl against the real server by the end-to-end tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use im_proto::audit::audit_service_server::AuditServiceServer;
use im_proto::client::{self, ClientFrame, ServerFrame, client_frame, server_frame};
use im_proto::message::group_service_server::GroupServiceServer;
use im_proto::user::user_service_server::{UserService, UserServiceServer};
use im_proto::user::{self as user_pb, get_user_request};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

#[path = "fake_audit.rs"]
mod audit;
#[path = "fake_groups.rs"]
mod groups;

pub const ADMIN_TOKEN: &str = "admin-secret";

pub struct FakeServer {
    pub ws_url: String,
    pub grpc_url: String,
    pub state: Arc<State>,
}

#[derive(Default)]
pub struct State {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    /// When set, acks of sends are withheld (to test timeouts).
    pub swallow_sends: std::sync::atomic::AtomicBool,
    /// When set, connections stop reading from their clients (to test back-pressure).
    pub stall: std::sync::atomic::AtomicBool,
    /// Acks of sends queued to their connection so far.
    acks_sent: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Inner {
    users: HashMap<u64, (String, i64)>,
    /// (disabled, token generation) of users an admin changed.
    statuses: HashMap<u64, (bool, u64)>,
    names: HashSet<String>,
    /// Users `GetUser` does not find (they still connect and send).
    unlisted: HashSet<u64>,
    /// Passwords as set (the fake keeps them in clear, to show what arrived).
    passwords: HashMap<u64, String>,
    next_msg: u64,
    conversations: HashMap<String, Conversation>,
    dedup: HashMap<(u64, String), client::SendAck>,
    /// user → (connection id, outbound frames)
    devices: HashMap<u64, Vec<(u64, mpsc::UnboundedSender<ServerFrame>)>>,
    groups: BTreeMap<u64, Group>,
    /// The filter's audit records by msg_id.
    audit: BTreeMap<u64, im_proto::audit::AuditRecord>,
}

#[derive(Default)]
struct Conversation {
    /// The pair of a private conversation (unused in a group's).
    members: [u64; 2],
    messages: Vec<client::Message>,
    read: HashMap<u64, u64>,
}

struct Group {
    name: String,
    owner: u64,
    history: bool,
    version: u64,
    /// user → (role, joined_after)
    members: BTreeMap<u64, (im_proto::user::Role, u64)>,
}

/// The group of a `g:{id}` conversation id.
fn group_of(conversation_id: &str) -> Option<u64> {
    conversation_id.strip_prefix("g:")?.parse().ok()
}

impl Inner {
    /// Seqs of `conversation_id` above which `user` may read it; `None` when
    /// they are not a member (or there is no such conversation).
    fn visible_after(&self, user: u64, conversation_id: &str) -> Option<u64> {
        match group_of(conversation_id) {
            Some(group) => self.groups.get(&group)?.members.get(&user).map(|(_, joined_after)| *joined_after),
            None => self.conversations.get(conversation_id)?.members.contains(&user).then_some(0),
        }
    }

    /// Everyone a message of `conversation_id` is pushed to.
    fn audience(&self, conversation_id: &str) -> Vec<u64> {
        match group_of(conversation_id) {
            Some(group) => self.groups.get(&group).map(|g| g.members.keys().copied().collect()).unwrap_or_default(),
            None => self.conversations.get(conversation_id).map(|c| c.members.to_vec()).unwrap_or_default(),
        }
    }

    /// The last seq of a conversation (0 before its first message).
    fn max_seq(&self, conversation_id: &str) -> u64 {
        self.conversations.get(conversation_id).map_or(0, |c| c.messages.len() as u64)
    }
}

impl State {
    /// Creates a user directly; returns (id, token).
    pub fn add_user(&self, name: &str) -> (u64, String) {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.users.len() as u64 + 1;
        inner.users.insert(id, (name.to_owned(), 1_700_000_000_000));
        inner.names.insert(name.to_owned());
        (id, format!("tok-{id}"))
    }

    /// The password last set for user `id`.
    #[allow(dead_code)] // by the test files that set passwords only
    pub fn password_of(&self, id: u64) -> Option<String> {
        self.inner.lock().unwrap().passwords.get(&id).cloned()
    }

    /// Makes the user directory answer NOT_FOUND for user `id`, as for a
    /// user it no longer knows; the user still connects and sends.
    pub fn hide_from_directory(&self, id: u64) {
        self.inner.lock().unwrap().unlisted.insert(id);
    }

    pub fn message_count(&self) -> usize {
        self.inner.lock().unwrap().conversations.values().map(|c| c.messages.len()).sum()
    }

    /// Waits until `count` acks were sent in all: a test's way to know that
    /// a client process got this far, however slowly it started. A push
    /// queued after this reaches the client after those acks.
    pub async fn wait_for_acks(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.acks_sent.load(Ordering::SeqCst) < count {
            let sent = self.acks_sent.load(Ordering::SeqCst);
            assert!(tokio::time::Instant::now() < deadline, "{sent} of {count} acks sent");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

pub async fn start() -> FakeServer {
    let state = Arc::new(State::default());
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws.local_addr().unwrap();
    tokio::spawn(accept_ws(ws, state.clone()));
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr: SocketAddr = grpc.local_addr().unwrap();
    let service = UserServiceServer::new(Users(state.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .add_service(GroupServiceServer::new(groups::Groups(state.clone())))
            .add_service(AuditServiceServer::new(audit::Audit(state.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
    );
    FakeServer { ws_url: format!("ws://{ws_addr}/ws"), grpc_url: format!("http://{grpc_addr}"), state }
}

async fn accept_ws(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        tcp.set_nodelay(true).unwrap();
        tokio::spawn(serve_connection(tcp, state.clone()));
    }
}

fn user_of(request: &Request) -> Option<u64> {
    let header = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| request.uri().query()?.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_owned))?;
    token.strip_prefix("tok-")?.parse().ok()
}

async fn serve_connection(tcp: tokio::net::TcpStream, state: Arc<State>) {
    let mut me = None;
    // The signature is tungstenite's handshake callback.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        match user_of(request) {
            Some(id) if state.inner.lock().unwrap().users.contains_key(&id) => {
                me = Some(id);
                Ok(response)
            }
            _ => {
                let mut denied = ErrorResponse::new(Some("invalid or missing token".into()));
                *denied.status_mut() = StatusCode::UNAUTHORIZED;
                Err(denied)
            }
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
    let me = me.unwrap();
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerFrame>();
    state.inner.lock().unwrap().devices.entry(me).or_default().push((conn, tx.clone()));
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(Message::Binary(frame.encode_to_vec().into())).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if state.stall.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        let Message::Binary(data) = message else { continue };
        let Ok(frame) = ClientFrame::decode(data) else { break };
        let body = match frame.body {
            Some(body) => handle(&state, me, conn, body),
            None => error(client::ErrorCode::InvalidArgument, "empty frame"),
        };
        if let Some(body) = body {
            let is_ack = matches!(body, server_frame::Body::Ack(_));
            let _ = tx.send(ServerFrame { req_id: frame.req_id, body: Some(body) });
            if is_ack {
                state.acks_sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    state.inner.lock().unwrap().devices.get_mut(&me).unwrap().retain(|(c, _)| *c != conn);
    writer.abort();
}

fn error(code: client::ErrorCode, message: &str) -> Option<server_frame::Body> {
    Some(server_frame::Body::Error(client::Error {
        code: code as i32,
        message: message.to_owned(),
        reason: String::new(),
        retry_after_ms: 0,
    }))
}

fn push(inner: &Inner, users: &[u64], skip_conn: u64, body: server_frame::Body) {
    for user in users {
        for (conn, tx) in inner.devices.get(user).into_iter().flatten() {
            if *conn != skip_conn {
                let _ = tx.send(ServerFrame { req_id: 0, body: Some(body.clone()) });
            }
        }
    }
}

fn handle(state: &State, me: u64, conn: u64, body: client_frame::Body) -> Option<server_frame::Body> {
    use client::ErrorCode::*;
    let mut inner = state.inner.lock().unwrap();
    match body {
        client_frame::Body::Send(send) => {
            if state.swallow_sends.load(Ordering::Relaxed) {
                return None;
            }
            let id = match (send.to_user, send.to_group) {
                (0, 0) | (1.., 1..) => {
                    return error(InvalidArgument, "exactly one of to_user and to_group must be set");
                }
                (0, group) => {
                    let Some(g) = inner.groups.get(&group) else {
                        return error(NotFound, &format!("no group {group}"));
                    };
                    if !g.members.contains_key(&me) {
                        return error(PermissionDenied, &format!("you are not a member of group {group}"));
                    }
                    format!("g:{group}")
                }
                (to, _) => {
                    if !inner.users.contains_key(&to) {
                        return error(NotFound, &format!("no user {to}"));
                    }
                    if to == me {
                        return error(InvalidArgument, "cannot send a private message to yourself");
                    }
                    format!("p:{}:{}", me.min(to), me.max(to))
                }
            };
            if send.body.is_empty() {
                return error(InvalidArgument, "message body is empty");
            }
            if let Some(ack) = inner.dedup.get(&(me, send.client_msg_id.clone())) {
                return Some(server_frame::Body::Ack(ack.clone()));
            }
            inner.next_msg += 1;
            let msg_id = inner.next_msg;
            let c = inner.conversations.entry(id.clone()).or_default();
            if send.to_group == 0 {
                c.members = [me.min(send.to_user), me.max(send.to_user)];
            }
            let seq = c.messages.len() as u64 + 1;
            let message = client::Message {
                msg_id,
                conversation_id: id.clone(),
                seq,
                from_user: me,
                to_user: send.to_user,
                client_msg_id: send.client_msg_id.clone(),
                body: send.body,
                content_type: send.content_type,
                server_time_ms: 1_700_000_000_000 + seq as i64 * 1000,
            };
            c.messages.push(message.clone());
            let ack = client::SendAck {
                msg_id,
                conversation_id: id,
                seq,
                server_time_ms: message.server_time_ms,
                body_masked: false,
            };
            inner.dedup.insert((me, send.client_msg_id), ack.clone());
            push(&inner, &inner.audience(&ack.conversation_id), conn, server_frame::Body::Push(message));
            Some(server_frame::Body::Ack(ack))
        }
        client_frame::Body::Sync(sync) => {
            let Some(floor) = inner.visible_after(me, &sync.conversation_id) else {
                return error(NotFound, &format!("no conversation {}", sync.conversation_id));
            };
            let limit = match sync.limit {
                0 => 100,
                n => n.min(500),
            } as usize;
            let messages = inner.conversations.get(&sync.conversation_id).map_or(&[][..], |c| &c.messages[..]);
            let from = sync.after_seq.max(floor);
            let after: Vec<_> = messages.iter().filter(|m| m.seq > from).cloned().collect();
            let has_more = after.len() > limit;
            let messages = after.into_iter().take(limit).collect();
            Some(server_frame::Body::Sync(client::SyncResponse {
                conversation_id: sync.conversation_id,
                messages,
                has_more,
            }))
        }
        client_frame::Body::MarkRead(read) => {
            if inner.visible_after(me, &read.conversation_id).is_none() {
                return error(NotFound, &format!("no conversation {}", read.conversation_id));
            }
            let c = inner.conversations.entry(read.conversation_id.clone()).or_default();
            let max = c.messages.len() as u64;
            let position = c.read.entry(me).or_default();
            *position = (*position).max(read.seq.min(max));
            let read_seq = *position;
            // A group's receipts go to the reader's other devices only.
            let told = if group_of(&read.conversation_id).is_some() { vec![me] } else { c.members.to_vec() };
            let receipt = client::ReadReceipt { conversation_id: read.conversation_id.clone(), reader: me, read_seq };
            push(&inner, &told, conn, server_frame::Body::Receipt(receipt));
            Some(server_frame::Body::MarkRead(client::MarkReadResponse {
                conversation_id: read.conversation_id,
                read_seq,
            }))
        }
        client_frame::Body::ListConversations(_) => {
            let mut conversations: Vec<_> = inner
                .conversations
                .iter()
                .filter(|(id, c)| group_of(id).is_none() && c.members.contains(&me))
                .map(|(id, c)| {
                    let max_seq = c.messages.len() as u64;
                    let read_seq = c.read.get(&me).copied().unwrap_or(0);
                    let peer = if c.members[0] == me { c.members[1] } else { c.members[0] };
                    client::ConversationSummary {
                        conversation_id: id.clone(),
                        peer,
                        max_seq,
                        read_seq,
                        unread: max_seq - read_seq,
                        group_id: 0,
                        peer_read_seq: c.read.get(&peer).copied().unwrap_or(0),
                    }
                })
                .collect();
            for (&group, g) in &inner.groups {
                let Some(&(_, joined_after)) = g.members.get(&me) else { continue };
                let id = format!("g:{group}");
                let c = inner.conversations.get(&id);
                let read_seq = c.and_then(|c| c.read.get(&me).copied()).unwrap_or(0);
                let unread = c.map_or(0, |c| {
                    let from = read_seq.max(joined_after);
                    c.messages.iter().filter(|m| m.seq > from && m.from_user != me).count() as u64
                });
                let max_seq = inner.max_seq(&id);
                conversations.push(client::ConversationSummary {
                    conversation_id: id,
                    peer: 0,
                    max_seq,
                    read_seq,
                    unread,
                    group_id: group,
                    peer_read_seq: 0,
                });
            }
            conversations.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
            Some(server_frame::Body::Conversations(client::ConversationList { conversations, groups_unchecked: false }))
        }
        client_frame::Body::Ping(ping) => Some(server_frame::Body::Pong(client::Pong { nonce: ping.nonce })),
        // imctl makes these calls over gRPC, never on its WebSocket.
        other => error(InvalidArgument, &format!("the fake serves no {other:?} on the WebSocket")),
    }
}

struct Users(Arc<State>);

/// The user of a request's `Bearer tok-<id>` token, if they exist.
fn caller<T>(state: &State, request: &tonic::Request<T>) -> Result<u64, tonic::Status> {
    let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    let id = header.and_then(|h| h.strip_prefix("Bearer tok-")).and_then(|id| id.parse().ok());
    match id {
        Some(id) if state.inner.lock().unwrap().users.contains_key(&id) => Ok(id),
        _ => Err(tonic::Status::unauthenticated("invalid or missing token")),
    }
}

fn check_admin<T>(request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    match request.metadata().get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == format!("Bearer {ADMIN_TOKEN}") => Ok(()),
        Some(_) => Err(tonic::Status::unauthenticated("invalid admin token")),
        None => Err(tonic::Status::unauthenticated("missing admin token")),
    }
}

impl Users {
    fn change_status(
        &self,
        request: tonic::Request<user_pb::UserStatusRequest>,
        change: impl FnOnce(&mut (bool, u64)),
    ) -> Result<tonic::Response<user_pb::User>, tonic::Status> {
        check_admin(&request)?;
        let id = request.into_inner().user_id;
        let mut inner = self.0.inner.lock().unwrap();
        let (name, created_at_ms) =
            inner.users.get(&id).cloned().ok_or_else(|| tonic::Status::not_found("no such user"))?;
        let status = inner.statuses.entry(id).or_default();
        change(status);
        let (disabled, token_generation) = *status;
        Ok(tonic::Response::new(user_pb::User { id, name, created_at_ms, disabled, token_generation }))
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(
        &self,
        request: tonic::Request<user_pb::CreateUserRequest>,
    ) -> Result<tonic::Response<user_pb::CreateUserResponse>, tonic::Status> {
        check_admin(&request)?;
        let user_pb::CreateUserRequest { name, password } = request.into_inner();
        if name.is_empty() || name.len() > 64 {
            return Err(tonic::Status::invalid_argument("name must be 1 to 64 characters"));
        }
        if !password.is_empty() {
            check_password(&password)?;
        }
        if self.0.inner.lock().unwrap().names.contains(&name) {
            return Err(tonic::Status::already_exists(format!("the name {name} is taken")));
        }
        let (id, token) = self.0.add_user(&name);
        if !password.is_empty() {
            self.0.inner.lock().unwrap().passwords.insert(id, password);
        }
        let user = user_pb::User { id, name, created_at_ms: 1_700_000_000_000, ..Default::default() };
        Ok(tonic::Response::new(user_pb::CreateUserResponse { user: Some(user), token }))
    }

    async fn issue_token(
        &self,
        request: tonic::Request<user_pb::IssueTokenRequest>,
    ) -> Result<tonic::Response<user_pb::IssueTokenResponse>, tonic::Status> {
        check_admin(&request)?;
        let id = request.into_inner().user_id;
        if !self.0.inner.lock().unwrap().users.contains_key(&id) {
            return Err(tonic::Status::not_found(format!("no user {id}")));
        }
        Ok(tonic::Response::new(user_pb::IssueTokenResponse { token: format!("tok-{id}") }))
    }

    async fn get_user(
        &self,
        request: tonic::Request<user_pb::GetUserRequest>,
    ) -> Result<tonic::Response<user_pb::User>, tonic::Status> {
        let inner = self.0.inner.lock().unwrap();
        let found = match request.into_inner().key {
            Some(get_user_request::Key::Id(id)) => inner.users.get(&id).map(|(n, t)| (id, n.clone(), *t)),
            Some(get_user_request::Key::Name(name)) => {
                inner.users.iter().find(|(_, (n, _))| *n == name).map(|(id, (n, t))| (*id, n.clone(), *t))
            }
            None => None,
        };
        let found = found.filter(|(id, _, _)| !inner.unlisted.contains(id));
        let (id, name, created_at_ms) = found.ok_or_else(|| tonic::Status::not_found("no such user"))?;
        Ok(tonic::Response::new(user_pb::User { id, name, created_at_ms, ..Default::default() }))
    }

    // Only the bookkeeping: refusing the user's tokens is tested against
    // the real server (e2e `user_status`).
    async fn disable_user(
        &self,
        request: tonic::Request<user_pb::UserStatusRequest>,
    ) -> Result<tonic::Response<user_pb::User>, tonic::Status> {
        self.change_status(request, |status| status.0 = true)
    }

    async fn enable_user(
        &self,
        request: tonic::Request<user_pb::UserStatusRequest>,
    ) -> Result<tonic::Response<user_pb::User>, tonic::Status> {
        self.change_status(request, |status| status.0 = false)
    }

    async fn revoke_tokens(
        &self,
        request: tonic::Request<user_pb::UserStatusRequest>,
    ) -> Result<tonic::Response<user_pb::User>, tonic::Status> {
        self.change_status(request, |status| status.1 += 1)
    }

    async fn set_password(
        &self,
        request: tonic::Request<user_pb::SetPasswordRequest>,
    ) -> Result<tonic::Response<user_pb::User>, tonic::Status> {
        check_admin(&request)?;
        let user_pb::SetPasswordRequest { user_id, password } = request.into_inner();
        check_password(&password)?;
        let mut inner = self.0.inner.lock().unwrap();
        let (name, created_at_ms) =
            inner.users.get(&user_id).cloned().ok_or_else(|| tonic::Status::not_found(format!("no user {user_id}")))?;
        inner.passwords.insert(user_id, password);
        Ok(tonic::Response::new(user_pb::User { id: user_id, name, created_at_ms, ..Default::default() }))
    }

    // imctl does not sign in with passwords: tested against the real server.
    async fn login(
        &self,
        _: tonic::Request<user_pb::LoginRequest>,
    ) -> Result<tonic::Response<user_pb::LoginResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the fake server does not sign in"))
    }
}

/// The real directory's rule, which imctl leaves to the server.
fn check_password(password: &str) -> Result<(), tonic::Status> {
    if password.chars().count() < 8 {
        return Err(tonic::Status::invalid_argument("a password has at least 8 characters"));
    }
    Ok(())
}
