//! The `DataKeyStore` suite. The active key is store-wide: every case needs a
//! store no other case writes to (a fresh file, a database of its own).

use std::sync::Arc;

use im_core::ports::{DataKeyStore, MAX_MASTER_KEY_ID_BYTES, MAX_WRAPPED_DATA_KEY_BYTES, StoredDataKey};

/// Stamps out the `DataKeyStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! data_key_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            data_key_store,
            $make,
            [
                no_key_is_active_at_first,
                the_first_activation_round_trips_every_field,
                rotation_retires_the_old_key_and_keeps_it_readable,
                a_stale_activation_changes_nothing,
                concurrent_first_activations_agree_on_one_key,
                concurrent_rotations_agree_on_one_key,
                rewrap_is_a_compare_and_swap,
                concurrent_rewraps_of_one_key_have_one_winner,
                oversized_keys_are_refused,
            ]
        );
    };
}

/// How many nodes race in the concurrent cases.
const RACERS: usize = 8;

/// A wrapped key of `len` bytes, every byte value included (0x00 and 0xFF
/// first), different for each `tag`.
fn wrapped(tag: u8, len: usize) -> Vec<u8> {
    let mut bytes = vec![0x00, 0xFF, tag];
    bytes.extend((0..len.saturating_sub(3)).map(|i| (i as u8).wrapping_add(tag)));
    bytes
}

/// A master key id of exactly `len` bytes, ARN-like.
fn master_key_id(name: &str, len: usize) -> String {
    let mut id = format!("arn:aws:kms:eu-west-1:123456789012:key/{name}-");
    assert!(id.len() <= len, "{len} bytes hold the prefix");
    let fill = len - id.len();
    id.extend((0..fill).map(|i| char::from(b'a' + (i % 26) as u8)));
    id
}

/// The keys no later activation retired: the active ones, as `data_keys`
/// shows them.
fn unretired(keys: &[StoredDataKey]) -> Vec<&StoredDataKey> {
    keys.iter().filter(|key| key.retired_ms.is_none()).collect()
}

pub async fn no_key_is_active_at_first<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    assert_eq!(store.active_data_key().await.unwrap(), None);
    assert!(store.data_keys().await.unwrap().is_empty());
    assert_eq!(store.data_key(1).await.unwrap(), None);
    assert_eq!(store.data_key(u64::MAX).await.unwrap(), None);
    // Expecting a key while none is active: no winner to return, an error,
    // and nothing stored.
    assert!(store.activate_data_key(Some(1), &wrapped(1, 184), "arn:k", 1_000).await.is_err());
    assert_eq!(store.active_data_key().await.unwrap(), None);
    assert!(store.data_keys().await.unwrap().is_empty());
}

pub async fn the_first_activation_round_trips_every_field<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    let (bytes, master) = (wrapped(7, 600), master_key_id("first", MAX_MASTER_KEY_ID_BYTES));
    let created_ms = 1_764_950_400_123;
    let key = store.activate_data_key(None, &bytes, &master, created_ms).await.unwrap();
    assert_eq!(key, StoredDataKey { id: key.id, wrapped: bytes, master_key_id: master, created_ms, retired_ms: None });
    assert!(key.id > 0, "ids start at 1");
    assert_eq!(store.active_data_key().await.unwrap(), Some(key.clone()));
    assert_eq!(store.data_key(key.id).await.unwrap(), Some(key.clone()));
    assert_eq!(store.data_keys().await.unwrap(), vec![key.clone()]);
    assert_eq!(store.data_key(key.id + 1).await.unwrap(), None);
}

