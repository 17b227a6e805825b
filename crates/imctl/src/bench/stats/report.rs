//! The final report of a run: [`Summary`] for 1:1 messages, [`GroupSummary`]
//! for groups. Both print as one JSON object (`--json`) or as text, built
//! from the same lines where they measure the same thing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::fanout::FanoutCheck;
use super::{DeliveryCheck, LatencySummary, per_second_f};

/// Server CPU over the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerCpu {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// CPU time per push received in the window; `None` when nothing was delivered.
    pub us_per_delivered: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub users: u32,
    pub connections_per_user: u32,
    /// "open" or "closed".
    pub mode: &'static str,
    /// Open loop: messages per second over all connections.
    pub rate: Option<f64>,
    /// Closed loop: messages in flight per connection.
    pub window: Option<u32>,
    pub body_size: u32,
    pub pairing: &'static str,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_max_s: f64,
}

/// The final report of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub config: Config,
    pub sent: u64,
    pub acked: u64,
    /// Pushes received by recipient devices.
    pub delivered: u64,
    /// `acked × connections_per_user`: what `delivered` should reach.
    pub expected_deliveries: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Sent but neither acked nor rejected when the run ended.
    pub unacked: u64,
    pub measured_s: f64,
    pub drain_s: f64,
    pub acked_per_s: f64,
    pub delivered_per_s: f64,
    pub e2e_latency: LatencySummary,
    pub ack_latency: LatencySummary,
    pub check: DeliveryCheck,
    pub server_cpu: Option<ServerCpu>,
    /// CPU used by this load generator over the measured window.
    pub client_cpu_seconds: Option<f64>,
}

/// The group workload's settings.
#[derive(Debug, Clone, Serialize)]
pub struct GroupConfig {
    pub groups: u32,
    pub group_size: u32,
    pub senders_per_group: u32,
    /// Messages per second over all senders (open loop).
    pub rate: f64,
    pub body_size: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_max_s: f64,
}

/// The final report of a group run. "Delivered" counts fan-out deliveries:
/// pushes of group messages received by members.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub config: GroupConfig,
    pub sent: u64,
    pub acked: u64,
    /// Pushes received by members (the sender's own are not counted).
    pub delivered: u64,
    /// `acked × (group_size − 1)`: what `delivered` should reach.
    pub expected_deliveries: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Sent but neither acked nor rejected when the run ended.
    pub unacked: u64,
    pub measured_s: f64,
    pub drain_s: f64,
    pub acked_per_s: f64,
    /// Fan-out deliveries per second.
    pub delivered_per_s: f64,
    /// Per complete message: send -> push received by the last member to get it.
    pub fanout_latency: LatencySummary,
    /// Per push: send -> push received by that member.
    pub push_latency: LatencySummary,
    pub ack_latency: LatencySummary,
    pub check: FanoutCheck,
    pub server_cpu: Option<ServerCpu>,
    /// CPU used by this load generator over the measured window.
    pub client_cpu_seconds: Option<f64>,
}

/// A latency for people: µs below 1 ms, ms below 1 s, else s.
pub fn human_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// What both reports show the same way.
struct Common<'a> {
    measured_s: f64,
    drain_s: f64,
    warmup_s: f64,
    drain_max_s: f64,
    sent: u64,
    acked: u64,
    errors: u64,
    errors_by_code: &'a BTreeMap<String, u64>,
    unacked: u64,
    ack_latency: &'a LatencySummary,
    server_cpu: Option<&'a ServerCpu>,
    client_cpu_seconds: Option<f64>,
}

