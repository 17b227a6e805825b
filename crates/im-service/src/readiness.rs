//! `/ready`: what background probes last found, one task per dependency
//! (G9). A request never waits on a dependency: it reads the kept results,
//! so `/ready` answers at once whatever hangs. A dependency the process
//! cannot do its core job without makes it unready when down
//! ([`Readiness::add`]); one that only degrades a feature shows in the body
//! and in `im_dependency_up`, never in the status ([`Readiness::add_degrading`]).
//!
//! A result is trusted for [`ProbeTiming::stale_after`]: a probe task that
//! stopped reporting (wedged, or not run yet) reads as down, never as the
//! last good answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub type Probe = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Told each result of one dependency's probe.
type DependencyObserver = Box<dyn Fn(&Result<(), String>) + Send + Sync>;

/// Told each probe result of a dependency, as it comes.
pub type Observer = Arc<dyn Fn(&'static str, &Result<(), String>) + Send + Sync>;

/// How often the dependencies are probed, and how long a result counts.
#[derive(Clone, Copy, Debug)]
pub struct ProbeTiming {
    /// Between probes of a dependency that answered.
    pub every_up: Duration,
    /// Between probes of one that did not: its return is noticed (and a
    /// breaker over it closed) within this.
    pub every_down: Duration,
    /// A probe without an answer by then is a failure.
    pub timeout: Duration,
    /// A result older than this reads as down.
    pub stale_after: Duration,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        Self {
            every_up: Duration::from_secs(1),
            every_down: Duration::from_millis(250),
            timeout: Duration::from_secs(1),
            // A few periods, probe time included: only a probe task that has
            // stopped reporting gets here.
            stale_after: Duration::from_secs(5),
        }
    }
}

struct Dependency {
    name: &'static str,
    probe: Probe,
    /// Whether its being down makes the process unready.
    critical: bool,
    /// Told each result before it is kept (e.g. a circuit breaker).
    observers: Vec<DependencyObserver>,
    last: Mutex<Option<Observation>>,
}

struct Observation {
    result: Result<(), String>,
    at: Instant,
}

pub struct Readiness {
    dependencies: Vec<Arc<Dependency>>,
    timing: ProbeTiming,
    /// False while starting and once shutdown began.
    serving: AtomicBool,
}

pub struct ReadyReport {
    pub ready: bool,
    /// Each dependency: its last result (down when none is recent), and how
    /// old that result is.
    pub checks: Vec<(&'static str, Result<(), String>, Option<Duration>)>,
    /// The dependencies that only degrade a feature when down.
    pub degrading: Vec<&'static str>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::with_timing(ProbeTiming::default())
    }
}

impl Readiness {
    pub fn with_timing(timing: ProbeTiming) -> Self {
        Self { dependencies: Vec::new(), timing, serving: AtomicBool::new(false) }
    }

    /// A dependency the process cannot do its core job without.
    pub fn add(&mut self, name: &'static str, probe: Probe) {
        self.push(name, probe, true);
    }

    /// A dependency whose outage degrades a feature but leaves the process
    /// doing its job: reported, never unready.
    pub fn add_degrading(&mut self, name: &'static str, probe: Probe) {
        self.push(name, probe, false);
    }

    fn push(&mut self, name: &'static str, probe: Probe, critical: bool) {
        let dependency = Dependency { name, probe, critical, observers: Vec::new(), last: Mutex::new(None) };
        self.dependencies.push(Arc::new(dependency));
    }

