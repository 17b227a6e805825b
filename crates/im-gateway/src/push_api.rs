//! `im.gateway.v1.PushService`: the push API over gRPC, for when the gateway
//! runs as its own process. It delivers through the same [`Hub::deliver`] and
//! [`Hub::fan_out_local`] as an in-process push. Only a service credential
//! of scope [`Scope::Push`] may push: anyone else could put words in a user's
//! mouth. That includes an admin credential: an operator manages users, and
//! has no business delivering messages "from" one of them.

use std::sync::Arc;

use im_auth::{Scope, Tokens};
use im_core::ImError;
use im_core::ports::{FanOut, PushEvent};
use im_proto::gateway::push_service_server::{PushService, PushServiceServer};
use im_proto::gateway::{self, FanOutBatch, FanOutReport, PushBatch, PushReport};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::Hub;

/// Most events one `FanOut` call may carry: the work of one call stays
/// bounded, whatever the caller's batch. Callers split larger batches.
pub const MAX_FAN_OUT_EVENTS: usize = 1024;
/// Most users one fan-out event may name: a whole group at the default
/// `group.max_members`. Callers split the users of larger groups over several
/// events.
pub const MAX_FAN_OUT_USERS: usize = 10_000;
/// The encoded size callers keep one `FanOut` call under (unless a single
/// event is larger): the server decodes requests of up to 4 MiB (tonic's
/// default), and a refused call would reach nobody.
pub const MAX_FAN_OUT_BYTES: usize = 3 * 1024 * 1024;

