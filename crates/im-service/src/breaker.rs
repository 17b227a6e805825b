//! A circuit breaker in front of a critical dependency (G9: fail fast). While
//! the dependency is down, calls are refused at once with `UNAVAILABLE` and
//! a retry hint, instead of each waiting out the driver's timeouts (seconds).
//!
//! - **Closed**: calls go through. [`BreakerSettings::failures_to_open`]
//!   unavailable results in a row, a call still running after
//!   [`BreakerSettings::stuck_after`], or a failed background probe open it.
//! - **Open**: [`Breaker::check`] refuses. A successful probe closes it (the
//!   readiness probe is the usual half-open trial: probing does not cost a
//!   client anything); without one, after [`BreakerSettings::half_open_after`]
//!   the next call goes through as a trial.
//! - **Half-open**: one trial call in flight, others refused; its success
//!   closes the breaker, its failure opens it again.
//!
//! Only `BackendError::Unavailable` counts as a failure: a refused statement
//! says the dependency answered.
//!
//! A caller waiting for a call made on its behalf (a send queued for the
//! commit) is released by [`Breaker::opened`] when the breaker opens, rather
//! than waiting for that call to give up. The call itself is never cut short:
//! it may still commit, and a resend with the same `client_msg_id` then gets
//! the first ack (G3).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use im_core::ImError;
use im_core::error::BackendError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

/// The breakers a send passes: the message store's, and the seq allocator's
/// and dedup cache's when they are Redis. A send is refused while either is
/// open, and released when either opens while it waits.
#[derive(Clone)]
pub struct SendBreakers {
    pub store: Arc<Breaker>,
    /// Redis (seqs and dedup); none in process.
    pub seqs: Option<Arc<Breaker>>,
}

impl SendBreakers {
    /// Whether a send may go ahead now ([`Breaker::check`] of each).
    pub fn check(&self) -> Result<(), ImError> {
        self.store.check()?;
        self.seqs.as_ref().map_or(Ok(()), |seqs| seqs.check())
    }

