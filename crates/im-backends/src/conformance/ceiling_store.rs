//! The `CeilingStore` suite.

use std::sync::Arc;

use im_core::Seq;
use im_core::ports::CeilingStore;

use super::fixtures::{private, users};

/// Stamps out the `CeilingStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! ceiling_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            ceiling_store,
            $make,
            [
                unknown_ceiling_is_zero,
                ceilings_only_move_up,
                concurrent_raises_keep_the_highest,
                a_batch_is_loaded_in_order_and_raised_together,
            ]
        );
    };
}

pub async fn unknown_ceiling_is_zero<S: CeilingStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    assert_eq!(store.load_ceiling(private(a, b)).await.unwrap(), Seq::ZERO);
}

pub async fn ceilings_only_move_up<S: CeilingStore + ?Sized>(store: Arc<S>) {
    let [a, b, c] = users();
    let ab = private(a, b);
    store.raise_ceiling(ab, Seq(10)).await.unwrap();
    assert_eq!(store.load_ceiling(ab).await.unwrap(), Seq(10));
    store.raise_ceiling(ab, Seq(5)).await.unwrap();
    assert_eq!(store.load_ceiling(ab).await.unwrap(), Seq(10));
    store.raise_ceiling(ab, Seq(30)).await.unwrap();
    assert_eq!(store.load_ceiling(ab).await.unwrap(), Seq(30));
    assert_eq!(store.load_ceiling(private(a, c)).await.unwrap(), Seq::ZERO);
}

pub async fn concurrent_raises_keep_the_highest<S: CeilingStore + ?Sized>(store: Arc<S>) {
    let [a, b] = users();
    let ab = private(a, b);
    let raises: Vec<_> = (1..=16u64)
        .rev()
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.raise_ceiling(ab, Seq(n * 100)).await.unwrap() })
        })
        .collect();
    for raise in raises {
        raise.await.unwrap();
    }
    assert_eq!(store.load_ceiling(ab).await.unwrap(), Seq(1600));
}

pub async fn a_batch_is_loaded_in_order_and_raised_together<S: CeilingStore + ?Sized>(store: Arc<S>) {
    let [a, b, c, d] = users();
    let (ab, ac, ad) = (private(a, b), private(a, c), private(a, d));
    store.raise_ceiling(ac, Seq(50)).await.unwrap();
    // Lower than stored (ac) is ignored; the others are new. 700 rows cross
    // any multi-row statement limit.
    let mut raises = vec![(ab, Seq(10)), (ac, Seq(20)), (ad, Seq(30))];
    let many: Vec<_> = (0..700)
        .map(|_| {
            let [x, y] = users();
            private(x, y)
        })
        .collect();
    raises.extend(many.iter().map(|&c| (c, Seq(7))));
    store.raise_ceilings(&raises).await.unwrap();
    assert_eq!(store.load_ceilings(&[ad, ab, ac, ab]).await.unwrap(), vec![Seq(30), Seq(10), Seq(50), Seq(10)]);
    let loaded = store.load_ceilings(&many).await.unwrap();
    assert!(loaded.iter().all(|&s| s == Seq(7)), "every row of the batch was raised");
    store.raise_ceilings(&[]).await.unwrap();
    assert!(store.load_ceilings(&[]).await.unwrap().is_empty());
}
