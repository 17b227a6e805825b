//! The `DedupCache` suite. Cases only rely on what every cache keeps: a
//! recent first send (its ack and its request's digest). Eviction by size
//! and age is each backend's own (and tested there).

use std::sync::Arc;

use im_core::ports::DedupCache;
use im_core::{Ack, ClientMsgId, FirstSend, MessageId, RequestDigest, Seq};

use super::fixtures::{private, unique, unique_name, users};

/// Stamps out the `DedupCache` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! dedup_cache_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            dedup_cache,
            $make,
            [
                unknown_key_is_a_miss,
                first_ack_wins,
                keys_are_per_sender,
                concurrent_puts_agree_on_one_ack,
                batches_agree_with_single_calls,
                the_digest_is_kept_and_may_be_unknown,
            ]
        );
    };
}

/// A first send; its digest differs with `seq` and spans the 64 bits.
fn ack(seq: u64) -> FirstSend {
    let [a, b] = users();
    let ack = Ack {
        msg_id: MessageId(unique()),
        conversation: private(a, b),
        seq: Seq(seq),
        server_time_ms: 1000 + seq as i64,
        body_masked: false,
    };
    FirstSend { ack, digest: Some(RequestDigest(u64::MAX - seq)) }
}

fn key() -> ClientMsgId {
    ClientMsgId::parse(&unique_name("k")).unwrap()
}

pub async fn unknown_key_is_a_miss<C: DedupCache + ?Sized>(cache: Arc<C>) {
    let [a] = users();
    assert_eq!(cache.get(a, &key()).await.unwrap(), None);
}

pub async fn first_ack_wins<C: DedupCache + ?Sized>(cache: Arc<C>) {
    let [a] = users();
    let key = key();
    let (first, second) = (ack(1), ack(2));
    assert_eq!(cache.put_if_absent(a, &key, first).await.unwrap(), first);
    assert_eq!(cache.get(a, &key).await.unwrap(), Some(first));
    assert_eq!(cache.put_if_absent(a, &key, second).await.unwrap(), first);
    assert_eq!(cache.get(a, &key).await.unwrap(), Some(first));
}

pub async fn keys_are_per_sender<C: DedupCache + ?Sized>(cache: Arc<C>) {
    let [a, b] = users();
    let key = key();
    let (of_a, of_b) = (ack(1), ack(2));
    cache.put_if_absent(a, &key, of_a).await.unwrap();
    assert_eq!(cache.get(b, &key).await.unwrap(), None);
    assert_eq!(cache.put_if_absent(b, &key, of_b).await.unwrap(), of_b);
    assert_eq!(cache.get(a, &key).await.unwrap(), Some(of_a));
}

pub async fn concurrent_puts_agree_on_one_ack<C: DedupCache + ?Sized>(cache: Arc<C>) {
    let [a] = users();
    let key = key();
    let puts: Vec<_> = (1..=16)
        .map(|seq| {
            let (cache, key) = (cache.clone(), key.clone());
            tokio::spawn(async move { cache.put_if_absent(a, &key, ack(seq)).await.unwrap() })
        })
        .collect();
    let mut winners = Vec::new();
    for put in puts {
        winners.push(put.await.unwrap());
    }
    winners.dedup();
    assert_eq!(winners.len(), 1, "callers were told different first acks: {winners:?}");
    assert_eq!(cache.get(a, &key).await.unwrap(), Some(winners[0]));
}

pub async fn batches_agree_with_single_calls<C: DedupCache + ?Sized>(cache: Arc<C>) {
    let [a, b] = users();
    let (k1, k2, k3) = (key(), key(), key());
    let (first, second, late) = (ack(1), ack(2), ack(3));
    cache.put_if_absent(a, &k1, first).await.unwrap();
    assert!(cache.get_many(&[]).await.unwrap().is_empty());
    // k1 was recorded singly; the batch records k2 and must not move k1.
    cache.put_many_if_absent(&[(a, &k1, late), (b, &k2, second)]).await.unwrap();
    let found = cache.get_many(&[(a, &k1), (b, &k2), (a, &k3), (a, &k2)]).await.unwrap();
    assert_eq!(found, vec![Some(first), Some(second), None, None]);
    assert_eq!(cache.get(b, &k2).await.unwrap(), Some(second));
    assert_eq!(cache.put_if_absent(a, &k1, late).await.unwrap(), first);
}

pub async fn the_digest_is_kept_and_may_be_unknown<C: DedupCache + ?Sized>(cache: Arc<C>) {
    let [a] = users();
    let (known, unknown) = (key(), key());
    let with = ack(1);
    let without = FirstSend { digest: None, ..ack(2) };
    cache.put_many_if_absent(&[(a, &known, with), (a, &unknown, without)]).await.unwrap();
    assert_eq!(cache.get(a, &known).await.unwrap().and_then(|first| first.digest), with.digest);
    assert_eq!(cache.get(a, &unknown).await.unwrap(), Some(without));
}
