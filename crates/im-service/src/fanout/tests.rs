//! The fan-out over the in-process bus, the real membership cache over a
//! scripted directory, a fixed registry and a recording pusher.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use im_backends::MemoryBus;
use im_core::group::{ChangeKind, Member, MembershipChange, Role, Roster};
use im_core::ports::{BackendResult, PushEvent, PushReport};
use im_core::{ClientMsgId, ConversationId, MessageId, Seq, UserId};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::*;
use crate::consumer::dead_letter_topic;
use crate::metrics::{GROUP_DEAD_LETTER_REASONS, ReasonLabel};
use crate::testkit::{FixedRegistry, RecordingPusher, ScriptedDirectory, consumer_settings, gw, roster};

const TOPIC: &str = "group_msg";
const GROUP: &str = "fanout";
/// Long enough for any step of these tests on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// Implements only `push`: the port's own `fan_out` expands each fan-out
/// into one event per user.
#[derive(Default)]
struct PushOnlyPusher {
    events: Mutex<Vec<PushEvent>>,
}

#[async_trait]
impl Pusher for PushOnlyPusher {
    async fn push(&self, _: &GatewayId, batch: &[PushEvent]) -> BackendResult<PushReport> {
        self.events.lock().unwrap().extend_from_slice(batch);
        Ok(PushReport { delivered: batch.len() as u32, offline: Vec::new() })
    }
}

fn member(user: u64, joined_after: u64) -> Member {
    let role = if user == 1 { Role::Owner } else { Role::Member };
    Member { user: UserId(user), role, joined_after: Seq(joined_after) }
}

/// A message of `group` from `sender`, sent now.
fn message(group: u64, sender: u64, seq: u64) -> NewMessage {
    NewMessage {
        msg_id: MessageId(group * 1000 + seq),
        conversation: ConversationId::Group(GroupId(group)),
        seq: Seq(seq),
        sender: UserId(sender),
        client_msg_id: ClientMsgId::parse(&format!("c{group}-{seq}")).unwrap(),
        body: Bytes::from_static(b"hi all"),
        content_type: String::new(),
        server_time_ms: unix_ms(),
        sealed_with: None,
    }
}

fn phone() -> DeviceId {
    DeviceId("phone".into())
}

struct Fixture {
    bus: Arc<MemoryBus>,
    directory: Arc<ScriptedDirectory>,
    cache: Arc<MembershipCache>,
    registry: Arc<FixedRegistry>,
    metrics: Arc<Metrics>,
}

impl Fixture {
    fn new(rosters: Vec<Roster>, online: Vec<(u64, Vec<GatewayId>)>) -> Self {
        let directory = Arc::new(ScriptedDirectory::new(rosters));
        let registry = FixedRegistry(online.into_iter().map(|(user, gateways)| (UserId(user), gateways)).collect());
        Self {
            bus: Arc::new(MemoryBus::new()),
            cache: Arc::new(MembershipCache::new(directory.clone(), crate::groups::cache::MAX_CACHED_MEMBERS)),
            directory,
            registry: Arc::new(registry),
            metrics: Arc::new(Metrics::new()),
        }
    }

    fn worker(&self, pusher: Arc<dyn Pusher>) -> FanOutWorker {
        FanOutWorker {
            bus: self.bus.clone(),
            cache: self.cache.clone(),
            registry: self.registry.clone(),
            pusher,
            metrics: self.metrics.clone(),
            retry: RetryPolicy { attempts: 2, timeout: Duration::from_secs(1) },
            settings: consumer_settings(TOPIC, GROUP, 256, Duration::from_millis(50)),
            cipher: None,
        }
    }

    async fn start(&self, pusher: Arc<dyn Pusher>) -> (TaskTracker, CancellationToken) {
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        self.worker(pusher).start(&*self.bus, &tracker, stop.clone()).await.unwrap();
        (tracker, stop)
    }