pub async fn rotation_retires_the_old_key_and_keeps_it_readable<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    let master = master_key_id("rotation", 80);
    let first = store.activate_data_key(None, &wrapped(1, 184), &master, 1_000).await.unwrap();
    let second = store.activate_data_key(Some(first.id), &wrapped(2, 184), &master, 2_000).await.unwrap();
    assert!(second.id > first.id, "ids increase");
    assert_eq!((second.wrapped.clone(), second.created_ms, second.retired_ms), (wrapped(2, 184), 2_000, None));
    assert_eq!(store.active_data_key().await.unwrap(), Some(second.clone()));
    // The old key is retired at the new one's creation, and still readable.
    let first_retired = StoredDataKey { retired_ms: Some(2_000), ..first.clone() };
    assert_eq!(store.data_key(first.id).await.unwrap(), Some(first_retired.clone()));

    let third = store.activate_data_key(Some(second.id), &wrapped(3, 184), &master, 3_000).await.unwrap();
    let second_retired = StoredDataKey { retired_ms: Some(3_000), ..second.clone() };
    assert_eq!(store.active_data_key().await.unwrap(), Some(third.clone()));
    // Oldest first; a key retired once keeps its retirement time.
    assert_eq!(store.data_keys().await.unwrap(), vec![first_retired, second_retired, third]);
}

pub async fn a_stale_activation_changes_nothing<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    let master = master_key_id("stale", 80);
    let first = store.activate_data_key(None, &wrapped(1, 184), &master, 1_000).await.unwrap();
    let second = store.activate_data_key(Some(first.id), &wrapped(2, 184), &master, 2_000).await.unwrap();
    let before = store.data_keys().await.unwrap();

    // A node that still sees the first key, one that saw none, one that names
    // a key that never existed: each is told the current key.
    for expected in [Some(first.id), None, Some(second.id + 100)] {
        let answer = store.activate_data_key(expected, &wrapped(9, 184), &master, 9_000).await.unwrap();
        assert_eq!(answer, second, "expected {expected:?}");
    }
    assert_eq!(store.active_data_key().await.unwrap(), Some(second));
    assert_eq!(store.data_keys().await.unwrap(), before, "a losing activation stores nothing");
}

/// `RACERS` activations with the same `expected` at once, each with its own
/// wrapped key; returns what each was told.
async fn race<S: DataKeyStore + ?Sized>(store: &Arc<S>, expected: Option<u64>, created_ms: i64) -> Vec<StoredDataKey> {
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|n| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                let master = format!("arn:aws:kms:eu-west-1:123456789012:key/node-{n}");
                start.wait().await;
                store.activate_data_key(expected, &wrapped(n as u8, 184), &master, created_ms + n as i64).await.unwrap()
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(RACERS);
    for racer in racers {
        answers.push(racer.await.unwrap());
    }
    answers
}

/// Every racer was told the same key, it is one of theirs, it is the active
/// one, and no other key is left unretired.
async fn one_winner<S: DataKeyStore + ?Sized>(store: &Arc<S>, answers: &[StoredDataKey]) -> StoredDataKey {
    let winner = answers[0].clone();
    assert!(answers.iter().all(|answer| *answer == winner), "every racer is told the same key: {answers:?}");
    assert!((0..RACERS).any(|n| winner.wrapped == wrapped(n as u8, 184)), "the winner is one of the racers");
    assert_eq!(winner.retired_ms, None);
    assert_eq!(store.active_data_key().await.unwrap(), Some(winner.clone()));
    let keys = store.data_keys().await.unwrap();
    assert_eq!(unretired(&keys), vec![&winner], "no second active key");
    winner
}

pub async fn concurrent_first_activations_agree_on_one_key<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    let answers = race(&store, None, 5_000).await;
    one_winner(&store, &answers).await;
}

pub async fn concurrent_rotations_agree_on_one_key<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    let master = master_key_id("before-the-race", 80);
    let first = store.activate_data_key(None, &wrapped(100, 184), &master, 1_000).await.unwrap();
    let answers = race(&store, Some(first.id), 5_000).await;
    let winner = one_winner(&store, &answers).await;
    assert!(winner.id > first.id);
    let first_now = store.data_key(first.id).await.unwrap().expect("a retired key stays readable");
    assert_eq!(first_now, StoredDataKey { retired_ms: Some(winner.created_ms), ..first });
}

