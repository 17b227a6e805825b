//! The `GroupStore` suite. Groups name users the directory must have, so the
//! suite runs against a store that is a `UserStore` too.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use im_core::group::{
    ChangeKind, DEFAULT_MAX_MEMBERS, MAX_USERS_PER_CHANGE, Member, MembershipChange, MembershipOp, NewGroup, Role,
    Roster,
};
use im_core::ports::{BackendResult, CreateUser, GroupStore, UserStore};
use im_core::{ErrorCode, GroupId, ImError, Seq, UserId};

use super::fixtures::unique_name;

/// Stamps out the `GroupStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! group_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            group_store,
            $make,
            [
                a_new_group_is_at_version_one_with_its_owner_and_members,
                create_refuses_unknown_users_and_writes_nothing,
                create_refuses_bad_names_and_too_many_users,
                group_ids_are_distinct_and_increase,
                a_group_of_five_thousand_is_created_and_joined_whole,
                only_the_owner_and_admins_add_members,
                adds_skip_members_are_bounded_and_need_known_users,
                removal_follows_the_roles,
                everyone_but_the_owner_may_leave,
                only_the_owner_changes_roles,
                unknown_groups_and_outsiders_are_refused,
                versions_move_up_by_one_and_changes_replay_onto_the_roster,
                concurrent_changes_of_one_group_get_consecutive_versions,
                boundaries_are_stored_per_joiner,
                groups_of_lists_a_users_groups_by_id,
            ]
        );
    };
}

/// The group size limit the cases run with, unless a case is about it.
const MAX: usize = 100;

async fn user<S: UserStore + ?Sized>(store: &S) -> UserId {
    match store.create_user(&unique_name("member")).await.unwrap() {
        CreateUser::Created(user) => user.id,
        CreateUser::NameTaken => panic!("a fresh name is taken"),
    }
}

/// `N` new users of the directory.
async fn new_users<S: UserStore + ?Sized, const N: usize>(store: &S) -> [UserId; N] {
    let mut users = [UserId(0); N];
    for slot in &mut users {
        *slot = user(store).await;
    }
    users
}

/// `count` new users, created a few at a time.
async fn many_users<S: UserStore + ?Sized>(store: &S, count: usize) -> Vec<UserId> {
    futures::stream::iter(0..count).map(|_| user(store)).buffer_unordered(16).collect().await
}

fn new_group(owner: UserId, members: &[UserId]) -> NewGroup {
    NewGroup {
        name: unique_name("group"),
        owner,
        members: members.to_vec(),
        history_visible: false,
        created_at_ms: 1_700_000_000_000,
    }
}

async fn create<S: GroupStore + ?Sized>(store: &S, group: &NewGroup) -> Roster {
    store.create_group(group).await.unwrap().unwrap_or_else(|e| panic!("creating {group:?}: {e:?}"))
}

/// The error a refused call answered with.
fn refusal<T: Debug>(result: BackendResult<Result<T, ImError>>) -> ErrorCode {
    match result.unwrap() {
        Ok(done) => panic!("expected a refusal, got {done:?}"),
        Err(refusal) => refusal.code,
    }
}

fn member(user: UserId, role: Role, joined_after: u64) -> Member {
    Member { user, role, joined_after: Seq(joined_after) }
}

fn sorted(mut members: Vec<Member>) -> Vec<Member> {
    members.sort_by_key(|m| m.user);
    members
}

async fn roster<S: GroupStore + ?Sized>(store: &S, group: GroupId) -> Roster {
    store.roster(group).await.unwrap().expect("the group exists")
}

async fn change<S: GroupStore + ?Sized>(
    store: &S,
    group: GroupId,
    actor: UserId,
    op: MembershipOp,
) -> BackendResult<Result<MembershipChange, ImError>> {
    store.change_membership(group, actor, &op, Seq(7), MAX).await
}

/// Applies a change that must be allowed.
async fn changed<S: GroupStore + ?Sized>(
    store: &S,
    group: GroupId,
    actor: UserId,
    op: MembershipOp,
) -> MembershipChange {
    change(store, group, actor, op.clone()).await.unwrap().unwrap_or_else(|e| panic!("{op:?} by {actor}: {e:?}"))
}

