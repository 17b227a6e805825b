//! The `EpochStore` suite. Scopes are fresh per case, so a store on a shared
//! server may keep its data between cases.

use std::sync::Arc;

use im_core::ports::EpochStore;

use super::fixtures::unique_name;

/// Stamps out the `EpochStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! epoch_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            epoch_store,
            $make,
            [unknown_scope_is_epoch_zero, bumps_move_past_what_was_seen, concurrent_bumps_of_one_stale_epoch_agree]
        );
    };
}

pub async fn unknown_scope_is_epoch_zero<S: EpochStore + ?Sized>(store: Arc<S>) {
    assert_eq!(store.current_epoch(&unique_name("scope")).await.unwrap(), 0);
}

pub async fn bumps_move_past_what_was_seen<S: EpochStore + ?Sized>(store: Arc<S>) {
    let (scope, other) = (unique_name("scope"), unique_name("scope"));
    assert_eq!(store.bump_epoch(&scope, 0).await.unwrap(), 1);
    assert_eq!(store.current_epoch(&scope).await.unwrap(), 1);
    // A node that saw an older epoch does not move it back.
    assert_eq!(store.bump_epoch(&scope, 0).await.unwrap(), 1);
    assert_eq!(store.bump_epoch(&scope, 1).await.unwrap(), 2);
    assert_eq!(store.bump_epoch(&scope, 9).await.unwrap(), 10);
    assert_eq!(store.current_epoch(&scope).await.unwrap(), 10);
    assert_eq!(store.current_epoch(&other).await.unwrap(), 0, "scopes are independent");
}

pub async fn concurrent_bumps_of_one_stale_epoch_agree<S: EpochStore + ?Sized>(store: Arc<S>) {
    let scope = unique_name("scope");
    let bumps: Vec<_> = (0..8)
        .map(|_| {
            let (store, scope) = (store.clone(), scope.clone());
            tokio::spawn(async move { store.bump_epoch(&scope, 3).await.unwrap() })
        })
        .collect();
    for bump in bumps {
        assert_eq!(bump.await.unwrap(), 4);
    }
    assert_eq!(store.current_epoch(&scope).await.unwrap(), 4);
}
