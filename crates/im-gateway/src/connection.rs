//! One connection: read frames, run their requests, write replies and pushes.
//!
//! The loop is generic over a `Sink`/`Stream` of WebSocket messages so tests
//! drive it with channels. A connection is two tasks (never one per
//! message):
//!
//! - the connection's task races the reader, the registration and the
//!   shutdown signal (set by the hub when the connection is replaced or too
//!   slow, or when the gateway shuts down) in one `select!`. The reader
//!   decodes frames and runs up to `max_in_flight_per_connection` requests
//!   concurrently in a `FuturesUnordered`; when that many are pending it
//!   stops reading, so a client cannot queue unbounded work;
//! - the writer task drains the outbound queue (pre-encoded frames: replies
//!   and pushes), `feed`ing each and flushing once the queue is momentarily
//!   empty, so frames that arrive together leave in one write. It is a task
//!   of its own so that a push wakes only the writer: polling the read side
//!   costs a syscall and a zero-fill of the read buffer, and in a large
//!   group every member's connection is woken for every message.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Sink, SinkExt, Stream, StreamExt};
use im_core::limits::sync_page_size;
use im_core::{ConversationId, DeviceId, ImError, Seq, UserId};
use im_proto::client::{self, ClientFrame, ServerFrame, client_frame, server_frame};

use prost::Message as _;
use tokio::sync::{Notify, oneshot};
use tracing::Instrument;

use crate::Gateway;
use crate::framing::{Framing, Incoming};
use crate::hub::{Hub, TooManyConnections};
use crate::outbound::{Outbound, OutboundQueue, Reservation, outbound};

/// How long a closing connection may take to send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Frames written before a flush even if more are queued: bounds how long a
/// frame may sit in the transport's buffer under sustained load.
const MAX_UNFLUSHED: usize = 256;

/// Room reserved for the reply to a conversation list (its size grows
/// with the user's conversations; a larger one still goes).
const LIST_REPLY_ROOM: usize = 64 * 1024;

/// Room reserved for any other reply (an ack, a receipt, a pong, an error).
const SMALL_REPLY_ROOM: usize = 1024;

/// Why the gateway closes a connection; sent as the WebSocket close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The same (user, device) connected again.
    Replaced,
    /// The client did not read its pushes fast enough.
    TooSlow,
    /// The gateway is shutting down.
    GoingAway,
    /// The user already has `LIMIT_CONNECTIONS_PER_USER` connections here.
    TooManyConnections,
    /// The user was disabled, or the token the connection was opened with
    /// was revoked.
    Revoked,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            Self::Replaced => 4000,
            Self::TooSlow => 4001,
            Self::GoingAway => 1001,
            Self::TooManyConnections => 4002,
            Self::Revoked => 4003,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::Replaced => "replaced by a newer connection",
            Self::TooSlow => "too slow reading pushes: reconnect and sync",
            Self::GoingAway => "the gateway is shutting down: reconnect",
            Self::TooManyConnections => "too many connections of this user: close one first",
            Self::Revoked => "the user was disabled or this token revoked",
        }
    }

    fn frame(self) -> CloseFrame {
        CloseFrame { code: self.code(), reason: Utf8Bytes::from_static(self.text()) }
    }
}

/// Tells a connection to close, from any thread, without awaiting: the hub
/// sets it while holding a shard lock.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    reason: OnceLock<CloseReason>,
    notify: Notify,
}

impl Shutdown {
    /// Sets the reason; true for the first call only (count it once).
    pub(crate) fn trigger(&self, reason: CloseReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        if first {
            // notify_one keeps a permit when nobody waits yet.
            self.notify.notify_one();
        }
        first
    }

    pub(crate) fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    async fn wait(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            self.notify.notified().await;
        }
    }
}

/// A frame encoded for the wire.
pub(crate) fn encode(frame: &ServerFrame) -> Bytes {
    Bytes::from(frame.encode_to_vec())
}

fn error_frame(req_id: u64, error: &ImError) -> Bytes {
    encode(&ServerFrame { req_id, body: Some(server_frame::Body::Error(error.into())) })
}

/// How a connection ended.
enum End {
    Closed(CloseReason),
    ClientGone,
    WriteFailed(String),
}

/// Removes the connection from the hub also when the connection's future is
/// dropped (runtime shutdown), so the table never keeps a dead entry.
struct Attachment<'a> {
    hub: &'a Hub,
    user: UserId,
    id: u64,
    armed: bool,
}

impl Attachment<'_> {
    /// True when this was the user's last connection here.
    fn detach(mut self) -> bool {
        self.armed = false;
        self.hub.detach(self.user, self.id)
    }
}

impl Drop for Attachment<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.detach(self.user, self.id);
        }
    }
}

/// Whom a connection acts as: the user of its verified token, and the
/// token generation it was issued at (a revocation above it closes the
/// connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub user: UserId,
    pub token_generation: u64,
}

