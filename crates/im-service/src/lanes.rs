//! Delivery lanes: one bounded queue and one task per gateway, so a gateway
//! that hangs or falls behind delays only its own users. Work is queued
//! without waiting; a full lane gives the work back to the caller, which
//! drops it to the offline path (the messages are stored: devices catch up
//! by sync). A lane idle for a while ends its task; the next work for its
//! gateway starts a new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use im_core::GatewayId;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

/// Batches a lane holds before it refuses more: a gateway that answers
/// within milliseconds never fills it; one that hangs fills it within a
/// second under load, and from then on costs the others nothing.
pub const LANE_QUEUE: usize = 256;
/// A lane with no work for this long ends its task.
pub const LANE_IDLE: Duration = Duration::from_secs(300);

/// How a lane delivers one piece of work to its gateway.
pub type Deliver<W> = Arc<dyn Fn(GatewayId, W) -> BoxFuture<'static, ()> + Send + Sync>;

/// The lanes of one sender (the router), by gateway. Owned by one task: no
/// lock on the way in.
pub struct Lanes<W> {
    lanes: HashMap<GatewayId, Lane<W>>,
    deliver: Deliver<W>,
    capacity: usize,
    idle: Duration,
}

struct Lane<W> {
    queue: mpsc::Sender<W>,
    task: JoinHandle<()>,
}

impl<W: Send + 'static> Lanes<W> {
    pub fn new(deliver: Deliver<W>) -> Self {
        Self::with_limits(deliver, LANE_QUEUE, LANE_IDLE)
    }

    pub fn with_limits(deliver: Deliver<W>, capacity: usize, idle: Duration) -> Self {
        Self { lanes: HashMap::new(), deliver, capacity: capacity.max(1), idle }
    }

    /// Queues `work` on `gateway`'s lane, starting the lane if needed.
    /// Gives the work back when the lane is full.
    pub fn send(&mut self, gateway: &GatewayId, mut work: W) -> Result<(), W> {
        // Twice at most: a lane that ended (idle) is replaced once.
        for _ in 0..2 {
            if !self.lanes.contains_key(gateway) {
                // Lanes of gateways gone for good end when idle: forget them.
                self.lanes.retain(|_, lane| !lane.queue.is_closed());
                let lane = self.start(gateway.clone());
                self.lanes.insert(gateway.clone(), lane);
            }
            let lane = &self.lanes[gateway];
            match lane.queue.try_send(work) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => return Err(back),
                Err(TrySendError::Closed(back)) => {
                    self.lanes.remove(gateway);
                    work = back;
                }
            }
        }
        Err(work)
    }

    /// How many lanes are running.
    pub fn len(&self) -> usize {
        self.lanes.values().filter(|lane| !lane.queue.is_closed()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lets every lane finish what it holds, for `grace` at most (a hung
    /// gateway must not hold a shutdown); lanes still busy then are stopped
    /// (their users catch up by sync).
    pub async fn close(self, grace: Duration) {
        let mut tasks: Vec<JoinHandle<()>> = self.lanes.into_values().map(|lane| lane.task).collect();
        let all = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(grace, all).await.is_err() {
            let busy = tasks.iter().filter(|task| !task.is_finished()).count();
            tracing::warn!(busy, "delivery lanes still busy at shutdown; stopped");
            for task in &tasks {
                task.abort();
            }
        }
    }

    fn start(&self, gateway: GatewayId) -> Lane<W> {
        let (queue, work) = mpsc::channel(self.capacity);
        let task = tokio::spawn(run(gateway, work, self.deliver.clone(), self.idle));
        Lane { queue, task }
    }
}

/// One lane: its gateway's work, in order, one at a time.
async fn run<W>(gateway: GatewayId, mut work: mpsc::Receiver<W>, deliver: Deliver<W>, idle: Duration) {
    loop {
        match tokio::time::timeout(idle, work.recv()).await {
            Ok(Some(item)) => deliver(gateway.clone(), item).await,
            Ok(None) => return,
            Err(_) => {
                // Idle: refuse new work (the sender starts a new lane), and
                // deliver what slipped in before the refusal.
                work.close();
                while let Some(item) = work.recv().await {
                    deliver(gateway.clone(), item).await;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;

    use super::*;

    fn gw(name: &str) -> GatewayId {
        GatewayId(name.to_owned())
    }

    /// (gateway, item), in delivery order.
    type Seen = Arc<Mutex<Vec<(String, u32)>>>;

    /// Records (gateway, item); gateway "hung" never finishes an item.
    fn recording() -> (Deliver<u32>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let deliver: Deliver<u32> = Arc::new(move |gateway: GatewayId, item: u32| {
            let log = log.clone();
            async move {
                if gateway.0 == "hung" {
                    futures::future::pending::<()>().await;
                }
                log.lock().unwrap().push((gateway.0, item));
            }
            .boxed()
        });
        (deliver, seen)
    }

    #[tokio::test]
    async fn each_gateway_gets_its_work_in_order_and_a_hung_one_holds_only_itself() {
        let (deliver, seen) = recording();
        let mut lanes = Lanes::with_limits(deliver, 4, LANE_IDLE);
        for i in 0..4 {
            lanes.send(&gw("hung"), i).unwrap();
        }
        // The hung lane took its first item and holds 4 more at most.
        tokio::time::sleep(Duration::from_millis(20)).await;
        lanes.send(&gw("hung"), 4).unwrap();
        assert_eq!(lanes.send(&gw("hung"), 5), Err(5), "a full lane gives the work back");
        for i in 0..100 {
            lanes.send(&gw("a"), i).unwrap_or_else(|_| panic!("lane a full at {i}"));
            // Lane a keeps up: its items are delivered while hung holds.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let delivered: Vec<u32> = seen.lock().unwrap().iter().filter(|(g, _)| g == "a").map(|(_, i)| *i).collect();
        assert_eq!(delivered, (0..100).collect::<Vec<_>>());
        assert_eq!(lanes.len(), 2);
        // Closing does not wait for the hung lane past its grace.
        let closing = std::time::Instant::now();
        lanes.close(Duration::from_millis(100)).await;
        assert!(closing.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_lane_ends_and_the_next_work_starts_another() {
        let (deliver, seen) = recording();
        let mut lanes = Lanes::with_limits(deliver, 4, Duration::from_secs(10));
        lanes.send(&gw("a"), 1).unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(lanes.len(), 0, "idle for longer than the limit");
        lanes.send(&gw("a"), 2).unwrap();
        lanes.close(Duration::from_secs(1)).await;
        assert_eq!(*seen.lock().unwrap(), [("a".to_owned(), 1), ("a".to_owned(), 2)]);
    }
}
