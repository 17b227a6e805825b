//! The `Groups` port as clients reach it (`im.v1.GroupService`): the front
//! door that stamps a change's seq boundary, has the directory apply it, and
//! applies it to this node's cache at once (other nodes learn it from
//! `membership_change`).

use std::sync::Arc;

use async_trait::async_trait;
use im_core::group::{self, Group, Member, MembershipChange, MembershipOp, NewGroup, Roster};
use im_core::message::ReadStatus;
use im_core::ports::{GroupDirectory, Groups, MessageStore, ReceiptStore, SeqAllocator};
use im_core::{ConversationId, GroupId, ImError, Seq, UserId};

use super::cache::MembershipCache;
use crate::rate_limits::UserRateLimits;

pub struct GroupsService {
    /// Group changes per user and minute.
    pub rate_limits: Arc<UserRateLimits>,
    pub directory: Arc<dyn GroupDirectory>,
    pub cache: Arc<MembershipCache>,
    pub seqs: Arc<dyn SeqAllocator>,
    pub store: Arc<dyn MessageStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    /// `group.read_receipt_details_max`.
    pub read_receipt_details_max: usize,
}

#[async_trait]
impl Groups for GroupsService {
    async fn create_group(
        &self,
        user: UserId,
        name: String,
        members: Vec<UserId>,
        history_visible: bool,
    ) -> Result<Roster, ImError> {
        self.rate_limits.check_group_change(user)?;
        group::check_name(&name)?;
        group::check_user_count(members.len())?;
        let new = NewGroup { name, owner: user, members, history_visible, created_at_ms: crate::clock::unix_ms() };
        let roster = self.directory.create_group(new).await?;
        self.cache.insert(roster.clone());
        Ok(roster)
    }

    async fn change_membership(
        &self,
        user: UserId,
        group: GroupId,
        op: MembershipOp,
    ) -> Result<MembershipChange, ImError> {
        self.rate_limits.check_group_change(user)?;
        if let MembershipOp::Add(users) = &op {
            group::check_user_count(users.len())?;
        }
        // The boundary only matters to joiners, but is cheap: one read of
        // the counter. Read before the change is written, so every message
        // sent after this call returns is above it.
        let view = self.cache.view(group).await?;
        let current = self.seqs.current_seq(ConversationId::Group(group)).await?;
        let boundary = group::join_boundary(&view.roster.group, current);
        let change = self.directory.change_membership(group, user, op, boundary).await?;
        self.cache.apply(&change);
        Ok(change)
    }

    async fn roster(&self, user: UserId, group: GroupId) -> Result<Roster, ImError> {
        let (view, _) = self.cache.member(group, user).await?;
        Ok(view.roster.clone())
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<(Group, Member)>, ImError> {
        self.directory.groups_of(user).await
    }

    async fn read_status(&self, user: UserId, group: GroupId, seq: Seq) -> Result<ReadStatus, ImError> {
        let (view, member) = self.cache.member(group, user).await?;
        let conversation = ConversationId::Group(group);
        if seq == Seq::ZERO || !member.sees(seq) {
            return Err(ImError::invalid(format!("seq {seq} is not a message of {conversation} you can see")));
        }
        let max_seq = self.store.max_seq(conversation).await?;
        if seq > max_seq {
            return Err(ImError::invalid(format!(
                "seq {seq} is beyond the last message of {conversation} ({max_seq})"
            )));
        }
        // No limit: former members' positions stay in the store, so a limit
        // of the member count could leave current readers out. Bounded by
        // everyone who was ever a member.
        let readers = self.receipts.readers(conversation, seq, u32::MAX).await?;
        // Only current members who could see the message count.
        let readers: Vec<UserId> =
            readers.into_iter().filter(|&reader| view.member(reader).is_some_and(|m| m.sees(seq))).collect();
        let detailed = view.members().len() <= self.read_receipt_details_max;
        Ok(ReadStatus {
            read_count: readers.len() as u64,
            readers: if detailed { readers } else { Vec::new() },
            detailed,
        })
    }
}
