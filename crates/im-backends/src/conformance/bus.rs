//! The `Bus` suite. Every case uses its own topic and groups, so a backend on
//! a shared broker needs no clean-up between cases.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use im_core::ports::{Bus, BusConsumer, BusRecord, RecordHeaders};
use tokio::time::Instant;

use super::fixtures::unique_name;

/// How long a case waits for records it knows are there (a real broker takes
/// a while to assign partitions to a new group).
const PATIENCE: Duration = Duration::from_secs(20);

/// Stamps out the `Bus` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! bus_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            bus,
            $make,
            [
                a_group_receives_every_record_in_order,
                every_group_receives_every_record,
                members_of_a_group_share_the_records,
                a_rejoining_group_resumes_after_its_last_commit,
                poll_returns_at_most_max,
                poll_waits_for_a_publish,
                headers_travel_with_their_record,
            ]
        );
    };
}

async fn publish_numbered<B: Bus + ?Sized>(bus: &B, topic: &str, range: std::ops::Range<u32>) {
    for n in range {
        bus.publish(topic, Bytes::from(format!("key{}", n % 3)), Bytes::from(n.to_string())).await.unwrap();
    }
}

fn numbers(records: &[BusRecord]) -> Vec<u32> {
    records.iter().map(|r| std::str::from_utf8(&r.payload).unwrap().parse().unwrap()).collect()
}

/// Polls until `count` records arrived; panics after [`PATIENCE`].
async fn receive(consumer: &mut dyn BusConsumer, count: usize) -> Vec<BusRecord> {
    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(Instant::now() < deadline, "received {} of {count} records", records.len());
        records.extend(consumer.poll(count - records.len(), Duration::from_millis(200)).await.unwrap());
    }
    records
}

pub async fn a_group_receives_every_record_in_order<B: Bus + ?Sized>(bus: Arc<B>) {
    let topic = unique_name("topic");
    publish_numbered(&*bus, &topic, 0..5).await;
    let mut consumer = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    let records = receive(&mut *consumer, 5).await;
    assert_eq!(numbers(&records), vec![0, 1, 2, 3, 4]);
    assert!(records.windows(2).all(|w| w[0].offset < w[1].offset), "offsets must increase");
    assert_eq!(records[4].key, Bytes::from("key1"));
    // Nothing more is delivered.
    assert!(consumer.poll(10, Duration::from_millis(100)).await.unwrap().is_empty());
}

pub async fn every_group_receives_every_record<B: Bus + ?Sized>(bus: Arc<B>) {
    let topic = unique_name("topic");
    let mut first = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    let mut second = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    publish_numbered(&*bus, &topic, 0..4).await;
    assert_eq!(numbers(&receive(&mut *first, 4).await), vec![0, 1, 2, 3]);
    assert_eq!(numbers(&receive(&mut *second, 4).await), vec![0, 1, 2, 3]);
}

pub async fn members_of_a_group_share_the_records<B: Bus + ?Sized>(bus: Arc<B>) {
    let topic = unique_name("topic");
    let group = unique_name("group");
    let mut members = [bus.subscribe(&topic, &group).await.unwrap(), bus.subscribe(&topic, &group).await.unwrap()];
    publish_numbered(&*bus, &topic, 0..10).await;
    let deadline = Instant::now() + PATIENCE;
    let mut seen = HashSet::new();
    while seen.len() < 10 {
        assert!(Instant::now() < deadline, "the group received {} of 10 records", seen.len());
        for member in &mut members {
            for n in numbers(&member.poll(3, Duration::from_millis(100)).await.unwrap()) {
                assert!(seen.insert(n), "record {n} went to two members of one group");
            }
        }
    }
}

pub async fn a_rejoining_group_resumes_after_its_last_commit<B: Bus + ?Sized>(bus: Arc<B>) {
    let topic = unique_name("topic");
    let group = unique_name("group");
    publish_numbered(&*bus, &topic, 0..5).await;
    let mut consumer = bus.subscribe(&topic, &group).await.unwrap();
    let records = receive(&mut *consumer, 5).await;
    consumer.commit(&records[1]).await.unwrap();
    // Closed, not dropped: the next member joins once this one has left
    // (see `BusConsumer::close`).
    consumer.close().await.unwrap();

    // Records 2..5 were received but not committed: they come again.
    let mut consumer = bus.subscribe(&topic, &group).await.unwrap();
    let again = receive(&mut *consumer, 3).await;
    assert_eq!(numbers(&again), vec![2, 3, 4]);
    consumer.commit(&again[2]).await.unwrap();
    consumer.close().await.unwrap();

    let mut consumer = bus.subscribe(&topic, &group).await.unwrap();
    publish_numbered(&*bus, &topic, 5..6).await;
    assert_eq!(numbers(&receive(&mut *consumer, 1).await), vec![5]);
}

pub async fn poll_returns_at_most_max<B: Bus + ?Sized>(bus: Arc<B>) {
    let topic = unique_name("topic");
    publish_numbered(&*bus, &topic, 0..5).await;
    let mut consumer = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    while received.len() < 5 {
        assert!(Instant::now() < deadline, "received {} of 5 records", received.len());
        let records = consumer.poll(2, Duration::from_millis(200)).await.unwrap();
        assert!(records.len() <= 2, "asked for 2, got {}", records.len());
        received.extend(numbers(&records));
    }
    assert_eq!(received, vec![0, 1, 2, 3, 4]);
}

pub async fn poll_waits_for_a_publish<B: Bus + ?Sized>(bus: Arc<B>) {
    let topic = unique_name("topic");
    let mut consumer = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    let started = Instant::now();
    assert!(consumer.poll(10, Duration::from_millis(100)).await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100), "an empty poll returned before its timeout");

    let publisher = {
        let (bus, topic) = (bus.clone(), topic.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            publish_numbered(&*bus, &topic, 7..8).await;
        })
    };
    let records = receive(&mut *consumer, 1).await;
    assert_eq!(numbers(&records), vec![7]);
    publisher.await.unwrap();
}

pub async fn headers_travel_with_their_record<B: Bus + ?Sized>(bus: Arc<B>) {
    let topic = unique_name("topic");
    let mut headers = RecordHeaders::default();
    headers.insert("traceparent", Bytes::from_static(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    headers.insert("tracestate", Bytes::from_static(b"vendor=1"));
    bus.publish_with_headers(&topic, Bytes::from_static(b"k"), Bytes::from_static(b"1"), headers.clone())
        .await
        .unwrap();
    bus.publish(&topic, Bytes::from_static(b"k"), Bytes::from_static(b"2")).await.unwrap();
    let mut consumer = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    let records = receive(&mut *consumer, 2).await;
    assert_eq!(numbers(&records), vec![1, 2]);
    assert_eq!(records[0].headers, headers, "the headers of the first record, in order");
    assert!(records[1].headers.is_empty(), "a record published without headers has none");
}
