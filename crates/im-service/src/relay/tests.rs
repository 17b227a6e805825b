//! The relay stream end to end over loopback: the node's `RelayGrpc` on a
//! tonic server, the gateway's `RelayClient` on a channel to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use im_auth::{Scope, Tokens};
use im_backends::memory::MemoryUserStatusBoard;
use im_core::message::{ConversationList, Page};
use im_core::ports::{Addressee, Messaging, SendCommand};
use im_core::{
    Ack, ConversationId, DeviceId, ErrorCode, ErrorReason, ImError, MessageId, Seq, StatusChange, UserId, UserStatus,
};
use im_proto::client::SendRequest;
use im_proto::message as pb;
use im_proto::message::relay_service_client::RelayServiceClient;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{MAX_SENDS_PER_BATCH, RelayGrpc};
use crate::remote::{RelayClient, ServiceCredential, lazy_channel};
use crate::tls::CallTls;

const SECRET: &[u8] = b"relay-test-secret-0123456789abcd";
const DEADLINE: Duration = Duration::from_secs(5);
const DISABLED: UserId = UserId(66);

/// Acks every send with a msg_id of its `client_msg_id` (a number) and
/// records who sent it; a send whose id starts with "hold" waits for
/// `release`, one whose id is "refuse" is refused with a reason.
#[derive(Default)]
struct Recorder {
    sent: Mutex<HashMap<u64, (UserId, DeviceId)>>,
    release: Notify,
}

#[async_trait]
impl Messaging for Recorder {
    async fn send(&self, user: UserId, device: &DeviceId, cmd: SendCommand) -> Result<Ack, ImError> {
        if cmd.client_msg_id.starts_with("hold") {
            self.release.notified().await;
        }
        if cmd.client_msg_id == "refuse" {
            return Err(
                ImError::new(ErrorCode::FailedPrecondition, "not this one").with_reason(ErrorReason::ContentBlocked)
            );
        }
        let Addressee::User(to) = cmd.to else { return Err(ImError::invalid("private only")) };
        let n: u64 = cmd.client_msg_id.trim_start_matches("hold").parse().unwrap_or(0);
        self.sent.lock().insert(n, (user, device.clone()));
        let conversation = ConversationId::private(user, to)?;
        Ok(Ack { msg_id: MessageId(n), conversation, seq: Seq(n), server_time_ms: 7, body_masked: false })
    }

    async fn sync(&self, _: UserId, _: ConversationId, _: Seq, _: u32) -> Result<Page, ImError> {
        Err(ImError::internal("not relayed"))
    }

    async fn conversations(&self, _: UserId) -> Result<ConversationList, ImError> {
        Err(ImError::internal("not relayed"))
    }

    async fn mark_read(&self, _: UserId, _: &DeviceId, _: ConversationId, _: Seq) -> Result<Seq, ImError> {
        Err(ImError::internal("not relayed"))
    }
}

fn tokens() -> Tokens {
    let disabled = UserStatus::default().after(StatusChange::Disable);
    Tokens::new(SECRET).unwrap().with_statuses(Arc::new(MemoryUserStatusBoard::new([(DISABLED, disabled)])))
}

/// A node serving the relay on `listener` until `stop`; ends when its
/// graceful shutdown has finished (every stream ended).
fn serve(listener: TcpListener, messaging: Arc<Recorder>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RelayGrpc::server(messaging, tokens(), stop.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned())
            .await
            .unwrap();
    })
}

async fn node(messaging: Arc<Recorder>) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = serve(listener, messaging, stop.clone());
    (addr, stop, served)
}

fn channel(addr: SocketAddr) -> Channel {
    lazy_channel(&addr.to_string(), DEADLINE, &CallTls::none()).unwrap()
}

fn gateway(addr: SocketAddr) -> RelayClient {
    RelayClient::start(channel(addr), ServiceCredential::new(tokens(), Scope::Relay), DEADLINE)
}

