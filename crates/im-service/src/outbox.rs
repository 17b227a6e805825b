//! The route outbox: offline entries that a crash cannot lose (issue 14).
//!
//! Whether a private message needs an offline entry is known only after its
//! push, and a node can die between its commit and that moment (its
//! routing, its offline queue and the broker's topic are all memory). So the
//! commit itself writes, in the same transaction, one `route_outbox` row per
//! batch holding the offline entry each of its private messages would need
//! ([`im_core::ports::OutboxRow`]). Then:
//!
//! - **Settling**: once every lane has reported on a batch, the router hands
//!   the entries of the messages that reached no device to [`Settlements`];
//!   the [`Settler`] records them and deletes their rows, many batches per
//!   transaction (one write every [`SETTLE_EVERY`], not one per commit).
//! - **Sweeping**: every [`SWEEP_EVERY`] each node looks for rows older than
//!   `OFFLINE_WORKER_OUTBOX_GRACE` — left by a node that was killed, or whose
//!   settlement was dropped — and records all their entries. Not knowing
//!   which of those messages reached a device, it errs towards an entry too
//!   many (cleared when the user reads), never one too few.
//!
//! Both writes are idempotent (an entry is keyed by user, conversation and
//! seq), so a sweep racing a late settlement, or two nodes sweeping the same
//! row, record each entry once. The `offline_msg` events are still published
//! by the router for the offline worker and anything else that listens; the
//! entries no longer depend on them.

use std::sync::Arc;
use std::time::Duration;

use im_core::ports::{OfflineEntry, OfflineStore};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Settled batches waiting to be written. Each routed batch adds one, so the
/// queue holds a few seconds of commits at saturation; when it is full (the
/// store slow or away) settlements are dropped, and their rows swept later.
pub const SETTLE_QUEUE: usize = 8 * 1024;

/// How often settled batches are written: one transaction for all of them.
pub const SETTLE_EVERY: Duration = Duration::from_millis(100);

/// How often abandoned rows are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Rows settled, or swept, per transaction.
const ROWS_PER_WRITE: usize = 512;

/// A routed batch whose outcome is known.
#[derive(Debug)]
pub struct Settlement {
    /// Its outbox row.
    pub outbox: u64,
    /// The entries of its private messages that reached no device.
    pub unreached: Vec<OfflineEntry>,
}

/// The router's handle on the settler: hands settlements over without
/// waiting.
#[derive(Clone)]
pub struct Settlements {
    queue: mpsc::Sender<Settlement>,
}

impl Settlements {
    /// Queues `settlement`; when the queue is full it is dropped, and the
    /// sweep records its row (whole) once the row is old enough.
    pub fn settle(&self, settlement: Settlement) {
        if let Err(mpsc::error::TrySendError::Full(dropped)) = self.queue.try_send(settlement) {
            tracing::debug!(outbox = dropped.outbox, "settlement queue full; the row is left to the sweep");
        }
    }
}

/// Writes settlements and sweeps abandoned rows.
pub struct Settler {
    pub store: Arc<dyn OfflineStore>,
    pub metrics: Arc<Metrics>,
    /// `OFFLINE_WORKER_OUTBOX_GRACE`.
    pub grace: Duration,
}

impl Settler {
    /// The settler and the router's handle on it.
    pub fn new(
        store: Arc<dyn OfflineStore>,
        metrics: Arc<Metrics>,
        grace: Duration,
    ) -> (Self, Settlements, SettlerInput) {
        let (queue, input) = mpsc::channel(SETTLE_QUEUE);
        (Self { store, metrics, grace }, Settlements { queue }, SettlerInput(input))
    }

    /// Runs until every [`Settlements`] handle is dropped (what they queued
    /// is written first), or `stop` fires (what is held is left to the
    /// sweep of the next start).
    pub async fn run(self, SettlerInput(mut input): SettlerInput, stop: CancellationToken) {
        let mut held: Vec<Settlement> = Vec::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        while open || !held.is_empty() {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                received = input.recv_many(&mut held, ROWS_PER_WRITE), if open && held.len() < ROWS_PER_WRITE => {
                    open = received > 0;
                    if open {
                        // Let more batches settle: one write for all of them.
                        tokio::select! {
                            () = tokio::time::sleep(SETTLE_EVERY) => {}
                            () = stop.cancelled() => break,
                        }
                        while held.len() < ROWS_PER_WRITE {
                            match input.try_recv() {
                                Ok(settlement) => held.push(settlement),
                                Err(_) => break,
                            }
                        }
                    }
                    self.write(&mut held).await;
                }
                _ = sweep.tick() => self.sweep().await,
                // A failed write is retried at the pace of the settle window.
                () = tokio::time::sleep(SETTLE_EVERY), if !held.is_empty() => self.write(&mut held).await,
            }
        }
        tracing::debug!("route outbox settler stopped");
    }

    /// Records what `held` reached no device and deletes its rows; on
    /// failure keeps `held` for the next try.
    async fn write(&self, held: &mut Vec<Settlement>) {
        if held.is_empty() {
            return;
        }
        let entries: Vec<OfflineEntry> = held.iter().flat_map(|s| s.unreached.iter().cloned()).collect();
        let rows: Vec<u64> = held.iter().map(|s| s.outbox).collect();
        match self.store.settle_outbox(&entries, &rows).await {
            Ok(()) => {
                self.metrics.outbox_settled.inc_by(rows.len() as u64);
                held.clear();
            }
            Err(e) => {
                self.metrics.outbox_write_failures.inc();
                tracing::warn!(error = %e, rows = rows.len(), "could not settle route outbox rows; will retry");
            }
        }
    }

    /// Records, whole, the rows older than the grace: their node stopped
    /// before settling them.
    async fn sweep(&self) {
        let before_ms = crate::clock::unix_ms().saturating_sub(self.grace.as_millis() as i64);
        loop {
            let rows = match self.store.abandoned_outbox(before_ms, ROWS_PER_WRITE as u32).await {
                Ok(rows) => rows,
                Err(e) => {
                    self.metrics.outbox_write_failures.inc();
                    tracing::warn!(error = %e, "could not look for abandoned route outbox rows");
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            let entries: Vec<OfflineEntry> = rows.iter().flat_map(|row| row.entries.iter().cloned()).collect();
            let ids: Vec<u64> = rows.iter().map(|row| row.id).collect();
            if let Err(e) = self.store.settle_outbox(&entries, &ids).await {
                self.metrics.outbox_write_failures.inc();
                tracing::warn!(error = %e, rows = ids.len(), "could not record abandoned route outbox rows");
                return;
            }
            self.metrics.outbox_swept.inc_by(ids.len() as u64);
            tracing::info!(
                rows = ids.len(),
                entries = entries.len(),
                "recorded the offline entries of abandoned batches"
            );
            if rows.len() < ROWS_PER_WRITE {
                return;
            }
        }
    }
}

/// The settler's end of the queue.
pub struct SettlerInput(mpsc::Receiver<Settlement>);

#[cfg(test)]
mod tests;