impl Common<'_> {
    fn window(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "window:     warmup {:.1} s, measured {:.1} s, drain {:.2} s (max {:.1} s)",
            self.warmup_s, self.measured_s, self.drain_s, self.drain_max_s
        );
        let _ = writeln!(s, "sent        {}", self.sent);
        let _ = writeln!(s, "acked       {}", self.acked);
    }

    fn errors(&self, s: &mut String) {
        let by_code: Vec<String> = self.errors_by_code.iter().map(|(code, n)| format!("{code} {n}")).collect();
        let by_code = if by_code.is_empty() { String::new() } else { format!("  ({})", by_code.join(", ")) };
        let _ = writeln!(s, "errors      {}{by_code}", self.errors);
        if self.unacked > 0 {
            let _ = writeln!(s, "unacked     {}  (no ack or error by the end of the drain)", self.unacked);
        }
    }

    fn ack(&self, s: &mut String) {
        let a = self.ack_latency;
        let _ = writeln!(
            s,
            "ack         p50 {}  p99 {}  max {}  (n={}, send -> ack)",
            human_us(a.p50_us),
            human_us(a.p99_us),
            human_us(a.max_us),
            a.count
        );
    }

    /// `per`: what the server's CPU is divided by ("delivered message", "fan-out delivery").
    fn cpu(&self, s: &mut String, per: &str) {
        if let Some(cpu) = self.server_cpu {
            let per_msg = cpu.us_per_delivered.map_or("n/a".into(), |us| format!("{us:.1} µs"));
            let _ = writeln!(
                s,
                "server cpu  {:.2} s (pid {}, {:.0}% of one core), {per_msg} per {per}",
                cpu.cpu_seconds,
                cpu.pid,
                100.0 * per_second_f(cpu.cpu_seconds, self.measured_s)
            );
        }
        if let Some(secs) = self.client_cpu_seconds {
            let _ = writeln!(s, "client cpu  {secs:.2} s (this load generator)");
        }
    }
}

/// One full latency line: `label` padded to the column, then the percentiles.
fn latency_line(s: &mut String, label: &str, l: &LatencySummary, what: &str) {
    let _ = writeln!(
        s,
        "{label:<11} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={}, {what})",
        human_us(l.p50_us),
        human_us(l.p90_us),
        human_us(l.p99_us),
        human_us(l.p999_us),
        human_us(l.max_us),
        l.count
    );
}

impl Summary {
    fn common(&self) -> Common<'_> {
        Common {
            measured_s: self.measured_s,
            drain_s: self.drain_s,
            warmup_s: self.config.warmup_s,
            drain_max_s: self.config.drain_max_s,
            sent: self.sent,
            acked: self.acked,
            errors: self.errors,
            errors_by_code: &self.errors_by_code,
            unacked: self.unacked,
            ack_latency: &self.ack_latency,
            server_cpu: self.server_cpu.as_ref(),
            client_cpu_seconds: self.client_cpu_seconds,
        }
    }

    pub fn human(&self) -> String {
        let c = &self.config;
        let common = self.common();
        let mut s = String::new();
        let load = match (c.rate, c.window) {
            (Some(rate), _) => format!("open loop {rate} msg/s"),
            (None, Some(window)) => format!("closed loop, window {window}"),
            (None, None) => "?".into(),
        };
        let _ = writeln!(
            s,
            "imctl bench: {} users x {} connection(s), {load}, {} pairing, {}-byte bodies",
            c.users, c.connections_per_user, c.pairing, c.body_size
        );
        common.window(&mut s);
        let _ = writeln!(
            s,
            "delivered   {}  (pushes received by recipients; expected {})",
            self.delivered, self.expected_deliveries
        );
        common.errors(&mut s);
        let _ = writeln!(
            s,
            "throughput  acked {:.1} msg/s, delivered {:.1} msg/s  (measured window)",
            self.acked_per_s, self.delivered_per_s
        );
        latency_line(&mut s, "end-to-end", &self.e2e_latency, "send -> push");
        common.ack(&mut s);
        common.cpu(&mut s, "delivered message");
        let k = &self.check;
        if k.ok {
            let _ = write!(s, "check       ok: every acked message reached all recipient devices");
        } else {
            let _ = write!(
                s,
                "check       FAILED: {} acked messages never delivered, {} delivered to only some devices",
                k.acked_not_delivered, k.partially_delivered
            );
        }
        if k.duplicate_pushes > 0 || k.delivered_not_acked > 0 {
            let _ = write!(
                s,
                " ({} duplicate pushes, {} delivered without an ack)",
                k.duplicate_pushes, k.delivered_not_acked
            );
        }
        s.push('\n');
        s
    }
}

