//! Degrade, don't go down (G9, issue 14): a node in production mode whose
//! MariaDB or Redis is cut off or hangs says so on `/ready` at once and refuses sends
//! within milliseconds (`UNAVAILABLE` with a retry hint), and takes sends
//! again within a second or two of the database's return, losing nothing
//! acked; a dependency that only degrades a feature (etcd, `im-user`) shows
//! in `/ready`'s body while the status stays 200 and sends go on.
//!
//! The databases and etcd are the shared ones, reached through a
//! [`TcpProxy`] of the test: cutting it never disturbs another test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use im_proto::client::{self as pb, server_frame};

use crate::harness::{Cluster, ClusterBuilder, Device, Inbox, SHARED_ETCD, SHARED_MARIADB, SHARED_REDIS, User};
use crate::support::{conversation_id, free_port, http_get, metric};
use crate::tcp_proxy::{Mode, TcpProxy};

/// How long a dependency's outage may take to show on `/ready`: a probe
/// period and its timeout, and a margin for a loaded machine.
const NOTICED_WITHIN: Duration = Duration::from_secs(5);
/// The bounds G9 sets, with a margin for a loaded 2-core machine on the
/// slowest answer.
const FAST: Duration = Duration::from_millis(100);
const SLOWEST: Duration = Duration::from_millis(500);
/// Sends measured while the database is down.
const REFUSED_SENDS: usize = 20;
/// From the database's return to the first ack.
const RECOVERED_WITHIN: Duration = Duration::from_secs(2);
const ANSWER: Duration = Duration::from_secs(8);