fn to_bob(client_msg_id: &str) -> SendCommand {
    SendCommand {
        to: Addressee::User(UserId(2)),
        client_msg_id: client_msg_id.to_owned(),
        body: bytes::Bytes::from_static(b"hi"),
        content_type: String::new(),
    }
}

#[tokio::test]
async fn concurrent_sends_are_answered_each_with_its_own_ack_as_the_user_the_gateway_names() {
    let recorder = Arc::new(Recorder::default());
    let (addr, _stop, _served) = node(recorder.clone()).await;
    let relay = Arc::new(gateway(addr));
    let sends = (1..=2_000u64).map(|n| {
        let relay = relay.clone();
        tokio::spawn(async move {
            let (user, device) = (UserId(1_000 + n % 7), DeviceId(format!("d{}", n % 3)));
            (n, user, device.clone(), relay.send(user, &device, to_bob(&n.to_string())).await)
        })
    });
    for send in futures::future::join_all(sends).await {
        let (n, user, device, ack) = send.unwrap();
        let ack = ack.unwrap_or_else(|e| panic!("send {n}: {e}"));
        assert_eq!((ack.msg_id, ack.seq), (MessageId(n), Seq(n)), "send {n} got another send's ack");
        assert_eq!(ack.conversation, ConversationId::private(user, UserId(2)).unwrap());
        assert_eq!(recorder.sent.lock().get(&n), Some(&(user, device)), "send {n} acted as its own user and device");
    }
    assert_eq!(recorder.sent.lock().len(), 2_000);
}

#[tokio::test]
async fn a_refusal_comes_back_whole_and_a_disabled_or_unnamed_sender_is_refused_at_the_node() {
    let recorder = Arc::new(Recorder::default());
    let (addr, _stop, _served) = node(recorder.clone()).await;
    let relay = gateway(addr);
    let phone = DeviceId("phone".into());
    let refused = relay.send(UserId(1), &phone, to_bob("refuse")).await.unwrap_err();
    assert_eq!((refused.code, refused.reason), (ErrorCode::FailedPrecondition, Some(ErrorReason::ContentBlocked)));
    assert_eq!(refused.message, "not this one");

    let disabled = relay.send(DISABLED, &phone, to_bob("1")).await.unwrap_err();
    assert_eq!((disabled.code, disabled.reason), (ErrorCode::PermissionDenied, Some(ErrorReason::UserDisabled)));
    for (user, device) in [(UserId(0), "phone".to_owned()), (UserId(1), String::new()), (UserId(1), "x".repeat(65))] {
        let invalid = relay.send(user, &DeviceId(device.clone()), to_bob("2")).await.unwrap_err();
        assert_eq!(invalid.code, ErrorCode::InvalidArgument, "user {user:?}, device {device:?}");
    }
    assert!(recorder.sent.lock().is_empty(), "nothing refused reached the pipeline");
}

/// Opens the stream with `authorization` and sends one batch of `sends`;
/// the first answer batch or the status.
async fn open_raw(
    addr: SocketAddr,
    authorization: Option<String>,
    sends: usize,
) -> Result<pb::RelayAnswers, tonic::Status> {
    let batch = pb::RelayBatch {
        sends: (1..=sends as u64)
            .map(|id| pb::RelaySend {
                id,
                user: 1,
                device: "phone".into(),
                request: Some(SendRequest { to_user: 2, client_msg_id: id.to_string(), ..Default::default() }),
                traceparent: String::new(),
            })
            .collect(),
    };
    let mut request = tonic::Request::new(futures::stream::iter([batch]).chain(futures::stream::pending()));
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    let mut answers = RelayServiceClient::new(channel(addr)).relay(request).await?.into_inner();
    answers.message().await?.ok_or_else(|| tonic::Status::internal("the stream ended"))
}

