//! Faults across real processes (DESIGN.md §7): `kill -9` of a node, Redis
//! flushed or rolled back to an old snapshot, MariaDB killed, a gateway
//! killed — each under load, each ending with the count of
//! [`Traffic::finish`]: every acked message stored once and delivered to
//! every device by push or sync exactly once, seqs strictly increasing per
//! conversation, no seq issued twice, gaps bounded.
//!
//! Redis and MariaDB faults run on servers the test owns ([`PrivateRedis`],
//! [`PrivateMariadb`]); the shared ones of `scripts/servers.sh` are never
//! flushed, killed or restarted.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::{Cluster, ClusterBuilder, CountRules, PrivateMariadb, PrivateRedis, Traffic};

/// `SEQUENCE_SNAPSHOT_INTERVAL` of every test: small, so ceilings are raised
/// often under load and the bound on gaps means something.
const INTERVAL: u64 = 64;
/// Conversations, each written from both ends at once.
const PAIRS: usize = 4;
/// Messages acked before the fault.
const WARM_UP: usize = 300;
/// Acks each live talker must get after a recovery.
const PROGRESS: usize = 40;
const WITHIN: Duration = Duration::from_secs(30);
/// How long a send may take to fail while a dependency is down: the
/// gateway's deadline for a call to the IM Service (`IM_SERVICE_TIMEOUT`,
/// 5 s by default), and a margin.
const FAIL_FAST: Duration = Duration::from_secs(6);

/// `PAIRS` conversations. In pair k, `a` talks from gateway k mod 2 and `b`
/// from the other gateway, so every conversation is written through both
/// nodes at once; `b` also watches from `a`'s gateway, and `a` follows (syncs
/// from its cursor) from `b`'s.
pub async fn cross_traffic(cluster: &Cluster) -> Traffic {
    let mut traffic = Traffic::new();
    for k in 0..PAIRS {
        let a = cluster.create_user(&format!("a{k}")).await;
        let b = cluster.create_user(&format!("b{k}")).await;
        let (ga, gb) = (k % 2, (k + 1) % 2);
        traffic.talker(cluster, ga, &a, &b).await;
        traffic.talker(cluster, gb, &b, &a).await;
        traffic.watcher(cluster, ga, &b, &a).await;
        traffic.follower(cluster, gb, &a, &b).await;
    }
    traffic
}

/// 0. The control: the same traffic and count with no fault at all, so a
/// violation here is not a fault's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fault_baseline_counts_clean() {
    let started = Instant::now();
    let cluster = ClusterBuilder::new().node_env("SEQUENCE_SNAPSHOT_INTERVAL", INTERVAL).start().await;
    let mut traffic = cross_traffic(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;
    let settled = Instant::now();
    traffic.wait_for_progress(2 * PROGRESS, WITHIN).await;

    // No loss, no failed send: seqs are contiguous.
    let count =
        traffic.finish(&cluster, CountRules { max_gap: 1, pushes_complete_after: settled, reader_gateway: 0 }).await;
    assert!(count.errors_by_code.is_empty());
    eprintln!("no fault: {:?}", started.elapsed());
}

