//! MySQL failover under load (issue 16): a replicated MariaDB pair of the
//! test's own ([`MariadbPair`]), reached by the nodes through a
//! [`TcpProxy`] that plays the operator's proxy or DNS name, repointed at the
//! promoted replica. No node is restarted.
//!
//! - A: semi-sync (`AFTER_SYNC`), the primary killed -9: every acked message
//!   is on the new primary once, in order (G1) — [`crate::harness::Traffic::finish`].
//! - B: asynchronous replication with the replica behind, the primary killed
//!   -9: acked messages are missing on the new primary. The documented loss,
//!   counted on the server itself.
//! - C: the old primary demoted (`read_only`) but alive, and a repoint that
//!   keeps open connections (DNS): the nodes drop their pooled connections
//!   to it, writes stop landing there, and sends resume.
//!
//! Each prints its unavailability window: from the last ack before the fault
//! to the first ack after the repoint, and from the repoint to that ack.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use im_proto::client::{ErrorCode, server_frame};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::faults::cross_traffic;
use crate::harness::{Cluster, ClusterBuilder, CountRules, Failure, Inbox, REQUEST_TIMEOUT};
use crate::mariadb_pair::{APP_USER, MariadbPair, Replication};
use crate::support::{free_port, http_get};
use crate::tcp_proxy::TcpProxy;

/// `SEQUENCE_SNAPSHOT_INTERVAL`: small, so ceilings are raised (and
/// replicated) often under load.
const INTERVAL: u64 = 64;
/// Messages acked before the fault.
const WARM_UP: usize = 200;
/// Acks each talker must get after the failover.
const PROGRESS: usize = 20;
const WITHIN: Duration = Duration::from_secs(20);
/// Time the nodes may take to stop using the old primary's connections
/// once the repoint is done: the pool's swap interval (1 s) and a margin for
/// a loaded machine. Far below `DB_CONN_MAX_LIFETIME`, which would otherwise
/// replace them.
const SETTLE: Duration = Duration::from_secs(4);

/// A cluster of two nodes on the pair, through `proxy`, logged in as the
/// application user (no `SUPER`: `read_only` applies to it).
async fn cluster_on(proxy: &TcpProxy) -> Cluster {
    builder(proxy).start().await
}

fn builder(proxy: &TcpProxy) -> ClusterBuilder {
    ClusterBuilder::new()
        .db_host(proxy.addr())
        .env_all("DB_USER", APP_USER)
        // Stated, not defaulted: the nodes must leave the old primary long
        // before connections would be replaced by age.
        .env_all("DB_CONN_MAX_LIFETIME", "1h")
        .node_env("SEQUENCE_SNAPSHOT_INTERVAL", INTERVAL)
}