#[tokio::test]
async fn only_a_relay_credential_opens_the_stream_and_a_batch_has_a_bound() {
    let (addr, _stop, _served) = node(Arc::new(Recorder::default())).await;
    let ttl = Duration::from_secs(60);
    let tokens = tokens();
    let missing = open_raw(addr, None, 1).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    for wrong in [
        tokens.issue_user(UserId(1), "alice", ttl),
        tokens.issue_admin(ttl),
        tokens.issue_service(Scope::Push, ttl),
        tokens.issue_service(Scope::Users, ttl),
    ] {
        let refused = open_raw(addr, Some(format!("Bearer {wrong}")), 1).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{}", refused.message());
    }
    let relay = Some(format!("Bearer {}", tokens.issue_service(Scope::Relay, ttl)));
    let answers = open_raw(addr, relay.clone(), 3).await.unwrap();
    let mut ids: Vec<u64> = answers.answers.iter().map(|a| a.id).collect();
    ids.sort_unstable();
    assert!(!ids.is_empty() && ids.iter().all(|id| (1..=3).contains(id)), "{ids:?}");

    let oversized = open_raw(addr, relay, MAX_SENDS_PER_BATCH + 1).await.unwrap_err();
    assert_eq!(oversized.code(), tonic::Code::InvalidArgument);
    assert!(oversized.message().contains("at most 1024"), "{}", oversized.message());
}

/// A node on a runtime of its own, so that the test can end it the way
/// `kill -9` ends a process: every task gone at once, connections included,
/// nothing answered and no stream ended in good order.
fn node_to_kill(addr: SocketAddr, messaging: Arc<Recorder>) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        let listener = TcpListener::from_std(listener).unwrap();
        serve(listener, messaging, CancellationToken::new()).await.unwrap();
    });
    (addr, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_fails_the_sends_on_it_at_once_and_the_stream_reopens_when_it_is_back() {
    let recorder = Arc::new(Recorder::default());
    let (addr, runtime) = node_to_kill("127.0.0.1:0".parse().unwrap(), recorder.clone());
    let relay = Arc::new(gateway(addr));
    let phone = DeviceId("phone".into());
    relay.send(UserId(1), &phone, to_bob("1")).await.unwrap();

    // A send the node holds, then the node dies.
    let held = {
        let (relay, phone) = (relay.clone(), phone.clone());
        tokio::spawn(async move { relay.send(UserId(1), &phone, to_bob("hold2")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    runtime.shutdown_background();
    let started = Instant::now();
    let lost = held.await.unwrap().unwrap_err();
    assert_eq!(lost.code, ErrorCode::Unavailable, "{lost}");
    assert!(lost.message.contains("same client_msg_id"), "{}", lost.message);
    assert!(started.elapsed() < Duration::from_secs(2), "failed when the stream broke, not at the deadline");

    // While it is down, a send is refused at once.
    let started = Instant::now();
    let refused = relay.send(UserId(1), &phone, to_bob("3")).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2), "refused in {:?}", started.elapsed());

    // Back on the same port: sends go through within the longest pause.
    let (_, revived) = node_to_kill(addr, recorder.clone());
    let back = Instant::now();
    loop {
        match relay.send(UserId(1), &phone, to_bob("4")).await {
            Ok(ack) => {
                assert_eq!(ack.msg_id, MessageId(4));
                break;
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
                assert!(back.elapsed() < Duration::from_secs(5), "still refused after {:?}: {e}", back.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Dropping a runtime inside another blocks; shut it down instead.
    revived.shutdown_background();
}

#[tokio::test]
async fn at_shutdown_a_stream_answers_what_it_took_and_ends() {
    let recorder = Arc::new(Recorder::default());
    let (addr, stop, served) = node(recorder.clone()).await;
    let relay = Arc::new(gateway(addr));
    let held = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.send(UserId(1), &DeviceId("phone".into()), to_bob("hold5")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!served.is_finished(), "the stream waits for the send it took");
    recorder.release.notify_one();
    assert_eq!(held.await.unwrap().unwrap().msg_id, MessageId(5), "answered, not dropped");
    tokio::time::timeout(Duration::from_secs(5), served).await.expect("the server finished its shutdown").unwrap();
}
