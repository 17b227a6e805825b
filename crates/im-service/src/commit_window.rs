//! The adaptive commit window (`server.commit_window`).
//!
//! A commit's cost is mostly fixed (the fsync, the hand-offs to the store
//! and back), so at a few thousand sends a second, when nearly every send is
//! a commit of its own, waiting a millisecond for a few more cuts the cost
//! per message by a third (measured 2026-12-06, BENCHMARKS.md: at 2,000/s,
//! median 306 -> 204 µs of server CPU per message, for p50 0.9 -> 1.9 ms).
//! It waits only when sends arrived while the last commit was in flight, so
//! a lone sender waiting for each ack never waits, and only while the batch
//! has fewer than [`WINDOW_FILL`] sends, so it never slows a busy node.

use std::time::Duration;

use tokio::sync::mpsc;

/// Under load, a batch smaller than this waits up to the window for more.
pub const WINDOW_FILL: usize = 4;

/// How long a small batch waits for company under load; zero: never.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitWindow(pub Duration);

impl CommitWindow {
    /// Adds to `batch` what arrives on `queue` within the window, until it
    /// holds [`WINDOW_FILL`] (never more than `max`). Returns at once when
    /// the window is off, the batch is full enough or `under_load` is false.
    pub async fn fill<T>(&self, batch: &mut Vec<T>, queue: &mut mpsc::Receiver<T>, max: usize, under_load: bool) {
        if self.0.is_zero() || !under_load || batch.len() >= WINDOW_FILL {
            return;
        }
        let gather = async {
            while batch.len() < WINDOW_FILL.min(max) {
                let room = max - batch.len();
                if queue.recv_many(batch, room).await == 0 {
                    break;
                }
            }
        };
        // Elapsing is the normal way out: the batch commits with what it has.
        let _ = tokio::time::timeout(self.0, gather).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: CommitWindow = CommitWindow(Duration::from_millis(50));

    #[tokio::test(start_paused = true)]
    async fn a_batch_without_load_commits_at_once() {
        let (_tx, mut rx) = mpsc::channel::<u32>(16);
        let mut batch = vec![1];
        let started = tokio::time::Instant::now();
        WINDOW.fill(&mut batch, &mut rx, 1024, false).await;
        assert_eq!(batch, [1]);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_a_small_batch_waits_out_the_window_for_company() {
        let (tx, mut rx) = mpsc::channel::<u32>(16);
        let mut batch = vec![1];
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(2).await.unwrap();
            // Held past the window: the batch must not wait for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(3).await.unwrap();
        });
        let started = tokio::time::Instant::now();
        WINDOW.fill(&mut batch, &mut rx, 1024, true).await;
        assert_eq!(batch, [1, 2]);
        assert_eq!(started.elapsed(), WINDOW.0);
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_the_wait_ends_as_soon_as_the_batch_is_full_enough() {
        let (tx, mut rx) = mpsc::channel::<u32>(16);
        let mut batch = vec![1];
        tokio::spawn(async move {
            for n in 2..=6 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.send(n).await.unwrap();
            }
        });
        let started = tokio::time::Instant::now();
        WINDOW.fill(&mut batch, &mut rx, 1024, true).await;
        assert_eq!(batch, [1, 2, 3, 4]);
        assert_eq!(started.elapsed(), Duration::from_millis(15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_enough_batch_or_a_closed_window_never_waits() {
        let (_tx, mut rx) = mpsc::channel::<u32>(16);
        let started = tokio::time::Instant::now();
        let mut full = vec![1, 2, 3, 4];
        WINDOW.fill(&mut full, &mut rx, 1024, true).await;
        let mut small = vec![1];
        CommitWindow(Duration::ZERO).fill(&mut small, &mut rx, 1024, true).await;
        assert_eq!((full.len(), small.len()), (4, 1));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
