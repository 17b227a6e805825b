//! [`MemoryBus`]: topics as in-memory logs, consumer groups as offsets.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, Bus, BusConsumer, BusRecord, RecordHeaders};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A bus inside one process, with Kafka's consumer-group semantics for a
/// single-partition topic: every group sees every record in order, members of
/// a group share them, and a group resumes after its last commit.
///
/// **Not durable across process restarts**: records and committed offsets
/// live in memory. The embedded server makes what it needs durable through
/// the store before it publishes (DESIGN.md §1, "durable through the store").
///
/// When a member leaves its group (its consumer is dropped), the group rewinds
/// to its last commit, as a Kafka rebalance does: records polled but not
/// committed are delivered again, to the members that remain or the next to
/// join, so handling must be idempotent (at-least-once). A new group starts at
/// the oldest record still kept; records are dropped once every group has
/// committed them.
///
/// **Bounded**: a topic holds at most [`TOPIC_CAPACITY`] bytes of keys
/// and payloads not yet committed by every group; a publish beyond it is
/// refused `Unavailable`, as a broker that is away, and the publisher's own
/// bounded queue takes over (retry, then drop and count). A consumer that
/// falls behind cannot make the process grow without bound.
#[derive(Debug)]
pub struct MemoryBus {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    capacity: usize,
}

/// [`MemoryBus::new`]'s bytes per topic: seconds of group messages at the
/// highest rates this process sustains, far more than a healthy consumer
/// ever leaves behind.
pub const TOPIC_CAPACITY: usize = 64 * 1024 * 1024;

impl Default for MemoryBus {
    fn default() -> Self {
        Self::with_capacity(TOPIC_CAPACITY)
    }
}

#[derive(Debug, Default)]
struct Topic {
    log: Mutex<Log>,
    /// Wakes pollers waiting for a record.
    published: Notify,
}

#[derive(Debug, Default)]
struct Log {
    /// Offset of `records[0]`.
    base: u64,
    records: VecDeque<BusRecord>,
    /// Bytes of keys and payloads in `records`.
    bytes: usize,
    groups: HashMap<String, Group>,
}

#[derive(Debug)]
struct Group {
    /// The offset after the last committed record: where the group resumes.
    committed: u64,
    /// The next offset to hand to a member.
    next: u64,
}

impl Log {
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    fn group(&mut self, name: &str) -> &mut Group {
        let base = self.base;
        self.groups.entry(name.to_owned()).or_insert(Group { committed: base, next: base })
    }

    /// Drops the records every group has committed.
    fn trim(&mut self) {
        let Some(done) = self.groups.values().map(|group| group.committed).min() else { return };
        while self.base < done {
            let Some(record) = self.records.pop_front() else { break };
            self.bytes -= record_bytes(&record);
            self.base += 1;
        }
    }
}

/// What a record counts against its topic's capacity.
fn record_bytes(record: &BusRecord) -> usize {
    record.key.len() + record.payload.len()
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus whose topics hold at most `capacity` bytes each.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { topics: RwLock::default(), capacity }
    }

    fn topic(&self, name: &str) -> Arc<Topic> {
        if let Some(topic) = self.topics.read().get(name) {
            return topic.clone();
        }
        self.topics.write().entry(name.to_owned()).or_default().clone()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    /// [`Bus::publish`] with headers, which consumers get back on the
    /// record.
    async fn publish_with_headers(
        &self,
        topic: &str,
        key: Bytes,
        payload: Bytes,
        headers: RecordHeaders,
    ) -> BackendResult<()> {
        let name = topic;
        let topic = self.topic(name);
        {
            let mut log = topic.log.lock();
            let record = BusRecord { key, payload, headers, offset: log.end() };
            let size = record_bytes(&record);
            // One record always fits: a record larger than the capacity
            // must not be refused forever.
            if !log.records.is_empty() && log.bytes + size > self.capacity {
                return Err(BackendError::unavailable(format!(
                    "in-process topic {name} holds {} bytes its consumers have not committed (capacity {})",
                    log.bytes, self.capacity
                )));
            }
            log.bytes += size;
            log.records.push_back(record);
        }
        topic.published.notify_waiters();
        Ok(())
    }

    /// Joins `group` on `topic`. Members of one group share the records; each
    /// group sees every record.
    async fn subscribe(&self, topic: &str, group: &str) -> BackendResult<Box<dyn BusConsumer>> {
        let topic = self.topic(topic);
        // Creates the group at the oldest record kept. A group that exists
        // resumes where it stands: after its last commit if its last member
        // left, or beside the members it has.
        topic.log.lock().group(group);
        Ok(Box::new(MemoryConsumer { topic, group: group.to_owned() }))
    }
}

/// One member of a consumer group on a [`MemoryBus`] topic.
#[derive(Debug)]
struct MemoryConsumer {
    topic: Arc<Topic>,
    group: String,
}

