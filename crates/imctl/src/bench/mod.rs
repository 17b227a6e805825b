//! `imctl bench`: the load generator. N users (created over gRPC) send 1:1
//! messages over WebSocket; the run reports throughput, end-to-end and ack
//! latency, server CPU per message, and whether every acked message was
//! delivered.
//!
//! - [`workload`]: plan of the run, send schedule, message body, and the task
//!   that drives one connection.
//! - [`stats`]: counters, latency histograms, delivery check, the summary.
//! - [`progress`]: the once-a-second line on stderr.
//! - [`cpu`]: CPU time of a process from /proc.
//!
//! A run: create users → open every connection → sending starts (warm-up,
//! then the measured window) → sending stops → drain until every send is
//! answered and every ack delivered (or the drain time is up) → close →
//! summary. Exit status 1 when an acked message never reached its recipient.

pub mod cpu;
pub mod progress;
pub mod stats;
pub mod workload;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admin::{self, Admin};
use crate::cli::{BenchArgs, DEFAULT_RATE, GlobalArgs, Pairing};
use crate::client::{self, ConnectOptions, WsStream};
use cpu::Process;
use stats::{Config, Counters, LatencySummary, ServerCpu, Summary, Totals};
use workload::{Connection, ConnectionReport, Load, Plan, Run};

/// Time between the last connection opening and the first send.
const START_DELAY: Duration = Duration::from_millis(50);

/// `imctl bench`: runs the load, prints the summary, fails when the delivery check does.
pub async fn run(global: &GlobalArgs, admin_env: Option<&str>, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(pid) = args.server_pid {
        cpu::read_ticks(Process::Pid(pid)).with_context(|| format!("--server-pid {pid}"))?;
    }
    let admin = admin::connect_admin(global, admin_env).await?;
    let summary = execute(&admin, &global.ws_url, global.timeout, &args).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        crate::output::json_line(&mut out, &summary)?;
    } else {
        out.write_all(summary.human().as_bytes())?;
        out.flush()?;
    }
    if !summary.check.ok {
        eprintln!(
            "error: {} acked messages were never delivered and {} reached only some devices of their recipient",
            summary.check.acked_not_delivered, summary.check.partially_delivered
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// One benchmark run against the gateway at `ws_url`, users created through
/// `admin`; returns the summary without printing it (progress aside).
pub async fn execute(admin: &Admin, ws_url: &str, timeout: Duration, args: &BenchArgs) -> anyhow::Result<Summary> {
    let load = if args.closed_loop {
        Load::Closed { window: args.window }
    } else {
        Load::Open { rate: args.rate.unwrap_or(DEFAULT_RATE) }
    };
    let prefix = format!("bench-{:06x}", rand::random::<u32>() & 0xff_ffff);
    eprintln!("creating {} users {prefix}-0..{}", args.users, args.users - 1);
    let users = create_users(admin, &prefix, args.users, args.setup_concurrency as usize).await?;

    let per_user = args.connections_per_user;
    let connections = args.users * per_user;
    eprintln!("opening {connections} WebSocket connections to {}", client::redact_url(ws_url));
    let options: Vec<ConnectOptions> = (0..connections)
        .map(|i| ConnectOptions {
            url: ws_url.to_owned(),
            token: users[(i / per_user) as usize].1.clone(),
            device: Some(format!("bench-{}", i % per_user)),
            timeout,
        })
        .collect();
    let prefix = prefix.as_str();
    let sockets: Vec<WsStream> = futures::stream::iter(options.iter().enumerate())
        .map(|(i, opts)| async move {
            client::connect_raw(opts).await.map_err(|e| {
                let hint = if format!("{e:#}").contains("Too many open files") {
                    " (raise the open file limit, e.g. `ulimit -n 65536`)"
                } else {
                    ""
                };
                e.context(format!("opening connection {i} (user {prefix}-{}){hint}", i as u32 / per_user))
            })
        })
        .buffered(args.setup_concurrency as usize)
        .try_collect()
        .await?;
    drop(options);

    let epoch = Instant::now();
    let run = Arc::new(Run {
        epoch,
        plan: Plan::new(START_DELAY, args.warmup, args.duration),
        load,
        pairing: args.pairing,
        body_size: args.body_size as usize,
        users: users.iter().map(|(id, _)| *id).collect(),
        connections,
        latencies: Default::default(),
        errors: Default::default(),
    });
    drop(users);
    let (stop_tx, stop_rx) = watch::channel(false);
    let counters: Arc<[Arc<Counters>]> = (0..connections).map(|_| Arc::new(Counters::default())).collect();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let conn = Connection { index: i as u32, user_index: i as u32 / per_user };
            tokio::spawn(workload::run_connection(ws, conn, run.clone(), counters[i].clone(), stop_rx.clone()))
        })
        .collect();
    let progress = (!args.no_progress).then(|| {
        let tty = std::io::stderr().is_terminal();
        tokio::spawn(progress::report(run.clone(), counters.clone(), stop_rx.clone(), tty))
    });

    tokio::time::sleep_until(epoch + Duration::from_nanos(run.plan.measure_from)).await;
    let before = CpuSample::take(args.server_pid);
    tokio::time::sleep_until(epoch + Duration::from_nanos(run.plan.send_until)).await;
    let after = CpuSample::take(args.server_pid);
    let drain_s = drain(&counters, per_user, args.drain).await;

    let _ = stop_tx.send(true);
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        reports.push(task.await.context("a connection task failed")?);
    }
    if let Some(progress) = progress {
        let _ = progress.await;
    }

    let totals = Totals::sum(counters.iter().map(|c| &**c));
    Ok(summarize(args, &run, totals, reports, before, after, drain_s))
}

