//! `imctl group ...`: group management over gRPC (`im.v1.GroupService` of
//! im-service), acting as the user of `--token`. [`GroupApi`] is also what
//! the load generator creates its groups with.

use std::io::Write;

use im_proto::message::group_service_client::GroupServiceClient;
use im_proto::message::{
    AddMembersRequest, CreateGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListMembersRequest, ReadStatus,
    ReadStatusRequest, RemoveMemberRequest, SetRoleRequest,
};
use im_proto::user::{self, GroupMemberships, MembershipChange, Roster};
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::cli::{GlobalArgs, GroupCommand, GroupRole};
use crate::error::RemoteError;
use crate::grpc::{self, answer};
use crate::output::{self, group::*};
use crate::users::{Names, UserNames};

/// im.v1.GroupService as one user: every call carries that user's token.
#[derive(Debug, Clone)]
pub struct GroupApi {
    client: GroupServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
}

impl GroupApi {
    /// Connects to the im-service of `--im-service-url` as the user of `token`.
    pub async fn connect(global: &GlobalArgs, token: &str) -> anyhow::Result<Self> {
        let channel = grpc::channel(&global.im_service_url, global.timeout, global.ca.as_ref(), "IM service").await?;
        Self::on(channel, token)
    }

    /// Calls as the user of `token` over an open channel (shared by many users).
    pub fn on(channel: Channel, token: &str) -> anyhow::Result<Self> {
        let authorization = grpc::bearer(token, "the user's token")?;
        Ok(Self { client: GroupServiceClient::new(channel), authorization })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        grpc::authorized(message, &self.authorization)
    }

    pub async fn create_group(&mut self, name: &str, members: Vec<u64>, history: bool) -> Result<Roster, RemoteError> {
        let request = self.request(CreateGroupRequest { name: name.to_owned(), members, history_visible: history });
        answer(self.client.create_group(request).await)
    }

    pub async fn add_members(&mut self, group: u64, users: Vec<u64>) -> Result<MembershipChange, RemoteError> {
        let request = self.request(AddMembersRequest { group, users });
        answer(self.client.add_members(request).await)
    }

    pub async fn remove_member(&mut self, group: u64, user: u64) -> Result<MembershipChange, RemoteError> {
        let request = self.request(RemoveMemberRequest { group, user });
        answer(self.client.remove_member(request).await)
    }

    pub async fn leave(&mut self, group: u64) -> Result<MembershipChange, RemoteError> {
        let request = self.request(LeaveGroupRequest { group });
        answer(self.client.leave_group(request).await)
    }

    pub async fn set_role(&mut self, group: u64, user: u64, role: user::Role) -> Result<MembershipChange, RemoteError> {
        let request = self.request(SetRoleRequest { group, user, role: role as i32 });
        answer(self.client.set_role(request).await)
    }

    pub async fn members(&mut self, group: u64) -> Result<Roster, RemoteError> {
        let request = self.request(ListMembersRequest { group });
        answer(self.client.list_members(request).await)
    }

    pub async fn groups(&mut self) -> Result<GroupMemberships, RemoteError> {
        let request = self.request(ListGroupsRequest {});
        answer(self.client.list_groups(request).await)
    }

    pub async fn read_status(&mut self, group: u64, seq: u64) -> Result<ReadStatus, RemoteError> {
        let request = self.request(ReadStatusRequest { group, seq });
        answer(self.client.get_read_status(request).await)
    }
}

impl From<GroupRole> for user::Role {
    fn from(role: GroupRole) -> Self {
        match role {
            GroupRole::Admin => user::Role::Admin,
            GroupRole::Member => user::Role::Member,
        }
    }
}

/// `imctl group ...`: one call, its answer on stdout as text or JSON. Users
/// named by name and the names printed are looked up over one connection.
pub async fn run_group(global: &GlobalArgs, command: GroupCommand) -> anyhow::Result<()> {
    let common = command.common();
    let json = common.json;
    let token = common.auth.token.clone();
    let mut api = GroupApi::connect(global, &token).await?;
    let mut users = UserNames::new(global, &token);
    match command {
        GroupCommand::Create { name, members, history, .. } => {
            let members = users.ids_of(&members).await?;
            let roster = api.create_group(&name, members, history).await?;
            let (shown, names) = with_names(&mut users, RosterJson::of(&roster)?).await;
            print(json, &format!("created {}", shown.text(&names)), &shown)
        }
        GroupCommand::Add { target, users: added } => {
            let added = users.ids_of(&added).await?;
            print_change(json, &mut users, &api.add_members(target.group, added).await?).await
        }
        GroupCommand::Remove { target, user } => {
            let user = users.id_of(&user).await?;
            print_change(json, &mut users, &api.remove_member(target.group, user).await?).await
        }
        GroupCommand::Leave { target } => print_change(json, &mut users, &api.leave(target.group).await?).await,
        GroupCommand::Role { target, user, role } => {
            let user = users.id_of(&user).await?;
            print_change(json, &mut users, &api.set_role(target.group, user, role.into()).await?).await
        }
        GroupCommand::Members { target } => {
            let roster = api.members(target.group).await?;
            let (shown, names) = with_names(&mut users, RosterJson::of(&roster)?).await;
            print(json, &shown.text(&names), &shown)
        }
        GroupCommand::List { .. } => {
            let answer = api.groups().await?;
            let groups = answer.groups.iter().map(MembershipJson::of).collect::<anyhow::Result<Vec<_>>>()?;
            let mut out = std::io::stdout().lock();
            if json {
                groups.iter().try_for_each(|g| output::json_line(&mut out, g))?;
            } else {
                out.write_all(memberships_text(&groups).as_bytes())?;
                out.flush()?;
            }
            Ok(())
        }
        GroupCommand::ReadStatus { target, seq } => {
            let status = api.read_status(target.group, seq).await?;
            let (shown, names) = with_names(&mut users, ReadStatusJson::of(target.group, seq, &status)).await;
            print(json, &shown.text(&names), &shown)
        }
    }
}

/// `shown` with the names of the users it names, and those names for its text.
async fn with_names<T: Named>(users: &mut UserNames<'_>, mut shown: T) -> (T, Names) {
    let names = users.names(&shown.users()).await;
    shown.add_names(&names);
    (shown, names)
}

async fn print_change(json: bool, users: &mut UserNames<'_>, change: &MembershipChange) -> anyhow::Result<()> {
    let (shown, names) = with_names(users, ChangeJson::from(change)).await;
    print(json, &shown.text(&names), &shown)
}

/// `value` as one JSON line, or `text` as it is.
fn print(json: bool, text: &str, value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        output::json_line(&mut out, value)?;
    } else {
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}
