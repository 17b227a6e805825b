//! The progress line on stderr, once per second: overwritten in place on a
//! terminal, one plain line each otherwise (logs, CI). [`report`] follows the
//! run; [`Setup`] one step of setting it up (users, groups, connections).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::stats::{Counters, Totals};
use super::workload::Run;

/// Which part of the run a moment falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Measure,
    Drain,
}

impl Phase {
    pub fn at(run: &Run, now_ns: u64) -> Self {
        if now_ns < run.plan.measure_from {
            Phase::Warmup
        } else if now_ns < run.plan.send_until {
            Phase::Measure
        } else {
            Phase::Drain
        }
    }

    fn label(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
            Phase::Drain => "drain",
        }
    }
}

/// One progress line (no line ending). `rate`: acks per second since the last line.
pub fn line(elapsed: Duration, phase: Phase, t: &Totals, rate: f64) -> String {
    format!(
        "{:6.1}s {:<7}  sent {}  acked {}  delivered {}  errors {}  rate {:.0} msg/s",
        elapsed.as_secs_f64(),
        phase.label(),
        t.sent,
        t.acked,
        t.delivered,
        t.errors,
        rate
    )
}

/// Prints a line every second from the start of sending until `stop`.
pub async fn report(run: Arc<Run>, counters: Arc<[Arc<Counters>]>, mut stop: watch::Receiver<bool>, tty: bool) {
    let start = run.epoch + Duration::from_nanos(run.plan.start);
    let mut ticks = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (start, 0u64);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            _ = ticks.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let totals = Totals::sum(counters.iter().map(|c| &**c));
        let seconds = now.duration_since(last.0).as_secs_f64();
        let rate = if seconds > 0.0 { totals.acked.saturating_sub(last.1) as f64 / seconds } else { 0.0 };
        last = (now, totals.acked);
        show(&line(now.duration_since(start), Phase::at(&run, run.now_ns()), &totals, rate), tty);
    }
    if tty {
        // Leave the terminal clean for the summary.
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

/// Writes `text` as the progress line: in place on a terminal, else as a line.
fn show(text: &str, tty: bool) {
    let mut err = std::io::stderr().lock();
    let _ = if tty { write!(err, "\r{text}\x1b[K") } else { writeln!(err, "{text}") };
    let _ = err.flush();
}

/// One set-up line (no line ending).
pub fn setup_line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let percent = (100 * done).checked_div(total).unwrap_or(100);
    format!("{label}: {done}/{total} ({percent}%, {:.0} s)", elapsed.as_secs_f64())
}

/// Progress of one set-up step: `label: done/total` each second while it
/// lasts (nothing for a step shorter than a second). Dropping it ends the line.
#[derive(Debug)]
pub struct Setup {
    done: Arc<AtomicU64>,
    shown: Arc<AtomicBool>,
    tty: bool,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Setup {
    /// `enabled`: false for --no-progress (the counter still counts).
    pub fn start(label: &'static str, total: u64, enabled: bool) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let shown = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let task = enabled.then(|| {
            let (done, shown) = (done.clone(), shown.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let mut ticks = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
                loop {
                    ticks.tick().await;
                    shown.store(true, Ordering::Relaxed);
                    show(&setup_line(label, done.load(Ordering::Relaxed), total, start.elapsed()), tty);
                }
            })
        });
        Self { done, shown, tty, task }
    }

    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if self.tty && self.shown.load(Ordering::Relaxed) {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_line_shows_done_of_total() {
        assert_eq!(
            setup_line("opening connections", 1_250, 5_000, Duration::from_millis(3_400)),
            "opening connections: 1250/5000 (25%, 3 s)"
        );
        assert_eq!(setup_line("creating users", 0, 0, Duration::ZERO), "creating users: 0/0 (100%, 0 s)");
    }

    #[test]
    fn line_shows_counts_phase_and_rate() {
        let t = Totals { sent: 1200, acked: 1190, delivered: 1185, errors: 2, ..Totals::default() };
        assert_eq!(
            line(Duration::from_millis(3_040), Phase::Measure, &t, 401.4),
            "   3.0s measure  sent 1200  acked 1190  delivered 1185  errors 2  rate 401 msg/s"
        );
    }
}
