//! [`GrpcPusher`]: the `Pusher` port over `im.gateway.v1.PushService`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use im_auth::{Scope, Tokens};
use im_core::GatewayId;
use im_core::ports::{BackendResult, FanOut, PushEvent, PushReport, Pusher};
use im_gateway::push_api::fan_out_calls;
use im_proto::gateway::push_service_client::PushServiceClient;
use im_proto::gateway::{self as pb, PushBatch};
use parking_lot::Mutex;
use tonic::transport::Channel;

use super::channel::{backend_error, lazy_channel};
use super::credential::ServiceCredential;
use crate::tls::CallTls;

/// Pushes to gateway processes. A gateway's id is the `host:port` of its
/// push API (it registers under that name), so no lookup table is needed.
pub struct GrpcPusher {
    credential: ServiceCredential,
    timeout: Duration,
    tls: CallTls,
    clients: Mutex<HashMap<GatewayId, PushServiceClient<Channel>>>,
}

impl GrpcPusher {
    /// `timeout` is the deadline of one push call (`GATEWAY_SERVICE_TIMEOUT`);
    /// the router retries a failed call (`MAX_RETRY_ATTEMPTS`). Calls carry
    /// a `push` service credential signed with `tokens`, over TLS when `tls`
    /// says so.
    pub fn new(tokens: Tokens, timeout: Duration, tls: CallTls) -> Self {
        let credential = ServiceCredential::new(tokens, Scope::Push);
        Self { credential, timeout, tls, clients: Mutex::new(HashMap::new()) }
    }

    #[cfg(test)]
    pub(super) fn credential(&self) -> &ServiceCredential {
        &self.credential
    }

    fn client(&self, gateway: &GatewayId) -> BackendResult<PushServiceClient<Channel>> {
        let mut clients = self.clients.lock();
        if let Some(client) = clients.get(gateway) {
            return Ok(client.clone());
        }
        let client = PushServiceClient::new(lazy_channel(&gateway.0, self.timeout, &self.tls)?);
        clients.insert(gateway.clone(), client.clone());
        Ok(client)
    }
}

#[async_trait]
impl Pusher for GrpcPusher {
    /// Delivers a batch to the connected devices of its users on `gateway`.
    async fn push(&self, gateway: &GatewayId, batch: &[PushEvent]) -> BackendResult<PushReport> {
        let events = batch.iter().map(pb::PushEvent::from).collect();
        let report = self
            .client(gateway)?
            .push(self.credential.request(PushBatch { events }))
            .await
            .map_err(|status| backend_error(&format!("push to gateway {}", gateway.0), &status))?
            .into_inner();
        Ok(PushReport { delivered: report.delivered, offline: report.offline })
    }

    /// Delivers each fan-out to the connected devices of its users on
    /// `gateway`, in as few `FanOut` calls as the push API's limits allow
    /// (one, unless the batch is very large). On error, the calls before the
    /// failing one were delivered: a retry may push some messages twice,
    /// which clients tell by their `msg_id`.
    async fn fan_out(&self, gateway: &GatewayId, batch: &[FanOut]) -> BackendResult<u64> {
        let mut client = self.client(gateway)?;
        let mut delivered = 0;
        for call in fan_out_calls(batch) {
            let report = client
                .fan_out(self.credential.request(call))
                .await
                .map_err(|status| backend_error(&format!("fan-out to gateway {}", gateway.0), &status))?
                .into_inner();
            delivered += report.delivered;
        }
        Ok(delivered)
    }
}