/// The instant the number of acks first exceeds `count` (polled every
/// millisecond, so within about that of the ack).
async fn first_ack_after(acked: impl Fn() -> usize, count: usize, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if acked() > count {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "no ack within {within:?} (still {count})");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The windows of one failover.
struct Window {
    /// Last ack before the fault.
    last_ack: Instant,
    /// The proxy points at the promoted replica.
    repointed: Instant,
    /// First ack after the repoint.
    resumed: Instant,
}

impl Window {
    fn print(&self, test: &str) {
        eprintln!(
            "{test}: no ack for {:?} (last ack before the fault -> first after the repoint); \
             repoint -> first ack {:?}; promotion and repoint took {:?}",
            self.resumed - self.last_ack,
            self.resumed - self.repointed,
            self.repointed - self.last_ack,
        );
    }
}

/// A. Semi-sync `AFTER_SYNC`: every message the nodes acked was in the
/// replica's relay log before the ack, so the promoted replica has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semi_sync_failover_after_kill_9_of_the_primary_loses_no_acked_message() {
    let started = Instant::now();
    let mut pair = MariadbPair::start(Replication::SemiSync).await;
    let proxy = TcpProxy::start(&pair.primary.addr()).await;
    let cluster = cluster_on(&proxy).await;
    let mut traffic = cross_traffic(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;

    let last_ack = first_ack_after(|| traffic.acked(), traffic.acked(), WITHIN).await;
    pair.primary.kill9();
    pair.promote_replica().await;
    proxy.retarget(&pair.replica.addr());
    let repointed = Instant::now();
    let resumed = first_ack_after(|| traffic.acked(), traffic.acked(), WITHIN).await;
    Window { last_ack, repointed, resumed }.print("semi-sync, primary killed");

    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    // Sends failed while no primary answered: gaps of at most a ceiling's
    // interval (and one more for a raise in flight at the kill).
    let count = traffic
        .finish(&cluster, CountRules { max_gap: 2 * INTERVAL, pushes_complete_after: settled, reader_gateway: 0 })
        .await;
    assert!(
        count.errors_by_code.get("UNAVAILABLE").is_some_and(|n| *n > 0),
        "no send failed: the kill hit no traffic ({count})"
    );
    eprintln!("semi-sync failover: {count}; {:?}", started.elapsed());
}

/// B. Asynchronous replication, the replica behind when the primary dies:
/// what it had not received is gone from the new primary although it was
/// acked. This is what semi-sync prevents; the count is the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_failover_with_a_lagging_replica_loses_acked_messages() {
    /// Messages acked after the replica stopped receiving.
    const BEHIND: usize = 100;
    let started = Instant::now();
    let mut pair = MariadbPair::start(Replication::Async).await;
    let proxy = TcpProxy::start(&pair.primary.addr()).await;
    let cluster = cluster_on(&proxy).await;
    let senders = Senders::start(&cluster, 4).await;
    let acked = || senders.acked();
    first_ack_after(acked, WARM_UP, WITHIN).await;

    pair.cut_replication().await;
    let acked_at_cut = senders.acked();
    first_ack_after(acked, acked_at_cut + BEHIND, WITHIN).await;
    let last_ack = first_ack_after(acked, senders.acked(), WITHIN).await;
    pair.primary.kill9();
    pair.promote_replica().await;
    proxy.retarget(&pair.replica.addr());
    let repointed = Instant::now();
    let resumed = first_ack_after(acked, senders.acked(), WITHIN).await;
    Window { last_ack, repointed, resumed }.print("async, replica behind, primary killed");
    first_ack_after(acked, senders.acked() + 50, WITHIN).await;
    let acks = senders.stop().await;

    let stored: HashSet<(u64, String)> = pair.replica.stored_messages(&cluster.database).await.into_iter().collect();
    let missing: Vec<&Ack> = acks.iter().filter(|ack| !stored.contains(&ack.key)).collect();
    eprintln!(
        "async failover: {} acked, {} acked after the replica stopped receiving, {} acked messages missing \
         on the new primary; {:?}",
        acks.len(),
        acks.len() - acked_at_cut,
        missing.len(),
        started.elapsed()
    );
    // Each sender has one message in flight: at most that many of the acks
    // after the cut were committed (and shipped) before it.
    let senders_count = 4;
    assert!(
        missing.len() >= BEHIND - senders_count,
        "only {} acked messages missing, with {BEHIND} acked after the replica stopped receiving",
        missing.len()
    );
    // What is lost was acked before the repoint; everything acked on the
    // new primary is there.
    for ack in &missing {
        assert!(ack.at < repointed, "{:?} acked after the repoint is missing", ack.key);
    }
    assert!(acks.iter().any(|ack| ack.at > repointed), "nothing was acked on the new primary");
}

