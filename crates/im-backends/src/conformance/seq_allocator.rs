//! The `SeqAllocator` suite. An allocator's promise (G2) spans restarts, so
//! the suite drives it through a [`SeqAllocatorHarness`] that can start a new
//! allocator over the same durable state.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use im_core::Seq;
use im_core::ports::{BackendResult, CeilingStore, SeqAllocator};

use super::fixtures::{group_conversation, private, users};

/// An allocator backend under test.
#[async_trait]
pub trait SeqAllocatorHarness: Send + Sync + 'static {
    /// A new allocator over the same durable ceilings, as after a process
    /// restart or the loss of the counters (a Redis flush). The previous
    /// allocator is dropped by the caller before it uses the new one.
    async fn start(&self) -> BackendResult<Arc<dyn SeqAllocator>>;

    /// Where the allocators keep their ceilings.
    fn ceilings(&self) -> &dyn CeilingStore;

    /// The `SEQUENCE_SNAPSHOT_INTERVAL` the allocators run with.
    fn interval(&self) -> u64;
}

/// Stamps out the `SeqAllocator` suite; `$make` returns
/// `(Arc<impl SeqAllocatorHarness>, guard)`. See the [module docs](crate::conformance).
#[macro_export]
macro_rules! seq_allocator_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            seq_allocator,
            $make,
            [
                new_conversation_starts_at_one,
                conversations_count_independently,
                seqs_are_distinct_and_increasing_under_concurrency,
                ceiling_is_durable_before_a_seq_is_handed_out,
                restart_resumes_above_the_stored_ceiling,
                a_batch_gets_what_single_calls_would,
                a_batch_reserves_its_ceilings_before_handing_out,
                current_seq_of_a_new_conversation_is_zero_and_writes_nothing,
                current_seq_is_the_last_seq_handed_out,
                current_seq_after_a_restart_is_between_the_old_and_the_new_seqs,
                current_seq_under_concurrent_allocation_splits_before_from_after,
            ]
        );
    };
}

pub async fn new_conversation_starts_at_one<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let allocator = harness.start().await.unwrap();
    let [a, b] = users();
    for expected in 1..=3 {
        assert_eq!(allocator.next_seq(private(a, b)).await.unwrap(), Seq(expected));
    }
}

pub async fn conversations_count_independently<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let allocator = harness.start().await.unwrap();
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    let mut taken = Vec::new();
    for conversation in [ab, ab, ac, ab, ac] {
        taken.push(allocator.next_seq(conversation).await.unwrap().0);
    }
    assert_eq!(taken, vec![1, 2, 1, 3, 2]);
}

pub async fn seqs_are_distinct_and_increasing_under_concurrency<H: SeqAllocatorHarness>(harness: Arc<H>) {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 500;
    let allocator = harness.start().await.unwrap();
    let [a, b] = users();
    let ab = private(a, b);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let allocator = allocator.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::with_capacity(PER_TASK as usize);
                for _ in 0..PER_TASK {
                    seqs.push(allocator.next_seq(ab).await.unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut all = HashSet::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one caller saw seqs go back: {seqs:?}");
        for seq in seqs {
            assert!(all.insert(seq), "seq {seq} handed out twice");
        }
    }
    // Without a restart there is no gap either.
    let expected: HashSet<Seq> = (1..=TASKS * PER_TASK).map(Seq).collect();
    assert_eq!(all, expected);
}

pub async fn ceiling_is_durable_before_a_seq_is_handed_out<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let allocator = harness.start().await.unwrap();
    let [a, b] = users();
    let ab = private(a, b);
    for _ in 0..3 * harness.interval() + 1 {
        let seq = allocator.next_seq(ab).await.unwrap();
        let ceiling = harness.ceilings().load_ceiling(ab).await.unwrap();
        assert!(ceiling >= seq, "seq {seq} handed out above the stored ceiling {ceiling}");
    }
}

pub async fn restart_resumes_above_the_stored_ceiling<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let interval = harness.interval();
    let [a, b] = users();
    let ab = private(a, b);
    let mut last = Seq::ZERO;
    // Stop at different points of an interval, including right after a start.
    for takes in [interval + interval / 2 + 1, 0, 1, interval, 2] {
        let allocator = harness.start().await.unwrap();
        let first = allocator.next_seq(ab).await.unwrap();
        assert!(first > last, "seq {first} reused after a restart (last was {last})");
        assert!(first.0 - last.0 <= interval, "restart gap {} is above the interval {interval}", first.0 - last.0);
        last = first;
        for _ in 0..takes {
            let seq = allocator.next_seq(ab).await.unwrap();
            assert_eq!(seq, last.next(), "a gap without a restart");
            last = seq;
        }
        drop(allocator);
    }
}

pub async fn a_batch_gets_what_single_calls_would<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let allocator = harness.start().await.unwrap();
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    let first = allocator.next_seqs(&[ab, ac, ab, ab, ac]).await.unwrap();
    assert_eq!(first.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 1, 2, 3, 2]);
    // Bigger than an interval, mixed with single calls: still no gap.
    let big = vec![ab; harness.interval() as usize * 2 + 3];
    let seqs = allocator.next_seqs(&big).await.unwrap();
    let expected: Vec<Seq> = (4..4 + big.len() as u64).map(Seq).collect();
    assert_eq!(seqs, expected);
    assert_eq!(allocator.next_seq(ab).await.unwrap(), Seq(4 + big.len() as u64));
    assert!(allocator.next_seqs(&[]).await.unwrap().is_empty());
}