impl From<UserId> for Owner {
    /// A user whose tokens were never revoked.
    fn from(user: UserId) -> Self {
        Self { user, token_generation: 0 }
    }
}

impl From<&im_auth::Identity> for Owner {
    fn from(identity: &im_auth::Identity) -> Self {
        Self { user: identity.user, token_generation: identity.token_generation }
    }
}

impl Gateway {
    /// Serves one authenticated connection until it ends. `owner` must come
    /// from a verified token ([`crate::auth::handshake`]); every request of
    /// the connection acts as that user.
    pub async fn serve<S, R, E>(&self, owner: impl Into<Owner>, device: DeviceId, sink: S, stream: R)
    where
        S: Sink<Message> + Send + Unpin + 'static,
        S::Error: fmt::Display + Send,
        R: Stream<Item = Result<Message, E>> + Unpin,
        E: fmt::Display,
    {
        self.serve_framed(owner, device, Framing::Protobuf, sink, stream).await;
    }

    /// [`Gateway::serve`], its frames in `framing` (the subprotocol the
    /// handshake agreed on).
    pub async fn serve_framed<S, R, E>(
        &self,
        owner: impl Into<Owner>,
        device: DeviceId,
        framing: Framing,
        sink: S,
        stream: R,
    ) where
        S: Sink<Message> + Send + Unpin + 'static,
        S::Error: fmt::Display + Send,
        R: Stream<Item = Result<Message, E>> + Unpin,
        E: fmt::Display,
    {
        let owner = owner.into();
        let user = owner.user;
        let (outbound, queue) = outbound(self.limits.outbound_queue, self.limits.outbound_bytes);
        let shutdown = Arc::new(Shutdown::default());
        let attached = match self.hub.attach(
            owner,
            device.clone(),
            outbound.clone(),
            shutdown.clone(),
            self.limits.connections_per_user,
        ) {
            Ok(attached) => attached,
            Err(TooManyConnections) => {
                // The handshake checks the same limit; this is the race of
                // two upgrades at once.
                let mut sink = sink;
                let _ = sink.send(Message::Close(Some(CloseReason::TooManyConnections.frame()))).await;
                let _ = sink.close().await;
                return;
            }
        };
        let attachment = Attachment { hub: &self.hub, user, id: attached.id, armed: true };
        // A status change that arrived between the handshake and the attach
        // found no connection to close: look again now that it is listed.
        if self.tokens.admits(user, owner.token_generation).is_err() && shutdown.trigger(CloseReason::Revoked) {
            self.stats().connection_revoked();
        }
        tracing::debug!(user = %user, device = %device, "connected");
        let (stop_writer, stop) = oneshot::channel();
        let writing = Writing {
            ping_interval: self.limits.ping_interval,
            stall_timeout: self.limits.write_stall_timeout,
            hub: self.hub.clone(),
            framing,
        };
        let mut writer = tokio::spawn(write_task(sink, queue, stop, writing));
        // Registering runs alongside serving: a slow or down registry must
        // not stop the user from sending (pushes to this connection may be
        // missed meanwhile; the client catches up by sync).
        let registering = self.sync_registry(user);
        let (end, registered) = {
            let closing = shutdown.wait();
            let reader = self.read_loop(user, &device, framing, stream, &outbound);
            tokio::pin!(registering, closing, reader);
            let mut registered = !attached.first;
            let end = loop {
                tokio::select! {
                    biased;
                    reason = &mut closing => break End::Closed(reason),
                    () = &mut registering, if !registered => registered = true,
                    () = &mut reader => break End::ClientGone,
                    result = &mut writer => break End::WriteFailed(why_writer_ended(result)),
                }
            };
            (end, registered)
        };
        let last = attachment.detach();

        if !matches!(end, End::WriteFailed(_)) {
            let reason = match end {
                End::Closed(reason) => Some(reason),
                _ => None,
            };
            // The writer sends the close frame and closes the socket; a
            // client that stopped reading must not hold it.
            let _ = stop_writer.send(reason);
            if tokio::time::timeout(CLOSE_GRACE, &mut writer).await.is_err() {
                writer.abort();
            }
        }
        // Also when this connection's registration was cut short: a device
        // that attached meanwhile did not register, counting on this one.
        if last || !registered {
            self.sync_registry(user).await;
        }
        match end {
            End::Closed(reason) => tracing::debug!(user = %user, device = %device, ?reason, "closed by gateway"),
            End::ClientGone => tracing::debug!(user = %user, device = %device, "disconnected"),
            End::WriteFailed(error) => tracing::debug!(user = %user, device = %device, %error, "write failed"),
        }
    }

