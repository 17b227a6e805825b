//! `imctl bench`: the load generator. Users (created over gRPC) send 1:1
//! messages, or messages to their groups, over WebSocket; the run reports
//! throughput, latency, server CPU per delivery, and whether every acked
//! message was delivered.
//!
//! - [`workload`]: plan of the run, send schedule, message body, and the task
//!   that drives one connection.
//! - [`group`]: the group workload (`--group-size`); [`layout`]: who is in
//!   which group and which connection sends.
//! - [`setup`]: users, groups and connections, with a progress line each.
//! - [`stats`]: counters, latency histograms, the delivery checks, the summaries.
//! - [`progress`]: the once-a-second line on stderr.
//! - [`cpu`]: CPU time of a process from /proc; [`fd_limit`]: room for the sockets.
//!
//! A run: create users (and groups) → open every connection → sending starts
//! (warm-up, then the measured window) → sending stops → drain until every
//! send is answered and every ack delivered (or the drain time is up) →
//! close → summary. Exit status 1 when an acked message never reached a
//! recipient.

pub mod commits;
pub mod cpu;
pub mod fd_limit;
pub mod group;
pub mod layout;
pub mod progress;
pub mod setup;
pub mod stats;
pub mod workload;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admin::{self, Admin};
use crate::cli::{BenchArgs, DEFAULT_RATE, GlobalArgs, Pairing};
use crate::client::{self, ConnectOptions, WsStream};
use crate::tls::CaBundle;
use commits::{CommitCounters, Commits};
use cpu::Process;
use stats::{Config, Counters, Counts, Cpu, LatencySummary, ServerCpu, Summary, Timing, Totals};
use workload::{Connection, ConnectionReport, Load, Plan, Run, Traffic};

/// Time between the last connection opening and the first send.
const START_DELAY: Duration = Duration::from_millis(50);

