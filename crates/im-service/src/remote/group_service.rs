//! [`RemoteGroupService`]: the `Groups` port over `im.v1.GroupService`, as a
//! gateway process reaches the IM service for its clients' group requests.
//! Each call acts as the connection's user ([`ActingUser`]), so the node
//! applies the same rules and rate limits as to a client calling it over
//! gRPC with its own token.

use std::sync::Arc;

use async_trait::async_trait;
use im_core::group::{Group, Member, MembershipChange, MembershipOp, Roster};
use im_core::message::ReadStatus;
use im_core::ports::Groups;
use im_core::{GroupId, ImError, Seq, UserId};
use im_proto::convert::{self, from_status, role_to_pb};
use im_proto::message::group_service_client::GroupServiceClient;
use im_proto::message::{self as pb};
use tonic::transport::Channel;

use super::acting_user::ActingUser;
use super::groups::answer;

/// The IM service's groups, for a gateway process.
pub struct RemoteGroupService {
    client: GroupServiceClient<Channel>,
    acting: Arc<ActingUser>,
}

impl RemoteGroupService {
    pub fn new(channel: Channel, acting: Arc<ActingUser>) -> Self {
        Self { client: GroupServiceClient::new(channel), acting }
    }
}

fn users(users: &[UserId]) -> Vec<u64> {
    users.iter().map(|user| user.0).collect()
}

#[async_trait]
impl Groups for RemoteGroupService {
    async fn create_group(
        &self,
        user: UserId,
        name: String,
        members: Vec<UserId>,
        history_visible: bool,
    ) -> Result<Roster, ImError> {
        let request = pb::CreateGroupRequest { name, members: users(&members), history_visible };
        let roster = self.client.clone().create_group(self.acting.request(user, None, request)).await;
        answer("CreateGroup", roster.map_err(|s| from_status(&s))?.into_inner(), Roster::try_from)
    }

    async fn change_membership(
        &self,
        user: UserId,
        group: GroupId,
        op: MembershipOp,
    ) -> Result<MembershipChange, ImError> {
        let mut client = self.client.clone();
        let group = group.0;
        let change = match op {
            MembershipOp::Add(added) => {
                let request = pb::AddMembersRequest { group, users: users(&added) };
                client.add_members(self.acting.request(user, None, request)).await
            }
            MembershipOp::Remove(removed) => {
                let request = pb::RemoveMemberRequest { group, user: removed.0 };
                client.remove_member(self.acting.request(user, None, request)).await
            }
            MembershipOp::Leave => {
                client.leave_group(self.acting.request(user, None, pb::LeaveGroupRequest { group })).await
            }
            MembershipOp::SetRole(member, role) => {
                let request = pb::SetRoleRequest { group, user: member.0, role: role_to_pb(role) };
                client.set_role(self.acting.request(user, None, request)).await
            }
        };
        answer("a membership change", change.map_err(|s| from_status(&s))?.into_inner(), MembershipChange::try_from)
    }

    async fn roster(&self, user: UserId, group: GroupId) -> Result<Roster, ImError> {
        let request = pb::ListMembersRequest { group: group.0 };
        let roster = self.client.clone().list_members(self.acting.request(user, None, request)).await;
        answer("ListMembers", roster.map_err(|s| from_status(&s))?.into_inner(), Roster::try_from)
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<(Group, Member)>, ImError> {
        let groups = self.client.clone().list_groups(self.acting.request(user, None, pb::ListGroupsRequest {})).await;
        answer("ListGroups", groups.map_err(|s| from_status(&s))?.into_inner(), convert::from_group_memberships)
    }

    async fn read_status(&self, user: UserId, group: GroupId, seq: Seq) -> Result<ReadStatus, ImError> {
        let request = pb::ReadStatusRequest { group: group.0, seq: seq.0 };
        let read = self.client.clone().get_read_status(self.acting.request(user, None, request)).await;
        let read = read.map_err(|s| from_status(&s))?.into_inner();
        Ok(ReadStatus {
            read_count: read.read_count,
            readers: read.readers.into_iter().map(UserId).collect(),
            detailed: read.detailed,
        })
    }
}
