//! The gateway's share of the per-message CPU budget, as a program:
//! `cargo bench -p im-gateway --bench gateway`.
//!
//! - request path: send frames through `Gateway::serve` over in-memory
//!   channels (decode, dispatch to an instant `Messaging`, encode the ack,
//!   write), pipelined like a busy client, on one thread;
//! - push path: `Hub::deliver` of message events to users with two devices.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::extract::ws::Message;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use im_core::message::{ConversationList, Page};
use im_core::ports::{Addressee, BackendResult, Event, Messaging, PushEvent, Registry, SendCommand};
use im_core::{Ack, ClientMsgId, ConversationId, DeviceId, GatewayId, ImError, MessageId, NewMessage, Seq, UserId};
use im_gateway::unserved::Unserved;
use im_gateway::{Gateway, GatewayLimits, Services};
use im_proto::client::{self, ClientFrame, client_frame};
use prost::Message as _;

/// The bench serves sends only.
const NOTHING: Unserved = Unserved("the bench serves no users or groups");

struct Instant0;

#[async_trait]
impl Messaging for Instant0 {
    async fn send(&self, user: UserId, _device: &DeviceId, cmd: SendCommand) -> Result<Ack, ImError> {
        Ok(Ack {
            msg_id: MessageId(1),
            conversation: match cmd.to {
                Addressee::User(to) => ConversationId::private(user, to)?,
                Addressee::Group(group) => ConversationId::Group(group),
            },
            seq: Seq(1),
            server_time_ms: 1,
            body_masked: false,
        })
    }
    async fn sync(&self, _: UserId, _: ConversationId, _: Seq, _: u32) -> Result<Page, ImError> {
        Ok(Page { messages: vec![], has_more: false, skipped: vec![] })
    }
    async fn conversations(&self, _: UserId) -> Result<ConversationList, ImError> {
        Ok(ConversationList::default())
    }
    async fn mark_read(&self, _: UserId, _: &DeviceId, _: ConversationId, seq: Seq) -> Result<Seq, ImError> {
        Ok(seq)
    }
}

struct NoRegistry;

#[async_trait]
impl Registry for NoRegistry {
    async fn register(&self, _: UserId, _: &GatewayId) -> BackendResult<()> {
        Ok(())
    }
    async fn unregister(&self, _: UserId, _: &GatewayId) -> BackendResult<()> {
        Ok(())
    }
    fn gateways_of(&self, _: UserId) -> Vec<GatewayId> {
        vec![]
    }
}

fn gateway() -> Arc<Gateway> {
    let tokens = im_auth::Tokens::new(&[7u8; 32]).unwrap();
    let services = Services { messaging: Arc::new(Instant0), users: Arc::new(NOTHING), groups: Arc::new(NOTHING) };
    Gateway::new(GatewayId("bench".into()), services, Arc::new(NoRegistry), tokens, GatewayLimits::default())
}

async fn request_path(n: u64) -> f64 {
    let gateway = gateway();
    let (mut to_server, from_client) = futures::channel::mpsc::channel::<Result<Message, Infallible>>(1024);
    let (to_client, mut from_server) = futures::channel::mpsc::channel::<Message>(1024);
    let server = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.serve(UserId(1), DeviceId("d".into()), to_client, from_client).await }
    });
    let frames: Vec<Bytes> = (0..n)
        .map(|i| {
            let frame = ClientFrame {
                req_id: i + 1,
                body: Some(client_frame::Body::Send(client::SendRequest {
                    to_user: 2,
                    to_group: 0,
                    client_msg_id: format!("c-{i}"),
                    body: Bytes::from_static(&[b'x'; 200]),
                    content_type: "text/plain".into(),
                })),
            };
            frame.encode_to_vec().into()
        })
        .collect();
    let start = Instant::now();
    let client = tokio::spawn(async move {
        for frame in frames {
            to_server.feed(Ok(Message::Binary(frame))).await.unwrap();
        }
        to_server.flush().await.unwrap();
        to_server
    });
    let mut replies = 0;
    while replies < n {
        match from_server.next().await {
            Some(Message::Binary(_)) => replies += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = start.elapsed();
    drop(client.await.unwrap());
    drop(from_server);
    server.await.unwrap();
    elapsed.as_nanos() as f64 / n as f64
}

fn push_path(users: u64, rounds: u64) -> f64 {
    let gateway = gateway();
    let hub = gateway.hub();
    let mut queues = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Two devices per user, attached through real connections.
    let _guard = runtime.enter();
    let mut clients = Vec::new();
    for user in 1..=users {
        for device in ["phone", "laptop"] {
            let (to_server, from_client) = futures::channel::mpsc::channel::<Result<Message, Infallible>>(1);
            let (to_client, from_server) = futures::channel::mpsc::channel::<Message>(4096);
            let gateway = gateway.clone();
            runtime.spawn(
                async move { gateway.serve(UserId(user), DeviceId(device.into()), to_client, from_client).await },
            );
            clients.push(to_server);
            queues.push(from_server);
        }
    }
    runtime.block_on(async {
        while hub.stats().connected() < users * 2 {
            tokio::task::yield_now().await;
        }
    });
    let message = |to: u64| {
        Event::Message(Arc::new(NewMessage {
            msg_id: MessageId(1),
            conversation: ConversationId::private(UserId(to), UserId(to + 1_000_000)).unwrap(),
            seq: Seq(1),
            sender: UserId(to + 1_000_000),
            client_msg_id: ClientMsgId::parse("c").unwrap(),
            body: Bytes::from_static(&[b'x'; 200]),
            content_type: "text/plain".into(),
            server_time_ms: 1,
            sealed_with: None,
        }))
    };
    let batch: Vec<PushEvent> =
        (1..=users).map(|u| PushEvent { user: UserId(u), skip_device: None, event: message(u) }).collect();
    let start = Instant::now();
    for _ in 0..rounds {
        let report = hub.deliver(&batch);
        assert!(report.offline.is_empty());
        // Let the writers drain the queues, as they would between batches.
        runtime.block_on(async {
            for q in queues.iter_mut() {
                q.next().await.unwrap();
            }
        });
    }
    let elapsed = start.elapsed();
    assert_eq!(hub.stats().snapshot().connections_dropped_slow, 0);
    elapsed.as_nanos() as f64 / (users * rounds) as f64
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let n = 200_000;
    let ns = runtime.block_on(request_path(n));
    println!("request path (send -> ack, 200-byte body, pipelined, 1 thread): {ns:.0} ns/request over {n}");
    let ns = push_path(1000, 200);
    println!("push path (1 event -> 2 devices, incl. writing both frames, 1 thread): {ns:.0} ns/event");
}