/// `batch` as `FanOut` calls within this API's limits, for its callers: at most
/// [`MAX_FAN_OUT_USERS`] users per event (a larger group's users are split
/// over several events), at most [`MAX_FAN_OUT_EVENTS`] events and about
/// [`MAX_FAN_OUT_BYTES`] per call.
pub fn fan_out_calls(batch: &[FanOut]) -> Vec<FanOutBatch> {
    let events = batch.iter().flat_map(|fan_out| {
        fan_out.users.chunks(MAX_FAN_OUT_USERS).map(move |users| {
            if users.len() == fan_out.users.len() {
                gateway::FanOutEvent::from(fan_out)
            } else {
                gateway::FanOutEvent::from(&FanOut { users: users.to_vec(), ..fan_out.clone() })
            }
        })
    });
    let mut calls = Vec::new();
    let (mut current, mut bytes) = (FanOutBatch::default(), 0);
    for event in events {
        let size = event.encoded_len();
        let full = current.events.len() == MAX_FAN_OUT_EVENTS || bytes + size > MAX_FAN_OUT_BYTES;
        if full && !current.events.is_empty() {
            calls.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.events.push(event);
        bytes += size;
    }
    if !current.events.is_empty() {
        calls.push(current);
    }
    calls
}

/// The gRPC push service of one gateway.
pub struct PushApi {
    hub: Arc<Hub>,
    tokens: Tokens,
}

impl PushApi {
    pub fn new(hub: Arc<Hub>, tokens: Tokens) -> Self {
        Self { hub, tokens }
    }

    fn require_service<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <service token>` metadata"))?;
        let identity = self.tokens.verify_bearer(header).map_err(im_proto::convert::status)?;
        identity.require_service(Scope::Push).map_err(im_proto::convert::status)
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> PushServiceServer<Self> {
        PushServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl PushService for PushApi {
    async fn push(&self, request: Request<PushBatch>) -> Result<Response<PushReport>, Status> {
        self.require_service(&request)?;
        // All or nothing: a malformed event refuses the batch (G8), naming it.
        let batch = request
            .into_inner()
            .events
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                PushEvent::try_from(event)
                    .map_err(|e| ImError::new(e.code, format!("push event {index}: {}", e.message)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(im_proto::convert::status)?;
        let report = self.hub.deliver(&batch);
        Ok(Response::new(PushReport { delivered: report.delivered, offline: report.offline }))
    }

    async fn fan_out(&self, request: Request<FanOutBatch>) -> Result<Response<FanOutReport>, Status> {
        self.require_service(&request)?;
        let events = request.into_inner().events;
        if events.len() > MAX_FAN_OUT_EVENTS {
            return Err(im_proto::convert::status(ImError::exhausted(format!(
                "{} fan-out events in one call; at most {MAX_FAN_OUT_EVENTS}",
                events.len()
            ))));
        }
        // All or nothing, as for a push: one bad event refuses the batch.
        let batch = events
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                if event.users.len() > MAX_FAN_OUT_USERS {
                    return Err(ImError::exhausted(format!(
                        "fan-out event {index}: {} users; at most {MAX_FAN_OUT_USERS}",
                        event.users.len()
                    )));
                }
                FanOut::try_from(event)
                    .map_err(|e| ImError::new(e.code, format!("fan-out event {index}: {}", e.message)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(im_proto::convert::status)?;
        Ok(Response::new(FanOutReport { delivered: self.hub.fan_out_local(&batch) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::outbound;
    use crate::testkit::message_event;
    use bytes::Bytes;
    use im_core::ports::Event;
    use im_core::{ClientMsgId, ConversationId, DeviceId, GatewayId, GroupId, MessageId, NewMessage, Seq, UserId};
    use std::time::Duration;

    const SECRET: &[u8] = b"push-api-test-secret-push-api-te";

    fn api(hub: Arc<Hub>) -> PushApi {
        PushApi::new(hub, Tokens::new(SECRET).unwrap())
    }

    fn with_token<T>(message: T, token: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    /// `batch` as a node sends it: with a service credential of scope `push`.
    fn from_service<T>(batch: T) -> Request<T> {
        with_token(batch, &Tokens::new(SECRET).unwrap().issue_service(Scope::Push, Duration::from_secs(60)))
    }

    /// Every credential but a `push` service credential: an admin's, a
    /// user's, and services of the other scopes.
    fn not_push() -> Vec<String> {
        let tokens = Tokens::new(SECRET).unwrap();
        let ttl = Duration::from_secs(60);
        let mut refused = vec![tokens.issue_admin(ttl), tokens.issue_user(UserId(1), "mallory", ttl)];
        refused.extend(Scope::ALL.into_iter().filter(|s| *s != Scope::Push).map(|s| tokens.issue_service(s, ttl)));
        refused
    }

    #[tokio::test]
    async fn a_batch_is_delivered_and_offline_users_reported() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = outbound(4, usize::MAX);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default(), 1).unwrap();
        let api = api(hub);

        let events = [message_event(1, 2, None), message_event(1, 3, None)];
        let batch = PushBatch { events: events.iter().map(gateway::PushEvent::from).collect() };
        let report = api.push(from_service(batch)).await.unwrap().into_inner();
        assert_eq!(report, PushReport { delivered: 1, offline: vec![1] });
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_malformed_event_refuses_the_whole_batch() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = outbound(4, usize::MAX);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default(), 1).unwrap();
        let api = api(hub);

        let good = gateway::PushEvent::from(&message_event(1, 2, None));
        let bad = gateway::PushEvent { user: 2, skip_device: String::new(), event: None };
        let status = api.push(from_service(PushBatch { events: vec![good, bad] })).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("push event 1:"), "{}", status.message());
        assert!(rx.try_recv().is_err(), "nothing of a refused batch is delivered");
    }

    #[tokio::test]
    async fn only_a_push_service_credential_may_push() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = outbound(4, usize::MAX);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default(), 1).unwrap();
        let api = api(hub);
        let batch = || PushBatch { events: vec![gateway::PushEvent::from(&message_event(1, 2, None))] };

        let status = api.push(Request::new(batch())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        // An admin credential included: an operator may not forge messages.
        for token in not_push() {
            let status = api.push(with_token(batch(), &token)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            assert!(status.message().contains("scope `push`"), "{}", status.message());
        }
        assert!(rx.try_recv().is_err(), "nothing is delivered without a push service credential");

        api.push(from_service(batch())).await.unwrap();
        assert!(rx.try_recv().is_ok());
    }

    fn fan_out_batch(users: &[u64]) -> FanOutBatch {
        let event = message_event(1, 2, None).event;
        let users = users.iter().copied().map(UserId).collect();
        FanOutBatch { events: vec![gateway::FanOutEvent::from(&FanOut { event, users, skip: None })] }
    }

    #[tokio::test]
    async fn a_fan_out_reaches_the_online_users() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = outbound(4, usize::MAX);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default(), 1).unwrap();
        let api = api(hub);

        let report = api.fan_out(from_service(fan_out_batch(&[2, 3]))).await.unwrap().into_inner();
        assert_eq!(report, FanOutReport { delivered: 1 });
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn only_a_push_service_credential_may_fan_out() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = outbound(4, usize::MAX);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default(), 1).unwrap();
        let api = api(hub);

        let status = api.fan_out(Request::new(fan_out_batch(&[2]))).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        for token in not_push() {
            let status = api.fan_out(with_token(fan_out_batch(&[2]), &token)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
        }

        let other_secret = Tokens::new(b"another-secret-another-secret-an").unwrap();
        let forged_token = other_secret.issue_service(Scope::Push, Duration::from_secs(60));
        let forged = with_token(fan_out_batch(&[2]), &forged_token);
        assert_eq!(api.fan_out(forged).await.unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(rx.try_recv().is_err(), "nothing is delivered without a push service credential");
    }

    #[tokio::test]
    async fn oversize_and_malformed_fan_outs_are_refused_whole() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = outbound(4, usize::MAX);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default(), 1).unwrap();
        let api = api(hub);

        let too_many_users: Vec<u64> = (1..=MAX_FAN_OUT_USERS as u64 + 1).collect();
        let status = api.fan_out(from_service(fan_out_batch(&too_many_users))).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);

        let one = fan_out_batch(&[2]).events.remove(0);
        let too_many_events = FanOutBatch { events: vec![one.clone(); MAX_FAN_OUT_EVENTS + 1] };
        let status = api.fan_out(from_service(too_many_events)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);

        let bad = gateway::FanOutEvent { event: None, ..one.clone() };
        let status = api.fan_out(from_service(FanOutBatch { events: vec![one, bad] })).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("fan-out event 1:"), "{}", status.message());
        assert!(rx.try_recv().is_err(), "nothing of a refused batch is delivered");
    }

    fn sized_fan_out(users: u64, body: usize) -> FanOut {
        let message = NewMessage {
            msg_id: MessageId(1),
            conversation: ConversationId::Group(GroupId(1)),
            seq: Seq(1),
            sender: UserId(1),
            client_msg_id: ClientMsgId::parse("c-1").unwrap(),
            body: Bytes::from(vec![b'x'; body]),
            content_type: "text/plain".into(),
            server_time_ms: 1,
            sealed_with: None,
        };
        FanOut {
            event: Event::Message(Arc::new(message)),
            users: (1..=users).map(UserId).collect(),
            skip: Some((UserId(1), DeviceId("phone".into()))),
        }
    }

    #[test]
    fn a_usual_batch_is_one_call() {
        let calls = fan_out_calls(&[sized_fan_out(3, 10), sized_fan_out(500, 10)]);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].events.iter().map(|e| e.users.len()).collect::<Vec<_>>(), [3, 500]);
        assert!(fan_out_calls(&[]).is_empty());
    }

    #[test]
    fn a_large_group_is_split_over_events_each_skipping_the_sender() {
        let users = MAX_FAN_OUT_USERS as u64 * 2 + 1;
        let calls = fan_out_calls(&[sized_fan_out(users, 10)]);
        let events: Vec<_> = calls.iter().flat_map(|c| &c.events).collect();
        assert_eq!(events.iter().map(|e| e.users.len()).collect::<Vec<_>>(), [MAX_FAN_OUT_USERS, MAX_FAN_OUT_USERS, 1]);
        assert!(events.iter().all(|e| e.skip_user == 1 && e.skip_device == "phone"));
        let all: Vec<u64> = events.iter().flat_map(|e| e.users.iter().copied()).collect();
        assert_eq!(all, (1..=users).collect::<Vec<_>>());
    }

    #[test]
    fn calls_stay_within_the_event_and_byte_limits() {
        let many: Vec<_> = (0..MAX_FAN_OUT_EVENTS * 2 + 1).map(|_| sized_fan_out(1, 10)).collect();
        let counts: Vec<_> = fan_out_calls(&many).iter().map(|c| c.events.len()).collect();
        assert_eq!(counts, [MAX_FAN_OUT_EVENTS, MAX_FAN_OUT_EVENTS, 1]);

        let big: Vec<_> = (0..400).map(|_| sized_fan_out(2, 10 * 1024)).collect();
        let calls = fan_out_calls(&big);
        assert!(calls.len() > 1);
        assert!(calls.iter().all(|c| c.encoded_len() <= MAX_FAN_OUT_BYTES + 64), "a call over the byte budget");
        assert_eq!(calls.iter().map(|c| c.events.len()).sum::<usize>(), 400);
    }
}
