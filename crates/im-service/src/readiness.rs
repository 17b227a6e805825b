//! `/ready`: one probe per dependency, each bounded in time so a dependency
//! that hangs reports "down" instead of hanging the probe (G9). A dependency
//! the process cannot do its job without makes it unready when down
//! ([`Readiness::add`]); one that only degrades a feature shows in the body
//! and in `im_dependency_up`, not in the status ([`Readiness::add_degrading`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub type Probe = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

pub struct Readiness {
    /// (dependency, probe, whether its being down makes the process unready)
    probes: Vec<(&'static str, Probe, bool)>,
    /// False while starting and once shutdown began.
    serving: AtomicBool,
}

pub struct ReadyReport {
    pub ready: bool,
    pub checks: Vec<(&'static str, Result<(), String>)>,
    /// The dependencies that only degrade a feature when down.
    pub degrading: Vec<&'static str>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { probes: Vec::new(), serving: AtomicBool::new(false) }
    }
}

impl Readiness {
    /// A dependency the process cannot do its job without.
    pub fn add(&mut self, name: &'static str, probe: Probe) {
        self.probes.push((name, probe, true));
    }

    /// A dependency whose outage degrades a feature but leaves the process
    /// doing its job: reported, never unready.
    pub fn add_degrading(&mut self, name: &'static str, probe: Probe) {
        self.probes.push((name, probe, false));
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    pub async fn check(&self) -> ReadyReport {
        let serving = self.serving.load(Ordering::SeqCst);
        let runs = self.probes.iter().map(|(name, probe, _)| async move {
            let result = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            (*name, result)
        });
        let checks = futures::future::join_all(runs).await;
        let degrading: Vec<&'static str> =
            self.probes.iter().filter(|(_, _, critical)| !critical).map(|(name, _, _)| *name).collect();
        let ready = serving && checks.iter().all(|(name, r)| r.is_ok() || degrading.contains(name));
        ReadyReport { ready, checks, degrading }
    }
}

impl ReadyReport {
    pub fn to_json(&self) -> String {
        let deps: serde_json::Map<String, serde_json::Value> = self
            .checks
            .iter()
            .map(|(name, r)| {
                let mut v = match r {
                    Ok(()) => serde_json::json!({"status": "up"}),
                    Err(e) => serde_json::json!({"status": "down", "error": e}),
                };
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
    use super::*;

    fn answering(result: Result<(), &'static str>) -> Probe {
        Box::new(move || Box::pin(async move { result.map_err(str::to_owned) }))
    }

    #[tokio::test]
    async fn a_degrading_dependency_shows_down_without_making_the_process_unready() {
        let mut readiness = Readiness::default();
        readiness.add("store", answering(Ok(())));
        readiness.add_degrading("kms", answering(Err("connection refused")));
        readiness.set_serving(true);
        let report = readiness.check().await;
        assert!(report.ready);
        let body: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(body["dependencies"]["kms"]["status"], "down");
        assert_eq!(body["dependencies"]["kms"]["degrades_only"], true);
        assert!(body["dependencies"]["store"].get("degrades_only").is_none());

        readiness.add("redis", answering(Err("timeout")));
        assert!(!readiness.check().await.ready, "a core dependency down is unready");
    }
}
