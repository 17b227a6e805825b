//! The `Registry` suite. `gateways_of` reads a local view that a production
//! registry updates from a watch, so reads after a write wait for it to
//! converge (briefly) instead of expecting it at once.

use std::sync::Arc;
use std::time::Duration;

use im_core::ports::Registry;
use im_core::{GatewayId, UserId};
use tokio::time::Instant;

use super::fixtures::{unique_name, users};

const CONVERGENCE: Duration = Duration::from_secs(10);

/// Stamps out the `Registry` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! registry_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            registry,
            $make,
            [unknown_user_is_on_no_gateway, users_are_found_on_the_gateways_they_registered_on]
        );
    };
}

/// Waits until `user`'s gateways (in any order) are `expected`.
async fn expect_gateways<R: Registry + ?Sized>(registry: &R, user: UserId, expected: &[&GatewayId]) {
    let mut expected: Vec<GatewayId> = expected.iter().map(|&g| g.clone()).collect();
    expected.sort();
    let deadline = Instant::now() + CONVERGENCE;
    loop {
        let mut actual = registry.gateways_of(user);
        actual.sort();
        if actual == expected {
            return;
        }
        assert!(Instant::now() < deadline, "user {user} is on {actual:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn unknown_user_is_on_no_gateway<R: Registry + ?Sized>(registry: Arc<R>) {
    let [a] = users();
    assert!(registry.gateways_of(a).is_empty());
}

pub async fn users_are_found_on_the_gateways_they_registered_on<R: Registry + ?Sized>(registry: Arc<R>) {
    let [a, b] = users();
    let (g1, g2) = (GatewayId(unique_name("gw")), GatewayId(unique_name("gw")));
    registry.register(a, &g1).await.unwrap();
    registry.register(a, &g2).await.unwrap();
    // Registering twice is the same as once.
    registry.register(a, &g1).await.unwrap();
    registry.register(b, &g2).await.unwrap();
    expect_gateways(&*registry, a, &[&g1, &g2]).await;
    expect_gateways(&*registry, b, &[&g2]).await;

    registry.unregister(a, &g1).await.unwrap();
    expect_gateways(&*registry, a, &[&g2]).await;
    registry.unregister(a, &g2).await.unwrap();
    expect_gateways(&*registry, a, &[]).await;
    // Unregistering what is not there is not an error.
    registry.unregister(a, &g2).await.unwrap();
    // Other users are untouched.
    expect_gateways(&*registry, b, &[&g2]).await;
}