/// Asks for a change that must be refused, checks that the stored roster did
/// not move, and returns the refusal's code.
async fn refused<S: GroupStore + ?Sized>(store: &S, group: GroupId, actor: UserId, op: MembershipOp) -> ErrorCode {
    let before = store.roster(group).await.unwrap();
    let code = refusal(change(store, group, actor, op.clone()).await);
    assert_eq!(
        store.roster(group).await.unwrap(),
        before,
        "{op:?} by {actor} was refused ({code:?}) but changed the group"
    );
    code
}

/// A group with an owner, an admin and a plain member, at version 2.
async fn staffed_group<S: GroupStore + UserStore + ?Sized>(store: &S) -> (GroupId, [UserId; 3]) {
    let [owner, admin, plain] = new_users(store).await;
    let group = create(store, &new_group(owner, &[admin, plain])).await.group.id;
    changed(store, group, owner, MembershipOp::SetRole(admin, Role::Admin)).await;
    (group, [owner, admin, plain])
}

pub async fn a_new_group_is_at_version_one_with_its_owner_and_members<S: GroupStore + UserStore + ?Sized>(
    store: Arc<S>,
) {
    let [owner, a, b] = new_users(&*store).await;
    // Repeats and the owner among the members are ignored.
    let mut asked = new_group(owner, &[b, a, b, owner]);
    asked.history_visible = true;
    let created = create(&*store, &asked).await;
    assert_ne!(created.group.id, GroupId(0), "group ids start at 1");
    assert_eq!(created.version, 1);
    assert_eq!(created.group.name, asked.name);
    assert_eq!(created.group.owner, owner);
    assert!(created.group.history_visible);
    assert_eq!(created.group.created_at_ms, asked.created_at_ms);
    let expected = sorted(vec![member(owner, Role::Owner, 0), member(a, Role::Member, 0), member(b, Role::Member, 0)]);
    assert_eq!(sorted(created.members.clone()), expected);
    let stored = roster(&*store, created.group.id).await;
    assert_eq!(stored.group, created.group);
    assert_eq!(stored.version, 1);
    assert_eq!(sorted(stored.members), expected);
    assert_eq!(store.groups_of(a).await.unwrap(), vec![(created.group.clone(), member(a, Role::Member, 0))]);
}

pub async fn create_refuses_unknown_users_and_writes_nothing<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let [owner, known] = new_users(&*store).await;
    // Ids far above any the directory hands out in a test run.
    let (first_unknown, second_unknown) = (UserId(1 << 60), UserId((1 << 60) + 1));
    let result = store.create_group(&new_group(owner, &[known, first_unknown, second_unknown])).await.unwrap();
    let answer = result.expect_err("unknown members");
    assert_eq!(answer.code, ErrorCode::NotFound);
    assert!(answer.message.contains(&first_unknown.to_string()), "the first unknown user is named: {answer:?}");
    assert!(store.groups_of(owner).await.unwrap().is_empty(), "a refused create wrote its owner");
    assert!(store.groups_of(known).await.unwrap().is_empty(), "a refused create wrote a member");

    let unknown_owner = store.create_group(&new_group(first_unknown, &[known])).await;
    assert_eq!(refusal(unknown_owner), ErrorCode::NotFound);
    assert!(store.groups_of(known).await.unwrap().is_empty());
}

pub async fn create_refuses_bad_names_and_too_many_users<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let [owner] = new_users(&*store).await;
    for name in ["", "   ", &"x".repeat(65), "tab\there"] {
        let bad = NewGroup { name: name.to_owned(), ..new_group(owner, &[]) };
        assert_eq!(refusal(store.create_group(&bad).await), ErrorCode::InvalidArgument, "name {name:?}");
    }
    // Counted as asked: nothing is looked up for a request this large.
    let crowd: Vec<UserId> = (1..=MAX_USERS_PER_CHANGE as u64 + 1).map(|n| UserId(n << 40)).collect();
    assert_eq!(refusal(store.create_group(&new_group(owner, &crowd)).await), ErrorCode::ResourceExhausted);
    assert!(store.groups_of(owner).await.unwrap().is_empty());
    // A name of exactly the longest length is fine.
    let longest = NewGroup { name: "é".repeat(32), ..new_group(owner, &[]) };
    assert_eq!(create(&*store, &longest).await.group.name, longest.name);
}

