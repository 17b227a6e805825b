//! The fake's `im.v1.GroupService`: the rules of docs/groups.md in their
//! simplest form (owner and admins manage members, only the owner removes an
//! admin or sets roles, the owner cannot leave, joiners see messages after
//! the group's current seq unless the group shows its history).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use im_proto::message::group_service_server::GroupService;
use im_proto::message::{
    AddMembersRequest, CreateGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListMembersRequest, ReadStatus,
    ReadStatusRequest, RemoveMemberRequest, SetRoleRequest,
};
use im_proto::user::{self as pb, Role, membership_change::Kind};
use tonic::{Request, Response, Status};

use super::{Group, Inner, State, caller};

pub struct Groups(pub Arc<State>);

type Answer<T> = Result<Response<T>, Status>;

fn roster(id: u64, g: &Group) -> pb::Roster {
    pb::Roster {
        group: Some(pb::Group {
            id,
            name: g.name.clone(),
            owner: g.owner,
            history_visible: g.history,
            created_at_ms: 1_700_000_000_000,
        }),
        version: g.version,
        members: g.members.iter().map(|(&user, &(role, joined_after))| member(user, role, joined_after)).collect(),
    }
}

fn member(user: u64, role: Role, joined_after: u64) -> pb::Member {
    pb::Member { user, role: role as i32, joined_after }
}

/// The group, and the caller's role in it.
fn membership(inner: &mut Inner, group: u64, me: u64) -> Result<(&mut Group, Role), Status> {
    let g = inner.groups.get_mut(&group).ok_or_else(|| Status::not_found(format!("no group {group}")))?;
    let role = g.members.get(&me).map(|(role, _)| *role);
    let role = role.ok_or_else(|| Status::permission_denied(format!("you are not a member of group {group}")))?;
    Ok((g, role))
}

fn change(group: u64, g: &mut Group, kind: Kind) -> Answer<pb::MembershipChange> {
    g.version += 1;
    Ok(Response::new(pb::MembershipChange { group, version: g.version, kind: Some(kind) }))
}

fn manages(role: Role) -> bool {
    matches!(role, Role::Owner | Role::Admin)
}

#[tonic::async_trait]
impl GroupService for Groups {
    async fn create_group(&self, request: Request<CreateGroupRequest>) -> Answer<pb::Roster> {
        let me = caller(&self.0, &request)?;
        let r = request.into_inner();
        if r.name.is_empty() || r.name.len() > 64 {
            return Err(Status::invalid_argument("a group name is 1 to 64 bytes"));
        }
        let mut inner = self.0.inner.lock().unwrap();
        if let Some(missing) = r.members.iter().find(|u| !inner.users.contains_key(u)) {
            return Err(Status::not_found(format!("no user {missing}")));
        }
        let mut members = BTreeMap::from([(me, (Role::Owner, 0))]);
        for user in r.members {
            members.entry(user).or_insert((Role::Member, 0));
        }
        let id = inner.groups.keys().last().copied().unwrap_or(0) + 1;
        let group = Group { name: r.name, owner: me, history: r.history_visible, version: 1, members };
        let answer = roster(id, &group);
        inner.groups.insert(id, group);
        Ok(Response::new(answer))
    }

    async fn add_members(&self, request: Request<AddMembersRequest>) -> Answer<pb::MembershipChange> {
        let me = caller(&self.0, &request)?;
        let r = request.into_inner();
        let mut inner = self.0.inner.lock().unwrap();
        if let Some(missing) = r.users.iter().find(|u| !inner.users.contains_key(u)) {
            return Err(Status::not_found(format!("no user {missing}")));
        }
        let current = inner.max_seq(&format!("g:{}", r.group));
        let (g, role) = membership(&mut inner, r.group, me)?;
        if !manages(role) {
            return Err(Status::permission_denied("only the owner and admins add members"));
        }
        let boundary = if g.history { 0 } else { current };
        let mut joined = Vec::new();
        for user in r.users {
            if let Entry::Vacant(vacant) = g.members.entry(user) {
                vacant.insert((Role::Member, boundary));
                joined.push(member(user, Role::Member, boundary));
            }
        }
        change(r.group, g, Kind::Joined(pb::MemberList { members: joined }))
    }

