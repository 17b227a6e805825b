//! The registering side: one lease per process, kept alive by a task, and
//! every registration key put with it. When the process dies nothing keeps
//! the lease alive, and etcd deletes its keys once the TTL runs out.
//!
//! A lease can also be lost while the process lives (etcd unreachable for
//! longer than the TTL, or an operator revoked it). The task then grants a new
//! lease and puts every key the process still owns again under it, so a
//! network blip does not leave connected users unregistered.
//!
//! A put or delete that fails for want of etcd is tried again within its
//! request timeout: at once (with several members the next one takes it, see
//! `failover`), then after growing pauses (a new leader being elected); a
//! try left unanswered for a second is tried again too (sent to a leader
//! that died). So losing one member, even the leader, delays a registration
//! by about an election. Registering runs beside the connection it is for, so these
//! retries hold no client up.
//!
//! A put or delete that failed for want of etcd (down, timed out, no lease)
//! is remembered as pending and done again by the task after each answered
//! keep-alive (sent at once, then sooner than usual while writes are
//! pending) and after each new lease: what the process wants registered
//! ends up registered once etcd is back, however long it was away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use futures::{StreamExt, TryStreamExt};
use im_core::error::BackendError;
use im_core::ports::BackendResult;
use tokio::sync::{Notify, RwLock, RwLockReadGuard};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tracing::{info, warn};

use super::error::{is_lease_gone, map_etcd, timed_out};

/// Keys put at once when a new lease replaces a lost one.
const RESTORE_CONCURRENCY: usize = 64;
/// First wait before granting again after a failed grant; doubles up to the TTL.
const RETRY_MIN: Duration = Duration::from_millis(100);

/// The longest pause between two tries of one write: a write waiting for an
/// election is done within about this of its end.
const WRITE_RETRY_MAX: Duration = Duration::from_millis(500);
/// The longest one try of a write may take. A write sent through a member
/// whose leader just died is forwarded to the dead leader and never answered
/// (etcd gives up only after its own 7 s); tried again, it goes to the new
/// leader.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// When one try of a write that must end by `deadline` is given up.
fn attempt_deadline(deadline: Instant) -> Instant {
    deadline.min(Instant::now() + ATTEMPT_TIMEOUT)
}

/// After a write failed for want of etcd: waits `pause` (none the first
/// time, then from [`RETRY_MIN`], doubling up to [`WRITE_RETRY_MAX`]) and
/// says whether to try again, which is only while that still ends before
/// `deadline`.
async fn again(pause: &mut Duration, deadline: Instant) -> bool {
    if Instant::now() + *pause >= deadline {
        return false;
    }
    sleep(*pause).await;
    *pause = (*pause * 2).clamp(RETRY_MIN, WRITE_RETRY_MAX);
    true
}

