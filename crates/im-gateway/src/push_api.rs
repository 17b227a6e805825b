//! `im.gateway.v1.PushService`: the push API over gRPC, for when the gateway
//! runs as its own process. It delivers through the same [`Hub::deliver`] as
//! an in-process push.

use std::sync::Arc;

use im_core::ImError;
use im_core::ports::PushEvent;
use im_proto::gateway::push_service_server::{PushService, PushServiceServer};
use im_proto::gateway::{PushBatch, PushReport};
use tonic::{Request, Response, Status};

use crate::Hub;

/// The gRPC push service of one gateway.
pub struct PushApi {
    hub: Arc<Hub>,
}

impl PushApi {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> PushServiceServer<Self> {
        PushServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl PushService for PushApi {
    async fn push(&self, request: Request<PushBatch>) -> Result<Response<PushReport>, Status> {
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

    #[tokio::test]
    async fn a_batch_is_delivered_and_offline_users_reported() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = mpsc::channel(4);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default());
        let api = PushApi::new(hub);

        let events = [message_event(1, 2, None), message_event(1, 3, None)];
        let batch = PushBatch { events: events.iter().map(gateway::PushEvent::from).collect() };
        let report = api.push(Request::new(batch)).await.unwrap().into_inner();
        assert_eq!(report, PushReport { delivered: 1, offline: vec![1] });
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_malformed_event_refuses_the_whole_batch() {
        let hub = Arc::new(Hub::new(GatewayId("gw-1".into())));
        let (tx, mut rx) = mpsc::channel(4);
        hub.attach(UserId(2), DeviceId("phone".into()), tx, Default::default());
        let api = PushApi::new(hub);

        let good = gateway::PushEvent::from(&message_event(1, 2, None));
        let bad = gateway::PushEvent { user: 2, skip_device: String::new(), event: None };
        let status = api.push(Request::new(PushBatch { events: vec![good, bad] })).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("push event 1:"), "{}", status.message());
        assert!(rx.try_recv().is_err(), "nothing of a refused batch is delivered");
    }
}