impl GroupSummary {
    fn common(&self) -> Common<'_> {
        Common {
            measured_s: self.measured_s,
            drain_s: self.drain_s,
            warmup_s: self.config.warmup_s,
            drain_max_s: self.config.drain_max_s,
            sent: self.sent,
            acked: self.acked,
            errors: self.errors,
            errors_by_code: &self.errors_by_code,
            unacked: self.unacked,
            ack_latency: &self.ack_latency,
            server_cpu: self.server_cpu.as_ref(),
            client_cpu_seconds: self.client_cpu_seconds,
        }
    }

    pub fn human(&self) -> String {
        let c = &self.config;
        let common = self.common();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "imctl bench: {} group(s) x {} members, {} sender(s) per group, open loop {} msg/s, {}-byte bodies",
            c.groups, c.group_size, c.senders_per_group, c.rate, c.body_size
        );
        common.window(&mut s);
        let _ = writeln!(
            s,
            "fan-out     {}  (pushes received by members; expected {})",
            self.delivered, self.expected_deliveries
        );
        common.errors(&mut s);
        let _ = writeln!(
            s,
            "throughput  acked {:.1} msg/s, fan-out {:.1} deliveries/s  (measured window)",
            self.acked_per_s, self.delivered_per_s
        );
        latency_line(&mut s, "last member", &self.fanout_latency, "send -> push to the last member");
        latency_line(&mut s, "any member", &self.push_latency, "send -> each push");
        common.ack(&mut s);
        common.cpu(&mut s, "fan-out delivery");
        let k = &self.check;
        if k.ok {
            let _ = write!(s, "check       ok: all {} acked messages reached every other member", k.complete);
        } else {
            let _ = write!(
                s,
                "check       FAILED: {} acked messages incomplete ({} reached no member), {} complete",
                k.incomplete, k.reached_none, k.complete
            );
        }
        if k.duplicate_pushes > 0 || k.delivered_not_acked > 0 || k.stray_pushes > 0 {
            let _ = write!(
                s,
                " ({} duplicate pushes, {} delivered without an ack, {} pushes to a non-member)",
                k.duplicate_pushes, k.delivered_not_acked, k.stray_pushes
            );
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_latencies_pick_a_unit() {
        assert_eq!(human_us(850), "850 µs");
        assert_eq!(human_us(1_234), "1.23 ms");
        assert_eq!(human_us(2_500_000), "2.50 s");
    }

    fn group_summary(check: FanoutCheck) -> GroupSummary {
        let latency = LatencySummary { count: 90, p50_us: 800, p99_us: 2_500, p999_us: 9_000, ..Default::default() };
        GroupSummary {
            config: GroupConfig {
                groups: 2,
                group_size: 100,
                senders_per_group: 3,
                rate: 50.0,
                body_size: 100,
                warmup_s: 1.0,
                duration_s: 2.0,
                drain_max_s: 2.0,
            },
            sent: 150,
            acked: 150,
            delivered: 14_850,
            expected_deliveries: 14_850,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            unacked: 0,
            measured_s: 2.0,
            drain_s: 0.1,
            acked_per_s: 50.0,
            delivered_per_s: 4_950.0,
            fanout_latency: latency,
            push_latency: latency,
            ack_latency: latency,
            check,
            server_cpu: Some(ServerCpu { pid: 42, cpu_seconds: 0.5, us_per_delivered: Some(50.5) }),
            client_cpu_seconds: Some(0.25),
        }
    }

    #[test]
    fn group_report_shows_fan_out_and_the_last_member_latency() {
        let ok = FanoutCheck { complete: 150, ok: true, ..FanoutCheck::default() };
        let text = group_summary(ok).human();
        assert!(text.starts_with("imctl bench: 2 group(s) x 100 members, 3 sender(s) per group, open loop 50 msg/s"));
        assert!(text.contains("fan-out     14850  (pushes received by members; expected 14850)"), "{text}");
        assert!(text.contains("throughput  acked 50.0 msg/s, fan-out 4950.0 deliveries/s"), "{text}");
        assert!(text.contains("last member p50 800 µs  p90 0 µs  p99 2.50 ms  p99.9 9.00 ms"), "{text}");
        assert!(text.contains("50.5 µs per fan-out delivery"), "{text}");
        assert!(text.ends_with("check       ok: all 150 acked messages reached every other member\n"), "{text}");
    }

    #[test]
    fn group_report_counts_incomplete_messages() {
        let failed = FanoutCheck { complete: 147, incomplete: 3, reached_none: 1, ok: false, ..Default::default() };
        let summary = group_summary(failed);
        assert!(summary.human().contains("FAILED: 3 acked messages incomplete (1 reached no member), 147 complete"));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["check"]["incomplete"], 3);
        assert_eq!(json["config"]["senders_per_group"], 3);
        for key in ["fanout_latency", "push_latency", "ack_latency"] {
            assert_eq!(json[key]["p999_us"], 9_000, "{key}");
        }
    }
}
