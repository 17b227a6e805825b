//! The lag reporter, with a scripted lag hook.

use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::time::Instant;

use super::*;

/// Long enough for any step of these tests on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// A lag hook answering from a script, one answer per call, the last one
/// for good.
struct ScriptedLag(Mutex<VecDeque<Vec<PartitionLag>>>);

#[async_trait]
impl LagHook for ScriptedLag {
    async fn lag(&self) -> BackendResult<Vec<PartitionLag>> {
        let mut script = self.0.lock().unwrap();
        if script.len() > 1 { Ok(script.pop_front().unwrap()) } else { Ok(script[0].clone()) }
    }
}

/// Waits until the metrics text satisfies `check`.
async fn wait_for_text(metrics: &Metrics, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = metrics.render();
        if check(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "not seen within {PATIENCE:?}: {text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn lag_is_reported_per_partition_until_the_partition_leaves() {
    let metrics = Arc::new(Metrics::new());
    let lag = |partition, lag| PartitionLag { topic: "t".into(), partition, lag };
    let script = VecDeque::from([vec![lag(0, 5), lag(1, 7)], vec![lag(1, 2)]]);
    let reporter = LagReporter {
        hooks: vec![Box::new(ScriptedLag(Mutex::new(script)))],
        group: "g".into(),
        metrics: metrics.clone(),
        interval: Duration::from_millis(300),
    };
    let token = CancellationToken::new();
    let task = tokio::spawn(reporter.run(token.clone()));
    let gauge = |partition| format!("im_kafka_consumer_lag{{group=\"g\",topic=\"t\",partition=\"{partition}\"}}");

    wait_for_text(&metrics, |text| {
        text.contains(&format!("{} 5", gauge(0))) && text.contains(&format!("{} 7", gauge(1)))
    })
    .await;
    wait_for_text(&metrics, |text| !text.contains(&gauge(0)) && text.contains(&format!("{} 2", gauge(1)))).await;
    token.cancel();
    task.await.unwrap();
    assert!(!metrics.render().contains(&gauge(1)), "a stopped worker reports no partition");
}