/// `/ready` of a process: (status, body, how long the answer took).
async fn timed_ready(port: u16) -> (u16, serde_json::Value, Duration) {
    let asked = Instant::now();
    let (status, body) = http_get(port, "/ready").await.expect("/ready answers");
    let took = asked.elapsed();
    (status, serde_json::from_str(&body).expect("/ready is JSON"), took)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Polls `/ready` until `done` holds for it, timing every answer; returns
/// the last body, how long it took to get there, and every answer's time.
async fn ready_until(
    port: u16,
    what: &str,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> (serde_json::Value, Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut answers = Vec::new();
    loop {
        let (status, body, took) = timed_ready(port).await;
        answers.push(took);
        if done(status, &body) {
            return (body, started.elapsed(), answers);
        }
        assert!(started.elapsed() < NOTICED_WITHIN, "{what}: /ready still says {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One node and one gateway, with `/metrics` on the node's HTTP port.
async fn small_cluster(builder: ClusterBuilder) -> Cluster {
    builder.size(1, 1).node_env("METRICS_ENABLED", "true").node_env("METRICS_PORT", free_port()).start().await
}

async fn send(device: &mut Device, to: &User, client_msg_id: &str) -> (Result<server_frame::Body, String>, Duration) {
    let sent = Instant::now();
    let answer = device.send_text(to.id, client_msg_id, client_msg_id, ANSWER).await.map_err(|f| format!("{f:?}"));
    (answer, sent.elapsed())
}

/// Sends until acked (a resend of a stored message gets its first ack).
async fn send_until_acked(device: &mut Device, to: &User, client_msg_id: &str, within: Duration) -> pb::SendAck {
    let deadline = Instant::now() + within;
    loop {
        match send(device, to, client_msg_id).await.0 {
            Ok(server_frame::Body::Ack(ack)) => return ack,
            other => assert!(Instant::now() < deadline, "{client_msg_id} not acked within {within:?}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A dependency a send needs: the message store, or Redis (seqs, dedup).
#[derive(Clone, Copy, Debug)]
enum Dependency {
    Mysql,
    Redis,
}

impl Dependency {
    /// Its name on `/ready` and in the breaker metrics.
    fn name(self) -> &'static str {
        match self {
            Self::Mysql => "mysql",
            Self::Redis => "redis",
        }
    }

    /// A cluster that reaches it through `proxy`.
    fn through(self, proxy: &TcpProxy) -> ClusterBuilder {
        match self {
            Self::Mysql => ClusterBuilder::new().db_host(proxy.addr()),
            Self::Redis => ClusterBuilder::new().redis(proxy.addr()),
        }
    }

    fn upstream(self) -> &'static str {
        match self {
            Self::Mysql => SHARED_MARIADB,
            Self::Redis => SHARED_REDIS,
        }
    }
}

/// `dependency` behind a proxy goes away (`Refuse`) or stops answering
/// (`Hang`) while a client sends; then it comes back.
async fn outage(dependency: Dependency, fault: Mode) {
    let name = dependency.name();
    let proxy = TcpProxy::start(dependency.upstream()).await;
    let cluster = small_cluster(dependency.through(&proxy)).await;
    let node = &cluster.nodes[0];
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let mut phone = cluster.connect(0, &alice, "phone", Inbox::default()).await;
    // client_msg_id → seq of every ack.
    let mut acked = BTreeMap::new();
    for i in 0..5 {
        let id = format!("before-{i}");
        acked.insert(id.clone(), send_until_acked(&mut phone, &bob, &id, ANSWER).await.seq);
    }

    proxy.set(fault);
    let (body, noticed, answers) = ready_until(node.http_port, &format!("{name} cut off"), |status, body| {
        status == 503 && body["dependencies"][name]["status"] == "down"
    })
    .await;
    eprintln!(
        "{name} {fault:?}: /ready 503 after {noticed:?} ({}); answers: median {:?}, slowest {:?}",
        body["dependencies"][name],
        median(answers.clone()),
        answers.iter().max().unwrap()
    );
    // Answers while down come from kept state, however the database fails.
    let mut during = Vec::new();
    for _ in 0..10 {
        let (status, _, took) = timed_ready(node.http_port).await;
        assert_eq!(status, 503);
        during.push(took);
    }
    let all: Vec<Duration> = answers.into_iter().chain(during).collect();
    let (median_ready, slowest_ready) = (median(all.clone()), *all.iter().max().unwrap());
    assert!(
        median_ready <= FAST && slowest_ready <= SLOWEST,
        "/ready took {median_ready:?} (median), {slowest_ready:?}"
    );

    // Sends fail fast, with a retry hint.
    let mut latencies = Vec::new();
    let mut refused = Vec::new();
    for i in 0..REFUSED_SENDS {
        let id = format!("during-{i}");
        let (answer, took) = send(&mut phone, &bob, &id).await;
        match answer {
            Ok(server_frame::Body::Error(error)) => {
                assert_eq!(error.code(), pb::ErrorCode::Unavailable, "{error:?}");
                assert!(error.retry_after_ms > 0, "no retry hint: {error:?}");
            }
            other => panic!("send {id} with {name} down answered {other:?} after {took:?}"),
        }
        latencies.push(took);
        refused.push(id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (median_send, slowest_send) = (median(latencies.clone()), *latencies.iter().max().unwrap());
    eprintln!("{name} {fault:?}: {REFUSED_SENDS} sends refused: median {median_send:?}, slowest {slowest_send:?}");
    assert!(median_send <= FAST && slowest_send <= SLOWEST, "sends took {median_send:?} (median), {slowest_send:?}");
    let state = format!("im_breaker_state{{dependency=\"{name}\"}} ");
    assert_eq!(metric(node.http_port, &state).await, 1.0, "open");
    let rejections = format!("im_breaker_rejections_total{{dependency=\"{name}\"}} ");
    assert!(metric(node.http_port, &rejections).await >= REFUSED_SENDS as f64);

    proxy.set(Mode::Relay);
    let restored = Instant::now();
    let id = "after-0".to_owned();
    acked.insert(id.clone(), send_until_acked(&mut phone, &bob, &id, RECOVERED_WITHIN * 5).await.seq);
    let recovered = restored.elapsed();
    eprintln!("{name} {fault:?}: first ack {recovered:?} after it came back");
    assert!(recovered <= RECOVERED_WITHIN, "sends took {recovered:?} to work again");
    let (_, ready_again, _) = ready_until(node.http_port, &format!("{name} back"), |status, _| status == 200).await;
    eprintln!("{name} {fault:?}: /ready 200 again {:?} after it came back", restored.elapsed() - ready_again);
    assert_eq!(metric(node.http_port, &state).await, 0.0, "closed");

    // The refused sends, resent with their ids: each stored once.
    for id in refused {
        acked.insert(id.clone(), send_until_acked(&mut phone, &bob, &id, ANSWER).await.seq);
    }
    let synced = phone.sync_all(&conversation_id(alice.id, bob.id), 0).await;
    let stored: BTreeMap<String, u64> = synced.iter().map(|m| (m.client_msg_id.clone(), m.seq)).collect();
    assert_eq!(stored.len(), synced.len(), "a client_msg_id stored twice");
    assert_eq!(stored, acked, "every acked message, at its acked seq, once");
    assert!(synced.windows(2).all(|pair| pair[0].seq < pair[1].seq), "seqs in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_went_away_fails_sends_fast_and_recovers() {
    outage(Dependency::Mysql, Mode::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_hangs_fails_sends_fast_and_recovers() {
    outage(Dependency::Mysql, Mode::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_went_away_fails_sends_fast_and_recovers() {
    outage(Dependency::Redis, Mode::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_fails_sends_fast_and_recovers() {
    outage(Dependency::Redis, Mode::Hang).await;
}

/// Sends `count` messages and expects every one acked.
async fn sends_work(device: &mut Device, to: &User, prefix: &str, count: usize) {
    for i in 0..count {
        match send(device, to, &format!("{prefix}-{i}")).await {
            (Ok(server_frame::Body::Ack(_)), _) => {}
            (other, took) => panic!("{prefix}-{i} answered {other:?} after {took:?}"),
        }
    }
}

/// Waits until `/ready` says `dependency` is down, degrading only, with the
/// status still 200.
async fn degraded(port: u16, dependency: &str) {
    let (body, noticed, answers) = ready_until(port, &format!("{dependency} down"), |_, body| {
        body["dependencies"][dependency]["status"] == "down"
    })
    .await;
    eprintln!("{dependency} down on /ready after {noticed:?}: {}", body["dependencies"][dependency]);
    assert_eq!(body["dependencies"][dependency]["degrades_only"], true);
    assert!(median(answers) <= FAST);
    let (status, body, _) = timed_ready(port).await;
    assert_eq!(status, 200, "{dependency} down made the process unready: {body}");
    assert_eq!(body["ready"], true);
}

/// etcd cut off: the node and the gateway stay ready (the body says etcd is
/// down) and sends go on; then `im-user` killed: the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_user_service_outages_only_degrade() {
    let etcd = TcpProxy::start(SHARED_ETCD).await;
    let mut cluster = small_cluster(ClusterBuilder::new().etcd(etcd.addr())).await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let mut phone = cluster.connect(0, &alice, "phone", Inbox::default()).await;
    sends_work(&mut phone, &bob, "before", 3).await;

    etcd.set(Mode::Refuse);
    degraded(cluster.nodes[0].http_port, "etcd").await;
    degraded(cluster.gateways[0].http_port, "etcd").await;
    sends_work(&mut phone, &bob, "etcd-down", 5).await;
    etcd.set(Mode::Relay);
    let (_, back, _) =
        ready_until(cluster.nodes[0].http_port, "etcd back", |_, body| body["dependencies"]["etcd"]["status"] == "up")
            .await;
    eprintln!("etcd up on /ready {back:?} after it came back");

    cluster.user_service.kill9();
    degraded(cluster.nodes[0].http_port, "user-service").await;
    // Bob is known to the node since the first send: no look-up needed.
    sends_work(&mut phone, &bob, "user-service-down", 5).await;
}
