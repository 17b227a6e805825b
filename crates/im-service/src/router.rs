//! Routing: after a commit, tell every online device of both sides — the
//! recipient's devices, and the sender's other devices — through the gateway
//! each is connected to, one push call per gateway per batch.
//!
//! Pushes are best effort by design: a device that misses one catches up by
//! sync (G4), because everything pushed is already stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use im_core::ports::{Event, PushEvent, PushReport, Pusher, Registry};
use im_core::{ErrorCode, GatewayId};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::pipeline::Committed;

/// What the router is asked to deliver.
pub enum RouteWork {
    /// Newly stored messages, from the send pipeline.
    Messages(Vec<Committed>),
    /// Ready-made events (read receipts).
    Events(Vec<PushEvent>),
}

/// `MAX_RETRY_ATTEMPTS` × `RETRY_TIMEOUT` for each push call.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub timeout: Duration,
}

pub struct Router {
    pub registry: Arc<dyn Registry>,
    pub pusher: Arc<dyn Pusher>,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
}

/// One gateway's share of a batch. `counted[i]` tells whether event `i` is
/// the copy for the addressee (counted in metrics) or a courtesy copy for the
/// actor's other devices.
#[derive(Default)]
struct GatewayBatch {
    events: Vec<PushEvent>,
    counted: Vec<bool>,
}

impl Router {
    pub async fn run(self, mut work: mpsc::UnboundedReceiver<RouteWork>) {
        while let Some(item) = work.recv().await {
            match item {
                RouteWork::Messages(batch) => self.route_messages(batch).await,
                RouteWork::Events(events) => {
                    let mut per_gateway = HashMap::new();
                    for event in events {
                        self.add(&mut per_gateway, event, false);
                    }
                    self.push_all(per_gateway).await;
                }
            }
        }
        tracing::info!("router stopped");
    }

    async fn route_messages(&self, batch: Vec<Committed>) {
        let mut per_gateway: HashMap<GatewayId, GatewayBatch> = HashMap::new();
        for committed in &batch {
            let message = &committed.message;
            let to_recipient =
                PushEvent { user: message.recipient, skip_device: None, event: Event::Message(message.clone()) };
            if !self.add(&mut per_gateway, to_recipient, true) {
                self.metrics.push_offline.inc();
            }
            let to_sender_devices = PushEvent {
                user: message.sender,
                skip_device: Some(committed.device.clone()),
                event: Event::Message(message.clone()),
            };
            self.add(&mut per_gateway, to_sender_devices, false);
        }
        self.push_all(per_gateway).await;
        for committed in &batch {
            self.metrics.routing_latency.observe(committed.accepted_at.elapsed().as_secs_f64());
        }
    }

    /// Queues `event` for every gateway its user is on; false if none.
    fn add(&self, per_gateway: &mut HashMap<GatewayId, GatewayBatch>, event: PushEvent, counted: bool) -> bool {
        let gateways = self.registry.gateways_of(event.user);
        let Some((last, others)) = gateways.split_last() else {
            return false;
        };
        for gateway in others {
            let batch = per_gateway.entry(gateway.clone()).or_default();
            batch.events.push(event.clone());
            batch.counted.push(counted);
        }
        let batch = per_gateway.entry(last.clone()).or_default();
        batch.events.push(event);
        batch.counted.push(counted);
        true
    }

    async fn push_all(&self, per_gateway: HashMap<GatewayId, GatewayBatch>) {
        let calls = per_gateway.into_iter().map(|(gateway, batch)| async move {
            let counted = batch.counted;
            match self.push_with_retry(&gateway, batch.events).await {
                Ok(report) => {
                    let offline: u64 = report.offline.iter().filter(|&&i| counted[i as usize]).count() as u64;
                    let delivered = counted.iter().filter(|c| **c).count() as u64 - offline;
                    self.metrics.pushed.inc_by(delivered);
                    self.metrics.push_offline.inc_by(offline);
                }
                Err(()) => {
                    let lost = counted.iter().filter(|c| **c).count() as u64;
                    self.metrics
                        .failed
                        .get_or_create(&crate::metrics::CodeLabel { code: ErrorCode::Unavailable.as_str() })
                        .inc_by(lost);
                }
            }
        });
        futures::future::join_all(calls).await;
    }

    async fn push_with_retry(&self, gateway: &GatewayId, events: Vec<PushEvent>) -> Result<PushReport, ()> {
        for attempt in 1..=self.retry.attempts.max(1) {
            match tokio::time::timeout(self.retry.timeout, self.pusher.push(gateway, &events)).await {
                Ok(Ok(report)) => return Ok(report),
                Ok(Err(e)) => tracing::warn!(%gateway, attempt, error = %e, "push failed"),
                Err(_) => tracing::warn!(%gateway, attempt, "push timed out"),
            }
        }
        tracing::error!(%gateway, events = events.len(), "push gave up; devices will catch up by sync");
        Err(())
    }
}