pub async fn group_ids_are_distinct_and_increase<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let [owner] = new_users(&*store).await;
    let first = create(&*store, &new_group(owner, &[])).await.group.id;
    let second = create(&*store, &new_group(owner, &[])).await.group.id;
    assert!(second > first, "group {second} created after group {first}");
    let listed: Vec<GroupId> = store.groups_of(owner).await.unwrap().into_iter().map(|(g, _)| g.id).collect();
    assert_eq!(listed, vec![first, second]);
}

pub async fn a_group_of_five_thousand_is_created_and_joined_whole<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    const SIZE: usize = 5_000;
    let [owner] = new_users(&*store).await;
    let crowd = many_users(&*store, SIZE).await;
    let created = create(&*store, &new_group(owner, &crowd)).await;
    assert_eq!(created.members.len(), SIZE + 1);
    let stored = roster(&*store, created.group.id).await;
    assert_eq!(stored.members.len(), SIZE + 1);
    assert_eq!(sorted(stored.members), sorted(created.members));
    assert_eq!(store.groups_of(crowd[SIZE - 1]).await.unwrap()[0].0, created.group);

    // The same crowd in one add, plus one unknown user at the end: refused
    // whole, then accepted whole without it.
    let other = create(&*store, &new_group(owner, &[])).await.group.id;
    let mut with_unknown = crowd.clone();
    with_unknown.push(UserId(1 << 60));
    let add = MembershipOp::Add(with_unknown);
    let refused_add = store.change_membership(other, owner, &add, Seq(3), DEFAULT_MAX_MEMBERS).await;
    assert_eq!(refusal(refused_add), ErrorCode::NotFound);
    assert_eq!(roster(&*store, other).await.members.len(), 1);
    let add = MembershipOp::Add(crowd.clone());
    let joined = store.change_membership(other, owner, &add, Seq(3), DEFAULT_MAX_MEMBERS).await.unwrap().unwrap();
    let ChangeKind::Joined(joiners) = &joined.kind else { panic!("an add reports joiners: {joined:?}") };
    assert_eq!(joiners.len(), SIZE);
    assert!(joiners.iter().all(|m| m.role == Role::Member && m.joined_after == Seq(3)));
    let stored = roster(&*store, other).await;
    assert_eq!((stored.version, stored.members.len()), (2, SIZE + 1));
}

pub async fn only_the_owner_and_admins_add_members<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let (group, [owner, admin, plain]) = staffed_group(&*store).await;
    let [x, y, z] = new_users(&*store).await;
    assert_eq!(refused(&*store, group, plain, MembershipOp::Add(vec![x])).await, ErrorCode::PermissionDenied);
    let by_admin = changed(&*store, group, admin, MembershipOp::Add(vec![x])).await;
    assert_eq!(by_admin.kind, ChangeKind::Joined(vec![member(x, Role::Member, 7)]));
    let by_owner = changed(&*store, group, owner, MembershipOp::Add(vec![y, z])).await;
    let ChangeKind::Joined(joined) = by_owner.kind else { panic!("an add reports joiners") };
    assert_eq!(sorted(joined), sorted(vec![member(y, Role::Member, 7), member(z, Role::Member, 7)]));
    assert_eq!(roster(&*store, group).await.members.len(), 6);
}