    /// Tells `observer` every probe result of `name` (added before).
    pub fn observe(&mut self, name: &'static str, observer: impl Fn(&Result<(), String>) + Send + Sync + 'static) {
        let dependency = self
            .dependencies
            .iter_mut()
            .find(|dependency| dependency.name == name)
            .and_then(Arc::get_mut)
            .unwrap_or_else(|| panic!("observing {name}, which was not added (or probes already run)"));
        dependency.observers.push(Box::new(observer));
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// What the probes last found: no waiting on any dependency.
    pub fn report(&self) -> ReadyReport {
        let serving = self.serving.load(Ordering::SeqCst);
        let now = Instant::now();
        let checks: Vec<_> = self
            .dependencies
            .iter()
            .map(|dependency| {
                let last = dependency.last.lock().expect("lock poisoned");
                let (result, age) = match &*last {
                    None => (Err("not probed yet".to_owned()), None),
                    Some(observation) => {
                        let age = now.saturating_duration_since(observation.at);
                        let result = if age > self.timing.stale_after {
                            Err(format!("no probe result for {} ms", age.as_millis()))
                        } else {
                            observation.result.clone()
                        };
                        (result, Some(age))
                    }
                };
                (dependency.name, result, age)
            })
            .collect();
        let degrading: Vec<&'static str> = self
            .dependencies
            .iter()
            .filter(|dependency| !dependency.critical)
            .map(|dependency| dependency.name)
            .collect();
        let ready = serving && checks.iter().all(|(name, r, _)| r.is_ok() || degrading.contains(name));
        ReadyReport { ready, checks, degrading }
    }

    /// Probes every dependency in a task of its own until `shutdown`, telling
    /// `observer` each result. One task per dependency: one that hangs until
    /// its timeout delays nobody else's result.
    pub async fn probe_until(self: Arc<Self>, observer: Observer, shutdown: CancellationToken) {
        let loops = self
            .dependencies
            .iter()
            .map(|dependency| probe_loop(dependency.clone(), self.timing, observer.clone(), shutdown.clone()));
        futures::future::join_all(loops).await;
    }
}

async fn probe_loop(dependency: Arc<Dependency>, timing: ProbeTiming, observer: Observer, shutdown: CancellationToken) {
    loop {
        let started = Instant::now();
        let probed = tokio::time::timeout(timing.timeout, (dependency.probe)());
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            probed = probed => probed.unwrap_or_else(|_| Err(format!("no answer within {:?}", timing.timeout))),
        };
        for observe in &dependency.observers {
            observe(&result);
        }
        observer(dependency.name, &result);
        let every = if result.is_ok() { timing.every_up } else { timing.every_down };
        *dependency.last.lock().expect("lock poisoned") = Some(Observation { result, at: Instant::now() });
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(started + every) => {}
        }
    }
}