/// Creates `count` users named `{prefix}-{i}`; returns (id, token) in order.
async fn create_users(
    admin: &Admin,
    prefix: &str,
    count: u32,
    concurrency: usize,
) -> anyhow::Result<Vec<(u64, String)>> {
    futures::stream::iter(0..count)
        .map(|i| {
            let mut admin = admin.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let created = match admin.create_user(&name).await {
                    Ok(created) => created,
                    Err(e) => {
                        if let Some(hint) = admin.hint_for(&e) {
                            eprintln!("hint: {hint}");
                        }
                        return Err(anyhow::Error::from(e).context(format!("creating user {name}")));
                    }
                };
                let user = created.user.with_context(|| format!("CreateUser({name}) returned no user"))?;
                Ok((user.id, created.token))
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// Waits until every send is answered and every acked message has reached
/// all recipient devices, or `max` passes. Returns the seconds waited.
async fn drain(counters: &[Arc<Counters>], devices_per_user: u32, max: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let t = Totals::sum(counters.iter().map(|c| &**c));
        if t.outstanding() == 0 && t.delivered >= t.acked * u64::from(devices_per_user) {
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

fn summarize(
    args: &BenchArgs,
    run: &Run,
    totals: Totals,
    reports: Vec<ConnectionReport>,
    before: CpuSample,
    after: CpuSample,
    drain_s: f64,
) -> Summary {
    let measured_s = run.plan.measured().as_secs_f64();
    let mut acked = Vec::with_capacity(totals.acked as usize);
    let mut received = Vec::with_capacity(reports.len());
    for report in reports {
        acked.extend(report.acked);
        received.push(report.received);
    }
    let check = stats::check_delivery(acked, received, args.connections_per_user);
    let (e2e, ack) = run.latencies.merged();
    let server_cpu = match (before.server, after.server) {
        (Some((pid, t0)), Some((_, t1))) => {
            let cpu_seconds = cpu::seconds_between(t0, t1);
            let us_per_delivered =
                (totals.delivered_in_window > 0).then(|| cpu_seconds * 1e6 / totals.delivered_in_window as f64);
            Some(ServerCpu { pid, cpu_seconds, us_per_delivered })
        }
        _ => None,
    };
    let client_cpu_seconds = match (before.client, after.client) {
        (Some(t0), Some(t1)) => Some(cpu::seconds_between(t0, t1)),
        _ => None,
    };
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
            },
            warmup_s: args.warmup.as_secs_f64(),
            duration_s: args.duration.as_secs_f64(),
            drain_max_s: args.drain.as_secs_f64(),
        },
        sent: totals.sent,
        acked: totals.acked,
        delivered: totals.delivered,
        expected_deliveries: totals.acked * u64::from(args.connections_per_user),
        errors: totals.errors,
        errors_by_code: run.errors.snapshot(),
        unacked: totals.outstanding(),
        measured_s,
        drain_s,
        acked_per_s: stats::per_second(totals.acked_in_window, measured_s),
        delivered_per_s: stats::per_second(totals.delivered_in_window, measured_s),
        e2e_latency: LatencySummary::of(&e2e),
        ack_latency: LatencySummary::of(&ack),
        check,
        server_cpu,
        client_cpu_seconds,
    }
}
