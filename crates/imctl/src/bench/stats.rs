//! What the load generator measures: live counters, latency histograms, and
//! the delivery check of 1:1 messages. [`fanout`] tracks group messages to
//! every member; [`report`] is the final summary (human text or JSON).

pub mod fanout;
pub mod report;

pub use report::{Config, Counts, Cpu, GroupConfig, GroupSummary, ServerCpu, Summary, Timing, human_us};

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters of one connection, written by its task and summed by the
/// progress line. Relaxed: each is an independent tally.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Sends answered with an error frame.
    pub rejected: AtomicU64,
    /// Every error: rejected sends, disconnects, undecodable frames.
    pub errors: AtomicU64,
    /// Pushes of bench messages received by this connection as the recipient.
    pub delivered: AtomicU64,
    /// Acks received inside the measured window.
    pub acked_in_window: AtomicU64,
    /// Pushes received inside the measured window.
    pub delivered_in_window: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The sum over all connections at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub errors: u64,
    pub delivered: u64,
    pub acked_in_window: u64,
    pub delivered_in_window: u64,
}

impl Totals {
    pub fn sum<'a>(counters: impl IntoIterator<Item = &'a Counters>) -> Self {
        let mut t = Totals::default();
        for c in counters {
            t.sent += c.sent.load(Ordering::Relaxed);
            t.acked += c.acked.load(Ordering::Relaxed);
            t.rejected += c.rejected.load(Ordering::Relaxed);
            t.errors += c.errors.load(Ordering::Relaxed);
            t.delivered += c.delivered.load(Ordering::Relaxed);
            t.acked_in_window += c.acked_in_window.load(Ordering::Relaxed);
            t.delivered_in_window += c.delivered_in_window.load(Ordering::Relaxed);
        }
        t
    }

    /// Sends still waiting for their ack or error.
    pub fn outstanding(&self) -> u64 {
        self.sent.saturating_sub(self.acked + self.rejected)
    }
}

