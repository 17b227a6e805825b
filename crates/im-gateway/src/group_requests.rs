//! The client protocol's group requests (`create_group`, `add_members`,
//! `remove_member`, `leave_group`, `list_members`, `list_groups`,
//! `read_status`): the calls of `im.v1.GroupService`, for a client that
//! speaks only the WebSocket protocol (the browser). Each acts as the
//! connection's user, and the [`Groups`] port applies the same rules and
//! limits as over gRPC.

use im_core::group::MembershipOp;
use im_core::ports::Groups;
use im_core::{ImError, Seq, UserId};
use im_proto::client::GroupChanged;
use im_proto::client::client_frame::Body as Req;
use im_proto::client::server_frame::Body as Resp;
use im_proto::convert::{self, add_members_op, group_id, user_id, users_from_wire};

/// The answer to a group request of `user`'s connection.
pub async fn answer(groups: &dyn Groups, user: UserId, request: Req) -> Result<Resp, ImError> {
    let (group, op) = match request {
        Req::CreateGroup(create) => {
            let members = users_from_wire(create.members)?;
            let roster = groups.create_group(user, create.name, members, create.history_visible).await?;
            return Ok(Resp::Group(convert::client_roster(&roster)));
        }
        Req::ListMembers(list) => {
            let roster = groups.roster(user, group_id(list.group_id)?).await?;
            return Ok(Resp::Group(convert::client_roster(&roster)));
        }
        Req::ListGroups(_) => {
            let list = groups.groups_of(user).await?;
            return Ok(Resp::Groups(convert::client_group_list(&list)));
        }
        Req::ReadStatus(read) => {
            let group = group_id(read.group_id)?;
            let status = groups.read_status(user, group, Seq(read.seq)).await?;
            return Ok(Resp::ReadStatus(convert::client_read_status(group, Seq(read.seq), &status)));
        }
        Req::AddMembers(add) => (add.group_id, add_members_op(add.users)?),
        Req::RemoveMember(remove) => (remove.group_id, MembershipOp::Remove(user_id(remove.user)?)),
        Req::LeaveGroup(leave) => (leave.group_id, MembershipOp::Leave),
        other => return Err(ImError::internal(format!("not a group request: {other:?}"))),
    };
    let change = groups.change_membership(user, group_id(group)?, op).await?;
    Ok(Resp::GroupChanged(GroupChanged { group_id: change.group.0, version: change.version }))
}