/// C. A planned failover: the old primary is demoted (`read_only`) but stays
/// up, and the repoint reaches new connections only (a DNS change), so the
/// nodes' pooled connections still lead to it. They refuse writes as
/// read-only, the nodes drop their pools and connect again, and sends
/// resume on the new primary; nothing more is written on the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_still_up_gets_no_write_after_the_repoint() {
    let started = Instant::now();
    let pair = MariadbPair::start(Replication::SemiSync).await;
    let proxy = TcpProxy::start(&pair.primary.addr()).await;
    // Each node's metrics on a port of its own: `im_db_pool_resets_total`.
    let metrics_ports = [free_port(), free_port()];
    let cluster = builder(&proxy)
        .node_env("METRICS_ENABLED", "true")
        .node_env_at(0, "METRICS_PORT", metrics_ports[0])
        .node_env_at(1, "METRICS_PORT", metrics_ports[1])
        .start()
        .await;
    let mut traffic = cross_traffic(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;

    let last_ack = first_ack_after(|| traffic.acked(), traffic.acked(), WITHIN).await;
    pair.demote_primary().await;
    let demoted = Instant::now();
    // Writes in flight and after fail UNAVAILABLE (the client retries).
    let deadline = Instant::now() + WITHIN;
    while !traffic.errors().iter().any(|e| e.at > demoted && e.code == ErrorCode::Unavailable) {
        assert!(Instant::now() < deadline, "no send failed UNAVAILABLE on the read-only primary");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pair.promote_replica().await;
    let old_position = pair.primary.binlog_position().await;
    proxy.retarget_new_connections(&pair.replica.addr());
    let repointed = Instant::now();
    let resumed = first_ack_after(|| traffic.acked(), traffic.acked(), WITHIN).await;
    Window { last_ack, repointed, resumed }.print("demoted primary still up, DNS-like repoint");

    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    tokio::time::sleep(SETTLE.saturating_sub(repointed.elapsed())).await;
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    // Once the pools are swapped no call meets the old primary again: with
    // connections kept to it, sends would keep failing until
    // DB_CONN_MAX_LIFETIME.
    let late: Vec<_> = traffic.errors().into_iter().filter(|e| e.at - e.latency > repointed + SETTLE).collect();
    assert!(late.is_empty(), "sends failed {SETTLE:?} after the repoint: {late:?}");
    let count = traffic
        .finish(&cluster, CountRules { max_gap: 2 * INTERVAL, pushes_complete_after: settled, reader_gateway: 1 })
        .await;
    assert_eq!(pair.primary.binlog_position().await, old_position, "something was written on the old primary");
    for (node, port) in cluster.nodes.iter().zip(metrics_ports) {
        let resets = pool_resets(port).await;
        assert!(resets >= 1, "{} never dropped its pool", node.name);
        eprintln!("{}: {resets} pool resets", node.name);
    }
    eprintln!("planned failover: {count}; {:?}", started.elapsed());
}

/// `im_db_pool_resets_total` of the node serving metrics on `port`.
async fn pool_resets(port: u16) -> u64 {
    let (status, body) = http_get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    let line = body.lines().find_map(|line| line.strip_prefix("im_db_pool_resets_total "));
    line.and_then(|value| value.trim().parse().ok()).unwrap_or_else(|| panic!("no pool resets counter in:\n{body}"))
}

/// One acked message.
struct Ack {
    key: (u64, String),
    at: Instant,
}

/// Talkers that keep every ack, for a count made on the server itself
/// ([`crate::harness::Traffic::finish`] rightly fails on a loss). Each sends one message at
/// a time, resending it after an error until it is acked.
struct Senders {
    acks: Arc<Mutex<Vec<Ack>>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Senders {
    /// `pairs` conversations, each written from one end, from gateway
    /// k mod 2.
    async fn start(cluster: &Cluster, pairs: usize) -> Senders {
        let senders = Senders { acks: Arc::default(), stop: CancellationToken::new(), tasks: Vec::new() };
        let mut tasks = Vec::new();
        for k in 0..pairs {
            let me = cluster.create_user(&format!("s{k}")).await;
            let peer = cluster.create_user(&format!("r{k}")).await;
            let label = format!("sender{k}");
            let mut device = cluster.connect(k % 2, &me, &label, Inbox::default()).await;
            let (acks, stop) = (senders.acks.clone(), senders.stop.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let client_msg_id = format!("{label}-{n}");
                    loop {
                        if stop.is_cancelled() {
                            return;
                        }
                        match device.send_text(peer.id, &client_msg_id, "hello", REQUEST_TIMEOUT).await {
                            Ok(server_frame::Body::Ack(_)) => break,
                            Ok(server_frame::Body::Error(_)) | Err(Failure::Timeout) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Ok(other) => panic!("{label}: a send answered {other:?}"),
                            Err(Failure::Closed) => panic!("{label}: the gateway closed the connection"),
                        }
                    }
                    let key = (me.id, client_msg_id);
                    acks.lock().unwrap().push(Ack { key, at: Instant::now() });
                }
            }));
        }
        Senders { tasks, ..senders }
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Stops sending (a message in flight is given up) and returns the acks.
    async fn stop(self) -> Vec<Ack> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("a sender panicked");
        }
        std::mem::take(&mut *self.acks.lock().unwrap())
    }
}