/// Errors by code name. Errors are rare, so one lock is fine.
#[derive(Debug, Default)]
pub struct ErrorTally(Mutex<BTreeMap<&'static str, u64>>);

impl ErrorTally {
    pub fn add(&self, code: &'static str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }
}

/// Latencies are recorded in microseconds, 1 µs to 1 h, 3 significant digits.
const HIGHEST_US: u64 = 3_600_000_000;
/// A few locks instead of one histogram pair per connection: a histogram with
/// 3 significant digits is ~140 KB, too much for thousands of connections,
/// and with the runtime's few worker threads the locks are rarely contended.
const SHARDS: usize = 8;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

#[derive(Debug)]
pub struct Latencies {
    /// Send (scheduled time) to push received by the recipient.
    e2e: Vec<Mutex<Histogram<u64>>>,
    /// Send (scheduled time) to ack received by the sender.
    ack: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Latencies {
    fn default() -> Self {
        let shards = || (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect();
        Self { e2e: shards(), ack: shards() }
    }
}

impl Latencies {
    pub fn record_e2e(&self, shard: usize, nanos: u64) {
        record(&self.e2e[shard % SHARDS], nanos);
    }

    pub fn record_ack(&self, shard: usize, nanos: u64) {
        record(&self.ack[shard % SHARDS], nanos);
    }

    /// (end-to-end, ack) over all shards.
    pub fn merged(&self) -> (Histogram<u64>, Histogram<u64>) {
        (merge(&self.e2e), merge(&self.ack))
    }
}

fn record(h: &Mutex<Histogram<u64>>, nanos: u64) {
    record_nanos(&mut h.lock().unwrap_or_else(|p| p.into_inner()), nanos);
}

/// Records a latency given in nanoseconds, in microseconds.
pub fn record_nanos(h: &mut Histogram<u64>, nanos: u64) {
    h.saturating_record(nanos / 1_000);
}

fn merge(shards: &[Mutex<Histogram<u64>>]) -> Histogram<u64> {
    let mut all = new_histogram();
    for shard in shards {
        all.add(&*shard.lock().unwrap_or_else(|p| p.into_inner())).expect("histograms share their bounds");
    }
    all
}

/// Percentiles of one latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Messages per second; 0 for an empty window.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

/// A quantity per second; 0 for an empty window.
pub fn per_second_f(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { amount / seconds } else { 0.0 }
}

/// Whether every acked message reached its recipient: the correctness side
/// of the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCheck {
    /// Acked messages no recipient device received (after the drain).
    pub acked_not_delivered: u64,
    /// Acked messages that reached some but not all of the recipient's devices.
    pub partially_delivered: u64,
    /// Pushes a device received more than once.
    pub duplicate_pushes: u64,
    /// Messages pushed to the recipient whose ack the sender never got.
    pub delivered_not_acked: u64,
    pub ok: bool,
}

/// Compares what senders had acked with what recipients received. `acked`
/// and each `received[i]` hold message keys; `received[i]` is what
/// connection i got as the recipient; each recipient has `devices` connections.
pub fn check_delivery(acked: impl IntoIterator<Item = u64>, received: Vec<Vec<u64>>, devices: u32) -> DeliveryCheck {
    let mut check = DeliveryCheck::default();
    let mut devices_reached: HashMap<u64, u32> = HashMap::with_capacity(received.iter().map(Vec::len).sum());
    for mut keys in received {
        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        check.duplicate_pushes += (before - keys.len()) as u64;
        for key in keys {
            *devices_reached.entry(key).or_default() += 1;
        }
    }
    for key in acked {
        match devices_reached.remove(&key) {
            None => check.acked_not_delivered += 1,
            Some(n) if n < devices => check.partially_delivered += 1,
            Some(_) => {}
        }
    }
    check.delivered_not_acked = devices_reached.len() as u64;
    check.ok = check.acked_not_delivered == 0 && check.partially_delivered == 0;
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_histogram();
        for us in 1..=10_000 {
            h.record(us).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 10_000);
        // 3 significant digits: within 0.1 %.
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001 + 1.0;
        assert!(close(s.p50_us, 5_000), "{}", s.p50_us);
        assert!(close(s.p90_us, 9_000), "{}", s.p90_us);
        assert!(close(s.p99_us, 9_900), "{}", s.p99_us);
        assert!(close(s.p999_us, 9_990), "{}", s.p999_us);
        assert!(close(s.max_us, 10_000), "{}", s.max_us);
        assert!((s.mean_us - 5_000.5).abs() < 10.0);
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        assert_eq!(LatencySummary::of(&new_histogram()), LatencySummary::default());
    }

    #[test]
    fn sharded_recording_merges_and_converts_to_microseconds() {
        let l = Latencies::default();
        for shard in 0..20 {
            l.record_e2e(shard, 2_000_000); // 2 ms
        }
        l.record_ack(3, 999); // below 1 µs
        l.record_ack(5, u64::MAX); // saturates instead of failing
        let (e2e, ack) = l.merged();
        assert_eq!(e2e.len(), 20);
        assert_eq!(LatencySummary::of(&e2e).p50_us, 2_000);
        assert_eq!(ack.len(), 2);
        assert_eq!(ack.min(), 0);
        assert!(ack.max() >= HIGHEST_US / 2);
    }

    #[test]
    fn rates_over_the_window() {
        assert_eq!(per_second(5_000, 10.0), 500.0);
        assert_eq!(per_second(5, 0.0), 0.0);
    }

    #[test]
    fn totals_sum_connections_and_count_outstanding() {
        let a = Counters::default();
        let b = Counters::default();
        for _ in 0..3 {
            Counters::add(&a.sent);
        }
        Counters::add(&a.acked);
        Counters::add(&b.sent);
        Counters::add(&b.rejected);
        Counters::add(&b.errors);
        let t = Totals::sum([&a, &b]);
        assert_eq!((t.sent, t.acked, t.rejected, t.errors), (4, 1, 1, 1));
        assert_eq!(t.outstanding(), 2);
    }

    #[test]
    fn delivery_check_finds_lost_partial_and_duplicate_messages() {
        // Two devices per user. Keys 1..=4 acked.
        // 1: both devices; 2: one device; 3: none; 4: both, one of them twice; 5: pushed, never acked.
        let received = vec![vec![1, 2, 4, 4, 5], vec![1, 4]];
        let check = check_delivery([1, 2, 3, 4], received, 2);
        assert_eq!(
            check,
            DeliveryCheck {
                acked_not_delivered: 1,
                partially_delivered: 1,
                duplicate_pushes: 1,
                delivered_not_acked: 1,
                ok: false
            }
        );
        let clean = check_delivery([1, 2], vec![vec![1], vec![2]], 1);
        assert!(clean.ok);
        assert_eq!(clean, DeliveryCheck { ok: true, ..DeliveryCheck::default() });
    }

    #[test]
    fn error_tally_counts_by_code() {
        let t = ErrorTally::default();
        t.add("RESOURCE_EXHAUSTED");
        t.add("RESOURCE_EXHAUSTED");
        t.add("DISCONNECTED");
        let snap = t.snapshot();
        assert_eq!(snap["RESOURCE_EXHAUSTED"], 2);
        assert_eq!(snap["DISCONNECTED"], 1);
    }
}
