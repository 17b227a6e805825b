//! A steady conversation that times every ack and every push, to measure how
//! long a fault disturbed sending and pushing: one user sends a message every
//! [`PERIOD`] from one gateway, another receives the pushes on another; the
//! longest stretch without an ack (or a push) inside a window is the window's
//! disturbance. It measures; [`Traffic`](crate::harness::Traffic) counts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use im_proto::client::server_frame;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::{Cluster, Device, Inbox, REQUEST_TIMEOUT};

/// One message per period: the resolution of the figures.
const PERIOD: Duration = Duration::from_millis(50);

pub struct Probe {
    acks: Arc<Mutex<Vec<Instant>>>,
    inbox: Inbox,
    /// Open for as long as the probe lives.
    _receiving: Device,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The longest time without an ack and without a push inside a window.
#[derive(Clone, Copy, Debug)]
pub struct Gaps {
    pub ack: Duration,
    pub push: Duration,
}

impl Probe {
    /// Two users of their own: the sender on gateway `from`, the receiver on
    /// gateway `to`, both registered before this returns; sending starts at
    /// once.
    pub async fn start(cluster: &Cluster, from: usize, to: usize) -> Probe {
        let sender = cluster.create_user("probe-sender").await;
        let receiver = cluster.create_user("probe-receiver").await;
        let inbox = Inbox::default();
        let receiving = cluster.connect(to, &receiver, "probe-in", inbox.clone()).await;
        let mut sending = cluster.connect(from, &sender, "probe-out", Inbox::default()).await;
        let (acks, stop) = (Arc::new(Mutex::new(Vec::new())), CancellationToken::new());
        let (acked, stopped) = (acks.clone(), stop.clone());
        let task = tokio::spawn(async move {
            for n in 0u64.. {
                let next = tokio::time::Instant::now() + PERIOD;
                let text = format!("probe {n}");
                let reply = sending.send_text(receiver.id, &format!("probe-{n}"), &text, REQUEST_TIMEOUT).await;
                if let Ok(server_frame::Body::Ack(_)) = reply {
                    acked.lock().unwrap().push(Instant::now());
                }
                tokio::select! {
                    () = stopped.cancelled() => return,
                    () = tokio::time::sleep_until(next) => {}
                }
            }
        });
        Probe { acks, inbox, _receiving: receiving, stop, task }
    }

    /// The longest stretches without an ack and without a push between
    /// `from` and `to` (an edge of the window counts as an event).
    pub fn gaps(&self, from: Instant, to: Instant) -> Gaps {
        let acks = self.acks.lock().unwrap().clone();
        let pushes: Vec<Instant> = self.inbox.pushes().into_iter().map(|(at, _)| at).collect();
        Gaps { ack: longest_gap(&acks, from, to), push: longest_gap(&pushes, from, to) }
    }

    /// Stops sending (the message in flight is abandoned).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn longest_gap(events: &[Instant], from: Instant, to: Instant) -> Duration {
    let inside = events.iter().copied().filter(|&at| at > from && at < to);
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for at in inside.chain([to]) {
        longest = longest.max(at - previous);
        previous = at;
    }
    longest
}