/// 1. `kill -9` of one of two nodes under load, then a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_under_load_loses_no_acked_message() {
    let started = Instant::now();
    let mut cluster = ClusterBuilder::new().node_env("SEQUENCE_SNAPSHOT_INTERVAL", INTERVAL).start().await;
    let mut traffic = cross_traffic(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;

    cluster.nodes[0].kill9();
    let killed = Instant::now();
    let acked_at_kill = traffic.acked();
    // Each within a deadline, not at a fixed time after the kill: a loaded
    // machine takes longer to notice.
    let deadline = Instant::now() + WITHIN;
    while !traffic.errors().iter().any(|e| e.at > killed && e.device.ends_with("gw0")) {
        assert!(Instant::now() < deadline, "the talkers of the dead node's gateway were not told UNAVAILABLE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The surviving node acks while the other is down.
    traffic.wait_for_acks(acked_at_kill + 1, WITHIN).await;
    cluster.gateways[0].wait_until_reports_down("im-service", WITHIN).await;
    cluster.nodes[0].restart().await;
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;

    let count = traffic
        .finish(&cluster, CountRules { max_gap: 2 * INTERVAL, pushes_complete_after: settled, reader_gateway: 1 })
        .await;
    assert!(count.resent > 0, "no message was resent: the kill hit no send");
    eprintln!("kill -9 of a node: {:?}", started.elapsed());
}

/// 2. `FLUSHALL` of Redis, twice, mid-run: counters restart from the stored
/// ceilings, so no seq is issued twice and a gap is at most about one
/// interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_mid_run_issues_no_seq_twice() {
    let started = Instant::now();
    let redis = PrivateRedis::start().await;
    let cluster =
        ClusterBuilder::new().redis(redis.addr()).node_env("SEQUENCE_SNAPSHOT_INTERVAL", INTERVAL).start().await;
    let mut traffic = cross_traffic(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;

    for _ in 0..2 {
        assert_eq!(redis.command(&["FLUSHALL"]).await, "+OK");
        traffic.wait_for_progress(PROGRESS, WITHIN).await;
    }
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;

    // A counter restarts from its stored ceiling; a raise written but not
    // yet published in Redis when the flush came adds one more interval.
    let count = traffic
        .finish(&cluster, CountRules { max_gap: 2 * INTERVAL, pushes_complete_after: settled, reader_gateway: 0 })
        .await;
    assert!(count.largest_gap > 1, "no gap at all: the flush did not reach the counters");
    eprintln!("FLUSHALL: {:?}", started.elapsed());
}

/// 3. Redis restarted from an old snapshot mid-run: its counters moved back,
/// but the nodes see a new server process and bump the allocator epoch, so
/// no counter of the snapshot is trusted and no seq is issued twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restored_from_an_old_snapshot_issues_no_seq_twice() {
    let started = Instant::now();
    let mut redis = PrivateRedis::start().await;
    let cluster =
        ClusterBuilder::new().redis(redis.addr()).node_env("SEQUENCE_SNAPSHOT_INTERVAL", INTERVAL).start().await;
    let mut traffic = cross_traffic(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;

    let epoch_key = format!("{}:seq:epoch", cluster.name);
    let epoch_before = redis.command(&["GET", &epoch_key]).await;
    assert_eq!(redis.command(&["SAVE"]).await, "+OK");
    let old = redis.dump_file().with_extension("old");
    std::fs::copy(redis.dump_file(), &old).unwrap();
    // Several intervals past the snapshot, so its counters are well behind.
    let acked_at_save = traffic.acked();
    traffic.wait_for_acks(acked_at_save + 4 * INTERVAL as usize * PAIRS, WITHIN).await;
    traffic.wait_for_progress(PROGRESS, WITHIN).await;

    redis.kill9();
    std::fs::copy(&old, redis.dump_file()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;

    // The nodes saw a Redis process that is not the one the epoch's counters
    // were kept on, and moved to a new epoch.
    let epoch_after = redis.command(&["GET", &epoch_key]).await;
    // Nil until an epoch above 0 is used.
    let parse = |epoch: &str| match epoch {
        "$-1" => 0,
        epoch => epoch.parse::<u64>().unwrap_or_else(|_| panic!("{epoch_key} is {epoch:?}")),
    };
    assert!(parse(&epoch_after) > parse(&epoch_before), "allocator epoch {epoch_before} -> {epoch_after}");

    let count = traffic
        .finish(&cluster, CountRules { max_gap: 2 * INTERVAL, pushes_complete_after: settled, reader_gateway: 1 })
        .await;
    assert!(count.largest_gap > 1, "no gap at all: the restored counters were not replaced");
    eprintln!("old Redis snapshot: {:?}", started.elapsed());
}

/// 4. MariaDB killed mid-run: sends fail fast with UNAVAILABLE and `/ready`
/// says mysql is down (G9); once it is back the nodes recover by themselves
/// and every acked message is there (G1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_mid_run_fails_fast_and_recovers_by_itself() {
    let started = Instant::now();
    let mut mariadb = PrivateMariadb::start().await;
    let mut cluster =
        ClusterBuilder::new().db_host(mariadb.addr()).node_env("SEQUENCE_SNAPSHOT_INTERVAL", INTERVAL).start().await;
    let mut traffic = cross_traffic(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;

    mariadb.kill9();
    let killed = Instant::now();
    for node in &cluster.nodes {
        node.wait_until_reports_down("mysql", Duration::from_secs(10)).await;
    }
    // Every talker is told, by an error frame, while MySQL is down; the
    // nodes stay up.
    let talkers = traffic.running_talkers();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let told: HashSet<String> = traffic.errors().into_iter().filter(|e| e.at > killed).map(|e| e.device).collect();
        if talkers.iter().all(|t| told.contains(t)) {
            break;
        }
        assert!(Instant::now() < deadline, "talkers {talkers:?} not all told UNAVAILABLE within 15 s; told: {told:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in &mut cluster.nodes {
        assert!(node.is_running(), "{} exited while MySQL was down", node.name);
    }
    let during: Vec<_> = traffic.errors().into_iter().filter(|e| e.at > killed).collect();
    let slowest = during.iter().map(|e| e.latency).max().unwrap();
    eprintln!("MySQL down: {} error frames in {:?}, slowest after {slowest:?}", during.len(), killed.elapsed());
    assert_eq!(traffic.hangs(), 0, "a request hung while MySQL was down");
    assert!(slowest <= FAIL_FAST, "a send took {slowest:?} to fail while MySQL was down");

    mariadb.restart().await;
    let restarted = Instant::now();
    for node in &cluster.nodes {
        let deadline = Instant::now() + WITHIN;
        while !matches!(node.ready().await, Ok((200, _))) {
            assert!(Instant::now() < deadline, "{} not ready again {WITHIN:?} after MySQL came back", node.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("nodes ready {:?} after MySQL came back", restarted.elapsed());
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;

    // Failed sends leave gaps, but only of seqs under the published
    // ceiling: at most one interval.
    let count = traffic
        .finish(&cluster, CountRules { max_gap: INTERVAL, pushes_complete_after: settled, reader_gateway: 0 })
        .await;
    assert!(count.errors_by_code.get("UNAVAILABLE").is_some_and(|n| *n > 0));
    eprintln!("MariaDB kill -9: {:?}", started.elapsed());
}

/// 5. A gateway killed: its users stay registered until its etcd lease
/// expires; what is sent to them meanwhile is acked and stored; they
/// reconnect to the other gateway — some at once, some after the lease
/// expired — and get everything, by push from then on and by sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_users_get_everything_through_the_other_gateway() {
    let started = Instant::now();
    let mut cluster = ClusterBuilder::new().node_env("SEQUENCE_SNAPSHOT_INTERVAL", INTERVAL).start().await;
    let mut traffic = Traffic::new();
    let mut watchers = Vec::new();
    for k in 0..PAIRS {
        // a on the surviving gateway 1; b on gateway 0, which dies.
        let a = cluster.create_user(&format!("a{k}")).await;
        let b = cluster.create_user(&format!("b{k}")).await;
        traffic.talker(&cluster, 1, &a, &b).await;
        traffic.talker(&cluster, 0, &b, &a).await;
        watchers.push(traffic.watcher(&cluster, 0, &b, &a).await);
        traffic.follower(&cluster, 1, &b, &a).await;
    }
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;

    let dead_suffix = format!("/{}", cluster.gateways[0].env("GATEWAY_SERVICE_ADDR"));
    cluster.gateways[0].kill9();
    let killed = Instant::now();
    // Sends to b keep being acked while b still looks connected.
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    for label in &watchers {
        assert!(traffic.watcher_closed(label), "{label} still connected to a dead gateway");
    }
    // Half the watchers come back at once, to gateway 1, while gateway 0's
    // registrations are still there.
    let (early, late) = watchers.split_at(PAIRS / 2);
    for label in early {
        traffic.reconnect_watcher(&cluster, label, 1).await;
    }
    let dead_gateway = cluster.registrations().await.iter().filter(|key| key.ends_with(&dead_suffix)).count();
    eprintln!("{} watchers back on gateway 1 while {dead_gateway} registrations on gateway 0 remain", early.len());
    // From a second after they are back, they get every message by push,
    // although the dead gateway still holds their registrations.
    let early_back = Instant::now() + Duration::from_secs(1);
    for label in early {
        traffic.require_pushes_from(label, early_back);
    }
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    cluster.wait_until_gateway_forgotten(0, Duration::from_secs(20)).await;
    let expired = killed.elapsed();
    eprintln!("gateway 0's registrations expired {expired:?} after the kill");
    // The lease TTL is 10 s, kept alive every third of it.
    assert!(expired >= Duration::from_secs(5), "registrations of a gateway killed -9 gone after {expired:?}");
    for label in late {
        traffic.reconnect_watcher(&cluster, label, 1).await;
    }
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;

    // Nothing failed to be stored: seqs are contiguous.
    let count =
        traffic.finish(&cluster, CountRules { max_gap: 1, pushes_complete_after: settled, reader_gateway: 1 }).await;
    for label in late {
        let (_, by_sync) = count.per_device[label];
        assert!(by_sync > 0, "{label} missed nothing while away: the test sent nothing to it meanwhile");
    }
    eprintln!("gateway kill -9: {:?}", started.elapsed());
}
