//! The user service (`im-user`) down (issue 14, item 5): a node serves what
//! its store and caches know instead of failing everything that touches the
//! directory. Production mode: `im-user`, one node, one gateway.
//!
//! - Killed while the node runs: private sends to a user the node knows,
//!   group sends (the roster is cached), and the conversation list (private
//!   conversations complete, groups from the cache, marked
//!   `groups_unchecked`) go on.
//! - The node restarted meanwhile (nothing cached): a recipient the store
//!   has conversations of is accepted; one it has never seen, and a group
//!   whose roster it never loaded, are `UNAVAILABLE` (they cannot be
//!   checked); the list holds the private conversations, marked.
//! - `im-user` back: everything works again, nothing marked.

use std::time::{Duration, Instant};

use im_proto::client::{self as pb, client_frame, server_frame};

use crate::harness::ClusterBuilder;
use crate::support::{Client, GroupApi, ack, conversation_id, error, group_conversation};

/// The list and its mark.
async fn list(client: &mut Client) -> (Vec<String>, bool) {
    match client.request(client_frame::Body::ListConversations(pb::ListConversationsRequest {})).await {
        server_frame::Body::Conversations(list) => {
            let mut ids: Vec<String> = list.conversations.into_iter().map(|c| c.conversation_id).collect();
            ids.sort();
            (ids, list.groups_unchecked)
        }
        other => panic!("list_conversations answered {other:?}"),
    }
}

/// Sends until acked: right after a node restart the gateway may not have
/// reconnected yet (a resend of a stored message gets its first ack).
async fn acked(client: &mut Client, to: Recipient, client_msg_id: &str) -> pb::SendAck {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = match to {
            Recipient::User(user) => client.send_text(user, client_msg_id, client_msg_id).await,
            Recipient::Group(group) => client.send_group_text(group, client_msg_id, client_msg_id).await,
        };
        match answer {
            server_frame::Body::Ack(ack) => return ack,
            other => assert!(Instant::now() < deadline, "{client_msg_id} not acked: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Copy)]
enum Recipient {
    User(u64),
    Group(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_user_service_down_a_node_serves_what_its_store_and_caches_know() {
    let mut cluster = ClusterBuilder::new().size(1, 1).start().await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let carol = cluster.create_user("carol").await;
    // Erin exists, but has no conversation anywhere.
    let erin = cluster.create_user("erin").await;
    let mut phone = cluster.client(0, &alice, "phone").await;
    ack(phone.send_text(bob.id, "p1", "hello bob").await);
    let group = GroupApi::connect(cluster.node_grpc_port(0), &alice.token)
        .await
        .create("team", &[bob.id, carol.id], false)
        .await;
    ack(phone.send_group_text(group, "g1", "hello team").await);
    let (private, team) = (conversation_id(alice.id, bob.id), group_conversation(group));
    let both = {
        let mut both = vec![private.clone(), team.clone()];
        both.sort();
        both
    };
    assert_eq!(list(&mut phone).await, (both.clone(), false));

    // Killed while the node runs: what it cached carries on.
    cluster.user_service.kill9();
    acked(&mut phone, Recipient::User(bob.id), "p2").await;
    acked(&mut phone, Recipient::Group(group), "g2").await;
    assert_eq!(list(&mut phone).await, (both.clone(), true), "groups from the cache, marked unchecked");

    // The node restarted without im-user: nothing cached.
    cluster.nodes[0].kill9();
    cluster.nodes[0].restart().await;
    // Bob has conversations in the store: he exists.
    acked(&mut phone, Recipient::User(bob.id), "p3").await;
    // Erin cannot be checked; nor can a group whose roster was never loaded.
    let refused = error(phone.send_text(erin.id, "e1", "hello erin").await);
    assert_eq!(refused.code, pb::ErrorCode::Unavailable as i32, "{refused:?}");
    let refused = error(phone.send_group_text(group, "g3", "g3").await);
    assert_eq!(refused.code, pb::ErrorCode::Unavailable as i32, "{refused:?}");
    assert_eq!(list(&mut phone).await, (vec![private.clone()], true), "the private conversations, marked");

    // im-user back: everything again, nothing marked.
    cluster.user_service.restart().await;
    acked(&mut phone, Recipient::User(erin.id), "e1").await;
    acked(&mut phone, Recipient::Group(group), "g3").await;
    let mut all = vec![private, team, conversation_id(alice.id, erin.id)];
    all.sort();
    assert_eq!(list(&mut phone).await, (all, false));

    // Every acked message is there once, in order.
    let mut bob_phone = cluster.client(0, &bob, "phone").await;
    let bodies: Vec<String> = bob_phone
        .sync_all(&conversation_id(alice.id, bob.id), 0)
        .await
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect();
    assert_eq!(bodies, ["hello bob", "p2", "p3"]);
}