    /// Resolves at the next opening of either breaker after this call, with
    /// the refusal its caller gets.
    pub fn opened(&self) -> impl Future<Output = ImError> + Send + 'static {
        let (store, store_refusal) = (self.store.opened(), self.store.refusal());
        let seqs = self.seqs.as_ref().map(|seqs| (seqs.opened(), seqs.refusal()));
        async move {
            let seqs_opened = async {
                match seqs {
                    Some((opened, refusal)) => {
                        opened.await;
                        refusal
                    }
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                () = store => store_refusal,
                refusal = seqs_opened => refusal,
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BreakerSettings {
    /// Unavailable results in a row that open the breaker.
    pub failures_to_open: u32,
    /// A call still running after this opens the breaker: a dependency that
    /// hangs fails no call for seconds, and must not hold clients that long.
    /// Well above a commit's time under load (milliseconds).
    pub stuck_after: Duration,
    /// How long it stays open before a call may go through as a trial, when
    /// no probe closed it first.
    pub half_open_after: Duration,
    /// What refused callers are told to wait before retrying.
    pub retry_after: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures_to_open: 3,
            stuck_after: Duration::from_secs(1),
            half_open_after: Duration::from_secs(2),
            // About when a probe (every 250 ms while down) has seen a
            // dependency that came back.
            retry_after: Duration::from_millis(500),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// `im_breaker_state`'s value.
    fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// Why a breaker opened (`im_breaker_opened_total{cause}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Failures,
    Stuck,
    Probe,
}

impl Cause {
    const ALL: [Cause; 3] = [Cause::Failures, Cause::Stuck, Cause::Probe];

    fn as_str(self) -> &'static str {
        match self {
            Self::Failures => "failures",
            Self::Stuck => "stuck",
            Self::Probe => "probe",
        }
    }
}

enum Inner {
    Closed { failures: u32 },
    Open { since: Instant },
    HalfOpen,
}

pub struct Breaker {
    dependency: &'static str,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    /// Bumped each time the breaker opens, for callers waiting on a call.
    openings: watch::Sender<u64>,
    metrics: BreakerMetrics,
}

impl Breaker {
    pub fn new(dependency: &'static str, settings: BreakerSettings, metrics: BreakerMetrics) -> Self {
        metrics.state.get_or_create(&DependencyLabel { dependency }).set(BreakerState::Closed.gauge());
        drop(metrics.rejections.get_or_create(&DependencyLabel { dependency }));
        for cause in Cause::ALL {
            drop(metrics.opened.get_or_create(&OpenedLabels { dependency, cause: cause.as_str() }));
        }
        Self {
            dependency,
            settings,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            openings: watch::Sender::new(0),
            metrics,
        }
    }

    pub fn dependency(&self) -> &'static str {
        self.dependency
    }

    pub fn state(&self) -> BreakerState {
        match &*self.inner.lock().expect("lock poisoned") {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may be made now: refused (and counted) while open, or
    /// while a half-open trial is in flight. Open for `half_open_after`
    /// admits again: the next call is the trial.
    pub fn check(&self) -> Result<(), ImError> {
        let refused = match &*self.inner.lock().expect("lock poisoned") {
            Inner::Closed { .. } => false,
            Inner::Open { since } => since.elapsed() < self.settings.half_open_after,
            Inner::HalfOpen => true,
        };
        if refused {
            self.metrics.rejections.get_or_create(&DependencyLabel { dependency: self.dependency }).inc();
            return Err(self.refusal());
        }
        Ok(())
    }

    /// The error a refused or released caller gets.
    pub fn refusal(&self) -> ImError {
        ImError::unavailable(format!("{} is unavailable; retry later with the same client_msg_id", self.dependency))
            .with_retry_after(self.settings.retry_after)
    }

    /// Runs `call` (admitted by [`Breaker::check`] before) and records its
    /// outcome. Opens the breaker if it is still running after
    /// `stuck_after`, but lets it finish: the caller gets its real result.
    pub async fn call<T>(&self, call: impl Future<Output = Result<T, BackendError>>) -> Result<T, BackendError> {
        {
            let mut inner = self.inner.lock().expect("lock poisoned");
            if matches!(*inner, Inner::Open { .. }) {
                *inner = Inner::HalfOpen;
                drop(inner);
                self.publish(BreakerState::HalfOpen);
            }
        }
        tokio::pin!(call);
        let result = tokio::select! {
            result = &mut call => result,
            () = tokio::time::sleep(self.settings.stuck_after) => {
                tracing::warn!(dependency = self.dependency, after = ?self.settings.stuck_after, "call stuck; breaker open");
                self.open(Cause::Stuck);
                call.await
            }
        };
        match &result {
            Ok(_) => self.close(),
            Err(BackendError::Unavailable(_)) => self.failed(),
            // The dependency answered; what it said is not an outage.
            Err(BackendError::Other(_)) => {}
        }
        result
    }

    /// A background probe's result: a failure opens the breaker (the probe
    /// has its own timeout, and `/ready` already says the dependency is
    /// down), a success closes it.
    pub fn probed(&self, result: &Result<(), String>) {
        match result {
            Ok(()) => self.close(),
            Err(_) => self.open(Cause::Probe),
        }
    }

    /// Resolves at the next opening after this call: a caller waiting on a
    /// call made for it stops waiting then.
    pub fn opened(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut openings = self.openings.subscribe();
        async move {
            // An error: the breaker is gone, and nothing opens it any more.
            if openings.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
        }
    }

    fn failed(&self) {
        let mut inner = self.inner.lock().expect("lock poisoned");
        match &mut *inner {
            Inner::Closed { failures } => {
                *failures += 1;
                if *failures >= self.settings.failures_to_open {
                    drop(inner);
                    self.open(Cause::Failures);
                }
            }
            Inner::HalfOpen => {
                drop(inner);
                self.open(Cause::Failures);
            }
            Inner::Open { .. } => {}
        }
    }

    fn open(&self, cause: Cause) {
        {
            let mut inner = self.inner.lock().expect("lock poisoned");
            if matches!(*inner, Inner::Open { .. }) {
                return;
            }
            *inner = Inner::Open { since: Instant::now() };
        }
        tracing::warn!(dependency = self.dependency, cause = cause.as_str(), "circuit breaker open");
        self.metrics.opened.get_or_create(&OpenedLabels { dependency: self.dependency, cause: cause.as_str() }).inc();
        self.publish(BreakerState::Open);
        self.openings.send_modify(|n| *n += 1);
    }

    fn close(&self) {
        let was_closed = {
            let mut inner = self.inner.lock().expect("lock poisoned");
            let was_closed = matches!(*inner, Inner::Closed { .. });
            *inner = Inner::Closed { failures: 0 };
            was_closed
        };
        if !was_closed {
            tracing::info!(dependency = self.dependency, "circuit breaker closed");
            self.publish(BreakerState::Closed);
        }
    }

    fn publish(&self, state: BreakerState) {
        self.metrics.state.get_or_create(&DependencyLabel { dependency: self.dependency }).set(state.gauge());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenedLabels {
    dependency: &'static str,
    cause: &'static str,
}

/// The breakers' metrics, shared by every breaker of a process.
#[derive(Clone, Default)]
pub struct BreakerMetrics {
    state: Family<DependencyLabel, Gauge>,
    rejections: Family<DependencyLabel, Counter>,
    opened: Family<OpenedLabels, Counter>,
}

impl BreakerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "breaker_state",
            "Circuit breaker of a dependency: 0 closed, 1 open (calls refused), 2 half-open (one trial call)",
            self.state.clone(),
        );
        registry.register(
            "breaker_rejections",
            "Calls refused at once by an open circuit breaker (UNAVAILABLE with a retry hint)",
            self.rejections.clone(),
        );
        registry.register(
            "breaker_opened",
            "Times a circuit breaker opened, by cause: failures in a row, a stuck call, a failed probe",
            self.opened.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: BreakerSettings = BreakerSettings {
        failures_to_open: 3,
        stuck_after: Duration::from_secs(1),
        half_open_after: Duration::from_secs(2),
        retry_after: Duration::from_millis(500),
    };

    fn breaker() -> Breaker {
        Breaker::new("mysql", SETTINGS, BreakerMetrics::default())
    }

    fn down() -> Result<(), BackendError> {
        Err(BackendError::unavailable("connection refused"))
    }

    fn rejections(breaker: &Breaker) -> u64 {
        breaker.metrics.rejections.get_or_create(&DependencyLabel { dependency: "mysql" }).get()
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_refuses_with_a_retry_hint() {
        let breaker = breaker();
        for _ in 0..2 {
            assert!(breaker.call(async { down() }).await.is_err());
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
        // A success in between starts the count again.
        breaker.call(async { Ok(()) }).await.unwrap();
        for _ in 0..2 {
            let _ = breaker.call(async { down() }).await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        let _ = breaker.call(async { down() }).await;
        assert_eq!(breaker.state(), BreakerState::Open);

        let refused = breaker.check().unwrap_err();
        assert_eq!(refused.code, im_core::ErrorCode::Unavailable);
        assert_eq!(refused.retry_after, Some(SETTINGS.retry_after));
        assert_eq!(rejections(&breaker), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_is_not_an_outage_counts_for_nothing() {
        let breaker = breaker();
        for _ in 0..10 {
            let _ = breaker.call(async { Err::<(), _>(BackendError::other("duplicate key")) }).await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    /// A call that hangs opens the breaker after `stuck_after` and releases
    /// whoever waits on `opened`, while the call itself runs to its end.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_call_opens_the_breaker_and_releases_its_waiters() {
        let breaker = std::sync::Arc::new(breaker());
        let released = tokio::spawn(breaker.opened());
        let call = {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                breaker
                    .call(async {
                        tokio::time::sleep(Duration::from_secs(6)).await;
                        down()
                    })
                    .await
            })
        };
        tokio::time::sleep(SETTINGS.stuck_after + Duration::from_millis(1)).await;
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(released.is_finished(), "the waiter was released at the opening");
        assert!(!call.is_finished(), "the stuck call is not cut short");
        assert!(call.await.unwrap().is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    /// Open, then half-open after `half_open_after`: one trial goes through,
    /// others are refused while it runs; its failure opens again, its success
    /// closes.
    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_trial_through() {
        let breaker = std::sync::Arc::new(breaker());
        breaker.probed(&Err("refused".to_owned()));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.check().is_err());

        tokio::time::sleep(SETTINGS.half_open_after).await;
        breaker.check().expect("a trial may go");
        let _ = breaker.call(async { down() }).await;
        assert_eq!(breaker.state(), BreakerState::Open, "a failed trial opens again");
        assert!(breaker.check().is_err(), "and the wait starts over");

        tokio::time::sleep(SETTINGS.half_open_after).await;
        breaker.check().expect("a trial may go");
        let trial = {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                breaker
                    .call(async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.check().is_err(), "one trial at a time");
        trial.await.unwrap().unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.check().unwrap();
    }

    /// The background probe is the usual half-open trial: its success closes
    /// the breaker at once, whatever time is left.
    #[tokio::test(start_paused = true)]
    async fn a_probe_opens_and_closes_it() {
        let breaker = breaker();
        let released = tokio::spawn(breaker.opened());
        breaker.probed(&Err("no answer within 1s".to_owned()));
        assert_eq!(breaker.state(), BreakerState::Open);
        released.await.unwrap();
        breaker.probed(&Ok(()));
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.check().unwrap();
        let opened = |cause: &'static str| {
            breaker.metrics.opened.get_or_create(&OpenedLabels { dependency: "mysql", cause }).get()
        };
        assert_eq!((opened("probe"), opened("failures"), opened("stuck")), (1, 0, 0));
    }
}