impl ReadyReport {
    pub fn to_json(&self) -> String {
        let deps: serde_json::Map<String, serde_json::Value> = self
            .checks
            .iter()
            .map(|(name, r, age)| {
                let mut v = match r {
                    Ok(()) => serde_json::json!({"status": "up"}),
                    Err(e) => serde_json::json!({"status": "down", "error": e}),
                };
                if let Some(age) = age {
                    v["checked_ms_ago"] = serde_json::Value::from(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
                }
                if self.degrading.contains(name) {
                    v["degrades_only"] = serde_json::Value::Bool(true);
                }
                ((*name).to_owned(), v)
            })
            .collect();
        serde_json::json!({"ready": self.ready, "dependencies": deps}).to_string()
    }
}

/// A probe that a TCP connection to `addr` (`host:port`) can be opened: the
/// peer service is listening. Cheaper than a call, and needs no credential.
/// A probe of a state the process keeps itself (a watch is established):
/// up while `up` says so, else down with `down` as the reason.
pub fn flag_probe(up: impl Fn() -> bool + Send + Sync + 'static, down: &'static str) -> Probe {
    Box::new(move || {
        let result = if up() { Ok(()) } else { Err(down.to_owned()) };
        Box::pin(std::future::ready(result))
    })
}

pub fn tcp_probe(addr: String) -> Probe {
    Box::new(move || {
        let addr = addr.clone();
        Box::pin(async move {
            tokio::net::TcpStream::connect(&addr).await.map(drop).map_err(|e| format!("connecting to {addr}: {e}"))
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn answering(result: Result<(), &'static str>) -> Probe {
        Box::new(move || Box::pin(async move { result.map_err(str::to_owned) }))
    }

    /// A probe that never answers, like a database that accepts connections
    /// and then says nothing.
    fn hanging() -> Probe {
        Box::new(|| Box::pin(futures::future::pending()))
    }

    fn quiet() -> Observer {
        Arc::new(|_, _| {})
    }

    const FAST: ProbeTiming = ProbeTiming {
        every_up: Duration::from_millis(1000),
        every_down: Duration::from_millis(250),
        timeout: Duration::from_millis(1000),
        stale_after: Duration::from_millis(5000),
    };

    /// Runs the probes for `run` of (paused) time, then reports.
    async fn report_after(readiness: &Arc<Readiness>, run: Duration) -> ReadyReport {
        let shutdown = CancellationToken::new();
        let probes = tokio::spawn(readiness.clone().probe_until(quiet(), shutdown.clone()));
        tokio::time::sleep(run).await;
        let report = readiness.report();
        shutdown.cancel();
        probes.await.unwrap();
        report
    }

    fn body(report: &ReadyReport) -> serde_json::Value {
        serde_json::from_str(&report.to_json()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_degrading_dependency_shows_down_without_making_the_process_unready() {
        let mut readiness = Readiness::with_timing(FAST);
        readiness.add("store", answering(Ok(())));
        readiness.add_degrading("kms", answering(Err("connection refused")));
        readiness.set_serving(true);
        let readiness = Arc::new(readiness);
        let report = report_after(&readiness, Duration::from_millis(10)).await;
        assert!(report.ready);
        let said = body(&report);
        assert_eq!(said["dependencies"]["kms"]["status"], "down");
        assert_eq!(said["dependencies"]["kms"]["error"], "connection refused");
        assert_eq!(said["dependencies"]["kms"]["degrades_only"], true);
        assert!(said["dependencies"]["store"].get("degrades_only").is_none());

        let mut readiness = Readiness::with_timing(FAST);
        readiness.add("store", answering(Ok(())));
        readiness.add("redis", answering(Err("timeout")));
        readiness.set_serving(true);
        let readiness = Arc::new(readiness);
        assert!(!report_after(&readiness, Duration::from_millis(10)).await.ready, "a core dependency down is unready");
    }

    /// The report is read from kept state: with a probe that never answers,
    /// it comes at once (no await at all), says "down" once the probe's
    /// timeout passed, and the other dependencies are probed meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_never_holds_the_report() {
        let mut readiness = Readiness::with_timing(FAST);
        readiness.add("mysql", hanging());
        readiness.add_degrading("etcd", answering(Ok(())));
        readiness.set_serving(true);
        let readiness = Arc::new(readiness);

        let report = report_after(&readiness, Duration::from_millis(10)).await;
        assert!(!report.ready, "no result yet is not a result");
        let said = body(&report);
        assert_eq!(said["dependencies"]["mysql"]["error"], "not probed yet");
        assert_eq!(said["dependencies"]["etcd"]["status"], "up", "the hanging probe does not delay the others");

        let report = report_after(&readiness, FAST.timeout + Duration::from_millis(10)).await;
        assert!(!report.ready);
        let error = body(&report)["dependencies"]["mysql"]["error"].as_str().unwrap().to_owned();
        assert!(error.starts_with("no answer within"), "{error}");
    }

    /// A result is trusted for `stale_after` only: a probe task that stopped
    /// (here: never run again) reads as down.
    #[tokio::test(start_paused = true)]
    async fn an_old_result_reads_as_down() {
        let mut readiness = Readiness::with_timing(FAST);
        readiness.add("store", answering(Ok(())));
        readiness.set_serving(true);
        let readiness = Arc::new(readiness);
        assert!(report_after(&readiness, Duration::from_millis(10)).await.ready);
        tokio::time::sleep(FAST.stale_after + Duration::from_millis(1)).await;
        let report = readiness.report();
        assert!(!report.ready);
        let error = body(&report)["dependencies"]["store"]["error"].as_str().unwrap().to_owned();
        assert!(error.starts_with("no probe result for"), "{error}");
    }

    /// Each dependency is probed on its own period: every second while up,
    /// four times a second while down; observers see every result.
    #[tokio::test(start_paused = true)]
    async fn probes_run_in_the_background_faster_while_down() {
        let (ups, downs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut readiness = Readiness::with_timing(FAST);
        readiness.add("up", answering(Ok(())));
        readiness.add("down", answering(Err("refused")));
        let seen = downs.clone();
        readiness.observe("down", move |result| {
            assert!(result.is_err());
            seen.fetch_add(1, Ordering::SeqCst);
        });
        let counted = ups.clone();
        let observer: Observer = Arc::new(move |name, _| {
            if name == "up" {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let readiness = Arc::new(readiness);
        let shutdown = CancellationToken::new();
        let probes = tokio::spawn(readiness.clone().probe_until(observer, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        shutdown.cancel();
        probes.await.unwrap();
        assert_eq!(ups.load(Ordering::SeqCst), 3, "at 0, 1 and 2 s");
        assert_eq!(downs.load(Ordering::SeqCst), 9, "every 250 ms from 0 to 2 s");
        assert!(!readiness.report().ready, "not serving yet");
    }
}
