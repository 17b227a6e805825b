//! The final report of a run: [`Summary`] for 1:1 messages, [`GroupSummary`]
//! for groups. Both print as one JSON object (`--json`) or as text, built
//! from the same lines where they measure the same thing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::fanout::FanoutCheck;
use super::{DeliveryCheck, LatencySummary, per_second_f};
use crate::bench::commits::Commits;

/// Server CPU over the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerCpu {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// CPU time per push received in the window; `None` when nothing was delivered.
    pub us_per_delivered: Option<f64>,
}

/// The run's phases, as asked for: what both workloads' settings end with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_max_s: f64,
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
    #[serde(flatten)]
    pub timing: Timing,
}

/// What both reports count the same way. "Delivered" counts pushes received:
/// by recipient devices for 1:1 messages; for groups, fan-out deliveries,
/// pushes of group messages received by members (the sender's own are not
/// counted).
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// `acked ×` the deliveries each message should make (the recipient's
    /// connections, or the group's other members): what `delivered` should
    /// reach.
    pub expected_deliveries: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Sent but neither acked nor rejected when the run ended.
    pub unacked: u64,
    pub measured_s: f64,
    pub drain_s: f64,
    pub acked_per_s: f64,
    pub delivered_per_s: f64,
}

/// CPU used over the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cpu {
    pub server_cpu: Option<ServerCpu>,
    /// CPU used by this load generator.
    pub client_cpu_seconds: Option<f64>,
}

/// The final report of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub config: Config,
    #[serde(flatten)]
    pub counts: Counts,
    pub e2e_latency: LatencySummary,
    pub ack_latency: LatencySummary,
    pub check: DeliveryCheck,
    #[serde(flatten)]
    pub cpu: Cpu,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits: Option<Commits>,
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
    #[serde(flatten)]
    pub timing: Timing,
}

/// The final report of a group run. "Delivered" counts fan-out deliveries:
/// pushes of group messages received by members.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub config: GroupConfig,
    /// `expected_deliveries` is `acked × (group_size − 1)`; the rates are
    /// of the measured window.
    #[serde(flatten)]
    pub counts: Counts,
    /// Per complete message: send -> push received by the last member to get it.
    pub fanout_latency: LatencySummary,
    /// Per push: send -> push received by that member.
    pub push_latency: LatencySummary,
    pub ack_latency: LatencySummary,
    pub check: FanoutCheck,
    #[serde(flatten)]
    pub cpu: Cpu,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits: Option<Commits>,
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
    timing: &'a Timing,
    counts: &'a Counts,
    ack_latency: &'a LatencySummary,
    cpu: &'a Cpu,
    commits: Option<&'a Commits>,
}

