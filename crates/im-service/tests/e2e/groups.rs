//! Groups (DESIGN.md G6) over the wire: clients over WebSocket, group
//! management over `im.v1.GroupService`. Each case runs twice: on a
//! standalone node, and on a production cluster (`im-user`, two nodes, two
//! gateways over MariaDB, Redis, etcd and Kafka) with the test's users
//! spread over both gateways and both nodes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use im_proto::client::{self as pb, ErrorCode, server_frame};
use im_proto::user::Role;

use crate::broker::{BrokerBehindProxy, kafka_env};
use crate::harness::{Cluster, ClusterBuilder, User};
use crate::support::{Client, GroupApi, Node, ack, error, group_conversation};

/// How long a push may take. On a cluster that just started, the fan-out's
/// consumer group may still be forming when the first group message goes
/// out: each of its members' joins is a rebalance, and tansu holds a join
/// for half the session timeout. A push waits for it, so the patience is the
/// Kafka tests' (a run on an idle machine once waited more than 5 s here).
const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(400);

/// A user of the test: id, token, group API.
struct Person {
    id: u64,
    token: String,
    api: GroupApi,
}

/// Where a case runs.
enum Deployment {
    Standalone { node: Node, _dir: tempfile::TempDir },
    Cluster { cluster: Box<Cluster>, next: AtomicUsize },
}

impl Deployment {
    async fn standalone(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start_with(dir.path(), env).await;
        Deployment::Standalone { node, _dir: dir }
    }

    async fn cluster(env: &[(&str, &str)]) -> Self {
        let mut builder = ClusterBuilder::new();
        for (key, value) in env {
            builder = builder.node_env(key, value);
        }
        Deployment::Cluster { cluster: Box::new(builder.start().await), next: AtomicUsize::new(0) }
    }

    /// Round robin over the cluster's two gateways (and their nodes).
    fn next(&self) -> usize {
        match self {
            Deployment::Standalone { .. } => 0,
            Deployment::Cluster { next, .. } => next.fetch_add(1, Ordering::Relaxed) % 2,
        }
    }

    fn grpc_port(&self, node: usize) -> u16 {
        match self {
            Deployment::Standalone { node: n, .. } => n.grpc_port,
            Deployment::Cluster { cluster, .. } => cluster.node_grpc_port(node),
        }
    }

    /// A new user, whose group calls go to the next node.
    async fn person(&self, name: &str) -> Person {
        let (id, token) = match self {
            Deployment::Standalone { node, .. } => node.create_user(name).await,
            Deployment::Cluster { cluster, .. } => {
                let user = cluster.create_user(name).await;
                (user.id, user.token)
            }
        };
        let api = GroupApi::connect(self.grpc_port(self.next()), &token).await;
        Person { id, token, api }
    }

    /// A device of `person`, on the next gateway (registered when this returns).
    async fn connect(&self, person: &Person, device: &str) -> Client {
        match self {
            Deployment::Standalone { node, .. } => node.connect(&person.token, device).await,
            Deployment::Cluster { cluster, .. } => {
                let user = User { id: person.id, token: person.token.clone() };
                cluster.client(self.next(), &user, device).await
            }
        }
    }

