//! A connection's outbound queue, bounded in frames and in bytes.
//!
//! Two kinds of frames leave a connection, and they are bounded
//! differently because they come from different places:
//!
//! - **pushes** arrive from the hub, which must never wait for one client:
//!   a push that would take the bytes queued past the budget is refused
//!   and the hub closes the connection as too slow (the client reconnects
//!   and syncs; everything pushed is stored);
//! - **replies** answer the client's own requests: a request first
//!   reserves room for its reply (a sync page's worth for a sync) and only
//!   then runs, so a client that sends requests and never reads holds at
//!   most the budget in replies; its further requests wait, unread, in the
//!   socket. The reservation is released when the writer has written the
//!   reply.
//!
//! Together a connection holds at most about twice the budget, whatever the
//! client does; the frame count (`outbound_queue`) bounds the queue's own
//! slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// A frame queued for the writer.
pub(crate) enum Outgoing {
    Push(Bytes),
    /// A reply, with the room it reserved (released once written).
    Reply(Bytes, Reservation),
}

impl Outgoing {
    pub(crate) fn bytes(&self) -> &Bytes {
        match self {
            Self::Push(bytes) | Self::Reply(bytes, _) => bytes,
        }
    }
}

/// Room reserved for one reply; dropping it gives the room back.
pub(crate) type Reservation = OwnedSemaphorePermit;

/// Why a push was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushRefused {
    /// The client is not reading fast enough.
    Full,
    /// The connection is ending.
    Closed,
}

/// The sending side, shared by the hub (pushes) and the connection's reader
/// (replies).
#[derive(Clone)]
pub(crate) struct Outbound {
    queue: mpsc::Sender<Outgoing>,
    /// Bytes of pushes queued and not yet written.
    pushed_bytes: Arc<AtomicUsize>,
    /// Room for replies, in bytes.
    reply_room: Arc<Semaphore>,
    max_bytes: usize,
}

/// The writer's side.
pub(crate) struct OutboundQueue {
    queue: mpsc::Receiver<Outgoing>,
    pushed_bytes: Arc<AtomicUsize>,
}

/// A queue of at most `frames` frames and about `max_bytes` bytes of each
/// kind.
pub(crate) fn outbound(frames: usize, max_bytes: usize) -> (Outbound, OutboundQueue) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let pushed_bytes = Arc::new(AtomicUsize::new(0));
    // Semaphore permits are bounded; no budget comes near the bound.
    let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let sender = Outbound {
        queue: tx,
        pushed_bytes: pushed_bytes.clone(),
        reply_room: Arc::new(Semaphore::new(max_bytes)),
        max_bytes,
    };
    (sender, OutboundQueue { queue: rx, pushed_bytes })
}

impl Outbound {
    /// Queues a push without waiting. A push larger than the whole budget
    /// still goes when nothing else is queued.
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), PushRefused> {
        let len = frame.len();
        let before = self.pushed_bytes.fetch_add(len, Relaxed);
        if before > 0 && before + len > self.max_bytes {
            self.pushed_bytes.fetch_sub(len, Relaxed);
            return Err(PushRefused::Full);
        }
        self.queue.try_send(Outgoing::Push(frame)).map_err(|error| {
            self.pushed_bytes.fetch_sub(len, Relaxed);
            match error {
                mpsc::error::TrySendError::Full(_) => PushRefused::Full,
                mpsc::error::TrySendError::Closed(_) => PushRefused::Closed,
            }
        })
    }

    /// Waits for room for a reply of up to `bytes` (at most the whole
    /// budget). A connection that ends drops its waiting requests.
    pub(crate) async fn reserve(&self, bytes: usize) -> Reservation {
        let bytes = bytes.clamp(1, self.max_bytes) as u32;
        // Nothing closes the semaphore.
        self.reply_room.clone().acquire_many_owned(bytes).await.expect("the reply room is never closed")
    }

    /// Queues a reply; waits for a frame slot. False once the connection is
    /// ending.
    pub(crate) async fn reply(&self, frame: Bytes, room: Reservation) -> bool {
        self.queue.send(Outgoing::Reply(frame, room)).await.is_ok()
    }
}

impl OutboundQueue {
    /// Receives up to `limit` frames into `batch`; 0 when every sender is
    /// gone.
    pub(crate) async fn recv_many(&mut self, batch: &mut Vec<Outgoing>, limit: usize) -> usize {
        self.queue.recv_many(batch, limit).await
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next frame if one is queued, as written.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Result<Bytes, mpsc::error::TryRecvError> {
        self.queue.try_recv().map(|frame| self.written(frame))
    }

    /// Gives the frame's room back: call once it is written. Returns its
    /// bytes.
    pub(crate) fn written(&self, frame: Outgoing) -> Bytes {
        match frame {
            Outgoing::Push(bytes) => {
                self.pushed_bytes.fetch_sub(bytes.len(), Relaxed);
                bytes
            }
            // Dropping the reservation releases its room.
            Outgoing::Reply(bytes, _room) => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[tokio::test]
    async fn pushes_past_the_byte_budget_are_refused_until_written() {
        let (sender, mut queue) = outbound(100, 1000);
        sender.try_push(frame(600)).unwrap();
        assert_eq!(sender.try_push(frame(600)), Err(PushRefused::Full));
        sender.try_push(frame(400)).unwrap();
        assert_eq!(sender.try_push(frame(1)), Err(PushRefused::Full));

        let mut batch = Vec::new();
        assert_eq!(queue.recv_many(&mut batch, 1).await, 1);
        assert_eq!(queue.written(batch.pop().unwrap()).len(), 600);
        sender.try_push(frame(600)).unwrap();
    }

    #[tokio::test]
    async fn a_push_larger_than_the_budget_goes_alone() {
        let (sender, _queue) = outbound(100, 1000);
        sender.try_push(frame(5000)).unwrap();
        assert_eq!(sender.try_push(frame(1)), Err(PushRefused::Full));
    }

    #[tokio::test]
    async fn the_frame_count_bounds_pushes_too() {
        let (sender, _queue) = outbound(2, 1000);
        sender.try_push(frame(1)).unwrap();
        sender.try_push(frame(1)).unwrap();
        assert_eq!(sender.try_push(frame(1)), Err(PushRefused::Full));
    }

    #[tokio::test]
    async fn replies_wait_for_room_that_writing_frees() {
        let (sender, mut queue) = outbound(100, 1000);
        let room = sender.reserve(800).await;
        assert!(sender.reply(frame(700), room).await);
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { drop(sender.reserve(800).await) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "room was given twice");

        let mut batch = Vec::new();
        queue.recv_many(&mut batch, 10).await;
        queue.written(batch.pop().unwrap());
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn replies_and_pushes_have_separate_budgets() {
        let (sender, _queue) = outbound(100, 1000);
        let _room = sender.reserve(1000).await;
        sender.try_push(frame(900)).unwrap();
    }
}
