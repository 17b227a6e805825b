//! Redis behind Sentinels (issue 16): the nodes ask three Sentinels for the
//! primary (`REDIS_SENTINELS`, `REDIS_MASTER_NAME`) instead of one
//! `REDIS_ADDR`. The primary is killed under load, and in the second test
//! the replica promoted had fallen behind. Each ends with the count of
//! [`Traffic::finish`](crate::harness::Traffic::finish): every acked message
//! stored once and delivered once, seqs strictly increasing with no seq
//! issued twice, gaps bounded.
//!
//! The servers are the test's own ([`PrivateRedis`]); the shared Redis is
//! never touched.

use std::time::{Duration, Instant};

use im_proto::client::{ErrorCode, server_frame};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::faults::{INTERVAL, PROGRESS, WARM_UP, WITHIN, cross_traffic};
use crate::harness::{Cluster, ClusterBuilder, CountRules, PrivateRedis, User, redis_command};
use crate::support::{GroupApi, Node, free_port, group_conversation, http_get, metric};
use crate::tcp_proxy::{Mode, TcpProxy};

/// The name the Sentinels monitor the primary under.
const MASTER: &str = "im-e2e";
/// How long a Sentinel waits for a silent primary before it calls it down.
const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// The longest the sends may stop for across a failover (the aim).
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// A primary, its replicas and three Sentinels.
struct Topology {
    primary: PrivateRedis,
    replicas: Vec<PrivateRedis>,
    sentinels: Vec<PrivateRedis>,
}