    async fn remove_member(&self, request: Request<RemoveMemberRequest>) -> Answer<pb::MembershipChange> {
        let me = caller(&self.0, &request)?;
        let r = request.into_inner();
        let mut inner = self.0.inner.lock().unwrap();
        let (g, role) = membership(&mut inner, r.group, me)?;
        let Some(&(target, _)) = g.members.get(&r.user) else {
            return Err(Status::not_found(format!("user {} is not a member of group {}", r.user, r.group)));
        };
        match (role, target) {
            (_, Role::Owner) => return Err(Status::permission_denied("the owner cannot be removed")),
            (Role::Owner, _) | (Role::Admin, Role::Member) => {}
            (Role::Admin, _) => return Err(Status::permission_denied("only the owner removes an admin")),
            _ => return Err(Status::permission_denied("only the owner and admins remove members")),
        }
        g.members.remove(&r.user);
        change(r.group, g, Kind::Left(pb::UserList { users: vec![r.user] }))
    }

    async fn leave_group(&self, request: Request<LeaveGroupRequest>) -> Answer<pb::MembershipChange> {
        let me = caller(&self.0, &request)?;
        let group = request.into_inner().group;
        let mut inner = self.0.inner.lock().unwrap();
        let (g, role) = membership(&mut inner, group, me)?;
        if role == Role::Owner {
            return Err(Status::failed_precondition("the owner cannot leave the group"));
        }
        g.members.remove(&me);
        change(group, g, Kind::Left(pb::UserList { users: vec![me] }))
    }

    async fn set_role(&self, request: Request<SetRoleRequest>) -> Answer<pb::MembershipChange> {
        let me = caller(&self.0, &request)?;
        let r = request.into_inner();
        let new_role = match Role::try_from(r.role) {
            Ok(role @ (Role::Admin | Role::Member)) => role,
            _ => return Err(Status::invalid_argument("a role is admin or member")),
        };
        let mut inner = self.0.inner.lock().unwrap();
        let (g, role) = membership(&mut inner, r.group, me)?;
        if role != Role::Owner {
            return Err(Status::permission_denied("only the owner sets roles"));
        }
        let Some(entry) = g.members.get_mut(&r.user) else {
            return Err(Status::not_found(format!("user {} is not a member of group {}", r.user, r.group)));
        };
        if entry.0 == Role::Owner {
            return Err(Status::failed_precondition("the owner's role cannot change"));
        }
        entry.0 = new_role;
        change(r.group, g, Kind::RoleChanged(pb::SetRole { user: r.user, role: new_role as i32 }))
    }

    async fn list_members(&self, request: Request<ListMembersRequest>) -> Answer<pb::Roster> {
        let me = caller(&self.0, &request)?;
        let group = request.into_inner().group;
        let mut inner = self.0.inner.lock().unwrap();
        let (g, _) = membership(&mut inner, group, me)?;
        Ok(Response::new(roster(group, g)))
    }

    async fn list_groups(&self, request: Request<ListGroupsRequest>) -> Answer<pb::GroupMemberships> {
        let me = caller(&self.0, &request)?;
        let inner = self.0.inner.lock().unwrap();
        let groups = inner
            .groups
            .iter()
            .filter_map(|(&id, g)| {
                let &(role, joined_after) = g.members.get(&me)?;
                Some(pb::GroupMembership { group: roster(id, g).group, member: Some(member(me, role, joined_after)) })
            })
            .collect();
        Ok(Response::new(pb::GroupMemberships { groups }))
    }

    async fn get_read_status(&self, request: Request<ReadStatusRequest>) -> Answer<ReadStatus> {
        let me = caller(&self.0, &request)?;
        let r = request.into_inner();
        let mut inner = self.0.inner.lock().unwrap();
        let id = format!("g:{}", r.group);
        let read: BTreeMap<u64, u64> = inner
            .conversations
            .get(&id)
            .map(|c| c.read.iter().map(|(&user, &seq)| (user, seq)).collect())
            .unwrap_or_default();
        let (g, _) = membership(&mut inner, r.group, me)?;
        let readers: Vec<u64> =
            g.members.keys().copied().filter(|user| read.get(user).is_some_and(|&seq| seq >= r.seq)).collect();
        let detailed = g.members.len() <= 100;
        Ok(Response::new(ReadStatus {
            read_count: readers.len() as u64,
            readers: if detailed { readers } else { Vec::new() },
            detailed,
        }))
    }
}