pub(super) struct Registrar {
    client: Client,
    ttl: Duration,
    timeout: Duration,
    /// The lease keys are put with: `None` before the first registration and
    /// while a lost lease is being replaced. A write holds a read guard across
    /// its etcd request; the replacement holds the write guard while it puts
    /// every owned key again, so no write slips in between the listing of
    /// `owned` and the new lease.
    lease: RwLock<Option<i64>>,
    /// Wakes writes waiting for a lease.
    granted: Notify,
    /// Wakes the keep-alive task at once: a write found the lease gone, or
    /// failed for want of etcd and is pending.
    hurry: Notify,
    /// The keys this process registered and has not unregistered.
    owned: parking_lot::Mutex<HashSet<String>>,
    /// Writes that failed for want of etcd, to do again: key → whether it
    /// must be present (put) or absent (delete).
    pending: parking_lot::Mutex<HashMap<String, bool>>,
    /// The lease task, started by the first registration.
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Registrar {
    /// `ttl` is rounded up to whole seconds (etcd's unit).
    pub fn new(client: Client, ttl: Duration, timeout: Duration) -> Self {
        Self {
            client,
            ttl,
            timeout,
            lease: RwLock::new(None),
            granted: Notify::new(),
            hurry: Notify::new(),
            owned: parking_lot::Mutex::new(HashSet::new()),
            pending: parking_lot::Mutex::new(HashMap::new()),
            task: parking_lot::Mutex::new(None),
        }
    }

    /// Puts `key` with the process's lease, granting the lease on first use.
    /// On an `Unavailable` error (etcd away) the key stays owned and pending:
    /// the lease task puts it once etcd answers. On any other error it is
    /// not owned.
    pub async fn put(self: &Arc<Self>, key: String) -> BackendResult<()> {
        self.start();
        // Owned before the put: a lease replaced from now on restores it.
        self.owned.lock().insert(key.clone());
        self.pending.lock().remove(&key);
        let result = self.put_now(&key).await;
        match &result {
            Ok(()) => {}
            Err(BackendError::Unavailable(_)) => {
                self.pending.lock().insert(key, true);
                self.hurry.notify_one();
            }
            Err(_) => {
                self.owned.lock().remove(&key);
            }
        }
        result
    }

    async fn put_now(&self, key: &str) -> BackendResult<()> {
        let deadline = Instant::now() + self.timeout;
        let mut stale = None;
        let mut pause = Duration::ZERO;
        loop {
            let (_guard, lease) = self.current_lease(stale, deadline).await?;
            let mut client = self.client.clone();
            let put = client.put(key, "", Some(PutOptions::new().with_lease(lease)));
            return match timeout_at(attempt_deadline(deadline), put).await {
                Ok(Ok(_)) => Ok(()),
                // The keep-alive task has not noticed yet: hurry it, and wait
                // for the next lease (which restores `key` on its own).
                Ok(Err(e)) if is_lease_gone(&e) => {
                    self.hurry.notify_one();
                    stale = Some(lease);
                    continue;
                }
                Ok(Err(e)) => match map_etcd(e) {
                    BackendError::Unavailable(_) if again(&mut pause, deadline).await => continue,
                    error => Err(error),
                },
                Err(_) if again(&mut pause, deadline).await => continue,
                Err(_) => Err(timed_out("put")),
            };
        }
    }

    /// Deletes `key` and stops owning it. Deleting a missing key succeeds.
    /// On an `Unavailable` error the delete is pending: the lease task does
    /// it once etcd answers (until then the key lives as long as the lease).
    pub async fn delete(&self, key: &str) -> BackendResult<()> {
        let result = self.delete_now(key).await;
        if let Err(BackendError::Unavailable(_)) = &result {
            self.pending.lock().insert(key.to_owned(), false);
            self.hurry.notify_one();
        }
        result
    }

    async fn delete_now(&self, key: &str) -> BackendResult<()> {
        let deadline = Instant::now() + self.timeout;
        // Not for the lease: to keep a replacement from putting `key` again
        // after the delete (one in progress past the deadline may still: the
        // delete is then pending and done again after it).
        let gate = timeout_at(deadline, self.lease.read()).await;
        self.owned.lock().remove(key);
        self.pending.lock().remove(key);
        let _gate = gate.map_err(|_| timed_out("delete"))?;
        let mut pause = Duration::ZERO;
        loop {
            return match timeout_at(attempt_deadline(deadline), self.client.clone().delete(key, None)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => match map_etcd(e) {
                    BackendError::Unavailable(_) if again(&mut pause, deadline).await => continue,
                    error => Err(error),
                },
                Err(_) if again(&mut pause, deadline).await => continue,
                Err(_) => Err(timed_out("delete")),
            };
        }
    }

    /// Does the pending writes again (etcd answers: a keep-alive did). A put
    /// is done only while the key is still owned; one that fails for want of
    /// etcd stays pending, unless a newer write of the key came meanwhile.
    async fn resync(&self) {
        let pending: Vec<(String, bool)> = self.pending.lock().drain().collect();
        if pending.is_empty() {
            return;
        }
        let count = pending.len();
        futures::stream::iter(pending)
            .for_each_concurrent(RESTORE_CONCURRENCY, |(key, present)| async move {
                let result = if present {
                    if !self.owned.lock().contains(&key) {
                        return;
                    }
                    let result = self.put_now(&key).await;
                    // Removed while the put was in flight: take it back out.
                    if result.is_ok() && !self.owned.lock().contains(&key) {
                        self.delete_now(&key).await
                    } else {
                        result
                    }
                } else {
                    self.delete_now(&key).await
                };
                if let Err(error) = result {
                    warn!(%key, %error, "registry write still failing; retrying after the next keep-alive");
                    if matches!(error, BackendError::Unavailable(_)) {
                        self.pending.lock().entry(key).or_insert(present);
                    }
                }
            })
            .await;
        info!(count, "pending registry writes done again");
    }

    /// Stops keeping the lease alive and revokes it: etcd deletes every key of
    /// this process at once (a graceful shutdown). A later registration
    /// starts a new lease.
    pub async fn revoke(&self) -> BackendResult<()> {
        self.stop();
        let deadline = Instant::now() + self.timeout;
        let mut slot = timeout_at(deadline, self.lease.write()).await.map_err(|_| timed_out("revoke"))?;
        self.owned.lock().clear();
        let Some(lease) = slot.take() else { return Ok(()) };
        match timeout_at(deadline, self.client.clone().lease_revoke(lease)).await {
            Ok(Ok(_)) => Ok(()),
            // Already expired: its keys are gone, which is what was asked.
            Ok(Err(e)) if is_lease_gone(&e) => Ok(()),
            Ok(Err(e)) => Err(map_etcd(e)),
            Err(_) => Err(timed_out("lease revoke")),
        }
    }

    /// Stops the lease task (the lease then expires after its TTL).
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }

