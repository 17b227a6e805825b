//! The etcd registry against a real etcd at 127.0.0.1:2379
//! (`scripts/servers.sh` starts it): the `Registry` suite, then what only a
//! shared, leased registry promises — other nodes see a registration through
//! the watch, and a registrar that dies drops out after its lease TTL.
//!
//! Every case uses its own key prefix, so cases share the server without
//! clean-up; what a case registers vanishes with its lease.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use im_backends::conformance::fixtures::{unique_name, users};
use im_backends::conformance::user_status_board::BoardPair;
use im_backends::etcd::{EtcdRegistry, EtcdRegistryOptions, EtcdUserStatusBoard};
use im_config::EtcdConfig;
use im_core::error::BackendError;
use im_core::ports::{Registry, UserStatusBoard, UserStatusView};
use im_core::{GatewayId, UserId, UserStatus};
use tokio::time::Instant;

use crate::fixtures::free_port;

const ENDPOINT: &str = "127.0.0.1:2379";

fn options(prefix: &str, lease_ttl: Duration) -> EtcdRegistryOptions {
    EtcdRegistryOptions { prefix: prefix.to_owned(), lease_ttl, request_timeout: Duration::from_secs(2) }
}

/// A registry on `prefix`; panics when etcd is not there.
async fn connect(prefix: &str, lease_ttl: Duration) -> EtcdRegistry {
    let config = EtcdConfig { endpoints: vec![ENDPOINT.to_owned()], ..EtcdConfig::default() };
    EtcdRegistry::connect(&config, options(prefix, lease_ttl))
        .await
        .unwrap_or_else(|e| panic!("etcd at {ENDPOINT} is unreachable ({e}); start it with scripts/servers.sh"))
}

fn unique_prefix() -> String {
    format!("/im-test/{}", unique_name("registry"))
}

pub async fn etcd_registry() -> (Arc<EtcdRegistry>, ()) {
    (Arc::new(connect(&unique_prefix(), Duration::from_secs(10)).await), ())
}

mod etcd_registry {
    im_backends::registry_suite!(super::etcd_registry);
}

/// Two boards on one fresh prefix, as `im-user` and a gateway hold them.
pub async fn etcd_user_status_boards() -> (BoardPair, ()) {
    let prefix = unique_prefix();
    let (writer, reader) = tokio::join!(status_board(&prefix), status_board(&prefix));
    (BoardPair { writer: Arc::new(writer), reader: Arc::new(reader) }, ())
}

async fn status_board(prefix: &str) -> EtcdUserStatusBoard {
    let config = EtcdConfig { endpoints: vec![ENDPOINT.to_owned()], ..EtcdConfig::default() };
    EtcdUserStatusBoard::connect(&config, &options(prefix, Duration::from_secs(10)))
        .await
        .unwrap_or_else(|e| panic!("etcd at {ENDPOINT} is unreachable ({e}); start it with scripts/servers.sh"))
}

mod etcd_user_status_board {
    im_backends::user_status_board_suite!(super::etcd_user_status_boards);
}

/// A process that starts after a status was published (a gateway restarted,
/// a node added) refuses that user from its first check.
#[tokio::test]
async fn a_board_connected_later_loads_the_statuses_published_before() {
    let prefix = unique_prefix();
    let writer = status_board(&prefix).await;
    let [a, b] = users();
    let revoked = UserStatus { disabled: false, token_generation: 3 };
    writer.publish(a, UserStatus { disabled: true, token_generation: 0 }).await.unwrap();
    writer.publish(b, revoked).await.unwrap();
    writer.publish(a, UserStatus::default()).await.unwrap();
    let late = status_board(&prefix).await;
    assert_eq!(late.status(a), UserStatus::default(), "a status back to the default left no key");
    assert_eq!(late.status(b), revoked);
    assert!(
        late.is_watching() || {
            tokio::time::sleep(Duration::from_millis(500)).await;
            late.is_watching()
        }
    );
}

