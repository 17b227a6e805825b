//! The `ResealStore` suite (needs a `MessageStore` too: the rows it walks
//! are appended and read back through it). Cases may share the store with
//! others, so they look for their own rows (by msg_id) in the walk.

use std::sync::Arc;

use bytes::Bytes;
use im_core::ports::{MessageStore, Reseal, ResealStore, StoredBody};
use im_core::{MessageId, NewMessage, Seq};

use super::fixtures::{message, private, unique, unique_name, users};

/// Stamps out the `ResealStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! reseal_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            reseal_store,
            $make,
            [
                the_walk_finds_clear_rows_and_rows_of_other_keys_in_storage_order,
                reseal_replaces_only_rows_still_sealed_as_expected,
            ]
        );
    };
}

/// The whole walk for `key`, `page` rows at a time, checking each page.
async fn walk<S: ResealStore + ?Sized>(store: &S, key: u64, page: u32) -> Vec<StoredBody> {
    let (mut after, mut found) = (0, Vec::new());
    loop {
        let window = store.bodies_to_reseal(key, after, page).await.unwrap();
        assert!(window.len() <= page as usize, "a window holds at most `limit` rows");
        for row in &window {
            assert!(row.position > after, "storage order, after the cursor: {} after {after}", row.position);
            assert_ne!(row.message.sealed_with, Some(key), "a row sealed with the key is not in its walk");
            after = row.position;
        }
        let last = window.len() < page as usize;
        found.extend(window);
        if last {
            return found;
        }
    }
}

fn sealed(message: NewMessage, key: u64) -> NewMessage {
    NewMessage { sealed_with: Some(key), body: Bytes::from_static(b"\x00sealed bytes\xff"), ..message }
}

pub async fn the_walk_finds_clear_rows_and_rows_of_other_keys_in_storage_order<S>(store: Arc<S>)
where
    S: ResealStore + MessageStore + ?Sized,
{
    let (old, active) = (unique(), unique());
    let [a, b] = users();
    let ab = private(a, b);
    let m = |seq| message(ab, a, seq, &unique_name("k"), 1000 + seq as i64);
    let batch = vec![m(1), sealed(m(2), old), sealed(m(3), active), m(4), sealed(m(5), old)];
    store.append(&batch).await.unwrap();

    let ours = |rows: Vec<StoredBody>| -> Vec<StoredBody> {
        rows.into_iter().filter(|row| batch.iter().any(|m| m.msg_id == row.message.msg_id)).collect()
    };
    // Small pages cross page boundaries.
    let found = ours(walk(&*store, active, 2).await);
    let expected: Vec<NewMessage> = [0, 1, 3, 4].iter().map(|&i| batch[i].clone()).collect();
    assert_eq!(found.iter().map(|row| row.message.clone()).collect::<Vec<_>>(), expected, "every column as stored");
    // Another key's walk takes the active key's row too.
    let other: Vec<MessageId> = ours(walk(&*store, old, 100).await).iter().map(|row| row.message.msg_id).collect();
    assert_eq!(other, vec![batch[0].msg_id, batch[2].msg_id, batch[3].msg_id]);
    // Resuming after a row's position goes on from the next one.
    let rest = ours(walk_from(&*store, active, found[1].position).await);
    assert_eq!(rest.iter().map(|row| row.position).collect::<Vec<_>>(), vec![found[2].position, found[3].position]);
}

async fn walk_from<S: ResealStore + ?Sized>(store: &S, key: u64, after: u64) -> Vec<StoredBody> {
    store.bodies_to_reseal(key, after, 1000).await.unwrap()
}

pub async fn reseal_replaces_only_rows_still_sealed_as_expected<S>(store: Arc<S>)
where
    S: ResealStore + MessageStore + ?Sized,
{
    let (old, active, wrong) = (unique(), unique(), unique());
    let [a, b] = users();
    let ab = private(a, b);
    let m = |seq| message(ab, a, seq, &unique_name("k"), 1000 + seq as i64);
    let batch = vec![m(1), sealed(m(2), old), sealed(m(3), old)];
    store.append(&batch).await.unwrap();
    let rows: Vec<StoredBody> = walk(&*store, active, 1000)
        .await
        .into_iter()
        .filter(|row| batch.iter().any(|m| m.msg_id == row.message.msg_id))
        .collect();
    assert_eq!(rows.len(), 3);
    let new_body = |n: u8| Bytes::from(vec![n; 40]);
    let reseal = |row: &StoredBody, expected, n| Reseal {
        position: row.position,
        expected,
        body: new_body(n),
        sealed_with: active,
    };
    let replaced = store
        .reseal(&[
            // In clear, as read: replaced.
            reseal(&rows[0], None, 1),
            // Sealed with `old`, as read: replaced.
            reseal(&rows[1], Some(old), 2),
            // Read as `old`, but the caller expects another key: left alone.
            reseal(&rows[2], Some(wrong), 3),
            // A clear row expected, but it is sealed: left alone.
            reseal(&rows[2], None, 3),
            // No such row (deleted by retention meanwhile): nothing.
            Reseal { position: u64::MAX >> 2, expected: None, body: new_body(4), sealed_with: active },
        ])
        .await
        .unwrap();
    assert_eq!(replaced, 2);
    assert_eq!(store.reseal(&[]).await.unwrap(), 0, "an empty batch is a no-op");

    let page = store.fetch(ab, Seq::ZERO, 10).await.unwrap();
    let stored: Vec<(Option<u64>, Bytes)> = page.messages.iter().map(|m| (m.sealed_with, m.body.clone())).collect();
    assert_eq!(
        stored,
        vec![(Some(active), new_body(1)), (Some(active), new_body(2)), (Some(old), batch[2].body.clone())],
        "only the body and its key change"
    );
    for (before, after) in batch.iter().zip(&page.messages) {
        assert_eq!(
            (before.msg_id, before.seq, before.sender, &before.client_msg_id, before.server_time_ms),
            (after.msg_id, after.seq, after.sender, &after.client_msg_id, after.server_time_ms)
        );
    }
    // A second pass with the same expectations changes nothing: the rows
    // moved on.
    assert_eq!(store.reseal(&[reseal(&rows[0], None, 9), reseal(&rows[1], Some(old), 9)]).await.unwrap(), 0);
}
