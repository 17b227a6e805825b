//! The group workload (`imctl bench --group-size N`): K groups of N new
//! users, every member connected once, S senders per group writing to their
//! group at an aggregate open-loop rate. Each message should reach the N−1
//! other members; the summary gives the latency to the last of them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use super::layout::GroupLayout;
use super::stats::fanout::FanoutTracker;
use super::stats::{GroupConfig, GroupSummary, LatencySummary};
use super::workload::{Connection, Load, Plan, Run, Schedule, Traffic};
use super::{Outcome, START_DELAY, drive, fd_limit, run_prefix, setup, timing};
use crate::admin::Admin;
use crate::cli::{BenchArgs, DEFAULT_GROUP_RATE};
use crate::client::{self, ConnectOptions};
use crate::grpc;
use crate::tls::CaBundle;

/// Largest fan-out bookkeeping a run may allocate (one bit per member per message).
pub const MAX_TRACKING_BYTES: u64 = 2 << 30;

/// The layout `args` asks for, checked.
pub fn layout_of(args: &BenchArgs) -> anyhow::Result<GroupLayout> {
    let Some(size) = args.group_size else { bail!("the group workload needs --group-size") };
    if args.senders > size {
        bail!("--senders {} is more than --group-size {size}: senders are members", args.senders);
    }
    Ok(GroupLayout { groups: args.groups, size, senders: args.senders })
}

/// How many messages each sending connection sends (connection i → entry i).
pub fn messages_per_sender(layout: GroupLayout, plan: &Plan, rate: f64) -> Vec<u32> {
    let senders = layout.sending_connections();
    (0..senders)
        .map(|i| {
            let count = Schedule::new(plan.start, rate, senders, i).count_before(plan.send_until);
            u32::try_from(count).unwrap_or(u32::MAX)
        })
        .collect()
}

/// One group run: users through `admin`, groups through the im-service at
/// `im_service_url`, load through the gateway at `ws_url`. Returns the
/// summary without printing it (progress aside).
pub async fn execute(
    admin: &Admin,
    im_service_url: &str,
    ws_url: &str,
    timeout: Duration,
    ca: Option<&CaBundle>,
    args: &BenchArgs,
) -> anyhow::Result<GroupSummary> {
    let layout = layout_of(args)?;
    let rate = args.rate.unwrap_or(DEFAULT_GROUP_RATE);
    let plan = Plan::new(START_DELAY, args.warmup, args.duration);
    let counts = messages_per_sender(layout, &plan, rate);
    let messages: u64 = counts.iter().map(|&n| u64::from(n)).sum();
    let bytes = FanoutTracker::bytes_needed(layout, messages);
    if bytes > MAX_TRACKING_BYTES {
        bail!(
            "tracking {messages} messages to {} members each takes {} MiB (at most {} MiB): lower --rate, \
             --duration, --warmup or --group-size",
            layout.size,
            bytes >> 20,
            MAX_TRACKING_BYTES >> 20
        );
    }
    fd_limit::ensure_room_for(u64::from(layout.users()))?;
    // Reach the IM service before creating thousands of users for nothing.
    let channel = grpc::channel(im_service_url, timeout, ca, "IM service").await?;
    let tracker = FanoutTracker::new(layout, &counts);

    let prefix = run_prefix();
    let concurrency = args.setup_concurrency as usize;
    let progress = !args.no_progress;
    eprintln!(
        "creating {} users {prefix}-0..{} and {} group(s) of {} through {im_service_url}",
        layout.users(),
        layout.users() - 1,
        layout.groups,
        layout.size
    );
    let users = setup::create_users(admin, &prefix, layout.users(), concurrency, progress).await?;
    let ids = setup::create_groups(&channel, &users, layout, &prefix, concurrency, progress).await?;
    drop(channel);

    eprintln!("opening {} WebSocket connections to {}", layout.users(), client::redact_url(ws_url));
    let connections: Vec<Connection> =
        (0..layout.users()).map(|index| Connection { index, user_index: layout.user_of_connection(index) }).collect();
    let options: Vec<ConnectOptions> = connections
        .iter()
        .map(|c| ConnectOptions {
            url: ws_url.to_owned(),
            token: users[c.user_index as usize].1.clone(),
            device: Some("bench".into()),
            timeout,
            ca: ca.cloned(),
        })
        .collect();
    let whose = |i: usize| format!("user {prefix}-{}", connections[i].user_index);
    let sockets = setup::connect_all(&options, concurrency, progress, whose).await?;
    drop(options);
    if !args.settle.is_zero() {
        eprintln!("waiting {:?} for the connections to settle (--settle)", args.settle);
        tokio::time::sleep(args.settle).await;
    }

    let run = Arc::new(Run {
        epoch: Instant::now(),
        plan,
        load: Load::Open { rate },
        traffic: Traffic::Groups { layout, ids, tracker },
        body_size: args.body_size as usize,
        text_bodies: args.text,
        users: users.iter().map(|(id, _)| *id).collect(),
        senders: layout.sending_connections(),
        latencies: Default::default(),
        errors: Default::default(),
    });
    drop(users);
    let outcome = drive(&run, sockets, connections, args, u64::from(layout.size - 1)).await?;
    Ok(summarize(args, layout, rate, &run, outcome))
}

fn summarize(args: &BenchArgs, layout: GroupLayout, rate: f64, run: &Run, mut outcome: Outcome) -> GroupSummary {
    let Traffic::Groups { tracker, .. } = &run.traffic else { unreachable!("a group run") };
    let (check, last_member) = tracker.check(outcome.acked(), |sent| run.plan.in_window(sent));
    let (push, ack) = run.latencies.merged();
    GroupSummary {
        config: GroupConfig {
            groups: layout.groups,
            group_size: layout.size,
            senders_per_group: layout.senders,
            rate,
            body_size: args.body_size,
            timing: timing(args),
        },
        counts: outcome.counts(run),
        fanout_latency: LatencySummary::of(&last_member),
        push_latency: LatencySummary::of(&push),
        ack_latency: LatencySummary::of(&ack),
        check,
        cpu: outcome.cpu(),
        commits: outcome.commits(run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn bench(args: &[&str]) -> Box<BenchArgs> {
        match Cli::parse_from(["imctl", "bench"].iter().chain(args)).command {
            Command::Bench(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn senders_must_be_members() {
        let err = layout_of(&bench(&["--group-size", "3", "--senders", "4"])).unwrap_err().to_string();
        assert_eq!(err, "--senders 4 is more than --group-size 3: senders are members");
        let layout = layout_of(&bench(&["--group-size", "3", "--groups", "2", "--senders", "3"])).unwrap();
        assert_eq!(layout, GroupLayout { groups: 2, size: 3, senders: 3 });
    }

    #[test]
    fn the_aggregate_rate_is_split_over_every_sender() {
        let layout = GroupLayout { groups: 2, size: 10, senders: 2 };
        let plan = Plan::new(Duration::ZERO, Duration::from_secs(1), Duration::from_secs(2));
        let counts = messages_per_sender(layout, &plan, 100.0);
        assert_eq!(counts.len(), 4);
        assert_eq!(counts.iter().sum::<u32>(), 300, "{counts:?}");
    }
}