    /// Reads frames and runs their requests concurrently; replies go to the
    /// outbound queue in completion order (each carries its req_id). Each
    /// request first reserves room for its reply, so requests of a client
    /// that does not read wait, unrun. Returns when the client closes or
    /// the socket fails.
    async fn read_loop<R, E>(
        &self,
        user: UserId,
        device: &DeviceId,
        framing: Framing,
        mut stream: R,
        replies: &Outbound,
    ) where
        R: Stream<Item = Result<Message, E>> + Unpin,
        E: fmt::Display,
    {
        let max_in_flight = self.limits.max_in_flight_per_connection;
        // One concrete future type (`respond`), so no boxing per request.
        let mut in_flight = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some((reply, room)) = in_flight.next(), if !in_flight.is_empty() => {
                    // Waiting for a queue slot is the backpressure on replies.
                    if !replies.reply(reply, room).await {
                        return;
                    }
                }
                incoming = stream.next(), if in_flight.len() < max_in_flight => {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => {
                            tracing::debug!(user = %user, %error, "read failed");
                            return;
                        }
                        None => return,
                    };
                    let rejected = match message {
                        Message::Binary(_) | Message::Text(_) => {
                            self.stats().frame_in();
                            match framing.read(&message) {
                                Incoming::Request(frame) => {
                                    in_flight.push(self.respond(user, device, frame, replies));
                                    continue;
                                }
                                Incoming::Unreadable { req_id, error } => error_frame(req_id, &error),
                            }
                        }
                        Message::Close(_) => return,
                        // The WebSocket layer answers pings itself.
                        Message::Ping(_) | Message::Pong(_) => continue,
                    };
                    self.stats().bad_frame();
                    let room = replies.reserve(rejected.len()).await;
                    if !replies.reply(rejected, room).await {
                        return;
                    }
                }
            }
        }
    }

    /// Room to reserve for the reply to `request`.
    fn reply_room(&self, request: Option<&client_frame::Body>) -> usize {
        match request {
            Some(client_frame::Body::Sync(_)) => self.limits.sync_reply_bytes,
            Some(
                client_frame::Body::ListConversations(_)
                | client_frame::Body::ListGroups(_)
                | client_frame::Body::ListMembers(_)
                | client_frame::Body::CreateGroup(_)
                | client_frame::Body::Users(_),
            ) => LIST_REPLY_ROOM,
            _ => SMALL_REPLY_ROOM,
        }
    }

    /// The encoded reply to one request, run once room for it is reserved.
    async fn respond(
        &self,
        user: UserId,
        device: &DeviceId,
        frame: ClientFrame,
        replies: &Outbound,
    ) -> (Bytes, Reservation) {
        let room = replies.reserve(self.reply_room(frame.body.as_ref())).await;
        let result = match frame.body {
            Some(request) => self.dispatch(user, device, request).await,
            None => Err(ImError::invalid(
                "the frame carries no request: set one of send, sync, mark_read, list_conversations, ping, users, \
                 create_group, add_members, remove_member, leave_group, list_members, list_groups, read_status",
            )),
        };
        let body = result.unwrap_or_else(|error| server_frame::Body::Error((&error).into()));
        (encode(&ServerFrame { req_id: frame.req_id, body: Some(body) }), room)
    }

    async fn dispatch(
        &self,
        user: UserId,
        device: &DeviceId,
        request: client_frame::Body,
    ) -> Result<server_frame::Body, ImError> {
        use client_frame::Body as Req;
        use server_frame::Body as Resp;
        match request {
            Req::Send(send) => {
                // No sender field exists: the sender is the connection's user.
                let command = im_proto::convert::send_command(send)?;
                // The root of the message's trace (target `im_trace`: made
                // only when trace export is on, and only for the sends the
                // ratio picks); the service's spans join it through the
                // call's metadata. An unsampled send makes no span at all.
                let sending = self.messaging.send(user, device, command);
                let ack = if crate::trace_sampling::start_trace() {
                    let span = tracing::info_span!(target: "im_trace", "gateway.frame", otel.kind = "server");
                    sending.instrument(span).await?
                } else {
                    sending.await?
                };
                Ok(Resp::Ack(ack.into()))
            }
            Req::Sync(sync) => {
                let conversation: ConversationId = sync.conversation_id.parse()?;
                let limit = sync_page_size(sync.limit);
                let page = self.messaging.sync(user, conversation, Seq(sync.after_seq), limit).await?;
                Ok(Resp::Sync(client::SyncResponse {
                    conversation_id: sync.conversation_id,
                    messages: page.messages.iter().map(client::Message::from).collect(),
                    has_more: page.has_more,
                }))
            }
            Req::MarkRead(mark) => {
                let conversation: ConversationId = mark.conversation_id.parse()?;
                let read_seq = self.messaging.mark_read(user, device, conversation, Seq(mark.seq)).await?;
                Ok(Resp::MarkRead(client::MarkReadResponse {
                    conversation_id: mark.conversation_id,
                    read_seq: read_seq.0,
                }))
            }
            Req::ListConversations(_) => {
                let list = self.messaging.conversations(user).await?;
                Ok(Resp::Conversations(im_proto::convert::conversation_list(&list, user)))
            }
            Req::Ping(ping) => Ok(Resp::Pong(client::Pong { nonce: ping.nonce })),
            Req::Users(users) => Ok(Resp::Users(self.users.lookup(users).await?)),
            group => crate::group_requests::answer(&*self.groups, user, group).await,
        }
    }
}

