//! `/ready`: one probe per dependency, each bounded in time so a dependency
//! that hangs reports "down" instead of hanging the probe (G9).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub type Probe = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

pub struct Readiness {
    probes: Vec<(&'static str, Probe)>,
    /// False while starting and once shutdown began.
    serving: AtomicBool,
}

pub struct ReadyReport {
    pub ready: bool,
    pub checks: Vec<(&'static str, Result<(), String>)>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { probes: Vec::new(), serving: AtomicBool::new(false) }
    }
}

impl Readiness {
    pub fn add(&mut self, name: &'static str, probe: Probe) {
        self.probes.push((name, probe));
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    pub async fn check(&self) -> ReadyReport {
        let serving = self.serving.load(Ordering::SeqCst);
        let runs = self.probes.iter().map(|(name, probe)| async move {
            let result = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            (*name, result)
        });
        let checks = futures::future::join_all(runs).await;
        let ready = serving && checks.iter().all(|(_, r)| r.is_ok());
        ReadyReport { ready, checks }
    }
}

impl ReadyReport {
    pub fn to_json(&self) -> String {
        let deps: serde_json::Map<String, serde_json::Value> = self
            .checks
            .iter()
            .map(|(name, r)| {
                let v = match r {
                    Ok(()) => serde_json::json!({"status": "up"}),
                    Err(e) => serde_json::json!({"status": "down", "error": e}),
                };
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