impl Common<'_> {
    /// The text of a report: `lines` among the lines both reports have.
    fn text(&self, lines: Lines) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", lines.header);
        self.window(&mut s);
        let _ = writeln!(s, "{}", lines.delivered);
        self.errors(&mut s);
        let _ = writeln!(s, "{}", lines.throughput);
        for line in &lines.latencies {
            let _ = writeln!(s, "{line}");
        }
        self.ack(&mut s);
        self.cpu(&mut s, lines.cpu_per);
        self.commits(&mut s);
        let _ = writeln!(s, "{}", lines.check);
        s
    }

    fn window(&self, s: &mut String) {
        let (t, c) = (self.timing, self.counts);
        let _ = writeln!(
            s,
            "window:     warmup {:.1} s, measured {:.1} s, drain {:.2} s (max {:.1} s)",
            t.warmup_s, c.measured_s, c.drain_s, t.drain_max_s
        );
        let _ = writeln!(s, "sent        {}", c.sent);
        let _ = writeln!(s, "acked       {}", c.acked);
    }

    fn errors(&self, s: &mut String) {
        let c = self.counts;
        let by_code: Vec<String> = c.errors_by_code.iter().map(|(code, n)| format!("{code} {n}")).collect();
        let by_code = if by_code.is_empty() { String::new() } else { format!("  ({})", by_code.join(", ")) };
        let _ = writeln!(s, "errors      {}{by_code}", c.errors);
        if c.unacked > 0 {
            let _ = writeln!(s, "unacked     {}  (no ack or error by the end of the drain)", c.unacked);
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

    fn commits(&self, s: &mut String) {
        if let Some(c) = self.commits {
            let _ = writeln!(
                s,
                "commits     {} ({:.0}/s), {:.1} messages per commit, {:.2} ms per commit",
                c.commits,
                per_second_f(c.commits as f64, self.counts.measured_s),
                c.messages_per_commit,
                c.ms_per_commit
            );
        }
    }

    /// `per`: what the server's CPU is divided by ("delivered message", "fan-out delivery").
    fn cpu(&self, s: &mut String, per: &str) {
        if let Some(cpu) = self.cpu.server_cpu {
            let per_msg = cpu.us_per_delivered.map_or("n/a".into(), |us| format!("{us:.1} µs"));
            let _ = writeln!(
                s,
                "server cpu  {:.2} s (pid {}, {:.0}% of one core), {per_msg} per {per}",
                cpu.cpu_seconds,
                cpu.pid,
                100.0 * per_second_f(cpu.cpu_seconds, self.counts.measured_s)
            );
        }
        if let Some(secs) = self.cpu.client_cpu_seconds {
            let _ = writeln!(s, "client cpu  {secs:.2} s (this load generator)");
        }
    }
}

/// One full latency line: `label` padded to the column, then the percentiles.
fn latency_line(label: &str, l: &LatencySummary, what: &str) -> String {
    format!(
        "{label:<11} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={}, {what})",
        human_us(l.p50_us),
        human_us(l.p90_us),
        human_us(l.p99_us),
        human_us(l.p999_us),
        human_us(l.max_us),
        l.count
    )
}

/// The lines only one of the reports has, each without its newline.
struct Lines {
    /// The workload.
    header: String,
    /// What was delivered, against what was expected.
    delivered: String,
    throughput: String,
    /// The latencies other than the ack's.
    latencies: Vec<String>,
    /// What the server's CPU is divided by ("delivered message").
    cpu_per: &'static str,
    /// The delivery check.
    check: String,
}

impl Summary {
    /// Why the delivery check failed, if it did.
    pub fn failure(&self) -> Option<String> {
        let k = &self.check;
        (!k.ok).then(|| {
            format!(
                "{} acked messages were never delivered and {} reached only some devices of their recipient",
                k.acked_not_delivered, k.partially_delivered
            )
        })
    }

    pub fn human(&self) -> String {
        let (c, n, k) = (&self.config, &self.counts, &self.check);
        let load = match (c.rate, c.window) {
            (Some(rate), _) => format!("open loop {rate} msg/s"),
            (None, Some(window)) => format!("closed loop, window {window}"),
            (None, None) => "?".into(),
        };
        let mut check = if k.ok {
            "check       ok: every acked message reached all recipient devices".to_owned()
        } else {
            format!(
                "check       FAILED: {} acked messages never delivered, {} delivered to only some devices",
                k.acked_not_delivered, k.partially_delivered
            )
        };
        if k.duplicate_pushes > 0 || k.delivered_not_acked > 0 {
            let _ = write!(
                check,
                " ({} duplicate pushes, {} delivered without an ack)",
                k.duplicate_pushes, k.delivered_not_acked
            );
        }
        let common = Common {
            timing: &c.timing,
            counts: n,
            ack_latency: &self.ack_latency,
            cpu: &self.cpu,
            commits: self.commits.as_ref(),
        };
        common.text(Lines {
            header: format!(
                "imctl bench: {} users x {} connection(s), {load}, {} pairing, {}-byte bodies",
                c.users, c.connections_per_user, c.pairing, c.body_size
            ),
            delivered: format!(
                "delivered   {}  (pushes received by recipients; expected {})",
                n.delivered, n.expected_deliveries
            ),
            throughput: format!(
                "throughput  acked {:.1} msg/s, delivered {:.1} msg/s  (measured window)",
                n.acked_per_s, n.delivered_per_s
            ),
            latencies: vec![latency_line("end-to-end", &self.e2e_latency, "send -> push")],
            cpu_per: "delivered message",
            check,
        })
    }
}

impl GroupSummary {
    /// Why the fan-out check failed, if it did.
    pub fn failure(&self) -> Option<String> {
        let k = &self.check;
        (!k.ok).then(|| {
            format!(
                "{} acked messages did not reach every other member of their group ({} reached none)",
                k.incomplete, k.reached_none
            )
        })
    }

    pub fn human(&self) -> String {
        let (c, n, k) = (&self.config, &self.counts, &self.check);
        let mut check = if k.ok {
            format!("check       ok: all {} acked messages reached every other member", k.complete)
        } else {
            format!(
                "check       FAILED: {} acked messages incomplete ({} reached no member), {} complete",
                k.incomplete, k.reached_none, k.complete
            )
        };
        if k.duplicate_pushes > 0 || k.delivered_not_acked > 0 || k.stray_pushes > 0 {
            let _ = write!(
                check,
                " ({} duplicate pushes, {} delivered without an ack, {} pushes to a non-member)",
                k.duplicate_pushes, k.delivered_not_acked, k.stray_pushes
            );
        }
        let common = Common {
            timing: &c.timing,
            counts: n,
            ack_latency: &self.ack_latency,
            cpu: &self.cpu,
            commits: self.commits.as_ref(),
        };
        common.text(Lines {
            header: format!(
                "imctl bench: {} group(s) x {} members, {} sender(s) per group, open loop {} msg/s, {}-byte bodies",
                c.groups, c.group_size, c.senders_per_group, c.rate, c.body_size
            ),
            delivered: format!(
                "fan-out     {}  (pushes received by members; expected {})",
                n.delivered, n.expected_deliveries
            ),
            throughput: format!(
                "throughput  acked {:.1} msg/s, fan-out {:.1} deliveries/s  (measured window)",
                n.acked_per_s, n.delivered_per_s
            ),
            latencies: vec![
                latency_line("last member", &self.fanout_latency, "send -> push to the last member"),
                latency_line("any member", &self.push_latency, "send -> each push"),
            ],
            cpu_per: "fan-out delivery",
            check,
        })
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
                timing: Timing { warmup_s: 1.0, duration_s: 2.0, drain_max_s: 2.0 },
            },
            counts: Counts {
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
            },
            fanout_latency: latency,
            push_latency: latency,
            ack_latency: latency,
            check,
            cpu: Cpu {
                server_cpu: Some(ServerCpu { pid: 42, cpu_seconds: 0.5, us_per_delivered: Some(50.5) }),
                client_cpu_seconds: Some(0.25),
            },
            commits: Some(Commits { commits: 40, messages_per_commit: 3.75, ms_per_commit: 50.0 }),
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
        assert!(text.contains("commits     40 (20/s), 3.8 messages per commit, 50.00 ms per commit"), "{text}");
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