/// What the writer needs besides its sink and queue.
struct Writing {
    ping_interval: Duration,
    stall_timeout: Duration,
    hub: Arc<Hub>,
    framing: Framing,
}

/// The writer task: writes queued frames, and a ping every
/// `ping_interval`, until told to stop (then sends the close frame, if the
/// gateway closes the connection, and closes the sink). Returns an error
/// when the sink fails or takes no bytes for `stall_timeout`, or when the
/// queue closed first.
async fn write_task<S>(
    mut sink: S,
    mut queue: OutboundQueue,
    stop: oneshot::Receiver<Option<CloseReason>>,
    writing: Writing,
) -> Result<(), String>
where
    S: Sink<Message> + Unpin,
    S::Error: fmt::Display,
{
    tokio::select! {
        biased;
        stop = stop => {
            if let Ok(Some(reason)) = stop {
                let _ = sink.send(Message::Close(Some(reason.frame()))).await;
            }
            let _ = sink.close().await;
            Ok(())
        }
        result = write_loop(&mut sink, &mut queue, &writing) => match result {
            Ok(()) => Err("queue closed".to_owned()),
            Err(e) => Err(e),
        },
    }
}

/// What the connection's task logs when the writer ended on its own.
fn why_writer_ended(result: Result<Result<(), String>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "writer stopped".to_owned(),
        Ok(Err(error)) => error,
        Err(error) => format!("writer task failed: {error}"),
    }
}

/// Writes queued frames until the sink fails or stalls.
async fn write_loop<S>(sink: &mut S, queue: &mut OutboundQueue, writing: &Writing) -> Result<(), String>
where
    S: Sink<Message> + Unpin,
    S::Error: fmt::Display,
{
    let stats = writing.hub.stats();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + writing.ping_interval, writing.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Grown by the first frames, not reserved up front: 64 slots of 48 bytes
    // were 3 KB of every idle connection (heaptrack; BENCHMARKS.md).
    let mut batch = Vec::new();
    let mut unflushed = 0;
    loop {
        tokio::select! {
            biased;
            received = queue.recv_many(&mut batch, 64) => if received == 0 {
                return Ok(());
            },
            _ = ping.tick() => {
                // The client's pong keeps the connection from going idle.
                within(writing, sink.send(Message::Ping(Bytes::new()))).await?;
                unflushed = 0;
                continue;
            }
        }
        let written = batch.len();
        // One deadline for the whole batch: a timer per frame would cost
        // on every push.
        within(writing, async {
            for frame in batch.drain(..) {
                // The frame's room is given back once the sink took it.
                sink.feed(writing.framing.frame(frame.bytes())).await?;
                queue.written(frame);
            }
            unflushed += written;
            // Flush only when nothing more is waiting: frames that arrive
            // together leave in one write instead of one syscall each.
            if queue.is_empty() || unflushed >= MAX_UNFLUSHED {
                sink.flush().await?;
                unflushed = 0;
            }
            Ok::<(), S::Error>(())
        })
        .await?;
        stats.frames_out(written as u64);
    }
}