    /// Waits until every node's membership cache has `group` at `version`
    /// at least (a change applies on the other nodes when its
    /// `membership_change` record arrives, milliseconds later). `member`
    /// must be in the group.
    async fn changed(&self, member: &Person, group: u64, version: u64) {
        let Deployment::Cluster { .. } = self else { return };
        for node in 0..2 {
            let mut api = GroupApi::connect(self.grpc_port(node), &member.token).await;
            let deadline = Instant::now() + Duration::from_secs(5);
            while api.members(group).await.expect("a member lists the group").version < version {
                assert!(Instant::now() < deadline, "node {node} did not see version {version} of group {group}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn push(body: Option<server_frame::Body>) -> pb::Message {
    match body {
        Some(server_frame::Body::Push(m)) => m,
        other => panic!("expected a push, got {other:?}"),
    }
}

/// The next push on `client`, skipping receipts.
async fn next_push(client: &mut Client) -> pb::Message {
    loop {
        match client.next_event(WAIT).await {
            Some(server_frame::Body::Receipt(_)) => continue,
            other => return push(other),
        }
    }
}

async fn no_push(client: &mut Client) {
    while let Some(event) = client.next_event(QUIET).await {
        assert!(!matches!(event, server_frame::Body::Push(_)), "unexpected push {event:?}");
    }
}

fn code(status: tonic::Status) -> tonic::Code {
    status.code()
}

async fn sync_seqs(client: &mut Client, conversation: &str) -> Vec<u64> {
    client.sync_all(conversation, 0).await.iter().map(|m| m.seq).collect()
}

/// Each case on a standalone node and on a production cluster.
macro_rules! in_both_modes {
    ($($case:ident($env:expr);)+) => {
        mod standalone {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Deployment::standalone($env).await).await;
            })+
        }
        mod production {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Deployment::cluster($env).await).await;
            })+
        }
    };
}

in_both_modes! {
    members_get_every_group_message_once_and_outsiders_get_nothing(&[]);
    only_owner_and_admins_manage_and_the_owner_stays(&[]);
    joiners_see_from_the_join_on_and_leavers_see_nothing_after(&[]);
    offline_members_catch_up_by_sync_and_reads_are_counted(&[("GROUP_READ_RECEIPT_DETAILS_MAX", "3")]);
}

async fn members_get_every_group_message_once_and_outsiders_get_nothing(d: Deployment) {
    let mut alice = d.person("alice").await;
    let bob = d.person("bob").await;
    let carol = d.person("carol").await;
    let dave = d.person("dave").await;
    let group = alice.api.create("friends", &[bob.id, carol.id], false).await;
    let conv = group_conversation(group);

    let mut alice_phone = d.connect(&alice, "phone").await;
    let mut alice_laptop = d.connect(&alice, "laptop").await;
    let mut bob_phone = d.connect(&bob, "phone").await;
    let mut bob_laptop = d.connect(&bob, "laptop").await;
    let mut carol_phone = d.connect(&carol, "phone").await;
    let mut dave_phone = d.connect(&dave, "phone").await;

    let first = ack(alice_phone.send_group_text(group, "g1", "hello all").await);
    assert_eq!((first.conversation_id.as_str(), first.seq), (conv.as_str(), 1));
    let second = ack(bob_phone.send_group_text(group, "g2", "hi alice").await);
    assert_eq!(second.seq, 2, "one seq per group, whoever sends");
    // A resend gets the first ack and stores nothing.
    assert_eq!(ack(alice_phone.send_group_text(group, "g1", "hello all").await), first);

    // Every other device of every member gets both, in order, once.
    for (device, expect) in [
        (&mut alice_laptop, vec![1, 2]),
        (&mut bob_laptop, vec![1, 2]),
        (&mut carol_phone, vec![1, 2]),
        (&mut alice_phone, vec![2]),
        (&mut bob_phone, vec![1]),
    ] {
        let mut got = Vec::new();
        for _ in &expect {
            let m = next_push(device).await;
            assert_eq!(m.conversation_id, conv);
            assert_eq!(m.to_user, 0, "a group message has no single addressee");
            got.push(m.seq);
        }
        assert_eq!(got, expect);
        no_push(device).await;
    }
    no_push(&mut dave_phone).await;

    // An outsider can neither send nor read, and the refused send stored
    // nothing. What it is told is what a group that does not exist says
    // (but for the id): whether a group exists does not leak.
    let absent = error(alice_phone.send_group_text(987_654, "x", "nobody here").await);
    assert_eq!(absent.code, ErrorCode::NotFound as i32, "{absent:?}");
    let as_absent = |message: &str| message.replace(&group.to_string(), "987654");
    let refused = error(dave_phone.send_group_text(group, "d1", "let me in").await);
    assert_eq!((refused.code, as_absent(&refused.message)), (absent.code, absent.message.clone()));
    let refused = error(dave_phone.sync(&conv, 0).await);
    assert_eq!((refused.code, as_absent(&refused.message)), (absent.code, absent.message.clone()));
    let mut dave_api = GroupApi::connect(d.grpc_port(1), &dave.token).await;
    let status = dave_api.members(group).await.unwrap_err();
    let absent_status = dave_api.members(987_654).await.unwrap_err();
    assert_eq!(
        (status.code(), as_absent(status.message())),
        (absent_status.code(), absent_status.message().to_owned())
    );
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = dave_api.add(group, &[dave.id]).await.unwrap_err();
    let absent_status = dave_api.add(987_654, &[dave.id]).await.unwrap_err();
    assert_eq!(
        (status.code(), as_absent(status.message())),
        (absent_status.code(), absent_status.message().to_owned())
    );
    assert_eq!(sync_seqs(&mut carol_phone, &conv).await, vec![1, 2]);
}