pub async fn adds_skip_members_are_bounded_and_need_known_users<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let (group, [owner, admin, plain]) = staffed_group(&*store).await;
    let [x, y] = new_users(&*store).await;
    // Only members already in: nothing to do.
    let nothing_new = MembershipOp::Add(vec![plain, admin, owner]);
    assert_eq!(refused(&*store, group, owner, nothing_new).await, ErrorCode::FailedPrecondition);
    // Unknown users are not added, and neither is anyone else of the add.
    let unknown = MembershipOp::Add(vec![x, UserId(1 << 60)]);
    assert_eq!(refused(&*store, group, owner, unknown).await, ErrorCode::NotFound);
    // The limit counts only who would join.
    let add = MembershipOp::Add(vec![plain, x, y, x]);
    let too_many = store.change_membership(group, owner, &add, Seq(1), 4).await;
    assert_eq!(refusal(too_many), ErrorCode::ResourceExhausted);
    assert_eq!(roster(&*store, group).await.members.len(), 3);
    let joined = store.change_membership(group, owner, &add, Seq(1), 5).await.unwrap().unwrap();
    let ChangeKind::Joined(joined) = joined.kind else { panic!("an add reports joiners") };
    assert_eq!(sorted(joined), sorted(vec![member(x, Role::Member, 1), member(y, Role::Member, 1)]));
    let members = roster(&*store, group).await.members;
    assert_eq!(members.len(), 5);
    // Members already in kept their role and boundary.
    assert!(members.contains(&member(plain, Role::Member, 0)));
}

pub async fn removal_follows_the_roles<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let (group, [owner, admin, plain]) = staffed_group(&*store).await;
    let [other_admin, outsider] = new_users(&*store).await;
    changed(&*store, group, owner, MembershipOp::Add(vec![other_admin])).await;
    changed(&*store, group, owner, MembershipOp::SetRole(other_admin, Role::Admin)).await;

    use MembershipOp::Remove;
    assert_eq!(refused(&*store, group, plain, Remove(admin)).await, ErrorCode::PermissionDenied);
    assert_eq!(refused(&*store, group, admin, Remove(owner)).await, ErrorCode::PermissionDenied);
    assert_eq!(refused(&*store, group, admin, Remove(other_admin)).await, ErrorCode::PermissionDenied);
    assert_eq!(refused(&*store, group, admin, Remove(admin)).await, ErrorCode::InvalidArgument);
    assert_eq!(refused(&*store, group, owner, Remove(outsider)).await, ErrorCode::NotFound);
    assert_eq!(refused(&*store, group, outsider, Remove(plain)).await, ErrorCode::NotFound, "as an absent group");

    let removed = changed(&*store, group, admin, Remove(plain)).await;
    assert_eq!(removed.kind, ChangeKind::Left(vec![plain]));
    let removed = changed(&*store, group, owner, Remove(other_admin)).await;
    assert_eq!(removed.kind, ChangeKind::Left(vec![other_admin]));
    let left: HashSet<UserId> = roster(&*store, group).await.members.iter().map(|m| m.user).collect();
    assert_eq!(left, HashSet::from([owner, admin]));
    assert!(store.groups_of(plain).await.unwrap().is_empty());
}

pub async fn everyone_but_the_owner_may_leave<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let (group, [owner, admin, plain]) = staffed_group(&*store).await;
    let [outsider] = new_users(&*store).await;
    assert_eq!(refused(&*store, group, owner, MembershipOp::Leave).await, ErrorCode::FailedPrecondition);
    assert_eq!(refused(&*store, group, outsider, MembershipOp::Leave).await, ErrorCode::NotFound);
    assert_eq!(changed(&*store, group, plain, MembershipOp::Leave).await.kind, ChangeKind::Left(vec![plain]));
    assert_eq!(changed(&*store, group, admin, MembershipOp::Leave).await.kind, ChangeKind::Left(vec![admin]));
    // Gone is gone: leaving again is asking as an outsider.
    assert_eq!(refused(&*store, group, plain, MembershipOp::Leave).await, ErrorCode::NotFound);
    assert_eq!(roster(&*store, group).await.members, vec![member(owner, Role::Owner, 0)]);
}