    async fn publish(&self, messages: &[NewMessage]) {
        for message in messages {
            let item = GroupMessage { message: Arc::new(message.clone()), device: phone() };
            self.bus.publish(TOPIC, item.key(), item.payload()).await.unwrap();
        }
    }

    /// Waits until `count` group messages were fanned out.
    async fn wait_fanned_out(&self, count: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.metrics.group_fanned_out.get() < count {
            assert!(Instant::now() < deadline, "only {} fanned out", self.metrics.group_fanned_out.get());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `done` holds: the lanes push after the batch is handed
    /// over.
    async fn wait_until(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "{what} did not happen within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the lanes made `count` fan-out calls in all.
    async fn wait_calls(&self, pusher: &RecordingPusher, count: usize) {
        self.wait_until(&format!("{count} fan-out calls"), || pusher.fan_outs.lock().unwrap().len() >= count).await;
    }

    /// Nothing is left for the group: everything was committed.
    async fn assert_all_committed(&self) {
        let mut next = self.bus.subscribe(TOPIC, GROUP).await.unwrap();
        assert_eq!(next.poll(10, Duration::from_millis(50)).await.unwrap(), [], "committed past everything");
    }
}

async fn stop(tracker: TaskTracker, stop: CancellationToken) {
    stop.cancel();
    tracker.close();
    tokio::time::timeout(PATIENCE, tracker.wait()).await.expect("the fan-out stops");
}

/// One fan-out as the tests compare them: (group, seq, users).
type Sent = (u64, u64, Vec<u64>);

/// The calls, by gateway: each call's fan-outs.
fn calls_by_gateway(pusher: &RecordingPusher) -> HashMap<String, Vec<Vec<Sent>>> {
    assert!(pusher.pushes.lock().unwrap().is_empty(), "the fan-out calls fan_out");
    let mut by_gateway: HashMap<String, Vec<_>> = HashMap::new();
    for (gateway, batch) in pusher.fan_outs.lock().unwrap().iter() {
        let fan_outs = batch
            .iter()
            .map(|f| {
                let Event::Message(m) = &f.event else { panic!("a message") };
                (m.conversation.group().unwrap().0, m.seq.0, f.users.iter().map(|u| u.0).collect())
            })
            .collect();
        by_gateway.entry(gateway.0.clone()).or_default().push(fan_outs);
    }
    by_gateway
}

#[tokio::test]
async fn one_call_per_gateway_per_batch_carries_the_members_there() {
    // Group 1: users 1..=5. 1 on a; 2 on a and b; 3 on b; 4 nowhere; 5 on c.
    // Group 2: users 1 and 6; 6 on b.
    let f = Fixture::new(
        vec![roster(1, (1..=5).map(|u| member(u, 0)).collect()), roster(2, vec![member(1, 0), member(6, 0)])],
        vec![
            (1, vec![gw("a")]),
            (2, vec![gw("a"), gw("b")]),
            (3, vec![gw("b")]),
            (5, vec![gw("c")]),
            (6, vec![gw("b")]),
        ],
    );
    // Interleaved groups, published before the worker starts: one batch.
    f.publish(&[message(1, 1, 1), message(2, 6, 1), message(1, 1, 2), message(1, 3, 3)]).await;
    let pusher = Arc::new(RecordingPusher::default());
    let (tracker, token) = f.start(pusher.clone()).await;
    f.wait_fanned_out(4).await;
    f.wait_calls(&pusher, 3).await;
    f.wait_until("the deliveries counted", || f.metrics.group_fanout_deliveries.get() == 3 * 2 + 1 + 3 * 2 + 1 + 3)
        .await;

    let calls = calls_by_gateway(&pusher);
    assert_eq!(pusher.fan_outs.lock().unwrap().len(), 3, "one call per gateway: {calls:?}");
    let group1 = |users: Vec<u64>| (1..=3).map(|seq| (1, seq, users.clone())).collect::<Vec<_>>();
    let mut a = group1(vec![1, 2]);
    a.push((2, 1, vec![1]));
    let mut b = group1(vec![2, 3]);
    b.push((2, 1, vec![6]));
    assert_eq!(calls["a"], [a], "each group's messages in order");
    assert_eq!(calls["b"], [b]);
    assert_eq!(calls["c"], [group1(vec![5])]);

    for (_, batch) in pusher.fan_outs.lock().unwrap().iter() {
        for fan_out in batch {
            let Event::Message(m) = &fan_out.event else { panic!("a message") };
            assert_eq!(fan_out.skip, Some((m.sender, phone())), "the sending device is skipped");
        }
    }
    assert_eq!(f.metrics.group_fanout_deliveries.get(), 3 * 2 + 1 + 3 * 2 + 1 + 3);
    assert_eq!(f.metrics.group_fanned_out.get(), 4);
    // One observation per message and gateway call: 3 × (a, b, c) + (a, b).
    assert!(f.metrics.render().contains("im_group_fanout_latency_seconds_count 11"));
    stop(tracker, token).await;
    f.assert_all_committed().await;
}

#[tokio::test]
async fn members_get_only_what_follows_their_join() {
    // 3 joined after seq 2; 4 after seq 3.
    let f = Fixture::new(
        vec![roster(1, vec![member(1, 0), member(2, 0), member(3, 2), member(4, 3)])],
        (1..=4).map(|u| (u, vec![gw("a")])).collect(),
    );
    f.publish(&[message(1, 1, 1), message(1, 1, 2), message(1, 1, 3)]).await;
    let pusher = Arc::new(RecordingPusher::default());
    let (tracker, token) = f.start(pusher.clone()).await;
    f.wait_fanned_out(3).await;
    f.wait_calls(&pusher, 1).await;
    assert_eq!(
        calls_by_gateway(&pusher)["a"],
        [vec![(1, 1, vec![1, 2]), (1, 2, vec![1, 2]), (1, 3, vec![1, 2, 3])]],
        "3 from seq 3 on, 4 nothing yet"
    );
    stop(tracker, token).await;
}

#[tokio::test]
async fn removed_members_are_not_pushed() {
    let f = Fixture::new(
        vec![roster(1, (1..=3).map(|u| member(u, 0)).collect())],
        (1..=3).map(|u| (u, vec![gw("a")])).collect(),
    );
    f.cache.view(GroupId(1)).await.unwrap();
    // 2 is removed: the change reaches this node's cache.
    f.cache.apply(&MembershipChange { group: GroupId(1), version: 2, kind: ChangeKind::Left(vec![UserId(2)]) });
    f.publish(&[message(1, 1, 5)]).await;
    let pusher = Arc::new(RecordingPusher::default());
    let (tracker, token) = f.start(pusher.clone()).await;
    f.wait_fanned_out(1).await;
    f.wait_calls(&pusher, 1).await;
    assert_eq!(calls_by_gateway(&pusher)["a"], [vec![(1, 5, vec![1, 3])]]);
    stop(tracker, token).await;
}

#[tokio::test]
async fn the_sending_device_is_skipped_and_the_senders_others_get_it() {
    let f =
        Fixture::new(vec![roster(1, vec![member(1, 0), member(2, 0)])], vec![(1, vec![gw("a")]), (2, vec![gw("a")])]);
    f.publish(&[message(1, 1, 1)]).await;
    let pusher = Arc::new(PushOnlyPusher::default());
    let (tracker, token) = f.start(pusher.clone()).await;
    f.wait_fanned_out(1).await;
    f.wait_until("two events pushed", || pusher.events.lock().unwrap().len() >= 2).await;
    let events: Vec<_> = pusher.events.lock().unwrap().iter().map(|e| (e.user.0, e.skip_device.clone())).collect();
    assert_eq!(events, [(1, Some(phone())), (2, None)]);
    stop(tracker, token).await;
}

#[tokio::test]
async fn poison_records_are_parked_and_the_offset_moves_on() {
    let f = Fixture::new(vec![roster(1, vec![member(1, 0), member(2, 0)])], vec![(2, vec![gw("a")])]);
    let mut dead_letters = f.bus.subscribe(&dead_letter_topic(TOPIC), "inspector").await.unwrap();
    let garbage = Bytes::from_static(b"\xff\xff not protobuf");
    f.bus.publish(TOPIC, Bytes::from_static(b"1"), garbage.clone()).await.unwrap();
    // A group that does not exist.
    f.publish(&[message(9, 1, 1)]).await;
    f.publish(&[message(1, 1, 1)]).await;
    let pusher = Arc::new(RecordingPusher::default());
    let (tracker, token) = f.start(pusher.clone()).await;
    f.wait_fanned_out(1).await;

    let mut parked = Vec::new();
    while parked.len() < 2 {
        let records = dead_letters.poll(10, PATIENCE).await.unwrap();
        assert!(!records.is_empty(), "only {parked:?} parked");
        parked.extend(records.into_iter().map(|r| (r.key, r.payload)));
    }
    let no_group = GroupMessage { message: Arc::new(message(9, 1, 1)), device: phone() };
    assert_eq!(parked[0], (Bytes::from_static(b"1"), garbage), "as it was");
    assert_eq!(parked[1].0, Bytes::from_static(b"9"));
    assert_eq!(decode_group_message_event(&parked[1].1).unwrap().0.conversation, no_group.message.conversation);
    let text = f.metrics.render();
    assert!(text.contains("im_group_dead_letters_total{reason=\"undecodable\"} 1"), "{text}");
    assert!(text.contains("im_group_dead_letters_total{reason=\"no_group\"} 1"), "{text}");
    f.wait_calls(&pusher, 1).await;
    assert_eq!(calls_by_gateway(&pusher)["a"], [vec![(1, 1, vec![2])]], "the good record is pushed");
    stop(tracker, token).await;
    f.assert_all_committed().await;
}

#[tokio::test]
async fn an_unavailable_directory_holds_the_offset_until_it_is_back() {
    let f = Fixture::new(vec![roster(1, vec![member(1, 0), member(2, 0)])], vec![(2, vec![gw("a")])]);
    f.directory.down.store(true, Ordering::SeqCst);
    f.publish(&[message(1, 1, 1)]).await;
    let pusher = Arc::new(RecordingPusher::default());
    let (tracker, token) = f.start(pusher.clone()).await;
    let deadline = Instant::now() + PATIENCE;
    while f.metrics.group_roster_failures.get() < 3 {
        assert!(Instant::now() < deadline, "the roster is not retried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Stopped while waiting: nothing pushed, parked or committed.
    stop(tracker, token).await;
    assert!(pusher.fan_outs.lock().unwrap().is_empty());
    for reason in GROUP_DEAD_LETTER_REASONS {
        assert_eq!(f.metrics.group_dead_letters.get_or_create(&ReasonLabel { reason }).get(), 0, "{reason}");
    }

    // The next member gets the record again, and fans it out once the
    // directory is back.
    let (tracker, token) = f.start(pusher.clone()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    f.directory.down.store(false, Ordering::SeqCst);
    f.wait_fanned_out(1).await;
    f.wait_calls(&pusher, 1).await;
    assert_eq!(calls_by_gateway(&pusher)["a"], [vec![(1, 1, vec![2])]]);
    stop(tracker, token).await;
    f.assert_all_committed().await;
}

#[tokio::test]
async fn a_failing_gateway_is_retried_with_the_routers_policy() {
    let f = Fixture::new(vec![roster(1, vec![member(1, 0), member(2, 0)])], vec![(2, vec![gw("a")])]);
    let pusher = Arc::new(RecordingPusher::default());
    *pusher.failures.lock().unwrap() = 1;
    f.publish(&[message(1, 1, 1)]).await;
    let (tracker, token) = f.start(pusher.clone()).await;
    f.wait_fanned_out(1).await;
    f.wait_until("the delivery", || f.metrics.group_fanout_deliveries.get() == 1).await;
    assert_eq!(pusher.fan_outs.lock().unwrap().len(), 2, "failed once, then delivered");

    // Down for longer than the policy's 2 attempts: given up, counted, and
    // the offset moves on (members sync).
    *pusher.failures.lock().unwrap() = 5;
    f.publish(&[message(1, 1, 2)]).await;
    f.wait_fanned_out(2).await;
    f.wait_until("the give-up", || f.metrics.render().contains("im_messages_failed_total{code=\"UNAVAILABLE\"} 1"))
        .await;
    stop(tracker, token).await;
    assert_eq!(pusher.fan_outs.lock().unwrap().len(), 4);
    f.assert_all_committed().await;
}

#[tokio::test]
async fn a_hung_gateway_holds_up_only_its_own_members() {
    // 2 is on a gateway that never answers, 3 on one that does.
    let f = Fixture::new(
        vec![roster(1, (1..=3).map(|u| member(u, 0)).collect())],
        vec![(2, vec![gw("hung")]), (3, vec![gw("a")])],
    );
    let pusher = Arc::new(RecordingPusher::default());
    pusher.hung.lock().unwrap().push(gw("hung"));
    let (tracker, token) = f.start(pusher.clone()).await;
    // One batch each. Waiting on the hung call (1 s, twice: the fixture's
    // policy) per batch would take 40 s; its lane waits, nothing else does.
    let started = Instant::now();
    for seq in 1..=20 {
        f.publish(&[message(1, 1, seq)]).await;
        f.wait_fanned_out(seq).await;
    }
    let to = |gateway: &str| pusher.fan_outs.lock().unwrap().iter().filter(|(g, _)| g.0 == gateway).count();
    f.wait_until("20 calls to gateway a", || to("a") == 20).await;
    assert!(started.elapsed() < Duration::from_secs(8), "gateway a waited for the hung one: {:?}", started.elapsed());
    assert!(to("hung") < 20, "the hung lane works through its queue one call at a time");
    stop(tracker, token).await;
    f.assert_all_committed().await;
}

#[tokio::test]
async fn a_group_message_travels_from_the_publisher_to_the_members() {
    let f = Fixture::new(vec![roster(7, vec![member(1, 0), member(2, 0)])], vec![(2, vec![gw("a")])]);
    let (publisher, queue) = GroupPublisher::new(f.bus.clone(), TOPIC.into(), f.metrics.clone(), 16);
    let publishing = tokio::spawn(publisher.run(CancellationToken::new()));
    let pusher = Arc::new(RecordingPusher::default());
    let (tracker, token) = f.start(pusher.clone()).await;
    queue.enqueue([GroupMessage { message: Arc::new(message(7, 1, 1)), device: phone() }]);
    drop(queue);
    publishing.await.unwrap();
    f.wait_fanned_out(1).await;
    f.wait_calls(&pusher, 1).await;
    assert_eq!(calls_by_gateway(&pusher)["a"], [vec![(7, 1, vec![2])]]);
    assert_eq!(f.metrics.group_published.get(), 1);
    stop(tracker, token).await;
}

#[test]
fn records_are_keyed_by_group() {
    let item = GroupMessage { message: Arc::new(message(42, 1, 1)), device: phone() };
    assert_eq!(item.key(), Bytes::from_static(b"42"));
    let (decoded, device) = decode_group_message_event(&item.payload()).unwrap();
    assert_eq!((decoded, device), ((*item.message).clone(), phone()));
}

#[test]
fn a_full_group_queue_drops_and_counts() {
    let metrics = Arc::new(Metrics::new());
    let (_publisher, queue) = GroupPublisher::new(Arc::new(MemoryBus::new()), TOPIC.into(), metrics.clone(), 1);
    queue.enqueue((1..=3).map(|seq| GroupMessage { message: Arc::new(message(1, 1, seq)), device: phone() }));
    assert_eq!(metrics.group_dropped.get(), 2);
}