async fn only_owner_and_admins_manage_and_the_owner_stays(d: Deployment) {
    let mut alice = d.person("alice").await;
    let mut bob = d.person("bob").await;
    let mut carol = d.person("carol").await;
    let erin = d.person("erin").await;
    let group = alice.api.create("team", &[bob.id, carol.id], false).await;

    // A plain member adds and removes nobody.
    assert_eq!(code(bob.api.add(group, &[erin.id]).await.unwrap_err()), tonic::Code::PermissionDenied);
    assert_eq!(code(bob.api.remove(group, carol.id).await.unwrap_err()), tonic::Code::PermissionDenied);
    // Only the owner sets roles; then the admin adds.
    assert_eq!(code(bob.api.set_role(group, bob.id, Role::Admin).await.unwrap_err()), tonic::Code::PermissionDenied);
    alice.api.set_role(group, bob.id, Role::Admin).await.expect("owner promotes bob");
    bob.api.add(group, &[erin.id]).await.expect("an admin adds");
    // Adding someone already in changes nothing and says so; unknown users are not found.
    assert_eq!(code(bob.api.add(group, &[erin.id]).await.unwrap_err()), tonic::Code::FailedPrecondition);
    assert_eq!(code(bob.api.add(group, &[999_999]).await.unwrap_err()), tonic::Code::NotFound);
    // Nobody removes the owner; the owner does not leave.
    assert_eq!(code(bob.api.remove(group, alice.id).await.unwrap_err()), tonic::Code::PermissionDenied);
    assert_eq!(code(alice.api.leave(group).await.unwrap_err()), tonic::Code::FailedPrecondition);
    // An admin removes a member, who then cannot send.
    let removed = bob.api.remove(group, carol.id).await.expect("an admin removes a member");
    d.changed(&alice, group, removed.version).await;
    let mut carol_phone = d.connect(&carol, "phone").await;
    let e = error(carol_phone.send_group_text(group, "c1", "still here?").await);
    assert_eq!(e.code, ErrorCode::NotFound as i32, "{e:?}");
    assert_eq!(code(carol.api.leave(group).await.unwrap_err()), tonic::Code::NotFound);

    let roster = alice.api.members(group).await.unwrap();
    let mut members: Vec<(u64, i32)> = roster.members.iter().map(|m| (m.user, m.role)).collect();
    members.sort();
    assert_eq!(
        members,
        vec![(alice.id, Role::Owner as i32), (bob.id, Role::Admin as i32), (erin.id, Role::Member as i32)]
    );
    // Bad input changes nothing.
    assert_eq!(code(alice.api.add(group, &[]).await.unwrap_err()), tonic::Code::InvalidArgument);
    assert_eq!(code(alice.api.remove(0, bob.id).await.unwrap_err()), tonic::Code::InvalidArgument);
    assert_eq!(alice.api.members(group).await.unwrap().version, roster.version);
}