pub async fn only_the_owner_changes_roles<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let (group, [owner, admin, plain]) = staffed_group(&*store).await;
    let [outsider] = new_users(&*store).await;
    use MembershipOp::SetRole;
    assert_eq!(refused(&*store, group, admin, SetRole(plain, Role::Admin)).await, ErrorCode::PermissionDenied);
    assert_eq!(refused(&*store, group, plain, SetRole(plain, Role::Admin)).await, ErrorCode::PermissionDenied);
    assert_eq!(refused(&*store, group, owner, SetRole(plain, Role::Owner)).await, ErrorCode::InvalidArgument);
    assert_eq!(refused(&*store, group, owner, SetRole(owner, Role::Admin)).await, ErrorCode::InvalidArgument);
    assert_eq!(refused(&*store, group, owner, SetRole(outsider, Role::Admin)).await, ErrorCode::NotFound);
    // A role a member already has is no change.
    assert_eq!(refused(&*store, group, owner, SetRole(admin, Role::Admin)).await, ErrorCode::FailedPrecondition);

    let promoted = changed(&*store, group, owner, SetRole(plain, Role::Admin)).await;
    assert_eq!(promoted.kind, ChangeKind::RoleChanged(plain, Role::Admin));
    let demoted = changed(&*store, group, owner, SetRole(admin, Role::Member)).await;
    assert_eq!(demoted.kind, ChangeKind::RoleChanged(admin, Role::Member));
    let members = sorted(roster(&*store, group).await.members);
    assert_eq!(
        members,
        sorted(vec![member(owner, Role::Owner, 0), member(admin, Role::Member, 0), member(plain, Role::Admin, 0)])
    );
    // The new admin manages; the former one no longer does.
    let [x] = new_users(&*store).await;
    assert_eq!(refused(&*store, group, admin, MembershipOp::Add(vec![x])).await, ErrorCode::PermissionDenied);
    changed(&*store, group, plain, MembershipOp::Add(vec![x])).await;
}

pub async fn unknown_groups_and_outsiders_are_refused<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let [owner, outsider, x] = new_users(&*store).await;
    let missing = GroupId(1 << 60);
    assert_eq!(store.roster(missing).await.unwrap(), None);
    assert_eq!(refusal(change(&*store, missing, owner, MembershipOp::Add(vec![x])).await), ErrorCode::NotFound);
    assert_eq!(refusal(change(&*store, missing, owner, MembershipOp::Leave).await), ErrorCode::NotFound);
    let group = create(&*store, &new_group(owner, &[])).await.group.id;
    for op in [
        MembershipOp::Add(vec![x]),
        MembershipOp::Remove(owner),
        MembershipOp::Leave,
        MembershipOp::SetRole(owner, Role::Member),
    ] {
        assert_eq!(refused(&*store, group, outsider, op).await, ErrorCode::NotFound, "as an absent group");
    }
    assert!(store.groups_of(outsider).await.unwrap().is_empty());
}

pub async fn versions_move_up_by_one_and_changes_replay_onto_the_roster<S: GroupStore + UserStore + ?Sized>(
    store: Arc<S>,
) {
    let [owner, a, b, c] = new_users(&*store).await;
    let created = create(&*store, &new_group(owner, &[a])).await;
    let group = created.group.id;
    let mut cached = created;
    let ops = [
        (owner, MembershipOp::Add(vec![b, c])),
        (owner, MembershipOp::SetRole(a, Role::Admin)),
        (a, MembershipOp::Remove(b)),
        (c, MembershipOp::Leave),
        (owner, MembershipOp::SetRole(a, Role::Member)),
        (owner, MembershipOp::Add(vec![b])),
    ];
    for (expected, (actor, op)) in (2..).zip(ops) {
        // A refusal in between moves nothing.
        refused(&*store, group, UserId(1 << 60), MembershipOp::Leave).await;
        let change = changed(&*store, group, actor, op).await;
        assert_eq!((change.group, change.version), (group, expected));
        assert!(cached.apply(&change), "change {expected} follows version {}", cached.version);
        let mut stored = roster(&*store, group).await;
        assert_eq!(stored.version, expected);
        stored.members = sorted(stored.members);
        cached.members = sorted(cached.members);
        assert_eq!(stored, cached, "the roster after change {expected}");
    }
}

