//! Message ids: unique across nodes and time-ordered, without coordination.
//!
//! Layout (64 bits): milliseconds since 2024-01-01 (42 bits, ~139 years),
//! node id (10 bits), counter within the millisecond (12 bits). When a node
//! issues more than 4096 ids in one millisecond it borrows from the next
//! millisecond, so ids stay unique and increasing on a node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use im_core::MessageId;

const EPOCH_MS: u64 = 1_704_067_200_000;
const COUNTER_BITS: u32 = 12;
const NODE_BITS: u32 = 10;
pub const MAX_NODE_ID: u16 = (1 << NODE_BITS) - 1;

pub struct MessageIdGenerator {
    node: u64,
    /// `(ms << COUNTER_BITS) | counter` of the last id issued.
    last: AtomicU64,
}

impl MessageIdGenerator {
    pub fn new(node: u16) -> Self {
        assert!(node <= MAX_NODE_ID, "node id {node} exceeds {MAX_NODE_ID}");
        Self { node: u64::from(node), last: AtomicU64::new(0) }
    }

    /// The next id, and the wall-clock milliseconds it was issued at.
    pub fn next(&self) -> (MessageId, i64) {
        let now_ms = unix_ms();
        let floor = now_ms.saturating_sub(EPOCH_MS) << COUNTER_BITS;
        let mut prev = self.last.load(Ordering::Relaxed);
        let state = loop {
            let next = (prev + 1).max(floor);
            match self.last.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(actual) => prev = actual,
            }
        };
        let ms = state >> COUNTER_BITS;
        let counter = state & ((1 << COUNTER_BITS) - 1);
        let id = (ms << (NODE_BITS + COUNTER_BITS)) | (self.node << COUNTER_BITS) | counter;
        (MessageId(id), now_ms as i64)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase_and_carry_the_node() {
        let generator = MessageIdGenerator::new(5);
        let mut last = 0;
        for _ in 0..20_000 {
            let (id, _) = generator.next();
            assert!(id.0 > last);
            assert_eq!((id.0 >> COUNTER_BITS) & u64::from(MAX_NODE_ID), 5);
            last = id.0;
        }
    }

    #[test]
    fn two_nodes_never_collide() {
        let a = MessageIdGenerator::new(1);
        let b = MessageIdGenerator::new(2);
        let ids: std::collections::HashSet<u64> = (0..5000).flat_map(|_| [a.next().0.0, b.next().0.0]).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