impl MemoryConsumer {
    fn take(&self, max: usize) -> Vec<BusRecord> {
        let mut log = self.topic.log.lock();
        let (base, end) = (log.base, log.end());
        let group = log.group(&self.group);
        // A commit by another member may have passed `next` since a rewind.
        let start = group.next.max(group.committed);
        let stop = end.min(start.saturating_add(max as u64));
        if start >= stop {
            return Vec::new();
        }
        group.next = stop;
        let (from, to) = ((start - base) as usize, (stop - base) as usize);
        log.records.range(from..to).cloned().collect()
    }
}

#[async_trait]
impl BusConsumer for MemoryConsumer {
    /// Waits up to `timeout` for up to `max` records after the group's
    /// committed position (or what this consumer already received).
    async fn poll(&mut self, max: usize, timeout: Duration) -> BackendResult<Vec<BusRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before looking, so a publish in between still wakes us.
            let published = self.topic.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let records = self.take(max);
            if !records.is_empty() || max == 0 {
                return Ok(records);
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// Marks everything up to and including `record` as done for the group. A
    /// consumer that restarts resumes after the last commit.
    async fn commit(&mut self, record: &BusRecord) -> BackendResult<()> {
        let mut log = self.topic.log.lock();
        let end = log.end();
        let group = log.group(&self.group);
        group.committed = group.committed.max(record.offset.saturating_add(1).min(end));
        log.trim();
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    /// Leaving rewinds the group to its last commit, so what this member
    /// received but did not finish goes to the members that remain.
    fn drop(&mut self) {
        let mut log = self.topic.log.lock();
        let group = log.group(&self.group);
        group.next = group.committed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WAIT: Duration = Duration::ZERO;

    async fn publish(bus: &MemoryBus, count: u32) {
        for n in 0..count {
            bus.publish("t", Bytes::new(), Bytes::from(n.to_string())).await.unwrap();
        }
    }

    fn offsets(records: &[BusRecord]) -> Vec<u64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[tokio::test]
    async fn records_every_group_committed_are_dropped() {
        let bus = MemoryBus::new();
        let mut first = bus.subscribe("t", "first").await.unwrap();
        let mut second = bus.subscribe("t", "second").await.unwrap();
        publish(&bus, 4).await;
        let records = first.poll(10, NO_WAIT).await.unwrap();
        first.commit(&records[3]).await.unwrap();
        // `second` has committed nothing: everything is kept for it.
        assert_eq!(bus.topic("t").log.lock().records.len(), 4);
        let records = second.poll(10, NO_WAIT).await.unwrap();
        second.commit(&records[1]).await.unwrap();
        let topic = bus.topic("t");
        let log = topic.log.lock();
        assert_eq!((log.base, log.records.len()), (2, 2));
    }

    #[tokio::test]
    async fn a_full_topic_refuses_publishes_until_its_consumers_commit() {
        // Records "0".."9" are one byte each.
        let bus = MemoryBus::with_capacity(3);
        let mut only = bus.subscribe("t", "only").await.unwrap();
        publish(&bus, 3).await;
        let refused = bus.publish("t", Bytes::new(), Bytes::from("3")).await;
        assert!(matches!(refused, Err(BackendError::Unavailable(_))), "{refused:?}");
        // Other topics are not affected.
        bus.publish("other", Bytes::new(), Bytes::from("x")).await.unwrap();
        let records = only.poll(10, NO_WAIT).await.unwrap();
        assert_eq!(offsets(&records), vec![0, 1, 2], "the refused record is not there");
        only.commit(&records[1]).await.unwrap();
        bus.publish("t", Bytes::new(), Bytes::from("3")).await.unwrap();
        bus.publish("t", Bytes::new(), Bytes::from("4")).await.unwrap();
        assert!(bus.publish("t", Bytes::new(), Bytes::from("5")).await.is_err(), "full again");
        // A record larger than the whole capacity still goes into an empty topic.
        let big = MemoryBus::with_capacity(3);
        big.publish("t", Bytes::new(), Bytes::from("too large")).await.unwrap();
    }

    #[tokio::test]
    async fn a_new_group_starts_at_the_oldest_record_kept() {
        let bus = MemoryBus::new();
        let mut only = bus.subscribe("t", "only").await.unwrap();
        publish(&bus, 3).await;
        let records = only.poll(10, NO_WAIT).await.unwrap();
        only.commit(&records[0]).await.unwrap();
        let mut late = bus.subscribe("t", "late").await.unwrap();
        assert_eq!(offsets(&late.poll(10, NO_WAIT).await.unwrap()), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_commit_past_a_rewind_is_not_delivered_again() {
        let bus = MemoryBus::new();
        let mut stays = bus.subscribe("t", "g").await.unwrap();
        let mut leaves = bus.subscribe("t", "g").await.unwrap();
        publish(&bus, 5).await;
        let kept = stays.poll(3, NO_WAIT).await.unwrap();
        assert_eq!(offsets(&leaves.poll(3, NO_WAIT).await.unwrap()), vec![3, 4]);
        // Leaving rewinds the group to offset 0; the remaining member then
        // commits what it holds, so only what the leaver held comes again.
        drop(leaves);
        stays.commit(&kept[2]).await.unwrap();
        assert_eq!(offsets(&stays.poll(10, NO_WAIT).await.unwrap()), vec![3, 4]);
    }
}
