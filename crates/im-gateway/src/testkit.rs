//! Fakes and a channel-driven client for the tests of this crate.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use im_backends::memory::MemoryUserStatusBoard;
use im_core::group::{ChangeKind, Group, Member, MembershipChange, MembershipOp, Role, Roster};
use im_core::limits::{DEFAULT_MAX_MESSAGE_SIZE, check_body};
use im_core::message::{ConversationList, ConversationSummary, Page, ReadStatus};
use im_core::ports::{Addressee, BackendResult, Event, Groups, Messaging, PushEvent, Registry, SendCommand};
use im_core::{
    Ack, ClientMsgId, ConversationId, DeviceId, GatewayId, GroupId, ImError, MessageId, NewMessage, Seq, UserId,
};
use im_proto::client::{self, ClientFrame, ServerFrame, client_frame, server_frame};
use prost::Message as _;
use tokio::sync::oneshot;

use crate::unserved::Unserved;
use crate::{Gateway, GatewayLimits, Services};

pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(5);

type SendRecord = (UserId, DeviceId, SendCommand);

/// `Groups` that records each call as `(acting user, what)` and answers
/// with one fixed group, 7 "trip", owned by the creator.
#[derive(Default)]
pub struct FakeGroups {
    calls: Mutex<Vec<(UserId, String)>>,
}

impl FakeGroups {
    pub fn calls(&self) -> Vec<(UserId, String)> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, user: UserId, what: String) {
        self.calls.lock().unwrap().push((user, what));
    }

    fn roster(owner: UserId, members: &[UserId]) -> Roster {
        let member = |user, role| Member { user, role, joined_after: Seq::ZERO };
        Roster {
            group: Group { id: GroupId(7), name: "trip".into(), owner, history_visible: false, created_at_ms: 1 },
            version: 1,
            members: std::iter::once(member(owner, Role::Owner))
                .chain(members.iter().map(|&user| member(user, Role::Member)))
                .collect(),
        }
    }
}

#[async_trait]
impl Groups for FakeGroups {
    async fn create_group(&self, user: UserId, name: String, members: Vec<UserId>, _: bool) -> Result<Roster, ImError> {
        self.record(user, format!("create {name} {members:?}"));
        Ok(Self::roster(user, &members))
    }
    async fn change_membership(
        &self,
        user: UserId,
        group: GroupId,
        op: MembershipOp,
    ) -> Result<MembershipChange, ImError> {
        self.record(user, format!("change {} {op:?}", group.0));
        Ok(MembershipChange { group, version: 2, kind: ChangeKind::Left(vec![user]) })
    }
    async fn roster(&self, user: UserId, group: GroupId) -> Result<Roster, ImError> {
        self.record(user, format!("roster {}", group.0));
        Err(ImError::not_found("no such group"))
    }
    async fn groups_of(&self, user: UserId) -> Result<Vec<(Group, Member)>, ImError> {
        self.record(user, "groups".into());
        let roster = Self::roster(UserId(1), &[user]);
        Ok(vec![(roster.group, roster.members[1])])
    }
    async fn read_status(&self, user: UserId, group: GroupId, seq: Seq) -> Result<ReadStatus, ImError> {
        self.record(user, format!("read {} {}", group.0, seq.0));
        Ok(ReadStatus { read_count: 1, readers: vec![UserId(2)], detailed: true })
    }
}

/// A `Messaging` that answers from memory. `send` can be held until the test
/// releases it, to observe concurrency.
#[derive(Default)]
pub struct FakeMessaging {
    sends: Mutex<Vec<SendRecord>>,
    holds: Mutex<HashMap<String, oneshot::Receiver<()>>>,
    last_sync_limit: Mutex<Option<u32>>,
    syncs: AtomicU64,
    next: AtomicU64,
}

impl FakeMessaging {
    /// The send with this client_msg_id waits until the returned sender fires.
    pub fn hold(&self, client_msg_id: &str) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        self.holds.lock().unwrap().insert(client_msg_id.to_owned(), rx);
        tx
    }

    pub fn sends(&self) -> Vec<SendRecord> {
        self.sends.lock().unwrap().clone()
    }

    /// Syncs served so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub fn last_sync_limit(&self) -> Option<u32> {
        *self.last_sync_limit.lock().unwrap()
    }
}