async fn joiners_see_from_the_join_on_and_leavers_see_nothing_after(d: Deployment) {
    let mut alice = d.person("alice").await;
    let mut bob = d.person("bob").await;
    let erin = d.person("erin").await;
    let frank = d.person("frank").await;
    let group = alice.api.create("boundaries", &[bob.id], false).await;
    let open = alice.api.create("open", &[], true).await;
    let conv = group_conversation(group);

    let mut alice_phone = d.connect(&alice, "phone").await;
    let mut bob_phone = d.connect(&bob, "phone").await;
    for i in 1..=3 {
        ack(alice_phone.send_group_text(group, &format!("before{i}"), "before erin").await);
        ack(alice_phone.send_group_text(open, &format!("open{i}"), "history").await);
    }
    let mut erin_phone = d.connect(&erin, "phone").await;
    let mut frank_phone = d.connect(&frank, "phone").await;
    let joined = alice.api.add(group, &[erin.id]).await.unwrap();
    d.changed(&alice, group, joined.version).await;
    let joined = alice.api.add(open, &[frank.id]).await.unwrap();
    d.changed(&alice, open, joined.version).await;
    let after_join = ack(alice_phone.send_group_text(group, "after", "welcome erin").await);
    assert_eq!(after_join.seq, 4);

    assert_eq!(next_push(&mut erin_phone).await.seq, 4, "the joiner is pushed what follows the join");
    no_push(&mut erin_phone).await;
    assert_eq!(sync_seqs(&mut erin_phone, &conv).await, vec![4], "and syncs nothing from before it");
    let listed = erin_phone.conversations().await;
    let entry = listed.iter().find(|c| c.conversation_id == conv).expect("the group is in erin's list");
    assert_eq!((entry.group_id, entry.max_seq, entry.unread), (group, 4, 1));
    // A group that shows history shows it to newcomers.
    assert_eq!(sync_seqs(&mut frank_phone, &group_conversation(open)).await, vec![1, 2, 3]);

    // Bob leaves: nothing more reaches him, and he reads nothing.
    assert_eq!(next_push(&mut bob_phone).await.seq, 1);
    for _ in 2..=4 {
        next_push(&mut bob_phone).await;
    }
    let left = bob.api.leave(group).await.expect("a member leaves");
    d.changed(&alice, group, left.version).await;
    ack(alice_phone.send_group_text(group, "gone", "bob left").await);
    no_push(&mut bob_phone).await;
    let e = error(bob_phone.sync(&conv, 0).await);
    assert_eq!(e.code, ErrorCode::NotFound as i32, "{e:?}");
    assert!(bob_phone.conversations().await.iter().all(|c| c.conversation_id != conv));
    assert_eq!(next_push(&mut erin_phone).await.seq, 5);
}

