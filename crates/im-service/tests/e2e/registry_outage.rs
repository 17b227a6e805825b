//! etcd away for longer than a lease (issue 14, item 7): one node and one
//! gateway in production mode, etcd reached through a [`TcpProxy`] of the
//! test. While it is cut off, users who connect (so are not in the node's
//! view) still get pushes: the node asks every gateway its last view names.
//! When it returns, every user connected meanwhile is registered (the
//! gateway's pending registrations, and those its lost lease took away, are
//! written again) and pushes go by the view again.

use std::time::{Duration, Instant};

use im_proto::client::server_frame;

use crate::harness::{Cluster, ClusterBuilder, SHARED_ETCD, User};
use crate::support::{Client, ack, http_get};
use crate::tcp_proxy::{Mode, TcpProxy};

/// The registry lease of a gateway (EtcdRegistryOptions' default): the
/// outage outlasts it, so etcd drops every registration of the gateway.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// Waits until `/ready` of the process on `port` says etcd is `status`.
async fn etcd_is(port: u16, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = http_get(port, "/ready").await.expect("/ready answers");
        let body: serde_json::Value = serde_json::from_str(&body).expect("/ready is JSON");
        if body["dependencies"]["etcd"]["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "etcd not {status} on /ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `from` sends to `to`; `to_device` gets the push within a few seconds.
async fn pushed(from: &mut Client, to: &User, to_device: &mut Client, text: &str) {
    ack(from.send_text(to.id, text, text).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match to_device.next_event(left).await {
            Some(server_frame::Body::Push(m)) if m.body == text.as_bytes() => return,
            Some(_) => continue,
            None => panic!("{text}: no push within 5 s"),
        }
    }
}

/// Waits until etcd itself (not through the proxy) has `user` on gateway 0.
async fn registered(cluster: &Cluster, user: &User, within: Duration) -> Duration {
    let started = Instant::now();
    while !cluster.is_registered(user.id, 0).await {
        assert!(started.elapsed() < within, "user {} not registered again within {within:?}", user.id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_who_connect_while_etcd_is_away_get_pushes_and_are_registered_when_it_returns() {
    let etcd = TcpProxy::start(SHARED_ETCD).await;
    let cluster = ClusterBuilder::new().etcd(etcd.addr()).size(1, 1).start().await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let carol = cluster.create_user("carol").await;
    let dave = cluster.create_user("dave").await;
    let mut alice_phone = cluster.client(0, &alice, "phone").await;
    let mut bob_phone = cluster.client(0, &bob, "phone").await;
    pushed(&mut alice_phone, &bob, &mut bob_phone, "before").await;

    etcd.set(Mode::Refuse);
    etcd_is(cluster.nodes[0].http_port, "down").await;
    // Carol connects now: the gateway cannot register her, the node's view
    // does not have her. She still gets pushes.
    let mut carol_phone = Client::connect(cluster.ws_url(0), &carol.token, "phone").await.expect("connect");
    pushed(&mut alice_phone, &carol, &mut carol_phone, "to-carol-during").await;
    // Users the view has are pushed to as before.
    pushed(&mut alice_phone, &bob, &mut bob_phone, "to-bob-during").await;

    // Past the lease: etcd forgets every registration of the gateway.
    tokio::time::sleep(LEASE_TTL + Duration::from_secs(2)).await;
    assert!(!cluster.is_registered(alice.id, 0).await, "the gateway's lease should have expired");
    let mut dave_phone = Client::connect(cluster.ws_url(0), &dave.token, "phone").await.expect("connect");
    pushed(&mut carol_phone, &dave, &mut dave_phone, "to-dave-during").await;

    // etcd back: everyone connected is registered again, those who connected
    // during the outage included.
    etcd.set(Mode::Relay);
    let mut took = Vec::new();
    for user in [&alice, &bob, &carol, &dave] {
        took.push(registered(&cluster, user, Duration::from_secs(15)).await);
    }
    eprintln!("registered again after etcd returned: {took:?}");
    etcd_is(cluster.nodes[0].http_port, "up").await;
    pushed(&mut alice_phone, &dave, &mut dave_phone, "to-dave-after").await;
    pushed(&mut dave_phone, &carol, &mut carol_phone, "to-carol-after").await;
}