#[async_trait]
impl Messaging for FakeMessaging {
    async fn send(&self, user: UserId, device: &DeviceId, cmd: SendCommand) -> Result<Ack, ImError> {
        check_body(cmd.body.len(), DEFAULT_MAX_MESSAGE_SIZE)?;
        let Addressee::User(to) = cmd.to else {
            return Err(ImError::invalid("the fake messaging sends private messages only"));
        };
        let conversation = ConversationId::private(user, to)?;
        let hold = self.holds.lock().unwrap().remove(&cmd.client_msg_id);
        self.sends.lock().unwrap().push((user, device.clone(), cmd));
        if let Some(hold) = hold {
            let _ = hold.await;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Ack { msg_id: MessageId(n), conversation, seq: Seq(n), server_time_ms: 1, body_masked: false })
    }

    async fn sync(&self, user: UserId, conversation: ConversationId, after: Seq, limit: u32) -> Result<Page, ImError> {
        *self.last_sync_limit.lock().unwrap() = Some(limit);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if !conversation.is_pair_member(user) {
            return Err(ImError::denied("not a member"));
        }
        let peer = conversation.peer_of(user).unwrap();
        Ok(Page { messages: vec![message(peer.0, user.0, after.0 + 1)], has_more: false, skipped: vec![] })
    }

    async fn conversations(&self, user: UserId) -> Result<ConversationList, ImError> {
        let summaries = vec![ConversationSummary {
            conversation: ConversationId::private(user, UserId(user.0 + 1))?,
            max_seq: Seq(3),
            read_seq: Seq(1),
            unread: 2,
            peer_read_seq: Seq(3),
        }];
        Ok(ConversationList { summaries, groups_unchecked: false })
    }

    async fn mark_read(
        &self,
        _user: UserId,
        _device: &DeviceId,
        _conversation: ConversationId,
        seq: Seq,
    ) -> Result<Seq, ImError> {
        Ok(seq)
    }
}

/// A `Registry` that records its calls.
#[derive(Default)]
pub struct FakeRegistry {
    calls: Mutex<Vec<(&'static str, u64)>>,
    online: Mutex<BTreeSet<u64>>,
    hold: Mutex<Option<oneshot::Receiver<()>>>,
}

impl FakeRegistry {
    /// The next `register` hangs (recorded, not applied) until the returned
    /// sender fires or is dropped.
    pub fn hold_next_register(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        *self.hold.lock().unwrap() = Some(rx);
        tx
    }

    pub fn calls(&self) -> Vec<(&'static str, u64)> {
        self.calls.lock().unwrap().clone()
    }

    pub fn online(&self) -> BTreeSet<u64> {
        self.online.lock().unwrap().clone()
    }
}

#[async_trait]
impl Registry for FakeRegistry {
    async fn register(&self, user: UserId, _gateway: &GatewayId) -> BackendResult<()> {
        self.calls.lock().unwrap().push(("register", user.0));
        let hold = self.hold.lock().unwrap().take();
        if let Some(hold) = hold {
            let _ = hold.await;
        }
        self.online.lock().unwrap().insert(user.0);
        Ok(())
    }

    async fn unregister(&self, user: UserId, _gateway: &GatewayId) -> BackendResult<()> {
        self.calls.lock().unwrap().push(("unregister", user.0));
        self.online.lock().unwrap().remove(&user.0);
        Ok(())
    }

    fn gateways_of(&self, user: UserId) -> Vec<GatewayId> {
        if self.online.lock().unwrap().contains(&user.0) { vec![GatewayId("gw-test".into())] } else { vec![] }
    }
}

pub fn message(from: u64, to: u64, seq: u64) -> NewMessage {
    NewMessage {
        msg_id: MessageId(100 + seq),
        conversation: ConversationId::private(UserId(from), UserId(to)).unwrap(),
        seq: Seq(seq),
        sender: UserId(from),
        client_msg_id: ClientMsgId::parse("c-1").unwrap(),
        body: Bytes::from_static(b"hi"),
        content_type: "text/plain".into(),
        server_time_ms: 1,
        sealed_with: None,
    }
}

/// A message from `from` pushed to `to` (seq 7).
pub fn message_event(from: u64, to: u64, skip: Option<&str>) -> PushEvent {
    PushEvent {
        user: UserId(to),
        skip_device: skip.map(|d| DeviceId(d.into())),
        event: Event::Message(Arc::new(message(from, to, 7))),
    }
}

/// `reader` read up to seq 5 in its conversation with `user`; pushed to `user`.
pub fn receipt_event(user: u64, reader: u64, skip: Option<&str>) -> PushEvent {
    PushEvent {
        user: UserId(user),
        skip_device: skip.map(|d| DeviceId(d.into())),
        event: Event::Receipt {
            conversation: ConversationId::private(UserId(user), UserId(reader)).unwrap(),
            reader: UserId(reader),
            read_seq: Seq(5),
        },
    }
}

pub fn send_frame(req_id: u64, to: u64, client_msg_id: &str, body: &[u8]) -> ClientFrame {
    ClientFrame {
        req_id,
        body: Some(client_frame::Body::Send(client::SendRequest {
            to_user: to,
            to_group: 0,
            client_msg_id: client_msg_id.into(),
            body: Bytes::copy_from_slice(body),
            content_type: "text/plain".into(),
        })),
    }
}

pub fn ping_frame(req_id: u64, nonce: u64) -> ClientFrame {
    ClientFrame { req_id, body: Some(client_frame::Body::Ping(client::Ping { nonce })) }
}

#[track_caller]
pub fn assert_error(frame: &ServerFrame, code: client::ErrorCode) {
    match &frame.body {
        Some(server_frame::Body::Error(e)) => {
            assert_eq!(e.code, code as i32, "{e:?}");
            assert!(!e.message.is_empty());
        }
        other => panic!("expected an error {code:?}, got {other:?}"),
    }
}

/// A gateway over fakes.
pub struct Kit {
    pub gateway: Arc<Gateway>,
    pub messaging: Arc<FakeMessaging>,
    pub registry: Arc<FakeRegistry>,
    pub tokens: im_auth::Tokens,
    /// Users' statuses as the gateway sees them: publish to stop a user.
    pub statuses: Arc<MemoryUserStatusBoard>,
    pub groups: Arc<FakeGroups>,
}

impl Kit {
    pub fn new() -> Self {
        Self::with_limits(GatewayLimits::default())
    }