/// `imctl bench`: runs the load, prints the summary, fails when the delivery check does.
pub async fn run(global: &GlobalArgs, admin_env: Option<&str>, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(pid) = args.server_pid {
        cpu::read_ticks(Process::Pid(pid)).with_context(|| format!("--server-pid {pid}"))?;
    }
    // Before any user is made: a wrong URL fails at once.
    read_commits(&args).await?;
    let admin = admin::connect_admin(global, admin_env).await?;
    let failure = if args.group_size.is_some() {
        let summary =
            group::execute(&admin, &global.im_service_url, &global.ws_url, global.timeout, global.ca.as_ref(), &args)
                .await?;
        print(args.json, &summary, &summary.human())?;
        summary.failure()
    } else {
        let summary = execute(&admin, &global.ws_url, global.timeout, global.ca.as_ref(), &args).await?;
        print(args.json, &summary, &summary.human())?;
        summary.failure()
    };
    match failure {
        Some(why) => {
            eprintln!("error: {why}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The summary on stdout: one JSON object, or the text.
fn print(json: bool, summary: &impl Serialize, human: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        crate::output::json_line(&mut out, summary)?;
    } else {
        out.write_all(human.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

/// A random prefix for the names of a run's users and groups.
fn run_prefix() -> String {
    format!("bench-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// One benchmark run of 1:1 messages against the gateway at `ws_url`, users
/// created through `admin`; returns the summary without printing it (progress aside).
pub async fn execute(
    admin: &Admin,
    ws_url: &str,
    timeout: Duration,
    ca: Option<&CaBundle>,
    args: &BenchArgs,
) -> anyhow::Result<Summary> {
    let load = if args.closed_loop {
        Load::Closed { window: args.window }
    } else {
        Load::Open { rate: args.rate.unwrap_or(DEFAULT_RATE) }
    };
    let per_user = args.connections_per_user;
    let connections = args.users * per_user;
    fd_limit::ensure_room_for(u64::from(connections))?;
    let prefix = run_prefix();
    let concurrency = args.setup_concurrency as usize;
    let progress = !args.no_progress;
    eprintln!("creating {} users {prefix}-0..{}", args.users, args.users - 1);
    let users = setup::create_users(admin, &prefix, args.users, concurrency, progress).await?;

    eprintln!("opening {connections} WebSocket connections to {}", client::redact_url(ws_url));
    let options: Vec<ConnectOptions> = (0..connections)
        .map(|i| ConnectOptions {
            url: ws_url.to_owned(),
            token: users[(i / per_user) as usize].1.clone(),
            device: Some(format!("bench-{}", i % per_user)),
            timeout,
            ca: ca.cloned(),
        })
        .collect();
    let whose = |i: usize| format!("user {prefix}-{}", i as u32 / per_user);
    let sockets = setup::connect_all(&options, concurrency, progress, whose).await?;
    drop(options);

    let run = Arc::new(Run {
        epoch: Instant::now(),
        plan: Plan::new(START_DELAY, args.warmup, args.duration),
        load,
        traffic: Traffic::Private { pairing: args.pairing },
        body_size: args.body_size as usize,
        text_bodies: args.text,
        users: users.iter().map(|(id, _)| *id).collect(),
        senders: connections,
        latencies: Default::default(),
        errors: Default::default(),
    });
    drop(users);
    let connections = (0..connections).map(|i| Connection { index: i, user_index: i / per_user }).collect();
    let outcome = drive(&run, sockets, connections, args, u64::from(per_user)).await?;
    Ok(summarize(args, &run, outcome))
}

/// What a run leaves for its summary.
struct Outcome {
    totals: Totals,
    reports: Vec<ConnectionReport>,
    before: CpuSample,
    after: CpuSample,
    /// The server's commit counters at the start and the end of the window.
    commits: Option<(CommitCounters, CommitCounters)>,
    drain_s: f64,
    /// The pushes each acked message should make.
    deliveries_per_ack: u64,
}

/// Runs the load over `sockets` (connection i is `connections[i]`) from
/// `run`'s epoch: warm-up, measured window, drain (every ack should make
/// `deliveries_per_ack` pushes), stop.
async fn drive(
    run: &Arc<Run>,
    sockets: Vec<WsStream>,
    connections: Vec<Connection>,
    args: &BenchArgs,
    deliveries_per_ack: u64,
) -> anyhow::Result<Outcome> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let counters: Arc<[Arc<Counters>]> = (0..sockets.len()).map(|_| Arc::new(Counters::default())).collect();
    let tasks: Vec<_> = sockets
        .into_iter()
        .zip(connections)
        .enumerate()
        .map(|(i, (ws, conn))| {
            tokio::spawn(workload::run_connection(ws, conn, run.clone(), counters[i].clone(), stop_rx.clone()))
        })
        .collect();
    let progress = (!args.no_progress).then(|| {
        let tty = std::io::stderr().is_terminal();
        tokio::spawn(progress::report(run.clone(), counters.clone(), stop_rx.clone(), tty))
    });

    tokio::time::sleep_until(run.epoch + Duration::from_nanos(run.plan.measure_from)).await;
    let before = CpuSample::take(args.server_pid);
    let commits_before = read_commits(args).await?;
    tokio::time::sleep_until(run.epoch + Duration::from_nanos(run.plan.send_until)).await;
    let after = CpuSample::take(args.server_pid);
    let commits_after = read_commits(args).await?;
    let drain_s = drain(&counters, deliveries_per_ack, args.drain).await;

    let _ = stop_tx.send(true);
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        reports.push(task.await.context("a connection task failed")?);
    }
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    let totals = Totals::sum(counters.iter().map(|c| &**c));
    let commits = commits_before.zip(commits_after);
    Ok(Outcome { totals, reports, before, after, commits, drain_s, deliveries_per_ack })
}

/// The server's commit counters, when `--server-metrics` is given.
async fn read_commits(args: &BenchArgs) -> anyhow::Result<Option<CommitCounters>> {
    match &args.server_metrics {
        Some(url) => commits::read(url).await.map(Some),
        None => Ok(None),
    }
}

/// Waits until every send is answered and every acked message has made
/// `deliveries_per_ack` pushes, or `max` passes. Returns the seconds waited.
async fn drain(counters: &[Arc<Counters>], deliveries_per_ack: u64, max: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let t = Totals::sum(counters.iter().map(|c| &**c));
        if t.outstanding() == 0 && t.delivered >= t.acked * deliveries_per_ack {
            break;
        }
        if start.elapsed() >= max {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed().as_secs_f64()
}

/// CPU counters at one moment: the server's (if asked) and our own.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    server: Option<(u32, u64)>,
    client: Option<u64>,
}

impl CpuSample {
    fn take(server_pid: Option<u32>) -> Self {
        let server = server_pid.and_then(|pid| match cpu::read_ticks(Process::Pid(pid)) {
            Ok(ticks) => Some((pid, ticks)),
            Err(e) => {
                eprintln!("warning: server CPU not measured: {e:#}");
                None
            }
        });
        Self { server, client: cpu::read_ticks(Process::Current).ok() }
    }
}

impl Outcome {
    /// What the run counted, the rates over `run`'s measured window.
    fn counts(&self, run: &Run) -> Counts {
        let measured_s = run.plan.measured().as_secs_f64();
        let totals = self.totals;
        Counts {
            sent: totals.sent,
            acked: totals.acked,
            delivered: totals.delivered,
            expected_deliveries: totals.acked * self.deliveries_per_ack,
            errors: totals.errors,
            errors_by_code: run.errors.snapshot(),
            unacked: totals.outstanding(),
            measured_s,
            drain_s: self.drain_s,
            acked_per_s: stats::per_second(totals.acked_in_window, measured_s),
            delivered_per_s: stats::per_second(totals.delivered_in_window, measured_s),
        }
    }

    /// The server's CPU over the measured window (per push received in it),
    /// and this process's.
    fn cpu(&self) -> Cpu {
        let server_cpu = match (self.before.server, self.after.server) {
            (Some((pid, t0)), Some((_, t1))) => {
                let cpu_seconds = cpu::seconds_between(t0, t1);
                let delivered = self.totals.delivered_in_window;
                let us_per_delivered = (delivered > 0).then(|| cpu_seconds * 1e6 / delivered as f64);
                Some(ServerCpu { pid, cpu_seconds, us_per_delivered })
            }
            _ => None,
        };
        let client_cpu_seconds = match (self.before.client, self.after.client) {
            (Some(t0), Some(t1)) => Some(cpu::seconds_between(t0, t1)),
            _ => None,
        };
        Cpu { server_cpu, client_cpu_seconds }
    }

    /// The server's commits over `run`'s measured window.
    fn commits(&self, run: &Run) -> Option<Commits> {
        let (before, after) = self.commits?;
        Some(commits::between(before, after, run.plan.measured().as_secs_f64()))
    }

    /// Keys of every acked message, over all connections.
    fn acked(&mut self) -> Vec<u64> {
        let mut acked = Vec::with_capacity(self.totals.acked as usize);
        for report in &mut self.reports {
            acked.append(&mut report.acked);
        }
        acked
    }
}

fn summarize(args: &BenchArgs, run: &Run, mut outcome: Outcome) -> Summary {
    let acked = outcome.acked();
    let received = outcome.reports.iter_mut().map(|r| std::mem::take(&mut r.received)).collect();
    let check = stats::check_delivery(acked, received, args.connections_per_user);
    let (e2e, ack) = run.latencies.merged();
    let (mode, rate, window) = match run.load {
        Load::Open { rate } => ("open", Some(rate), None),
        Load::Closed { window } => ("closed", None, Some(window)),
    };
    Summary {
        config: Config {
            users: args.users,
            connections_per_user: args.connections_per_user,
            mode,
            rate,
            window,
            body_size: args.body_size,
            pairing: match args.pairing {
                Pairing::Random => "random",
                Pairing::Ring => "ring",
                Pairing::Pairs => "pairs",
            },
            timing: timing(args),
        },
        counts: outcome.counts(run),
        e2e_latency: LatencySummary::of(&e2e),
        ack_latency: LatencySummary::of(&ack),
        check,
        cpu: outcome.cpu(),
        commits: outcome.commits(run),
    }
}

/// The phases `args` ask for.
fn timing(args: &BenchArgs) -> Timing {
    Timing {
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        drain_max_s: args.drain.as_secs_f64(),
    }
}
