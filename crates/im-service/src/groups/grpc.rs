//! `im.v1.GroupService` over the [`Groups`] port: the acting user is the
//! token's subject, as in `im.v1.MessageService`.

use std::sync::Arc;

use im_auth::Tokens;
use im_core::group::{MembershipChange, MembershipOp};
use im_core::ports::Groups;
use im_core::{GroupId, Seq, UserId};
use im_proto::convert::{self, status};
use im_proto::message::group_service_server::{GroupService, GroupServiceServer};
use im_proto::message::{self as pb};
use im_proto::user as user_pb;
use tonic::{Request, Response, Status};

use crate::grpc::acting_user;

pub struct GroupGrpc {
    groups: Arc<dyn Groups>,
    tokens: Tokens,
}

impl GroupGrpc {
    pub fn server(groups: Arc<dyn Groups>, tokens: Tokens) -> GroupServiceServer<Self> {
        GroupServiceServer::new(Self { groups, tokens })
    }

    async fn change(
        &self,
        user: UserId,
        group: u64,
        op: MembershipOp,
    ) -> Result<Response<user_pb::MembershipChange>, Status> {
        let change: MembershipChange =
            self.groups.change_membership(user, group_id(group)?, op).await.map_err(status)?;
        Ok(Response::new((&change).into()))
    }
}

fn group_id(raw: u64) -> Result<GroupId, Status> {
    convert::group_id(raw).map_err(status)
}

fn user_id(raw: u64) -> Result<UserId, Status> {
    convert::user_id(raw).map_err(status)
}

fn user_ids(raw: &[u64]) -> Result<Vec<UserId>, Status> {
    convert::users_from_wire(raw.to_vec()).map_err(status)
}

#[tonic::async_trait]
impl GroupService for GroupGrpc {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<user_pb::Roster>, Status> {
        let user = acting_user(&self.tokens, &request)?;
        let req = request.into_inner();
        let members = user_ids(&req.members)?;
        let roster = self.groups.create_group(user, req.name, members, req.history_visible).await.map_err(status)?;
        Ok(Response::new((&roster).into()))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<user_pb::MembershipChange>, Status> {
        let user = acting_user(&self.tokens, &request)?;
        let req = request.into_inner();
        self.change(user, req.group, convert::add_members_op(req.users).map_err(status)?).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<user_pb::MembershipChange>, Status> {
        let user = acting_user(&self.tokens, &request)?;
        let req = request.into_inner();
        self.change(user, req.group, MembershipOp::Remove(user_id(req.user)?)).await
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<user_pb::MembershipChange>, Status> {
        let user = acting_user(&self.tokens, &request)?;
        let req = request.into_inner();
        self.change(user, req.group, MembershipOp::Leave).await
    }

    async fn set_role(
        &self,
        request: Request<pb::SetRoleRequest>,
    ) -> Result<Response<user_pb::MembershipChange>, Status> {
        let user = acting_user(&self.tokens, &request)?;
        let req = request.into_inner();
        let role = convert::role_from_pb(req.role).map_err(status)?;
        self.change(user, req.group, MembershipOp::SetRole(user_id(req.user)?, role)).await
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<user_pb::Roster>, Status> {
        let user = acting_user(&self.tokens, &request)?;
        let roster = self.groups.roster(user, group_id(request.into_inner().group)?).await.map_err(status)?;
        Ok(Response::new((&roster).into()))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<user_pb::GroupMemberships>, Status> {
        let user = acting_user(&self.tokens, &request)?;
        let groups = self.groups.groups_of(user).await.map_err(status)?;
        Ok(Response::new(convert::group_memberships(&groups)))
    }

    async fn get_read_status(
        &self,
        request: Request<pb::ReadStatusRequest>,
    ) -> Result<Response<pb::ReadStatus>, Status> {
        let user = acting_user(&self.tokens, &request)?;
        let req = request.into_inner();
        let read = self.groups.read_status(user, group_id(req.group)?, Seq(req.seq)).await.map_err(status)?;
        Ok(Response::new(pb::ReadStatus {
            read_count: read.read_count,
            readers: read.readers.iter().map(|u| u.0).collect(),
            detailed: read.detailed,
        }))
    }
}