pub async fn a_batch_reserves_its_ceilings_before_handing_out<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let interval = harness.interval();
    let [a, b, c] = users();
    let (ab, ac) = (private(a, b), private(a, c));
    let allocator = harness.start().await.unwrap();
    let batch: Vec<_> = (0..interval * 3).map(|i| if i % 3 == 0 { ac } else { ab }).collect();
    let seqs = allocator.next_seqs(&batch).await.unwrap();
    let highest = |conv| batch.iter().zip(&seqs).filter(|(c, _)| **c == conv).map(|(_, s)| *s).max().unwrap();
    let ceilings = harness.ceilings().load_ceilings(&[ab, ac]).await.unwrap();
    assert!(ceilings[0] >= highest(ab) && ceilings[1] >= highest(ac), "seqs above the durable ceilings");
    // A restart continues above everything the batch handed out.
    drop(allocator);
    let allocator = harness.start().await.unwrap();
    assert!(allocator.next_seq(ab).await.unwrap() > highest(ab));
    assert!(allocator.next_seq(ac).await.unwrap() > highest(ac));
}

pub async fn current_seq_of_a_new_conversation_is_zero_and_writes_nothing<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let allocator = harness.start().await.unwrap();
    let group = group_conversation();
    assert_eq!(allocator.current_seq(group).await.unwrap(), Seq::ZERO);
    assert_eq!(allocator.current_seq(group).await.unwrap(), Seq::ZERO);
    assert_eq!(harness.ceilings().load_ceiling(group).await.unwrap(), Seq::ZERO, "current_seq wrote a ceiling");
    assert_eq!(allocator.next_seq(group).await.unwrap(), Seq(1), "current_seq handed a seq out");
}

pub async fn current_seq_is_the_last_seq_handed_out<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let allocator = harness.start().await.unwrap();
    let (group, [a, b]) = (group_conversation(), users());
    let ab = private(a, b);
    // Past a ceiling, so a raise is among what it must see.
    let count = harness.interval() + 2;
    for _ in 0..count {
        allocator.next_seqs(&[group, ab]).await.unwrap();
    }
    let ceiling = harness.ceilings().load_ceiling(group).await.unwrap();
    for _ in 0..3 {
        assert_eq!(allocator.current_seq(group).await.unwrap(), Seq(count));
    }
    assert_eq!(harness.ceilings().load_ceiling(group).await.unwrap(), ceiling, "current_seq moved the ceiling");
    assert_eq!(allocator.next_seq(group).await.unwrap(), Seq(count + 1));
    assert_eq!(allocator.current_seq(group).await.unwrap(), Seq(count + 1));
    assert_eq!(allocator.current_seq(ab).await.unwrap(), Seq(count));
}

pub async fn current_seq_after_a_restart_is_between_the_old_and_the_new_seqs<H: SeqAllocatorHarness>(harness: Arc<H>) {
    let group = group_conversation();
    let mut last = Seq::ZERO;
    // Stop at different points of an interval, including right after a start.
    for takes in [harness.interval() + 1, 0, 1, harness.interval()] {
        let allocator = harness.start().await.unwrap();
        // Before this allocator hands anything out: above everything before
        // the restart, and at most the ceiling it restarts from.
        let boundary = allocator.current_seq(group).await.unwrap();
        assert!(boundary >= last, "current_seq {boundary} below seq {last} handed out before the restart");
        let ceiling = harness.ceilings().load_ceiling(group).await.unwrap();
        assert!(boundary <= ceiling, "current_seq {boundary} above the stored ceiling {ceiling}");
        let first = allocator.next_seq(group).await.unwrap();
        assert!(first > boundary, "seq {first} handed out after current_seq answered {boundary}");
        assert_eq!(allocator.current_seq(group).await.unwrap(), first);
        last = first;
        for _ in 0..takes {
            last = allocator.next_seq(group).await.unwrap();
        }
        assert_eq!(allocator.current_seq(group).await.unwrap(), last);
        drop(allocator);
    }
}

pub async fn current_seq_under_concurrent_allocation_splits_before_from_after<H: SeqAllocatorHarness>(harness: Arc<H>) {
    const ALLOCATORS: usize = 4;
    const ROUNDS: usize = 100;
    let allocator = harness.start().await.unwrap();
    let group = group_conversation();
    let busy: Vec<_> = (0..ALLOCATORS)
        .map(|_| {
            let allocator = allocator.clone();
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    allocator.next_seq(group).await.unwrap();
                }
            })
        })
        .collect();
    for _ in 0..ROUNDS {
        let before = allocator.next_seq(group).await.unwrap();
        let boundary = allocator.current_seq(group).await.unwrap();
        let after = allocator.next_seq(group).await.unwrap();
        assert!(before <= boundary, "seq {before} handed out before current_seq, which answered {boundary}");
        assert!(boundary < after, "seq {after} handed out after current_seq, which answered {boundary}");
    }
    for task in busy {
        task.await.unwrap();
    }
    let total = (ALLOCATORS + 2) * ROUNDS;
    assert_eq!(allocator.current_seq(group).await.unwrap(), Seq(total as u64));
}
