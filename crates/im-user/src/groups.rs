//! The group directory (docs/groups.md): [`GroupService`] implements the
//! `GroupDirectory` port over a `GroupStore` and the bus; [`grpc`] serves it
//! as `im.user.v1.GroupDirectory`.
//!
//! The store checks who may do what, in the transaction that writes; this
//! layer checks what needs no stored state (names, sizes) and then tells
//! every IM service node: each applied change is published on
//! `membership_change`, keyed by group so one partition keeps a group's
//! changes in version order.

pub mod grpc;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use im_core::group::{self, ChangeKind, Group, Member, MembershipChange, MembershipOp, NewGroup, Roster};
use im_core::ports::{Bus, GroupDirectory, GroupStore};
use im_core::{GroupId, ImError, Seq, UserId};

/// How long a change may take to publish, retries included, before the call
/// returns anyway: the change is durable by then, and the caller (a user
/// waiting for an answer) should not wait on a bus that is down.
const PUBLISH_BUDGET: Duration = Duration::from_secs(1);
/// The wait before the first retry; it doubles after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Groups: validation, the store, and publication of every change.
pub struct GroupService {
    store: Arc<dyn GroupStore>,
    bus: Arc<dyn Bus>,
    /// `kafka.topics.membership_change`.
    topic: String,
    /// `group.max_members`.
    max_members: usize,
    /// Changes written but never published (see [`GroupService::unpublished_changes`]).
    unpublished: AtomicU64,
}

impl GroupService {
    pub fn new(store: Arc<dyn GroupStore>, bus: Arc<dyn Bus>, topic: String, max_members: usize) -> Self {
        Self { store, bus, topic, max_members, unpublished: AtomicU64::new(0) }
    }

    /// How many applied changes could not be published since start. Each is
    /// durable, and logged at error; the nodes' caches still catch up (a node
    /// reloads a roster when it sees a change out of version order, and
    /// refreshes rosters periodically), only later. Exported as a metric by
    /// the process that runs this service.
    pub fn unpublished_changes(&self) -> u64 {
        self.unpublished.load(Relaxed)
    }

    /// Publishes `change`, retrying with backoff within [`PUBLISH_BUDGET`].
    /// Never fails the caller: by now the change is durable, and answering
    /// with an error would make a client retry a change that happened.
    async fn publish(&self, change: &MembershipChange) {
        let key = Bytes::from(change.group.to_string());
        let payload = im_proto::convert::encode_membership_change(change);
        let deadline = tokio::time::Instant::now() + PUBLISH_BUDGET;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        let error = loop {
            attempts += 1;
            let publish = self.bus.publish(&self.topic, key.clone(), payload.clone());
            let error = match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            if tokio::time::Instant::now() + backoff >= deadline {
                break error;
            }
            tracing::warn!(group = %change.group, version = change.version, attempts, %error, "publishing a membership change failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        };
        self.unpublished.fetch_add(1, Relaxed);
        tracing::error!(
            group = %change.group,
            version = change.version,
            topic = %self.topic,
            attempts,
            %error,
            "membership change is durable but was not published; nodes catch up when they reload the roster"
        );
    }

    /// Checks what needs no stored state: the name, how many users one
    /// request names, and the size of the group.
    fn check_new_group(&self, group: &NewGroup) -> Result<(), ImError> {
        group::check_name(&group.name)?;
        group::check_user_count(group.members.len())?;
        // The owner counts; repeats and the owner named again do not.
        let size = group.members.iter().chain([&group.owner]).collect::<HashSet<_>>().len();
        if size > self.max_members {
            return Err(ImError::exhausted(format!(
                "the group would have {size} members; the limit is {} (GROUP_MAX_MEMBERS)",
                self.max_members
            )));
        }
        Ok(())
    }
}

fn check_op(op: &MembershipOp) -> Result<(), ImError> {
    match op {
        MembershipOp::Add(users) if users.is_empty() => Err(ImError::invalid("name at least one user to add")),
        MembershipOp::Add(users) => group::check_user_count(users.len()),
        MembershipOp::Remove(_) | MembershipOp::Leave | MembershipOp::SetRole(..) => Ok(()),
    }
}

#[async_trait]
impl GroupDirectory for GroupService {
    async fn create_group(&self, group: NewGroup) -> Result<Roster, ImError> {
        self.check_new_group(&group)?;
        let roster = self.store.create_group(&group).await??;
        tracing::info!(group = %roster.group.id, owner = %roster.group.owner, members = roster.members.len(), "group created");
        let created = MembershipChange {
            group: roster.group.id,
            version: roster.version,
            kind: ChangeKind::Created(roster.members.clone()),
        };
        self.publish(&created).await;
        Ok(roster)
    }

    async fn change_membership(
        &self,
        group: GroupId,
        actor: UserId,
        op: MembershipOp,
        boundary: Seq,
    ) -> Result<MembershipChange, ImError> {
        check_op(&op)?;
        let change = self.store.change_membership(group, actor, &op, boundary, self.max_members).await??;
        tracing::debug!(group = %group, actor = %actor, version = change.version, "membership changed");
        self.publish(&change).await;
        Ok(change)
    }

    async fn roster(&self, group: GroupId) -> Result<Option<Roster>, ImError> {
        Ok(self.store.roster(group).await?)
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<(Group, Member)>, ImError> {
        Ok(self.store.groups_of(user).await?)
    }
}

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