/// `write`, failed when the socket takes no bytes for the stall timeout: a
/// client that stopped reading is closed and its memory freed.
async fn within<E: fmt::Display>(
    writing: &Writing,
    write: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(writing.stall_timeout, write).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => {
            writing.hub.stats().connection_stalled();
            Err(format!("the client read nothing for {:?}", writing.stall_timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GatewayLimits;
    use crate::testkit::*;
    use client::server_frame::Body;
    use im_core::ports::UserStatusBoard;
    use im_core::{StatusChange, UserStatus};
    use std::time::Duration;

    #[tokio::test]
    async fn send_is_dispatched_as_the_connection_user_and_acked_with_the_req_id() {
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");
        conn.send_frame(send_frame(42, 6, "c-1", b"hello")).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 42);
        let Some(Body::Ack(ack)) = reply.body else { panic!("expected an ack, got {reply:?}") };
        assert_eq!(ack.conversation_id, "p:5:6");
        let sends = kit.messaging.sends();
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].0, UserId(5));
        assert_eq!(sends[0].1, DeviceId("phone".into()));
        assert_eq!(sends[0].2.body.as_ref(), b"hello");
    }

    fn frame(req_id: u64, body: client_frame::Body) -> ClientFrame {
        ClientFrame { req_id, body: Some(body) }
    }

    #[tokio::test]
    async fn group_requests_act_as_the_connection_user_and_answer_under_their_req_id() {
        use client_frame::Body as Req;
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");
        let create = client::CreateGroupRequest { name: "trip".into(), members: vec![6, 8], history_visible: false };
        conn.send_frame(frame(1, Req::CreateGroup(create))).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 1);
        let Some(Body::Group(roster)) = reply.body else { panic!("expected a roster, got {reply:?}") };
        assert_eq!(roster.group.unwrap().owner, 5);
        assert_eq!(roster.members.iter().map(|m| m.user).collect::<Vec<_>>(), [5, 6, 8]);

        conn.send_frame(frame(2, Req::LeaveGroup(client::LeaveGroupRequest { group_id: 7 }))).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.body, Some(Body::GroupChanged(client::GroupChanged { group_id: 7, version: 2 })));

        conn.send_frame(frame(3, Req::ListGroups(client::ListGroupsRequest {}))).await;
        let Some(Body::Groups(list)) = conn.recv_frame().await.body else { panic!("expected the groups") };
        assert_eq!(list.groups[0].role(), client::GroupRole::Member);

        conn.send_frame(frame(4, Req::ReadStatus(client::ReadStatusRequest { group_id: 7, seq: 3 }))).await;
        let Some(Body::ReadStatus(read)) = conn.recv_frame().await.body else { panic!("expected a read status") };
        assert_eq!((read.group_id, read.seq, read.read_count, read.readers), (7, 3, 1, vec![2]));

        // Refusals come back typed, under their req_id.
        conn.send_frame(frame(5, Req::ListMembers(client::ListMembersRequest { group_id: 7 }))).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 5);
        assert_error(&reply, client::ErrorCode::NotFound);
        assert_eq!(
            kit.groups.calls(),
            [
                (UserId(5), "create trip [UserId(6), UserId(8)]".to_owned()),
                (UserId(5), "change 7 Leave".to_owned()),
                (UserId(5), "groups".to_owned()),
                (UserId(5), "read 7 3".to_owned()),
                (UserId(5), "roster 7".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn group_requests_with_a_zero_id_or_no_user_are_refused_before_the_groups_are_asked() {
        use client_frame::Body as Req;
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");
        let bad = [
            Req::AddMembers(client::AddMembersRequest { group_id: 7, users: vec![] }),
            Req::AddMembers(client::AddMembersRequest { group_id: 7, users: vec![6, 0] }),
            Req::RemoveMember(client::RemoveMemberRequest { group_id: 0, user: 6 }),
            Req::CreateGroup(client::CreateGroupRequest { name: "x".into(), members: vec![0], history_visible: false }),
            Req::ListMembers(client::ListMembersRequest { group_id: 0 }),
        ];
        for (req_id, request) in (1..).zip(bad) {
            conn.send_frame(frame(req_id, request)).await;
            let reply = conn.recv_frame().await;
            assert_eq!(reply.req_id, req_id);
            assert_error(&reply, client::ErrorCode::InvalidArgument);
        }
        assert!(kit.groups.calls().is_empty());
    }

    #[tokio::test]
    async fn a_users_request_without_a_directory_is_unavailable_and_the_connection_stays() {
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");
        let users = client::UsersRequest { ids: vec![6], names: vec![] };
        conn.send_frame(frame(1, client_frame::Body::Users(users))).await;
        assert_error(&conn.recv_frame().await, client::ErrorCode::Unavailable);
        conn.send_frame(ping_frame(2, 9)).await;
        assert_eq!(conn.recv_frame().await.req_id, 2);
    }

    #[tokio::test]
    async fn service_errors_come_back_typed_with_the_req_id() {
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");
        conn.send_frame(send_frame(7, 6, "c-1", b"")).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 7);
        assert_error(&reply, client::ErrorCode::InvalidArgument);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        // The frame decoder fuzzed through the whole connection loop: any
        // bytes get at most one answer each, never a panic or a dropped
        // connection, and whatever decodes as a send acts as the
        // connection's user.
        #[test]
        fn arbitrary_frames_never_break_the_connection(
            frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), 1..16)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let kit = Kit::new();
                let mut conn = kit.connect(5, "phone");
                for frame in &frames {
                    conn.send(Message::Binary(Bytes::copy_from_slice(frame))).await;
                }
                // Replies come in completion order; the ping's pong proves
                // the loop is alive after all of them.
                conn.send_frame(ping_frame(u64::MAX, 7)).await;
                let mut replies = 0;
                loop {
                    let reply = conn.recv_frame().await;
                    if reply.req_id == u64::MAX && matches!(reply.body, Some(Body::Pong(_))) {
                        break;
                    }
                    replies += 1;
                    assert!(replies <= frames.len(), "more answers than frames");
                }
                assert!(kit.messaging.sends().iter().all(|(user, _, _)| *user == UserId(5)));
            });
        }
    }

    #[tokio::test]
    async fn garbage_text_and_empty_frames_get_errors_and_the_connection_stays() {
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");

        conn.send(Message::Binary(Bytes::from_static(&[0xff, 0xff, 0xff]))).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 0);
        assert_error(&reply, client::ErrorCode::InvalidArgument);

        conn.send(Message::Text("hello".into())).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 0);
        assert_error(&reply, client::ErrorCode::InvalidArgument);

        conn.send_frame(ClientFrame { req_id: 3, body: None }).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 3);
        assert_error(&reply, client::ErrorCode::InvalidArgument);

        // A request that does not decode (a client_msg_id that is not
        // UTF-8) is answered under its req_id, which is readable.
        let mut bad = ClientFrame {
            req_id: 9,
            body: Some(client_frame::Body::Send(client::SendRequest {
                client_msg_id: "MARKER".into(),
                ..Default::default()
            })),
        }
        .encode_to_vec();
        let at = bad.windows(6).position(|w| w == b"MARKER").expect("the marker");
        bad[at] = 0xff;
        conn.send(Message::Binary(Bytes::from(bad))).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 9);
        assert_error(&reply, client::ErrorCode::InvalidArgument);

        // Still served.
        conn.send_frame(ping_frame(4, 99)).await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 4);
        assert!(matches!(reply.body, Some(Body::Pong(client::Pong { nonce: 99 }))));
        assert_eq!(
            kit.gateway.stats().snapshot().bad_frames,
            3,
            "the two unreadable frames and the undecodable request"
        );
    }

    #[tokio::test]
    async fn sync_mark_read_and_list_conversations() {
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");

        conn.send_frame(ClientFrame {
            req_id: 1,
            body: Some(client_frame::Body::Sync(client::SyncRequest {
                conversation_id: "p:5:6".into(),
                after_seq: 0,
                limit: 0,
            })),
        })
        .await;
        let reply = conn.recv_frame().await;
        let Some(Body::Sync(sync)) = reply.body else { panic!("expected sync, got {reply:?}") };
        assert_eq!((sync.conversation_id.as_str(), sync.messages.len(), sync.has_more), ("p:5:6", 1, false));
        assert_eq!(kit.messaging.last_sync_limit(), Some(im_core::limits::DEFAULT_SYNC_LIMIT));

        conn.send_frame(ClientFrame {
            req_id: 2,
            body: Some(client_frame::Body::Sync(client::SyncRequest {
                conversation_id: "not-a-conversation".into(),
                after_seq: 0,
                limit: 0,
            })),
        })
        .await;
        assert_error(&conn.recv_frame().await, client::ErrorCode::InvalidArgument);

        conn.send_frame(ClientFrame {
            req_id: 3,
            body: Some(client_frame::Body::MarkRead(client::MarkReadRequest {
                conversation_id: "p:5:6".into(),
                seq: 4,
            })),
        })
        .await;
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 3);
        assert!(matches!(reply.body, Some(Body::MarkRead(ref m)) if m.read_seq == 4 && m.conversation_id == "p:5:6"));

        conn.send_frame(ClientFrame {
            req_id: 4,
            body: Some(client_frame::Body::ListConversations(client::ListConversationsRequest {})),
        })
        .await;
        let reply = conn.recv_frame().await;
        let Some(Body::Conversations(list)) = reply.body else { panic!("expected conversations, got {reply:?}") };
        assert_eq!(list.conversations.len(), 1);
        assert_eq!(list.conversations[0].peer, 6);
        assert_eq!(list.conversations[0].unread, 2);
    }

    #[tokio::test]
    async fn requests_run_concurrently_and_reply_in_completion_order() {
        let kit = Kit::new();
        let release = kit.messaging.hold("slow");
        let mut conn = kit.connect(5, "phone");
        conn.send_frame(send_frame(1, 6, "slow", b"first")).await;
        conn.send_frame(send_frame(2, 6, "fast", b"second")).await;

        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 2, "the second request waited for the first");
        release.send(()).unwrap();
        let reply = conn.recv_frame().await;
        assert_eq!(reply.req_id, 1);
        assert!(matches!(reply.body, Some(Body::Ack(_))));
    }

    #[tokio::test]
    async fn a_full_in_flight_window_stops_reading() {
        let kit = Kit::with_limits(GatewayLimits { max_in_flight_per_connection: 1, ..GatewayLimits::default() });
        let release = kit.messaging.hold("slow");
        let mut conn = kit.connect(5, "phone");
        conn.send_frame(send_frame(1, 6, "slow", b"first")).await;
        conn.send_frame(ping_frame(2, 1)).await;
        // The ping is not read while the send holds the only slot.
        assert!(tokio::time::timeout(Duration::from_millis(100), conn.recv_frame()).await.is_err());
        release.send(()).unwrap();
        assert_eq!(conn.recv_frame().await.req_id, 1);
        assert_eq!(conn.recv_frame().await.req_id, 2);
    }

    #[tokio::test]
    async fn a_slow_reader_is_closed_and_counted() {
        let kit = Kit::with_limits(GatewayLimits { outbound_queue: 4, ..GatewayLimits::default() });
        let mut conn = kit.connect(5, "phone");
        conn.ping().await;
        // The client reads nothing while many pushes arrive.
        let batch: Vec<_> = (0..64).map(|_| message_event(6, 5, None)).collect();
        kit.gateway.hub().deliver(&batch);
        assert_eq!(kit.gateway.stats().snapshot().connections_dropped_slow, 1);

        let close = conn.until_close().await;
        assert_eq!(close.map(|c| c.code), Some(CloseReason::TooSlow.code()));
        conn.finished().await;
        assert!(!kit.gateway.hub().is_online(UserId(5)));
        assert_eq!(kit.registry.calls(), vec![("register", 5), ("unregister", 5)]);
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_when_its_socket_stalls() {
        let kit = Kit::with_limits(GatewayLimits {
            write_stall_timeout: Duration::from_millis(200),
            ..GatewayLimits::default()
        });
        let mut conn = kit.connect(5, "phone");
        conn.ping().await;
        // Requests keep coming; their replies are never read.
        for req_id in 1..=3 {
            conn.send_frame(ping_frame(req_id, 1)).await;
        }
        // The client end stays open (dropping it would end the connection
        // as gone): the gateway must close it by itself.
        let started = std::time::Instant::now();
        while kit.gateway.hub().is_online(UserId(5)) {
            assert!(started.elapsed() < Duration::from_secs(2), "still open after {:?}", started.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(kit.gateway.stats().snapshot().connections_stalled, 1);
        conn.finished().await;
    }

    #[tokio::test]
    async fn a_disabled_users_connections_close_with_4003_and_others_stay() {
        let kit = Kit::new();
        let (mut phone, mut tablet, mut other) =
            (kit.connect(5, "phone"), kit.connect(5, "tablet"), kit.connect(6, "phone"));
        for conn in [&mut phone, &mut tablet, &mut other] {
            conn.ping().await;
        }
        kit.statuses.publish(UserId(5), UserStatus::default().after(StatusChange::Disable)).await.unwrap();
        for conn in [&mut phone, &mut tablet] {
            assert_eq!(conn.until_close().await.map(|c| c.code), Some(CloseReason::Revoked.code()));
        }
        phone.finished().await;
        tablet.finished().await;
        assert!(!kit.gateway.hub().is_online(UserId(5)));
        other.ping().await;
        assert_eq!(kit.gateway.stats().snapshot().connections_revoked, 2);
    }

    #[tokio::test]
    async fn a_revocation_closes_the_connections_of_older_tokens_only() {
        let kit = Kit::new();
        let mut old = kit.connect_at(5, 0, "phone");
        let mut new = kit.connect_at(5, 1, "tablet");
        old.ping().await;
        new.ping().await;
        kit.statuses.publish(UserId(5), UserStatus::default().after(StatusChange::RevokeTokens)).await.unwrap();
        assert_eq!(old.until_close().await.map(|c| c.code), Some(CloseReason::Revoked.code()));
        new.ping().await;
        assert!(kit.gateway.hub().is_online(UserId(5)));
    }

    #[tokio::test]
    async fn a_connection_attached_after_its_user_was_stopped_is_closed_at_once() {
        // The handshake passed before the change; the listener ran before
        // the connection was in the hub.
        let kit = Kit::new();
        kit.statuses.publish(UserId(5), UserStatus::default().after(StatusChange::Disable)).await.unwrap();
        let mut late = kit.connect(5, "phone");
        assert_eq!(late.until_close().await.map(|c| c.code), Some(CloseReason::Revoked.code()));
        late.finished().await;
    }

    #[tokio::test]
    async fn requests_wait_for_room_for_their_replies_while_the_client_does_not_read() {
        let kit = Kit::with_limits(GatewayLimits {
            outbound_bytes: 4096,
            sync_reply_bytes: 4096,
            ..GatewayLimits::default()
        });
        let mut conn = kit.connect(5, "phone");
        conn.ping().await;
        for req_id in 1..=6 {
            conn.send_frame(ClientFrame {
                req_id,
                body: Some(client_frame::Body::Sync(client::SyncRequest {
                    conversation_id: "p:5:6".into(),
                    after_seq: 0,
                    limit: 0,
                })),
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One reply in the client's (one-frame) socket, one in the writer's
        // hands: room for the next only. The other requests have not run.
        let ran = kit.messaging.syncs();
        assert!(ran <= 3, "{ran} syncs ran with room for one reply at a time");
        let mut answered: Vec<u64> = Vec::new();
        for _ in 0..6 {
            answered.push(conn.recv_frame().await.req_id);
        }
        answered.sort_unstable();
        assert_eq!(answered, [1, 2, 3, 4, 5, 6], "every request answered once read");
        assert_eq!(kit.messaging.syncs(), 6);
    }

    #[tokio::test]
    async fn a_user_has_at_most_the_configured_connections_and_a_device_may_replace_its_own() {
        let kit = Kit::with_limits(GatewayLimits { connections_per_user: 2, ..GatewayLimits::default() });
        let mut phone = kit.connect(5, "phone");
        phone.ping().await;
        let mut laptop = kit.connect(5, "laptop");
        laptop.ping().await;
        let mut tablet = kit.connect(5, "tablet");
        let close = tablet.until_close().await.expect("a close frame");
        assert_eq!(close.code, CloseReason::TooManyConnections.code());
        tablet.finished().await;
        assert_eq!(kit.gateway.stats().snapshot().connections_refused_per_user, 1);
        // Another user is not affected, and the phone may reconnect.
        let mut other = kit.connect(6, "phone");
        other.ping().await;
        let mut phone_again = kit.connect(5, "phone");
        phone_again.ping().await;
        assert_eq!(phone.until_close().await.map(|c| c.code), Some(CloseReason::Replaced.code()));
    }

    #[tokio::test]
    async fn an_open_connection_is_pinged() {
        let kit =
            Kit::with_limits(GatewayLimits { ping_interval: Duration::from_millis(50), ..GatewayLimits::default() });
        let mut conn = kit.connect(5, "phone");
        conn.ping().await;
        assert!(matches!(conn.recv().await, Some(Message::Ping(_))));
    }

    #[tokio::test]
    async fn pushes_are_written_to_the_client() {
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");
        conn.ping().await;
        let report = kit.gateway.hub().deliver(&[message_event(6, 5, None), receipt_event(5, 6, None)]);
        assert_eq!(report.delivered, 2);
        assert!(matches!(conn.recv_frame().await.body, Some(Body::Push(ref m)) if m.from_user == 6));
        assert!(matches!(conn.recv_frame().await.body, Some(Body::Receipt(ref r)) if r.reader == 6));
    }

    #[tokio::test]
    async fn a_second_connection_of_the_same_device_replaces_the_first() {
        let kit = Kit::new();
        let mut old = kit.connect(5, "phone");
        old.ping().await;
        let mut new = kit.connect(5, "phone");
        new.ping().await;

        let close = old.until_close().await.expect("a close frame");
        assert_eq!(close.code, 4000);
        assert_eq!(close.reason.as_str(), "replaced by a newer connection");
        old.finished().await;
        assert_eq!(kit.gateway.hub().devices_of(UserId(5)), vec![DeviceId("phone".into())]);
        assert_eq!(kit.gateway.stats().snapshot().connections_replaced, 1);
        // The user never went offline.
        assert_eq!(kit.registry.calls(), vec![("register", 5)]);
        new.send_frame(ping_frame(9, 9)).await;
        assert_eq!(new.recv_frame().await.req_id, 9);
    }

    #[tokio::test]
    async fn registry_is_told_on_first_connection_and_last_disconnect() {
        let kit = Kit::new();
        let mut phone = kit.connect(5, "phone");
        phone.ping().await;
        assert_eq!(kit.registry.calls(), vec![("register", 5)]);
        let mut laptop = kit.connect(5, "laptop");
        laptop.ping().await;
        assert_eq!(kit.registry.calls(), vec![("register", 5)]);
        assert_eq!(kit.gateway.stats().connected(), 2);

        phone.hang_up().await;
        assert_eq!(kit.registry.calls(), vec![("register", 5)]);
        laptop.hang_up().await;
        assert_eq!(kit.registry.calls(), vec![("register", 5), ("unregister", 5)]);
        assert_eq!(kit.gateway.stats().connected(), 0);
        assert!(kit.registry.online().is_empty());
    }

    #[tokio::test]
    async fn a_registration_cut_short_is_redone_for_the_remaining_device() {
        let kit = Kit::new();
        let _stuck = kit.registry.hold_next_register();
        let mut phone = kit.connect(5, "phone");
        phone.ping().await;
        let mut laptop = kit.connect(5, "laptop");
        laptop.ping().await;
        // The phone leaves while its registration still hangs; the laptop
        // counted on it and did not register itself.
        phone.hang_up().await;
        assert_eq!(kit.registry.calls(), vec![("register", 5), ("register", 5)]);
        assert_eq!(kit.registry.online(), [5].into());
        laptop.hang_up().await;
        assert!(kit.registry.online().is_empty());
    }

    #[tokio::test]
    async fn close_all_sends_going_away() {
        let kit = Kit::new();
        let mut conn = kit.connect(5, "phone");
        conn.ping().await;
        kit.gateway.close_all();
        assert_eq!(conn.until_close().await.map(|c| c.code), Some(1001));
        conn.finished().await;
    }
}
