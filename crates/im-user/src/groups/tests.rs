use std::sync::Arc;

use im_core::ErrorCode;
use im_core::group::{ChangeKind, MembershipChange, MembershipOp, NewGroup, Role};
use im_core::ports::GroupDirectory;
use im_core::{GroupId, Seq, UserId};
use im_proto::convert::decode_membership_change;

use super::testkit::{FakeStore, FlakyBus};
use super::{GroupService, PUBLISH_BUDGET};

const TOPIC: &str = "membership_change";

struct Kit {
    service: GroupService,
    store: Arc<FakeStore>,
    bus: Arc<FlakyBus>,
}

fn kit(max_members: usize) -> Kit {
    let (store, bus) = (Arc::new(FakeStore::default()), Arc::new(FlakyBus::default()));
    let service = GroupService::new(store.clone(), bus.clone(), TOPIC.to_owned(), max_members);
    Kit { service, store, bus }
}

fn new_group(owner: u64, members: &[u64]) -> NewGroup {
    NewGroup {
        name: "friends".into(),
        owner: UserId(owner),
        members: members.iter().copied().map(UserId).collect(),
        history_visible: false,
        created_at_ms: 5,
    }
}

/// The changes published so far, checking topic and key on the way.
fn published(bus: &FlakyBus) -> Vec<MembershipChange> {
    bus.published()
        .into_iter()
        .map(|record| {
            let change = decode_membership_change(&record.payload).unwrap();
            assert_eq!(record.topic, TOPIC);
            assert_eq!(record.key.as_ref(), change.group.to_string().as_bytes(), "keyed by the group id, in decimal");
            change
        })
        .collect()
}

#[tokio::test]
async fn a_created_group_is_published_as_created_at_version_1() {
    let kit = kit(10);
    let roster = kit.service.create_group(new_group(1, &[2, 3])).await.unwrap();
    assert_eq!(roster.version, 1);
    assert_eq!(roster.members.len(), 3);
    assert_eq!(
        published(&kit.bus),
        vec![MembershipChange { group: roster.group.id, version: 1, kind: ChangeKind::Created(roster.members) }]
    );
}

#[tokio::test]
async fn a_group_larger_than_max_members_is_refused_before_the_store() {
    let kit = kit(3);
    // The owner counts; repeats and the owner named again do not.
    assert!(kit.service.create_group(new_group(1, &[1, 2, 3, 3])).await.is_ok());
    let error = kit.service.create_group(new_group(1, &[2, 3, 4])).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert!(error.message.contains("GROUP_MAX_MEMBERS"), "{}", error.message);

    let bad_name = NewGroup { name: " ".into(), ..new_group(1, &[]) };
    assert_eq!(kit.service.create_group(bad_name).await.unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(kit.store.group_count(), 1);
    assert_eq!(published(&kit.bus).len(), 1, "refusals publish nothing");
}

#[tokio::test]
async fn every_applied_change_is_published_and_refusals_are_not() {
    let kit = kit(10);
    let group = kit.service.create_group(new_group(1, &[2])).await.unwrap().group.id;

    let joined = kit.service.change_membership(group, UserId(1), MembershipOp::Add(vec![UserId(3)]), Seq(7)).await;
    let joined = joined.unwrap();
    assert_eq!(joined.version, 2);
    let promoted =
        kit.service.change_membership(group, UserId(1), MembershipOp::SetRole(UserId(3), Role::Admin), Seq(8));
    let promoted = promoted.await.unwrap();

    let by_a_member = kit.service.change_membership(group, UserId(2), MembershipOp::Remove(UserId(3)), Seq(9)).await;
    assert_eq!(by_a_member.unwrap_err().code, ErrorCode::PermissionDenied);
    let empty_add = kit.service.change_membership(group, UserId(1), MembershipOp::Add(vec![]), Seq(9)).await;
    assert_eq!(empty_add.unwrap_err().code, ErrorCode::InvalidArgument);
    let unknown_group = kit.service.change_membership(GroupId(99), UserId(1), MembershipOp::Leave, Seq(9)).await;
    assert_eq!(unknown_group.unwrap_err().code, ErrorCode::NotFound);

    let changes = published(&kit.bus);
    assert_eq!(changes[1..], [joined, promoted]);
    let roster = kit.service.roster(group).await.unwrap().unwrap();
    assert_eq!(roster.version, 3);
    assert_eq!(roster.member(UserId(3)).map(|m| (m.role, m.joined_after)), Some((Role::Admin, Seq(7))));
    assert_eq!(kit.service.groups_of(UserId(3)).await.unwrap().len(), 1);
    assert_eq!(kit.service.roster(GroupId(99)).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_failed_publish_is_retried() {
    let kit = kit(10);
    kit.bus.fail_next(2);
    let roster = kit.service.create_group(new_group(1, &[2])).await.unwrap();
    assert_eq!(kit.bus.attempts(), 3);
    assert_eq!(published(&kit.bus).len(), 1);
    assert_eq!(published(&kit.bus)[0].group, roster.group.id);
    assert_eq!(kit.service.unpublished_changes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_change_that_cannot_be_published_is_durable_counted_and_answered_within_the_budget() {
    let kit = kit(10);
    let group = kit.service.create_group(new_group(1, &[2])).await.unwrap().group.id;
    kit.bus.fail_next(u32::MAX);

    let start = tokio::time::Instant::now();
    let change = kit.service.change_membership(group, UserId(2), MembershipOp::Leave, Seq(3)).await.unwrap();
    assert!(start.elapsed() <= PUBLISH_BUDGET, "took {:?}", start.elapsed());
    assert!(kit.bus.attempts() > 2, "retried: {} attempts", kit.bus.attempts());
    assert_eq!(change.version, 2);
    assert_eq!(kit.service.roster(group).await.unwrap().unwrap().version, 2, "the change is durable");
    assert_eq!(kit.service.unpublished_changes(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_bus_does_not_hold_the_caller_past_the_budget() {
    let kit = kit(10);
    kit.bus.hang();
    let start = tokio::time::Instant::now();
    kit.service.create_group(new_group(1, &[])).await.unwrap();
    assert!(start.elapsed() <= PUBLISH_BUDGET, "took {:?}", start.elapsed());
    assert_eq!(kit.service.unpublished_changes(), 1);
}