    fn start(self: &Arc<Self>) {
        let mut task = self.task.lock();
        if task.as_ref().is_none_or(JoinHandle::is_finished) {
            *task = Some(tokio::spawn(self.clone().run()));
        }
    }

    /// Waits (until `deadline`) for a lease other than `stale` and returns it
    /// with the read guard that keeps it current.
    async fn current_lease(
        &self,
        stale: Option<i64>,
        deadline: Instant,
    ) -> BackendResult<(RwLockReadGuard<'_, Option<i64>>, i64)> {
        loop {
            // Registered before looking, so a grant in between still wakes us.
            let granted = self.granted.notified();
            tokio::pin!(granted);
            granted.as_mut().enable();
            let slot = timeout_at(deadline, self.lease.read()).await.map_err(|_| timed_out("lease"))?;
            if let Some(lease) = slot.filter(|&lease| Some(lease) != stale) {
                return Ok((slot, lease));
            }
            drop(slot);
            if timeout_at(deadline, granted).await.is_err() {
                return Err(BackendError::unavailable("no etcd lease: etcd did not grant one in time"));
            }
        }
    }

    /// The lease task: grant, restore, keep alive until lost, again.
    async fn run(self: Arc<Self>) {
        let mut retry = RETRY_MIN;
        loop {
            let lease = match self.grant().await {
                Ok(lease) => lease,
                Err(e) => {
                    warn!(error = %e, retry_in = ?retry, "etcd lease grant failed");
                    sleep(retry).await;
                    retry = (retry * 2).min(self.ttl);
                    continue;
                }
            };
            // Keep the new lease alive while restoring: restoring many keys
            // may take longer than the TTL.
            let keep_alive = self.keep_alive(lease);
            tokio::pin!(keep_alive);
            tokio::select! {
                restored = self.restore(lease) => match restored {
                    Ok(restored) => {
                        retry = RETRY_MIN;
                        info!(lease, restored, "etcd lease granted");
                        keep_alive.await;
                        warn!(lease, "etcd lease lost, granting a new one");
                    }
                    // The lease is abandoned (it expires by itself); the
                    // next one restores every key.
                    Err(e) => {
                        warn!(lease, error = %e, retry_in = ?retry, "restoring registrations failed");
                        sleep(retry).await;
                        retry = (retry * 2).min(self.ttl);
                    }
                },
                () = &mut keep_alive => warn!(lease, "etcd lease lost while restoring, granting a new one"),
            }
            let mut slot = self.lease.write().await;
            if *slot == Some(lease) {
                *slot = None;
            }
        }
    }