impl Topology {
    /// Sentinels over `primary` and `replicas` (already replicating), once
    /// each Sentinel knows every replica and the other Sentinels: only then
    /// can they agree on a failover.
    async fn watch(primary: PrivateRedis, replicas: Vec<PrivateRedis>) -> Topology {
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(PrivateRedis::sentinel(MASTER, primary.port, DOWN_AFTER).await);
        }
        let topology = Topology { primary, replicas, sentinels };
        let formed = format!("slaves={},sentinels=3", topology.replicas.len());
        let deadline = Instant::now() + WITHIN;
        for sentinel in &topology.sentinels {
            loop {
                let info = sentinel.command(&["INFO", "sentinel"]).await;
                if info.contains(&format!("name={MASTER},status=ok")) && info.contains(&formed) {
                    break;
                }
                assert!(Instant::now() < deadline, "the sentinels did not form: {info}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        topology
    }

    fn sentinel_addrs(&self) -> String {
        self.sentinels.iter().map(PrivateRedis::addr).collect::<Vec<_>>().join(",")
    }

    /// Waits until a replica says it is the primary; returns its index.
    /// A Sentinel ends the promoted replica's client connections
    /// (`CLIENT KILL TYPE normal`) so that clients look it up again; one of
    /// ours cut that way is asked again, not a failure.
    async fn wait_for_promotion(&self) -> usize {
        let deadline = Instant::now() + WITHIN;
        loop {
            for (index, replica) in self.replicas.iter().enumerate() {
                let info = redis_command(replica.port, &["INFO", "replication"]).await;
                if info.is_ok_and(|info| info.contains("role:master")) {
                    return index;
                }
            }
            assert!(Instant::now() < deadline, "no replica was promoted within {WITHIN:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until `replica` has caught up with its primary's link.
async fn wait_replicating(replica: &PrivateRedis) {
    let deadline = Instant::now() + WITHIN;
    while !replica.command(&["INFO", "replication"]).await.contains("master_link_status:up") {
        assert!(Instant::now() < deadline, "the replica on {} did not start replicating", replica.port);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two nodes and two gateways that find Redis through `topology`'s
/// Sentinels. (`ClusterBuilder::redis` stays the shared Redis, which only
/// its start-up check looks at: `REDIS_ADDR` is emptied.)
async fn cluster_on(topology: &Topology) -> Cluster {
    ClusterBuilder::new()
        .node_env("REDIS_ADDR", "")
        .node_env("REDIS_SENTINELS", topology.sentinel_addrs())
        .node_env("REDIS_MASTER_NAME", MASTER)
        .node_env("SEQUENCE_SNAPSHOT_INTERVAL", INTERVAL)
        // For `im_redis_primary_changes_total`.
        .node_env("METRICS_ENABLED", "true")
        .node_env_at(0, "METRICS_PORT", free_port())
        .node_env_at(1, "METRICS_PORT", free_port())
        .start()
        .await
}

/// The allocator epoch the nodes last wrote on the Redis at `port` (the
/// first, 0, is never written).
async fn epoch_on(port: u16, cluster: &Cluster) -> u64 {
    let reply = redis_command(port, &["GET", &format!("{}:seq:epoch", cluster.name)]).await.unwrap();
    if reply == "$-1" {
        return 0;
    }
    reply.parse().unwrap_or_else(|_| panic!("unexpected allocator epoch on redis {port}: {reply}"))
}

/// Group load beside the private traffic: one member of a group of three
/// sends through gateway 0 until stopped, resending a message refused as
/// UNAVAILABLE with the same `client_msg_id` (what a client does).
struct GroupLoad {
    conversation: String,
    /// A member who reads the history at the end.
    reader: User,
    stop: CancellationToken,
    /// Each acked message: (`client_msg_id`, seq), in the order acked.
    sender: JoinHandle<Vec<(String, u64)>>,
}

impl GroupLoad {
    async fn start(cluster: &Cluster) -> GroupLoad {
        let owner = cluster.create_user("g-owner").await;
        let [first, reader] = [cluster.create_user("g-m1").await, cluster.create_user("g-m2").await];
        let mut api = GroupApi::connect(cluster.node_grpc_port(0), &owner.token).await;
        let group = api.create("failover", &[first.id, reader.id], false).await;
        let mut client = cluster.client(0, &owner, "group-sender").await;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let sender = tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stopped.is_cancelled() {
                let id = format!("g{}", acked.len());
                loop {
                    match client.send_group_text(group, &id, "sent across a failover").await {
                        server_frame::Body::Ack(ack) => break acked.push((id, ack.seq)),
                        server_frame::Body::Error(e) if e.code == ErrorCode::Unavailable as i32 => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        other => panic!("group send {id} answered {other:?}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        });
        GroupLoad { conversation: group_conversation(group), reader, stop, sender }
    }

    /// Stops the sender and checks the group's history, read by a member
    /// through gateway 1: every acked message once, with its acked seq, in
    /// the order acked, nothing else. Returns how many were acked.
    ///
    /// The seqs skipped by the epoch bump are a gap that sync holds what
    /// follows back for, for `SYNC_GAP_GRACE` from the commit after it
    /// (another node might still commit a seq in it): the history is read
    /// again until it is whole.
    async fn finish(self, cluster: &Cluster) -> usize {
        self.stop.cancel();
        let acked = self.sender.await.expect("the group sender ran to its end");
        let mut member = cluster.client(1, &self.reader, "group-reader").await;
        let deadline = Instant::now() + WITHIN;
        let stored = loop {
            let stored: Vec<(String, u64)> = member
                .sync_all(&self.conversation, 0)
                .await
                .into_iter()
                .map(|message| (message.client_msg_id, message.seq))
                .collect();
            if stored.len() >= acked.len() || Instant::now() > deadline {
                break stored;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(stored, acked, "the group's history is not exactly the acked messages in order");
        assert!(acked.windows(2).all(|pair| pair[0].1 < pair[1].1), "group seqs did not strictly increase");
        acked.len()
    }
}

/// `kill -9` of the primary under load: the Sentinels promote a replica,
/// the nodes find it, and the sends resume within `MAX_PAUSE`. The promoted
/// replica is another server process, so the allocator bumps its epoch and
/// restarts every counter from its stored ceiling: no seq is issued twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_redis_primary_fails_over_through_the_sentinels() {
    let started = Instant::now();
    let primary = PrivateRedis::start().await;
    let replicaof = ["--replicaof", "127.0.0.1", &primary.port.to_string()].map(str::to_owned);
    let replicaof: Vec<&str> = replicaof.iter().map(String::as_str).collect();
    let replicas = vec![PrivateRedis::start_with(&replicaof).await, PrivateRedis::start_with(&replicaof).await];
    for replica in &replicas {
        wait_replicating(replica).await;
    }
    let mut topology = Topology::watch(primary, replicas).await;
    let cluster = cluster_on(&topology).await;
    let mut traffic = cross_traffic(&cluster).await;
    let group = GroupLoad::start(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;
    let epoch_before = epoch_on(topology.primary.port, &cluster).await;

    topology.primary.kill9();
    let killed = Instant::now();
    let promoted = topology.wait_for_promotion().await;
    let promoted_after = killed.elapsed();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let pause = traffic.longest_pause_in_acks(killed);
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let epoch_after = epoch_on(topology.replicas[promoted].port, &cluster).await;

    // Each node followed the Sentinels to the new primary once.
    for node in &cluster.nodes {
        assert_eq!(metric(node.http_port, "im_redis_primary_changes_total ").await, 1.0, "{}", node.name);
    }
    let group_acked = group.finish(&cluster).await;
    let count = traffic
        .finish(&cluster, CountRules { max_gap: 2 * INTERVAL, pushes_complete_after: settled, reader_gateway: 0 })
        .await;
    assert!(epoch_after > epoch_before, "the allocator epoch stayed {epoch_before} across the promotion");
    assert!(pause <= MAX_PAUSE, "sends stopped for {pause:?} across the failover (at most {MAX_PAUSE:?})");
    eprintln!(
        "redis primary kill -9 behind sentinels: promoted after {promoted_after:?}, longest pause in acks \
         {pause:?}, epoch {epoch_before} -> {epoch_after}; {count}; {group_acked} group messages acked and \
         read back in order; test took {:?}",
        started.elapsed()
    );
}

/// A replica that stopped receiving the primary's writes (its link held
/// silent by a proxy) while the load went on, then promoted when the
/// primary is killed: its counters are behind what was handed out, but the
/// allocator never trusts them (new server process: epoch bump), so no seq
/// is issued twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_fell_behind_is_promoted_without_reusing_a_seq() {
    let started = Instant::now();
    let primary = PrivateRedis::start().await;
    let link = TcpProxy::start(&primary.addr()).await;
    let link_port = link.addr().rsplit_once(':').map(|(_, port)| port.to_owned()).unwrap();
    let replica = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &link_port]).await;
    wait_replicating(&replica).await;
    let mut topology = Topology::watch(primary, vec![replica]).await;
    // The replica follows the primary through the proxy, which the Sentinels
    // take for a wrong master: once a replica has been known for the
    // failover timeout (4 s here), a Sentinel points it at the primary
    // itself (`+fix-slave-config`), around the proxy, and it catches up. On
    // a slow machine that came before the kill. A long timeout keeps the
    // proxy in the path for the whole test; the failover itself does not
    // wait for it (one replica, one election).
    for sentinel in &topology.sentinels {
        let set = sentinel.command(&["SENTINEL", "SET", MASTER, "failover-timeout", "120000"]).await;
        assert_eq!(set, "+OK", "SENTINEL SET failover-timeout");
    }
    let cluster = cluster_on(&topology).await;
    let mut traffic = cross_traffic(&cluster).await;
    traffic.start();
    traffic.wait_for_acks(WARM_UP, WITHIN).await;
    let epoch_before = epoch_on(topology.primary.port, &cluster).await;

    // The replica hears nothing more; the primary goes on taking writes.
    link.set(Mode::Hang);
    let offset = |info: String| {
        info.lines()
            .find_map(|line| line.strip_prefix("master_repl_offset:"))
            .and_then(|offset| offset.trim().parse::<u64>().ok())
            .expect("master_repl_offset in INFO replication")
    };
    // What the proxy had relayed before it saw the change lands first: the
    // replica's offset stops moving (on a loaded machine the proxy may see
    // the change late, so this waits rather than assuming a delay).
    let deadline = Instant::now() + WITHIN;
    let behind_from = loop {
        let before = offset(topology.replicas[0].command(&["INFO", "replication"]).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = offset(topology.replicas[0].command(&["INFO", "replication"]).await);
        if after == before {
            break after;
        }
        assert!(Instant::now() < deadline, "the replica kept replicating through a hung link");
    };
    // The load goes on at the primary until it is past the replica.
    let primary_at = loop {
        traffic.wait_for_progress(PROGRESS, WITHIN).await;
        let primary_at = offset(topology.primary.command(&["INFO", "replication"]).await);
        if primary_at > behind_from {
            break primary_at;
        }
        assert!(Instant::now() < deadline, "the primary took no write past {behind_from} under load");
    };
    let replica_at = offset(topology.replicas[0].command(&["INFO", "replication"]).await);
    assert!(
        replica_at < primary_at && replica_at == behind_from,
        "the replica did not fall behind: at {replica_at} (stopped at {behind_from}), the primary at {primary_at}"
    );

    topology.primary.kill9();
    let killed = Instant::now();
    topology.wait_for_promotion().await;
    let promoted_after = killed.elapsed();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let pause = traffic.longest_pause_in_acks(killed);
    let settled = Instant::now();
    traffic.wait_for_progress(PROGRESS, WITHIN).await;
    let epoch_after = epoch_on(topology.replicas[0].port, &cluster).await;
    for node in &cluster.nodes {
        assert_eq!(metric(node.http_port, "im_redis_primary_changes_total ").await, 1.0, "{}", node.name);
    }

    let count = traffic
        .finish(&cluster, CountRules { max_gap: 2 * INTERVAL, pushes_complete_after: settled, reader_gateway: 1 })
        .await;
    assert!(epoch_after > epoch_before, "the allocator epoch stayed {epoch_before} across the promotion");
    assert!(count.largest_gap > 1, "no gap at all: the counters did not restart from the stored ceilings");
    eprintln!(
        "lagging replica promoted after {promoted_after:?}: {} bytes of replication behind, longest pause in \
         acks {pause:?}, epoch \
         {epoch_before} -> {epoch_after}; {count}; test took {:?}",
        primary_at - replica_at,
        started.elapsed()
    );
}

/// Sentinels that are all away when a node starts do not stop it (G9): it
/// runs, `/ready` says 503 with Redis down and why, and once the Sentinels
/// and their primary are up the node finds the primary by itself.
#[tokio::test]
async fn a_node_starts_while_the_sentinels_are_away_and_finds_the_primary_when_they_come() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel_port = free_port();
    let ports = (free_port(), free_port(), free_port());
    let env = [
        ("REDIS_SENTINELS", format!("127.0.0.1:{sentinel_port}")),
        ("REDIS_MASTER_NAME", MASTER.to_owned()),
        ("REDIS_DIAL_TIMEOUT", "500ms".to_owned()),
    ]
    .map(|(key, value)| (key.to_owned(), value));
    let mut child = Node::command(dir.path(), ports, &env).spawn().expect("starting im-service");
    let ready = || async { http_get(ports.2, "/ready").await.ok() };
    let deadline = Instant::now() + WITHIN;
    // The first answers may say "not probed yet": wait for Redis's first probe's verdict.
    let redis_probed = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).is_ok_and(|report| {
            let error = &report["dependencies"]["redis"]["error"];
            error.is_string() && error != "not probed yet"
        })
    };
    let body = loop {
        if let Some((503, body)) = ready().await
            && redis_probed(&body)
        {
            break body;
        }
        assert!(child.try_wait().unwrap().is_none(), "im-service exited with the sentinels away");
        assert!(Instant::now() < deadline, "/ready never said 503 with redis down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let redis = &report["dependencies"]["redis"];
    assert_eq!(redis["status"], "down", "{body}");
    assert!(redis["error"].as_str().unwrap().contains("sentinels"), "the reason names the sentinels: {body}");

    let primary = PrivateRedis::start().await;
    let _sentinel = PrivateRedis::sentinel_on(sentinel_port, MASTER, primary.port, DOWN_AFTER).await;
    let deadline = Instant::now() + WITHIN;
    while ready().await.map(|(status, _)| status) != Some(200) {
        assert!(Instant::now() < deadline, "the node did not find the primary once the sentinel was up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(child.try_wait().unwrap().is_none());
    let _ = child.kill();
    let _ = child.wait();
}
