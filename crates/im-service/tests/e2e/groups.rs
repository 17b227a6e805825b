//! Groups (DESIGN.md G6) on a standalone node: the real binary, clients over
//! WebSocket, group management over `im.v1.GroupService`.

use std::time::Duration;

use im_proto::client::{self as pb, ErrorCode, server_frame};
use im_proto::user::Role;

use crate::broker::{BrokerBehindProxy, kafka_env};
use crate::support::{Client, GroupApi, Node, ack, error, group_conversation};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);

/// A user of the test: id, token, group API.
struct Person {
    id: u64,
    token: String,
    api: GroupApi,
}

async fn person(node: &Node, name: &str) -> Person {
    let (id, token) = node.create_user(name).await;
    let api = GroupApi::connect(node.grpc_port, &token).await;
    Person { id, token, api }
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

#[tokio::test]
async fn members_get_every_group_message_once_and_outsiders_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut alice = person(&node, "alice").await;
    let bob = person(&node, "bob").await;
    let carol = person(&node, "carol").await;
    let dave = person(&node, "dave").await;
    let group = alice.api.create("friends", &[bob.id, carol.id], false).await;
    let conv = group_conversation(group);

    let mut alice_phone = node.connect(&alice.token, "phone").await;
    let mut alice_laptop = node.connect(&alice.token, "laptop").await;
    let mut bob_phone = node.connect(&bob.token, "phone").await;
    let mut bob_laptop = node.connect(&bob.token, "laptop").await;
    let mut carol_phone = node.connect(&carol.token, "phone").await;
    let mut dave_phone = node.connect(&dave.token, "phone").await;

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

    // An outsider can neither send nor read, and the refused send stored nothing.
    let refused = error(dave_phone.send_group_text(group, "d1", "let me in").await);
    assert_eq!(refused.code, ErrorCode::PermissionDenied as i32, "{refused:?}");
    let refused = error(dave_phone.sync(&conv, 0).await);
    assert_eq!(refused.code, ErrorCode::PermissionDenied as i32, "{refused:?}");
    let mut dave_api = GroupApi::connect(node.grpc_port, &dave.token).await;
    assert_eq!(code(dave_api.members(group).await.unwrap_err()), tonic::Code::PermissionDenied);
    assert_eq!(sync_seqs(&mut carol_phone, &conv).await, vec![1, 2]);
    let e = error(alice_phone.send_group_text(987_654, "x", "nobody here").await);
    assert_eq!(e.code, ErrorCode::NotFound as i32, "{e:?}");
}

#[tokio::test]
async fn only_owner_and_admins_manage_and_the_owner_stays() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut alice = person(&node, "alice").await;
    let mut bob = person(&node, "bob").await;
    let mut carol = person(&node, "carol").await;
    let erin = person(&node, "erin").await;
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
    bob.api.remove(group, carol.id).await.expect("an admin removes a member");
    let mut carol_phone = node.connect(&carol.token, "phone").await;
    let e = error(carol_phone.send_group_text(group, "c1", "still here?").await);
    assert_eq!(e.code, ErrorCode::PermissionDenied as i32, "{e:?}");
    assert_eq!(code(carol.api.leave(group).await.unwrap_err()), tonic::Code::PermissionDenied);

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

#[tokio::test]
async fn joiners_see_from_the_join_on_and_leavers_see_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut alice = person(&node, "alice").await;
    let mut bob = person(&node, "bob").await;
    let erin = person(&node, "erin").await;
    let frank = person(&node, "frank").await;
    let group = alice.api.create("boundaries", &[bob.id], false).await;
    let open = alice.api.create("open", &[], true).await;
    let conv = group_conversation(group);

    let mut alice_phone = node.connect(&alice.token, "phone").await;
    let mut bob_phone = node.connect(&bob.token, "phone").await;
    for i in 1..=3 {
        ack(alice_phone.send_group_text(group, &format!("before{i}"), "before erin").await);
        ack(alice_phone.send_group_text(open, &format!("open{i}"), "history").await);
    }
    let mut erin_phone = node.connect(&erin.token, "phone").await;
    let mut frank_phone = node.connect(&frank.token, "phone").await;
    alice.api.add(group, &[erin.id]).await.unwrap();
    alice.api.add(open, &[frank.id]).await.unwrap();
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
    bob.api.leave(group).await.expect("a member leaves");
    ack(alice_phone.send_group_text(group, "gone", "bob left").await);
    no_push(&mut bob_phone).await;
    let e = error(bob_phone.sync(&conv, 0).await);
    assert_eq!(e.code, ErrorCode::PermissionDenied as i32, "{e:?}");
    assert!(bob_phone.conversations().await.iter().all(|c| c.conversation_id != conv));
    assert_eq!(next_push(&mut erin_phone).await.seq, 5);
}

#[tokio::test]
async fn offline_members_catch_up_by_sync_and_reads_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Details for groups of up to 3 members: the second group is too big.
    let node = Node::start_with(dir.path(), &[("GROUP_READ_RECEIPT_DETAILS_MAX", "3")]).await;
    let mut alice = person(&node, "alice").await;
    let bob = person(&node, "bob").await;
    let carol = person(&node, "carol").await;
    let dave = person(&node, "dave").await;
    let group = alice.api.create("readers", &[bob.id, carol.id], false).await;
    let big = alice.api.create("big", &[bob.id, carol.id, dave.id], false).await;
    let conv = group_conversation(group);

    let mut alice_phone = node.connect(&alice.token, "phone").await;
    let mut acks = Vec::new();
    for i in 0..120 {
        acks.push(ack(alice_phone.send_group_text(group, &format!("m{i}"), &format!("text {i}")).await).seq);
    }
    ack(alice_phone.send_group_text(big, "b1", "to the big group").await);

    // Carol was offline throughout: the list tells her what waits, sync
    // pages through it in order.
    let mut carol_phone = node.connect(&carol.token, "phone").await;
    let list = carol_phone.conversations().await;
    let entry = list.iter().find(|c| c.conversation_id == conv).expect("listed");
    assert_eq!((entry.max_seq, entry.read_seq, entry.unread), (120, 0, 120));
    let messages = carol_phone.sync_all(&conv, 0).await;
    assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), acks);
    assert!(messages.iter().all(|m| m.from_user == alice.id));

    // Read positions: forward only, counted per message.
    let mut bob_phone = node.connect(&bob.token, "phone").await;
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
    let mut dave_phone = node.connect(&dave.token, "phone").await;
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
    let dir = tempfile::tempdir().unwrap();
    let env = kafka_env(&broker.addr());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::start_with(dir.path(), &env).await;
    let mut alice = person(&node, "alice").await;
    let mut members = Vec::new();
    for name in ["bob", "carol", "dave"] {
        members.push(person(&node, name).await);
    }
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let group = alice.api.create("burst", &ids, false).await;
    let conv = group_conversation(group);
    let mut devices = Vec::new();
    for member in &members {
        devices.push(node.connect(&member.token, "phone").await);
    }

    let mut alice_phone = node.connect(&alice.token, "phone").await;
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