pub async fn concurrent_changes_of_one_group_get_consecutive_versions<S: GroupStore + UserStore + ?Sized>(
    store: Arc<S>,
) {
    const TASKS: usize = 16;
    let [owner] = new_users(&*store).await;
    let joiners = many_users(&*store, TASKS).await;
    let group = create(&*store, &new_group(owner, &[])).await.group.id;

    let spawn_all = |ops: Vec<(UserId, MembershipOp, u64)>| {
        ops.into_iter()
            .map(|(actor, op, boundary)| {
                let store = store.clone();
                tokio::spawn(async move {
                    let change = store.change_membership(group, actor, &op, Seq(boundary), MAX).await.unwrap();
                    change.unwrap_or_else(|e| panic!("{op:?} by {actor}: {e:?}"))
                })
            })
            .collect::<Vec<_>>()
    };
    let mut versions = Vec::new();
    let adds = (0..TASKS).map(|i| (owner, MembershipOp::Add(vec![joiners[i]]), i as u64 + 1)).collect();
    for task in spawn_all(adds) {
        versions.push(task.await.unwrap().version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=TASKS as u64 + 1).collect::<Vec<_>>(), "versions repeated or skipped");
    let stored = roster(&*store, group).await;
    assert_eq!(stored.version, TASKS as u64 + 1);
    for (i, &joiner) in joiners.iter().enumerate() {
        assert_eq!(stored.member(joiner), Some(&member(joiner, Role::Member, i as u64 + 1)));
    }

    // Leaves, role changes and removals racing each other.
    let mut mixed = Vec::new();
    for (i, &joiner) in joiners.iter().enumerate() {
        mixed.push(match i % 3 {
            0 => (joiner, MembershipOp::Leave, 0),
            1 => (owner, MembershipOp::SetRole(joiner, Role::Admin), 0),
            _ => (owner, MembershipOp::Remove(joiner), 0),
        });
    }
    let mut versions = Vec::new();
    for task in spawn_all(mixed) {
        versions.push(task.await.unwrap().version);
    }
    versions.sort_unstable();
    let after_adds = TASKS as u64 + 1;
    assert_eq!(versions, (after_adds + 1..=after_adds + TASKS as u64).collect::<Vec<_>>());
    let stored = roster(&*store, group).await;
    assert_eq!(stored.version, after_adds + TASKS as u64);
    assert_eq!(stored.members.len(), 1 + joiners.iter().enumerate().filter(|(i, _)| i % 3 == 1).count());
}

pub async fn boundaries_are_stored_per_joiner<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let [owner, early, late] = new_users(&*store).await;
    let group = create(&*store, &new_group(owner, &[early])).await.group.id;
    store.change_membership(group, owner, &MembershipOp::Add(vec![late]), Seq(42), MAX).await.unwrap().unwrap();
    let stored = roster(&*store, group).await;
    assert_eq!(stored.member(early).unwrap().joined_after, Seq::ZERO);
    assert_eq!(stored.member(late).unwrap().joined_after, Seq(42));
    assert_eq!(store.groups_of(late).await.unwrap()[0].1, member(late, Role::Member, 42));
    // Who leaves and comes back starts from the new boundary.
    changed(&*store, group, late, MembershipOp::Leave).await;
    store.change_membership(group, owner, &MembershipOp::Add(vec![late]), Seq(99), MAX).await.unwrap().unwrap();
    assert_eq!(roster(&*store, group).await.member(late).unwrap().joined_after, Seq(99));
}

pub async fn groups_of_lists_a_users_groups_by_id<S: GroupStore + UserStore + ?Sized>(store: Arc<S>) {
    let [owner, user, stranger] = new_users(&*store).await;
    assert!(store.groups_of(user).await.unwrap().is_empty());
    let owned = create(&*store, &new_group(user, &[owner])).await.group;
    let joined = create(&*store, &new_group(owner, &[user])).await.group;
    let left = create(&*store, &new_group(owner, &[user])).await.group;
    let added = create(&*store, &new_group(owner, &[])).await.group;
    changed(&*store, left.id, user, MembershipOp::Leave).await;
    changed(&*store, added.id, owner, MembershipOp::Add(vec![user])).await;
    changed(&*store, joined.id, owner, MembershipOp::SetRole(user, Role::Admin)).await;
    let listed = store.groups_of(user).await.unwrap();
    assert_eq!(
        listed,
        vec![
            (owned, member(user, Role::Owner, 0)),
            (joined, member(user, Role::Admin, 0)),
            (added, member(user, Role::Member, 7)),
        ]
    );
    assert!(store.groups_of(stranger).await.unwrap().is_empty());
    assert!(store.groups_of(UserId(1 << 60)).await.unwrap().is_empty());
}