/// Waits until `user` is on exactly `expected` in `registry`'s view; returns
/// how long that took, panics after `patience`.
async fn until_on(registry: &EtcdRegistry, user: UserId, expected: &[&GatewayId], patience: Duration) -> Duration {
    let mut expected: Vec<GatewayId> = expected.iter().map(|&g| g.clone()).collect();
    expected.sort();
    let started = Instant::now();
    loop {
        let mut actual = registry.gateways_of(user);
        actual.sort();
        if actual == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < patience, "user {user} is on {actual:?} after {patience:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_sees_registrations_through_the_watch_within_a_second() {
    let prefix = unique_prefix();
    let gateway_node = connect(&prefix, Duration::from_secs(10)).await;
    let service_node = connect(&prefix, Duration::from_secs(10)).await;
    let [a] = users();
    let gw = GatewayId(unique_name("gw"));

    gateway_node.register(a, &gw).await.unwrap();
    let seen_in = until_on(&service_node, a, &[&gw], Duration::from_secs(1)).await;
    gateway_node.unregister(a, &gw).await.unwrap();
    let gone_in = until_on(&service_node, a, &[], Duration::from_secs(1)).await;
    println!("registration seen in {seen_in:?}, unregistration in {gone_in:?}");
    assert!(service_node.is_watching());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_starts_with_every_registration_already_made() {
    let prefix = unique_prefix();
    let gateway_node = connect(&prefix, Duration::from_secs(10)).await;
    let users: [UserId; 50] = users();
    let gw = GatewayId(unique_name("gw"));
    for &user in &users {
        gateway_node.register(user, &gw).await.unwrap();
    }
    // The listing at connect, not the watch, brings these in: nothing to wait for.
    let late_node = connect(&prefix, Duration::from_secs(10)).await;
    for &user in &users {
        assert_eq!(late_node.gateways_of(user), vec![gw.clone()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_that_dies_drops_out_after_its_lease_ttl() {
    const TTL: Duration = Duration::from_secs(2);
    let prefix = unique_prefix();
    let dying = connect(&prefix, TTL).await;
    let watching = connect(&prefix, Duration::from_secs(10)).await;
    let [a] = users();
    let gw = GatewayId(unique_name("gw"));
    dying.register(a, &gw).await.unwrap();
    until_on(&watching, a, &[&gw], Duration::from_secs(1)).await;

    // Dropped without unregistering, as a killed process: nothing is deleted
    // now, the lease just stops being kept alive.
    drop(dying);
    assert_eq!(watching.gateways_of(a), vec![gw.clone()]);
    // etcd checks expiry every 500 ms, and the last keep-alive was up to a
    // third of the TTL before the drop.
    let gone_in = until_on(&watching, a, &[], TTL + Duration::from_secs(3)).await;
    println!("gone {gone_in:?} after the drop");
    assert!(gone_in >= TTL / 2, "gone after {gone_in:?}: deleted, not expired?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_deregisters_every_user_of_the_process_at_once() {
    let prefix = unique_prefix();
    let leaving = connect(&prefix, Duration::from_secs(30)).await;
    let watching = connect(&prefix, Duration::from_secs(10)).await;
    let [a, b] = users();
    let gw = GatewayId(unique_name("gw"));
    leaving.register(a, &gw).await.unwrap();
    leaving.register(b, &gw).await.unwrap();
    until_on(&watching, b, &[&gw], Duration::from_secs(1)).await;

    leaving.revoke().await.unwrap();
    until_on(&watching, a, &[], Duration::from_secs(1)).await;
    until_on(&watching, b, &[], Duration::from_secs(1)).await;
    // Registering again takes a new lease.
    leaving.register(a, &gw).await.unwrap();
    until_on(&watching, a, &[&gw], Duration::from_secs(1)).await;
}

/// A lease lost while the process lives (revoked here; expired after etcd
/// was away for longer than the TTL in production) is replaced, and every
/// registration of the process is put again under the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_replaced_and_the_registrations_restored() {
    const TTL: Duration = Duration::from_secs(3);
    let prefix = unique_prefix();
    let registrar = connect(&prefix, TTL).await;
    let [a, b] = users();
    let gw = GatewayId(unique_name("gw"));
    registrar.register(a, &gw).await.unwrap();
    registrar.register(b, &gw).await.unwrap();

    let mut etcd = Client::connect([ENDPOINT], None).await.expect("etcd client");
    let keys = [format!("{prefix}/users/{a}/{gw}"), format!("{prefix}/users/{b}/{gw}")];
    let lost = etcd.get(keys[0].as_str(), None).await.unwrap().kvs().first().expect("the key is there").lease();
    etcd.lease_revoke(lost).await.unwrap();

    // The keep-alive (every TTL / 3) finds the lease gone.
    let deadline = Instant::now() + TTL + Duration::from_secs(3);
    for key in &keys {
        loop {
            let response = etcd.get(key.as_str(), None).await.unwrap();
            if response.kvs().first().is_some_and(|kv| kv.lease() != lost) {
                break;
            }
            assert!(Instant::now() < deadline, "{key} was not put again under a new lease");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The process's own view converges back too (through its watch).
    until_on(&registrar, a, &[&gw], Duration::from_secs(2)).await;
    until_on(&registrar, b, &[&gw], Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_unreachable_etcd_fails_connect_with_unavailable_quickly() {
    let config = EtcdConfig { endpoints: vec!["127.0.0.1:1".to_owned()], ..EtcdConfig::default() };
    let mut options = options(&unique_prefix(), Duration::from_secs(10));
    options.request_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let result = EtcdRegistry::connect(&config, options).await;
    assert!(matches!(result, Err(BackendError::Unavailable(_))), "{:?}", result.err());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// A node restarted after `kill -9` finds its old claim still there (the
/// dead process's lease has not run out) and waits for it; the claim it then
/// takes must rest on a lease that is still alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_left_by_a_killed_node_is_claimed_once_its_lease_runs_out() {
    use im_backends::etcd::NodeClaim;
    let config = EtcdConfig { endpoints: vec![ENDPOINT.to_owned()], ..EtcdConfig::default() };
    let prefix = unique_prefix();
    let (ttl, timeout) = (Duration::from_secs(2), Duration::from_secs(2));
    // Dropped, not released: its keep-alive stops, its key stays until the
    // lease runs out — as after a kill.
    drop(NodeClaim::acquire(&config, &prefix, 7, ttl, timeout).await.expect("the first claim"));
    let began = Instant::now();
    let claim = NodeClaim::acquire(&config, &prefix, 7, ttl, timeout)
        .await
        .unwrap_or_else(|e| panic!("the restarted node's claim failed after {:?}: {e}", began.elapsed()));
    assert!(began.elapsed() >= Duration::from_millis(500), "the dead node's claim was not waited for");
    // Now held by a live node: a third claimant is refused, naming the key.
    let refused = NodeClaim::acquire(&config, &prefix, 7, ttl, timeout).await.err().expect("NODE_ID 7 is taken");
    assert!(refused.to_string().contains("NODE_ID 7 is held by another running node"), "{refused}");
    claim.release().await;
}

/// A member that is down, listed first, costs nothing: the client starts on
/// the member that answers, and registrations and the watch work at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_is_down_is_passed_over() {
    let dead = format!("127.0.0.1:{}", free_port());
    let config = EtcdConfig { endpoints: vec![dead, ENDPOINT.to_owned()], ..EtcdConfig::default() };
    let prefix = unique_prefix();
    let started = Instant::now();
    let registry = EtcdRegistry::connect(&config, options(&prefix, Duration::from_secs(10))).await.expect("connect");
    let watcher = connect(&prefix, Duration::from_secs(10)).await;
    let gateway = GatewayId(unique_name("gw"));
    let [user, _] = users();
    for _ in 0..10 {
        registry.register(user, &gateway).await.expect("register through the live member");
        registry.unregister(user, &gateway).await.expect("unregister through the live member");
    }
    registry.register(user, &gateway).await.unwrap();
    until_on(&watcher, user, &[&gateway], Duration::from_secs(2)).await;
    assert!(registry.is_watching());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// A member that hangs (accepts connections, never answers), listed first,
/// is passed over once a request to it goes unanswered for the request
/// timeout: at connect, and from then on nothing waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_hangs_is_passed_over_after_the_request_timeout() {
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = hanging.local_addr().unwrap().to_string();
    // Holds every connection open and reads nothing.
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = hanging.accept().await {
            connections.push(connection);
        }
    });
    let config = EtcdConfig { endpoints: vec![hung, ENDPOINT.to_owned()], ..EtcdConfig::default() };
    let prefix = unique_prefix();
    let started = Instant::now();
    let registry = EtcdRegistry::connect(&config, options(&prefix, Duration::from_secs(10))).await.expect("connect");
    let connected = started.elapsed();
    // One request timeout (2 s) for the hanging member, and a margin.
    assert!(connected < Duration::from_secs(4), "connect took {connected:?}");
    let watcher = connect(&prefix, Duration::from_secs(10)).await;
    let gateway = GatewayId(unique_name("gw"));
    let [user, _] = users();
    let started = Instant::now();
    registry.register(user, &gateway).await.expect("register through the member that answers");
    until_on(&watcher, user, &[&gateway], Duration::from_secs(2)).await;
    assert!(registry.is_watching());
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    held.abort();
}