pub async fn rewrap_is_a_compare_and_swap<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    let (old_master, new_master) = (master_key_id("old", 80), master_key_id("new", MAX_MASTER_KEY_ID_BYTES));
    let first = store.activate_data_key(None, &wrapped(1, 184), &old_master, 1_000).await.unwrap();
    let second = store.activate_data_key(Some(first.id), &wrapped(2, 184), &old_master, 2_000).await.unwrap();

    // The active key: rewrapped once; the stale old form then fails.
    let rewrapped = wrapped(22, 200);
    assert!(store.rewrap_data_key(second.id, &second.wrapped, &rewrapped, &new_master).await.unwrap());
    let second_now = StoredDataKey { wrapped: rewrapped.clone(), master_key_id: new_master.clone(), ..second.clone() };
    assert_eq!(store.data_key(second.id).await.unwrap(), Some(second_now.clone()));
    assert_eq!(store.active_data_key().await.unwrap(), Some(second_now.clone()), "it stays active");
    assert!(!store.rewrap_data_key(second.id, &second.wrapped, &wrapped(23, 200), &new_master).await.unwrap());
    assert_eq!(store.data_key(second.id).await.unwrap(), Some(second_now.clone()), "a failed rewrap changes nothing");

    // A retired key: rewrapped, still retired.
    assert!(store.rewrap_data_key(first.id, &first.wrapped, &wrapped(11, 200), &new_master).await.unwrap());
    let first_now = StoredDataKey {
        wrapped: wrapped(11, 200),
        master_key_id: new_master.clone(),
        retired_ms: Some(2_000),
        ..first.clone()
    };
    assert_eq!(store.data_keys().await.unwrap(), vec![first_now.clone(), second_now.clone()]);

    // No such key.
    for id in [second.id + 1_000, u64::MAX] {
        assert!(!store.rewrap_data_key(id, &second.wrapped, &wrapped(24, 200), &new_master).await.unwrap());
    }
    // The old form of one key is no key to another.
    assert!(!store.rewrap_data_key(first.id, &rewrapped, &wrapped(25, 200), &new_master).await.unwrap());
    assert_eq!(store.data_keys().await.unwrap(), vec![first_now, second_now]);
}

pub async fn concurrent_rewraps_of_one_key_have_one_winner<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    let master = master_key_id("contended", 80);
    let key = store.activate_data_key(None, &wrapped(1, 184), &master, 1_000).await.unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let rewraps: Vec<_> = (0..RACERS)
        .map(|n| {
            let (store, start, old) = (store.clone(), start.clone(), key.wrapped.clone());
            tokio::spawn(async move {
                start.wait().await;
                let new = wrapped(50 + n as u8, 200);
                store.rewrap_data_key(key.id, &old, &new, "arn:new").await.unwrap().then_some(new)
            })
        })
        .collect();
    let mut won = Vec::new();
    for rewrap in rewraps {
        won.extend(rewrap.await.unwrap());
    }
    assert_eq!(won.len(), 1, "exactly one rewrap of the same old form succeeds");
    let now = store.data_key(key.id).await.unwrap().unwrap();
    assert_eq!(now, StoredDataKey { wrapped: won.remove(0), master_key_id: "arn:new".to_owned(), ..key });
}

pub async fn oversized_keys_are_refused<S: DataKeyStore + ?Sized>(store: Arc<S>) {
    let (fits, too_long) =
        (master_key_id("max", MAX_MASTER_KEY_ID_BYTES), master_key_id("max", MAX_MASTER_KEY_ID_BYTES + 1));
    let too_big = vec![0xA5; MAX_WRAPPED_DATA_KEY_BYTES + 1];
    assert!(store.activate_data_key(None, &wrapped(1, 184), &too_long, 1_000).await.is_err());
    assert!(store.activate_data_key(None, &too_big, &fits, 1_000).await.is_err());
    assert!(store.data_keys().await.unwrap().is_empty(), "a refused activation stores nothing");

    // The largest of both fits.
    let biggest = vec![0x5A; MAX_WRAPPED_DATA_KEY_BYTES];
    let key = store.activate_data_key(None, &biggest, &fits, 1_000).await.unwrap();
    assert_eq!(store.data_key(key.id).await.unwrap(), Some(key.clone()));
    assert!(store.rewrap_data_key(key.id, &biggest, &too_big, &fits).await.is_err());
    assert!(store.rewrap_data_key(key.id, &biggest, &wrapped(2, 184), &too_long).await.is_err());
    assert_eq!(store.data_keys().await.unwrap(), vec![key]);
}