    async fn grant(&self) -> BackendResult<i64> {
        let ttl = self.ttl.as_secs_f64().ceil() as i64;
        match timeout(self.timeout, self.client.clone().lease_grant(ttl, None)).await {
            Ok(Ok(granted)) => Ok(granted.id()),
            Ok(Err(e)) => Err(map_etcd(e)),
            Err(_) => Err(timed_out("lease grant")),
        }
    }

    /// Puts every owned key with `lease`, then makes it the current lease.
    /// Returns how many keys were put.
    async fn restore(&self, lease: i64) -> BackendResult<usize> {
        let mut slot = self.lease.write().await;
        let keys: Vec<String> = self.owned.lock().iter().cloned().collect();
        let count = keys.len();
        futures::stream::iter(keys)
            .map(|key| async move {
                let mut client = self.client.clone();
                match timeout(self.timeout, client.put(key, "", Some(PutOptions::new().with_lease(lease)))).await {
                    Ok(result) => result.map(drop).map_err(map_etcd),
                    Err(_) => Err(timed_out("put")),
                }
            })
            .buffer_unordered(RESTORE_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        *slot = Some(lease);
        drop(slot);
        // Every owned key was just put: only pending deletes are left.
        self.pending.lock().retain(|_, present| !*present);
        self.granted.notify_waiters();
        Ok(count)
    }

    /// Keeps `lease` alive every third of the TTL; returns when etcd says it
    /// is gone. A broken stream is reopened: only etcd knows whether the lease
    /// outlived the break. Reopening is retried soon at first (the stream's
    /// member died, the next one answers), then up to every interval.
    async fn keep_alive(&self, lease: i64) {
        let interval = self.ttl / 3;
        let mut retry = RETRY_MIN;
        loop {
            let (mut keeper, mut responses) =
                match timeout(self.timeout, self.client.clone().lease_keep_alive(lease)).await {
                    Ok(Ok(stream)) => {
                        retry = RETRY_MIN;
                        stream
                    }
                    Ok(Err(e)) if is_lease_gone(&e) => return,
                    Ok(Err(e)) => {
                        warn!(lease, error = %e, retry_in = ?retry, "etcd keep-alive failed");
                        sleep(retry).await;
                        retry = (retry * 2).min(interval);
                        continue;
                    }
                    Err(_) => {
                        warn!(lease, "etcd keep-alive timed out");
                        continue;
                    }
                };
            // While writes are pending, keep-alives (each followed by doing
            // them again) come sooner: from RETRY_MIN apart, doubling.
            let mut pending_pause = RETRY_MIN;
            loop {
                let pause = if self.pending.lock().is_empty() {
                    pending_pause = RETRY_MIN;
                    interval
                } else {
                    let pause = pending_pause;
                    pending_pause = (pending_pause * 2).min(interval);
                    pause
                };
                tokio::select! {
                    () = sleep(pause) => {}
                    () = self.hurry.notified() => {}
                }
                if let Err(e) = keeper.keep_alive().await {
                    warn!(lease, error = %e, "etcd keep-alive stream closed");
                    break;
                }
                match timeout(self.timeout, responses.message()).await {
                    Ok(Ok(Some(response))) if response.ttl() > 0 => self.resync().await,
                    Ok(Ok(Some(_))) => return,
                    Ok(Ok(None)) => {
                        warn!(lease, "etcd keep-alive stream ended");
                        break;
                    }
                    Ok(Err(e)) => {
                        warn!(lease, error = %e, "etcd keep-alive failed");
                        break;
                    }
                    Err(_) => {
                        warn!(lease, "etcd keep-alive timed out");
                        break;
                    }
                }
            }
        }
    }
}
