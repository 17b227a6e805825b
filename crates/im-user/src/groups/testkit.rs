//! Fakes for the tests of the group directory: a store in memory that keeps
//! the rules of `im_core::group`, and a bus that fails or hangs on demand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use async_trait::async_trait;
use bytes::Bytes;
use im_core::error::BackendError;
use im_core::group::{self, ChangeKind, Group, Member, MembershipChange, MembershipOp, NewGroup, Role, Roster};
use im_core::ports::{BackendResult, Bus, BusConsumer, GroupStore, RecordHeaders};
use im_core::{ErrorCode, GroupId, ImError, Seq, UserId};

/// Groups in memory; refusals follow `im_core::group::authorize`.
#[derive(Default)]
pub struct FakeStore {
    groups: Mutex<HashMap<GroupId, Roster>>,
}

impl FakeStore {
    pub fn group_count(&self) -> usize {
        self.groups.lock().unwrap().len()
    }
}

#[async_trait]
impl GroupStore for FakeStore {
    async fn create_group(&self, new: &NewGroup) -> BackendResult<Result<Roster, ImError>> {
        let mut groups = self.groups.lock().unwrap();
        let id = GroupId(groups.len() as u64 + 1);
        let mut members = vec![Member { user: new.owner, role: Role::Owner, joined_after: Seq::ZERO }];
        for &user in &new.members {
            if members.iter().all(|m| m.user != user) {
                members.push(Member { user, role: Role::Member, joined_after: Seq::ZERO });
            }
        }
        let group = Group {
            id,
            name: new.name.clone(),
            owner: new.owner,
            history_visible: new.history_visible,
            created_at_ms: new.created_at_ms,
        };
        let roster = Roster { group, version: 1, members };
        groups.insert(id, roster.clone());
        Ok(Ok(roster))
    }

    async fn roster(&self, group: GroupId) -> BackendResult<Option<Roster>> {
        Ok(self.groups.lock().unwrap().get(&group).cloned())
    }

    async fn groups_of(&self, user: UserId) -> BackendResult<Vec<(Group, Member)>> {
        let groups = self.groups.lock().unwrap();
        let mut mine: Vec<_> = groups.values().filter_map(|r| r.member(user).map(|m| (r.group.clone(), *m))).collect();
        mine.sort_by_key(|(group, _)| group.id);
        Ok(mine)
    }

    async fn change_membership(
        &self,
        group: GroupId,
        actor: UserId,
        op: &MembershipOp,
        boundary: Seq,
        max_members: usize,
    ) -> BackendResult<Result<MembershipChange, ImError>> {
        let mut groups = self.groups.lock().unwrap();
        let Some(roster) = groups.get_mut(&group) else {
            return Ok(Err(ImError::not_found(format!("no group {group}"))));
        };
        let joiners: Vec<Member> = match op {
            MembershipOp::Add(users) => users
                .iter()
                .filter(|user| roster.member(**user).is_none())
                .map(|&user| Member { user, role: Role::Member, joined_after: boundary })
                .collect(),
            _ => Vec::new(),
        };
        let target = match op {
            MembershipOp::Remove(user) | MembershipOp::SetRole(user, _) => roster.member(*user),
            _ => None,
        };
        let size_after = roster.members.len() + joiners.len();
        if let Err(refusal) = group::authorize(roster.member(actor), op, target, size_after, max_members) {
            return Ok(Err(refusal));
        }
        let kind = match op {
            MembershipOp::Add(_) if joiners.is_empty() => {
                return Ok(Err(ImError::new(ErrorCode::FailedPrecondition, "everyone named is a member already")));
            }
            MembershipOp::Add(_) => ChangeKind::Joined(joiners),
            MembershipOp::Remove(user) => ChangeKind::Left(vec![*user]),
            MembershipOp::Leave => ChangeKind::Left(vec![actor]),
            MembershipOp::SetRole(user, role) => ChangeKind::RoleChanged(*user, *role),
        };
        let change = MembershipChange { group, version: roster.version + 1, kind };
        assert!(roster.apply(&change));
        Ok(Ok(change))
    }
}

/// A published record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub topic: String,
    pub key: Bytes,
    pub payload: Bytes,
}

/// A bus that records what it publishes; it can fail the next few publishes,
/// or hang every publish.
#[derive(Default)]
pub struct FlakyBus {
    failures: AtomicU32,
    hang: AtomicBool,
    attempts: AtomicU32,
    published: Mutex<Vec<Published>>,
}

impl FlakyBus {
    pub fn fail_next(&self, n: u32) {
        self.failures.store(n, Relaxed);
    }

    pub fn hang(&self) {
        self.hang.store(true, Relaxed);
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.load(Relaxed)
    }

    pub fn published(&self) -> Vec<Published> {
        self.published.lock().unwrap().clone()
    }
}

#[async_trait]
impl Bus for FlakyBus {
    async fn publish_with_headers(
        &self,
        topic: &str,
        key: Bytes,
        payload: Bytes,
        _: RecordHeaders,
    ) -> BackendResult<()> {
        self.attempts.fetch_add(1, Relaxed);
        if self.hang.load(Relaxed) {
            return std::future::pending().await;
        }
        if self.failures.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(BackendError::unavailable("the bus is down"));
        }
        self.published.lock().unwrap().push(Published { topic: topic.to_owned(), key, payload });
        Ok(())
    }

    async fn subscribe(&self, _topic: &str, _group: &str) -> BackendResult<Box<dyn BusConsumer>> {
        Err(BackendError::other("the group directory never consumes"))
    }
}