async fn offline_members_catch_up_by_sync_and_reads_are_counted(d: Deployment) {
    // Details for groups of up to 3 members (GROUP_READ_RECEIPT_DETAILS_MAX=3):
    // the second group is too big.
    let mut alice = d.person("alice").await;
    let bob = d.person("bob").await;
    let carol = d.person("carol").await;
    let dave = d.person("dave").await;
    let group = alice.api.create("readers", &[bob.id, carol.id], false).await;
    let big = alice.api.create("big", &[bob.id, carol.id, dave.id], false).await;
    let conv = group_conversation(group);

    let mut alice_phone = d.connect(&alice, "phone").await;
    let mut acks = Vec::new();
    for i in 0..120 {
        acks.push(ack(alice_phone.send_group_text(group, &format!("m{i}"), &format!("text {i}")).await).seq);
    }
    ack(alice_phone.send_group_text(big, "b1", "to the big group").await);

    // Carol was offline throughout: the list tells her what waits, sync
    // pages through it in order.
    let mut carol_phone = d.connect(&carol, "phone").await;
    let list = carol_phone.conversations().await;
    let entry = list.iter().find(|c| c.conversation_id == conv).expect("listed");
    assert_eq!((entry.max_seq, entry.read_seq, entry.unread), (120, 0, 120));
    let messages = carol_phone.sync_all(&conv, 0).await;
    assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), acks);
    assert!(messages.iter().all(|m| m.from_user == alice.id));

    // Read positions: forward only, counted per message.
    let mut bob_phone = d.connect(&bob, "phone").await;
    match carol_phone.mark_read(&conv, 50).await {
        server_frame::Body::MarkRead(r) => assert_eq!(r.read_seq, 50),
        other => panic!("mark read answered {other:?}"),
    }
    match bob_phone.mark_read(&conv, 100).await {
        server_frame::Body::MarkRead(r) => assert_eq!(r.read_seq, 100),
        other => panic!("mark read answered {other:?}"),
    }
    match carol_phone.mark_read(&conv, 10).await {
        server_frame::Body::MarkRead(r) => assert_eq!(r.read_seq, 50, "read positions never move back"),
        other => panic!("mark read answered {other:?}"),
    }
    let status = alice.api.read_status(group, 50).await.unwrap();
    let mut readers = status.readers.clone();
    readers.sort();
    assert_eq!((status.read_count, status.detailed, readers), (2, true, vec![bob.id, carol.id]));
    let status = alice.api.read_status(group, 80).await.unwrap();
    assert_eq!((status.read_count, status.readers), (1, vec![bob.id]));
    let list = carol_phone.conversations().await;
    let entry = list.iter().find(|c| c.conversation_id == conv).unwrap();
    assert_eq!((entry.read_seq, entry.unread), (50, 70));

    // Larger than the details limit: how many, not who.
    let mut dave_phone = d.connect(&dave, "phone").await;
    dave_phone.mark_read(&group_conversation(big), 1).await;
    let status = alice.api.read_status(big, 1).await.unwrap();
    assert_eq!((status.read_count, status.detailed, status.readers.len()), (1, false, 0));
    assert_eq!(code(alice.api.read_status(group, 500).await.unwrap_err()), tonic::Code::InvalidArgument);
}

/// The broker goes away and comes back in the middle of a group burst: every
/// acked group message reaches every member once — pushed or synced — and
/// sync gives them all in seq order. Standalone node, group messages and
/// membership changes over a private tansu behind a proxy that cuts it off.
#[tokio::test]
async fn a_broker_outage_mid_group_burst_loses_nothing() {
    let broker = BrokerBehindProxy::start().await;
    let env = kafka_env(&broker.addr());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Deployment::standalone(&env).await;
    let mut alice = d.person("alice").await;
    let mut members = Vec::new();
    for name in ["bob", "carol", "dave"] {
        members.push(d.person(name).await);
    }
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let group = alice.api.create("burst", &ids, false).await;
    let conv = group_conversation(group);
    let mut devices = Vec::new();
    for member in &members {
        devices.push(d.connect(member, "phone").await);
    }

    let mut alice_phone = d.connect(&alice, "phone").await;
    let mut acked = Vec::new();
    for i in 0..60 {
        if i == 20 {
            broker.cut_off();
        }
        if i == 40 {
            broker.restore();
        }
        acked.push(ack(alice_phone.send_group_text(group, &format!("burst-{i}"), "burst").await).seq);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(acked, (1..=60).collect::<Vec<_>>(), "acks keep coming without the broker");

    for (member, device) in members.iter().zip(&mut devices) {
        // Pushes come back once the broker does; whatever was not pushed
        // within the patience is still read by sync.
        let mut pushed = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while pushed.len() < acked.len() && std::time::Instant::now() < deadline {
            if let Some(server_frame::Body::Push(m)) = device.next_event(Duration::from_secs(1)).await {
                pushed.push(m.seq);
            }
        }
        let mut unique = pushed.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), pushed.len(), "member {} got a push twice: {pushed:?}", member.id);
        // What could not be published during the outage is published after it.
        assert_eq!(unique, acked, "member {}: every acked message pushed", member.id);
        assert_eq!(sync_seqs(device, &conv).await, acked, "member {}: every acked message, once, in order", member.id);
    }
}
