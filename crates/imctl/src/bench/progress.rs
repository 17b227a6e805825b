//! The progress line on stderr, once per second: overwritten in place on a
//! terminal, one plain line each otherwise (logs, CI).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

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
        let text = line(now.duration_since(start), Phase::at(&run, run.now_ns()), &totals, rate);
        let mut err = std::io::stderr().lock();
        let _ = if tty { write!(err, "\r{text}\x1b[K") } else { writeln!(err, "{text}") };
        let _ = err.flush();
    }
    if tty {
        // Leave the terminal clean for the summary.
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_counts_phase_and_rate() {
        let t = Totals { sent: 1200, acked: 1190, delivered: 1185, errors: 2, ..Totals::default() };
        assert_eq!(
            line(Duration::from_millis(3_040), Phase::Measure, &t, 401.4),
            "   3.0s measure  sent 1200  acked 1190  delivered 1185  errors 2  rate 401 msg/s"
        );
    }
}