    pub fn with_limits(limits: GatewayLimits) -> Self {
        let messaging = Arc::new(FakeMessaging::default());
        let registry = Arc::new(FakeRegistry::default());
        let statuses = Arc::new(MemoryUserStatusBoard::default());
        let tokens = im_auth::Tokens::new(SECRET).unwrap().with_statuses(statuses.clone());
        let groups = Arc::new(FakeGroups::default());
        let services = Services {
            messaging: messaging.clone(),
            users: Arc::new(Unserved("no user directory in these tests")),
            groups: groups.clone(),
        };
        let gateway = Gateway::new(GatewayId("gw-test".into()), services, registry.clone(), tokens.clone(), limits);
        Self { gateway, messaging, registry, tokens, statuses, groups }
    }

    /// A connection served over channels, as if already authenticated.
    pub fn connect(&self, user: u64, device: &str) -> TestConn {
        self.connect_at(user, 0, device)
    }

    /// A connection opened with a token of `token_generation`.
    pub fn connect_at(&self, user: u64, token_generation: u64, device: &str) -> TestConn {
        let (to_server, from_client) = futures::channel::mpsc::channel(16);
        // Capacity 1: a client that stops reading blocks the writer at once.
        let (to_client, from_server) = futures::channel::mpsc::channel(0);
        let gateway = self.gateway.clone();
        let device = DeviceId(device.into());
        let owner = crate::connection::Owner { user: UserId(user), token_generation };
        let task = tokio::spawn(async move { gateway.serve(owner, device, to_client, from_client).await });
        TestConn { tx: to_server, rx: from_server, task }
    }
}

/// The client end of a channel connection.
pub struct TestConn {
    tx: futures::channel::mpsc::Sender<Result<Message, Infallible>>,
    rx: futures::channel::mpsc::Receiver<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl TestConn {
    pub async fn send(&mut self, message: Message) {
        self.tx.send(Ok(message)).await.unwrap();
    }

    pub async fn send_frame(&mut self, frame: ClientFrame) {
        self.send(Message::Binary(frame.encode_to_vec().into())).await;
    }

    /// The next data frame (pings skipped).
    pub async fn recv_frame(&mut self) -> ServerFrame {
        loop {
            match self.recv().await {
                Some(Message::Binary(data)) => return ServerFrame::decode(data).unwrap(),
                Some(Message::Ping(_)) => continue,
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// The next message of any kind.
    pub async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.rx.next()).await.expect("no frame in time")
    }

    /// A round trip: once it returns, the connection is in the hub.
    pub async fn ping(&mut self) {
        self.send_frame(ping_frame(u64::MAX, 1)).await;
        assert_eq!(self.recv_frame().await.req_id, u64::MAX);
    }

    /// Skips frames up to the close frame; None if the stream ends without one.
    pub async fn until_close(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.rx.next()).await.expect("no close in time") {
                Some(Message::Close(frame)) => return frame,
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Waits until the gateway is done with the connection.
    pub async fn finished(self) {
        let Self { tx, rx, task } = self;
        drop((tx, rx));
        tokio::time::timeout(WAIT, task).await.expect("connection did not end").unwrap();
    }

    /// The client goes away.
    pub async fn hang_up(self) {
        self.finished().await;
    }
}
