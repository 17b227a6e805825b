//! `im.gateway.v1.PushService`: the push API over gRPC, for when the gateway
//! runs as its own process. It delivers through the same [`Hub::deliver`] as
//! an in-process push. Only a service credential (an admin token signed with
//! the shared secret) may push: anyone else could put words in a user's mouth.

use std::sync::Arc;

use im_auth::Tokens;
use im_core::ImError;
use im_core::ports::PushEvent;
use im_proto::gateway::push_service_server::{PushService, PushServiceServer};
use im_proto::gateway::{PushBatch, PushReport};
use tonic::{Request, Response, Status};

use crate::Hub;

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
        if !identity.admin {
            return Err(im_proto::convert::status(ImError::denied("pushing needs a service credential")));
        }
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::message_event;
    use im_core::{DeviceId, GatewayId, UserId};
    use im_proto::gateway;
    use tokio::sync::mpsc;

    const SECRET: &[u8] = b"push-api-test-secret-push-api-te";

    fn api(hub: Arc<Hub>) -> PushApi {
        PushApi::new(hub, Tokens::new(SECRET).unwrap())
    }

    /// `batch` as a service sends it.
    fn from_service(batch: PushBatch) -> Request<PushBatch> {
        let token = Tokens::new(SECRET).unwrap().issue_admin(std::time::Duration::from_secs(60));
        let mut request = Request::new(batch);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    #[tokio::test]
    async fn a_batch_is_delivered_and_offline_users_reported() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = mpsc::channel(4);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default());
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
        let (tx, mut rx) = mpsc::channel(4);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default());
        let api = api(hub);

        let good = gateway::PushEvent::from(&message_event(1, 2, None));
        let bad = gateway::PushEvent { user: 2, skip_device: String::new(), event: None };
        let status = api.push(from_service(PushBatch { events: vec![good, bad] })).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("push event 1:"), "{}", status.message());
        assert!(rx.try_recv().is_err(), "nothing of a refused batch is delivered");
    }

    #[tokio::test]
    async fn only_a_service_credential_may_push() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = mpsc::channel(4);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default());
        let api = api(hub);
        let batch = || PushBatch { events: vec![gateway::PushEvent::from(&message_event(1, 2, None))] };

        let status = api.push(Request::new(batch())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        let user_token =
            Tokens::new(SECRET).unwrap().issue_user(UserId(1), "mallory", std::time::Duration::from_secs(60));
        let mut as_user = Request::new(batch());
        as_user.metadata_mut().insert("authorization", format!("Bearer {user_token}").parse().unwrap());
        let status = api.push(as_user).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(rx.try_recv().is_err(), "nothing is delivered without a service credential");
    }
}
