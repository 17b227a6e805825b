//! Keeps this node's [`MembershipCache`] current from `membership_change`.
//!
//! Every node must see every change, so each node reads the topic in a
//! consumer group of its own (`{KAFKA_GROUP_ID}.membership.{node}`), unlike
//! the fan-out and the offline worker, whose groups share the work. The
//! records only correct a cache (rosters reload from the directory when a
//! version is missed), so a record that does not decode is logged, counted
//! and passed over.

use std::sync::Arc;
use std::time::Duration;

use im_core::ports::{BackendResult, BusConsumer};
use im_proto::convert::decode_membership_change;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::cache::MembershipCache;
use crate::consumer::Members;
use crate::metrics::Metrics;

/// Records taken per poll.
const POLL_MAX: usize = 256;
/// How long a poll waits when there is nothing: the stop signal is seen
/// within it.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Wait after a failed poll.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The consumer group a node reads `membership_change` in.
pub fn consumer_group(kafka_group_id: &str, node_id: u16) -> String {
    format!("{kafka_group_id}.membership.{node_id}")
}

pub struct MembershipWatcher {
    pub cache: Arc<MembershipCache>,
    pub metrics: Arc<Metrics>,
}

impl MembershipWatcher {
    /// Joins the topic (before returning, so no change made after start-up
    /// is missed) and applies its records on `tracker` until `stop`.
    pub async fn start(
        self,
        members: &dyn Members,
        topic: &str,
        group: &str,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> BackendResult<()> {
        let member = members.join(topic, group).await?;
        info!(topic, group, "membership watcher started");
        tracker.spawn(self.run(member.consumer, stop));
        Ok(())
    }

    async fn run(self, mut consumer: Box<dyn BusConsumer>, stop: CancellationToken) {
        loop {
            let polled = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                polled = consumer.poll(POLL_MAX, POLL_WAIT) => polled,
            };
            let records = match polled {
                Ok(records) => records,
                Err(error) => {
                    warn!(%error, "membership_change poll failed; rosters reload when they age out");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(RETRY_AFTER) => continue,
                    }
                }
            };
            let Some(last) = records.last().cloned() else { continue };
            for record in &records {
                match decode_membership_change(&record.payload) {
                    Ok(change) => {
                        self.cache.apply(&change);
                        self.metrics.membership_changes.inc();
                    }
                    Err(error) => {
                        self.metrics.membership_undecodable.inc();
                        warn!(offset = record.offset, %error, "membership_change record does not decode; passed over");
                    }
                }
            }
            // Only where this node resumes after a restart; the cache starts
            // empty then anyway.
            if let Err(error) = consumer.commit(&last).await {
                warn!(%error, "membership_change commit failed");
            }
        }
        info!("membership watcher stopped");
    }
}
