//! Groups on the wire (`im.user.v1` group messages): the directory's calls,
//! and `MembershipChange`, which is also the record of `membership_change`.
//!
//! Decoding refuses what cannot be (group or version 0, a change without a
//! kind, an unknown role) as `INVALID_ARGUMENT`: a cache that applied such a
//! record would hold a roster no store ever had.

use bytes::Bytes;
use im_core::group::{ChangeKind, Group, Member, MembershipChange, MembershipOp, NewGroup, Role, Roster};
use im_core::{GroupId, ImError, Seq, UserId};
use prost::Message as _;

use crate::user as pb;
use crate::user::change_membership_request::Op;
use crate::user::membership_change::Kind;

impl From<Role> for pb::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Member => pb::Role::Member,
            Role::Admin => pb::Role::Admin,
            Role::Owner => pb::Role::Owner,
        }
    }
}

/// A role as a wire enum value.
pub fn role_to_pb(role: Role) -> i32 {
    pb::Role::from(role) as i32
}

/// A wire role back in domain terms; unset or unknown values are refused.
pub fn role_from_pb(value: i32) -> Result<Role, ImError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Member) => Ok(Role::Member),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Owner) => Ok(Role::Owner),
        Ok(pb::Role::Unspecified) | Err(_) => {
            Err(ImError::invalid(format!("role {value} is none of member (1), admin (2), owner (3)")))
        }
    }
}

/// A group id from the wire; 0 (unset) is refused.
pub fn group_id(raw: u64) -> Result<GroupId, ImError> {
    if raw == 0 {
        return Err(ImError::invalid("group 0 does not exist: group ids start at 1"));
    }
    Ok(GroupId(raw))
}

/// A user id from the wire; 0 (unset) is refused.
pub fn user_id(raw: u64) -> Result<UserId, ImError> {
    if raw == 0 {
        return Err(ImError::invalid("user 0 does not exist: user ids start at 1"));
    }
    Ok(UserId(raw))
}

fn users_to_wire(users: &[UserId]) -> Vec<u64> {
    users.iter().map(|user| user.0).collect()
}

/// User ids from the wire; any 0 is refused.
pub fn users_from_wire(users: Vec<u64>) -> Result<Vec<UserId>, ImError> {
    users.into_iter().map(user_id).collect()
}

/// An "add these users" from a client (gRPC or WebSocket): at least one,
/// none 0.
pub fn add_members_op(users: Vec<u64>) -> Result<MembershipOp, ImError> {
    if users.is_empty() {
        return Err(ImError::invalid("name at least one user to add"));
    }
    Ok(MembershipOp::Add(users_from_wire(users)?))
}

impl From<&Group> for pb::Group {
    fn from(g: &Group) -> Self {
        pb::Group {
            id: g.id.0,
            name: g.name.clone(),
            owner: g.owner.0,
            history_visible: g.history_visible,
            created_at_ms: g.created_at_ms,
        }
    }
}

impl TryFrom<pb::Group> for Group {
    type Error = ImError;

    fn try_from(g: pb::Group) -> Result<Self, ImError> {
        Ok(Group {
            id: group_id(g.id)?,
            name: g.name,
            owner: user_id(g.owner)?,
            history_visible: g.history_visible,
            created_at_ms: g.created_at_ms,
        })
    }
}

impl From<&Member> for pb::Member {
    fn from(m: &Member) -> Self {
        pb::Member { user: m.user.0, role: role_to_pb(m.role), joined_after: m.joined_after.0 }
    }
}

impl TryFrom<pb::Member> for Member {
    type Error = ImError;

    fn try_from(m: pb::Member) -> Result<Self, ImError> {
        Ok(Member { user: user_id(m.user)?, role: role_from_pb(m.role)?, joined_after: Seq(m.joined_after) })
    }
}

fn members_to_wire(members: &[Member]) -> Vec<pb::Member> {
    members.iter().map(pb::Member::from).collect()
}

fn members_from_wire(members: Vec<pb::Member>) -> Result<Vec<Member>, ImError> {
    members.into_iter().map(Member::try_from).collect()
}

impl From<&Roster> for pb::Roster {
    fn from(r: &Roster) -> Self {
        pb::Roster { group: Some((&r.group).into()), version: r.version, members: members_to_wire(&r.members) }
    }
}

impl TryFrom<pb::Roster> for Roster {
    type Error = ImError;

    fn try_from(r: pb::Roster) -> Result<Self, ImError> {
        let group = r.group.ok_or_else(|| ImError::invalid("a roster without its group"))?.try_into()?;
        if r.version == 0 {
            return Err(ImError::invalid("roster version 0: a group starts at version 1"));
        }
        Ok(Roster { group, version: r.version, members: members_from_wire(r.members)? })
    }
}

impl From<&MembershipChange> for pb::MembershipChange {
    fn from(c: &MembershipChange) -> Self {
        let kind = match &c.kind {
            ChangeKind::Created(members) => Kind::Created(pb::MemberList { members: members_to_wire(members) }),
            ChangeKind::Joined(members) => Kind::Joined(pb::MemberList { members: members_to_wire(members) }),
            ChangeKind::Left(users) => Kind::Left(pb::UserList { users: users_to_wire(users) }),
            ChangeKind::RoleChanged(user, role) => {
                Kind::RoleChanged(pb::SetRole { user: user.0, role: role_to_pb(*role) })
            }
        };
        pb::MembershipChange { group: c.group.0, version: c.version, kind: Some(kind) }
    }
}

impl TryFrom<pb::MembershipChange> for MembershipChange {
    type Error = ImError;

    fn try_from(c: pb::MembershipChange) -> Result<Self, ImError> {
        let group = group_id(c.group)?;
        if c.version == 0 {
            return Err(ImError::invalid("membership change version 0: versions start at 1"));
        }
        let kind = match c.kind.ok_or_else(|| ImError::invalid("a membership change without a kind"))? {
            Kind::Created(list) => ChangeKind::Created(members_from_wire(list.members)?),
            Kind::Joined(list) => ChangeKind::Joined(members_from_wire(list.members)?),
            Kind::Left(list) => ChangeKind::Left(users_from_wire(list.users)?),
            Kind::RoleChanged(set) => ChangeKind::RoleChanged(user_id(set.user)?, role_from_pb(set.role)?),
        };
        Ok(MembershipChange { group, version: c.version, kind })
    }
}

/// The payload of a `membership_change` record.
pub fn encode_membership_change(change: &MembershipChange) -> Bytes {
    pb::MembershipChange::from(change).encode_to_vec().into()
}

/// A `membership_change` payload back in domain terms; bytes that are not a
/// `MembershipChange`, or one no directory could have applied, are
/// `INVALID_ARGUMENT`.
pub fn decode_membership_change(payload: &[u8]) -> Result<MembershipChange, ImError> {
    let change = pb::MembershipChange::decode(payload)
        .map_err(|e| ImError::invalid(format!("not an im.user.v1.MembershipChange: {e}")))?;
    change.try_into()
}

/// `user`'s groups, with their membership in each.
pub fn group_memberships(groups: &[(Group, Member)]) -> pb::GroupMemberships {
    pb::GroupMemberships {
        groups: groups
            .iter()
            .map(|(group, member)| pb::GroupMembership { group: Some(group.into()), member: Some(member.into()) })
            .collect(),
    }
}

/// [`group_memberships`] back in domain terms.
pub fn from_group_memberships(list: pb::GroupMemberships) -> Result<Vec<(Group, Member)>, ImError> {
    list.groups
        .into_iter()
        .map(|entry| {
            let group = entry.group.ok_or_else(|| ImError::invalid("a group membership without its group"))?;
            let member = entry.member.ok_or_else(|| ImError::invalid("a group membership without the member"))?;
            Ok((group.try_into()?, member.try_into()?))
        })
        .collect()
}

impl From<&MembershipOp> for Op {
    fn from(op: &MembershipOp) -> Self {
        match op {
            MembershipOp::Add(users) => Op::Add(pb::UserList { users: users_to_wire(users) }),
            MembershipOp::Remove(user) => Op::Remove(user.0),
            MembershipOp::Leave => Op::Leave(pb::Leave {}),
            MembershipOp::SetRole(user, role) => Op::SetRole(pb::SetRole { user: user.0, role: role_to_pb(*role) }),
        }
    }
}

impl TryFrom<Op> for MembershipOp {
    type Error = ImError;

    fn try_from(op: Op) -> Result<Self, ImError> {
        Ok(match op {
            Op::Add(list) => MembershipOp::Add(users_from_wire(list.users)?),
            Op::Remove(user) => MembershipOp::Remove(user_id(user)?),
            Op::Leave(pb::Leave {}) => MembershipOp::Leave,
            Op::SetRole(set) => MembershipOp::SetRole(user_id(set.user)?, role_from_pb(set.role)?),
        })
    }
}

/// A change asked of the directory: `op` by `actor` in `group`, joiners at
/// `boundary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRequest {
    pub group: GroupId,
    pub actor: UserId,
    pub op: MembershipOp,
    pub boundary: Seq,
}

impl From<&ChangeRequest> for pb::ChangeMembershipRequest {
    fn from(r: &ChangeRequest) -> Self {
        pb::ChangeMembershipRequest {
            group: r.group.0,
            actor: r.actor.0,
            boundary: r.boundary.0,
            op: Some((&r.op).into()),
        }
    }
}

impl TryFrom<pb::ChangeMembershipRequest> for ChangeRequest {
    type Error = ImError;

    fn try_from(r: pb::ChangeMembershipRequest) -> Result<Self, ImError> {
        let op = r.op.ok_or_else(|| ImError::invalid("set one of add, remove, leave, set_role"))?;
        Ok(ChangeRequest {
            group: group_id(r.group)?,
            actor: user_id(r.actor)?,
            op: op.try_into()?,
            boundary: Seq(r.boundary),
        })
    }
}

/// A group to create, as the directory is asked. The creation time is not on
/// the wire: the directory stamps its own clock.
impl From<&NewGroup> for pb::CreateGroupRequest {
    fn from(g: &NewGroup) -> Self {
        pb::CreateGroupRequest {
            owner: g.owner.0,
            name: g.name.clone(),
            members: users_to_wire(&g.members),
            history_visible: g.history_visible,
        }
    }
}

/// A `CreateGroupRequest` in domain terms, created at `created_at_ms`.
pub fn new_group(r: pb::CreateGroupRequest, created_at_ms: i64) -> Result<NewGroup, ImError> {
    Ok(NewGroup {
        name: r.name,
        owner: user_id(r.owner)?,
        members: users_from_wire(r.members)?,
        history_visible: r.history_visible,
        created_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::ErrorCode;

    fn group() -> Group {
        Group { id: GroupId(4), name: "friends".into(), owner: UserId(1), history_visible: true, created_at_ms: 77 }
    }

    fn members() -> Vec<Member> {
        vec![
            Member { user: UserId(1), role: Role::Owner, joined_after: Seq::ZERO },
            Member { user: UserId(2), role: Role::Admin, joined_after: Seq(3) },
            Member { user: UserId(3), role: Role::Member, joined_after: Seq(9) },
        ]
    }

    fn invalid<T: std::fmt::Debug>(result: Result<T, ImError>) -> bool {
        result.unwrap_err().code == ErrorCode::InvalidArgument
    }

    #[test]
    fn roles_round_trip_and_unknown_ones_are_refused() {
        for role in [Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(role_from_pb(role_to_pb(role)).unwrap(), role);
        }
        assert!(invalid(role_from_pb(0)));
        assert!(invalid(role_from_pb(42)));
    }

    #[test]
    fn rosters_round_trip() {
        let roster = Roster { group: group(), version: 5, members: members() };
        assert_eq!(Roster::try_from(pb::Roster::from(&roster)).unwrap(), roster);

        assert!(invalid(Roster::try_from(pb::Roster { group: None, ..pb::Roster::from(&roster) })));
        let mut unknown_role = pb::Roster::from(&roster);
        unknown_role.members[1].role = 9;
        assert!(invalid(Roster::try_from(unknown_role)));
    }

    #[test]
    fn every_change_kind_round_trips_through_the_record() {
        let kinds = [
            ChangeKind::Created(members()),
            ChangeKind::Joined(members()[1..].to_vec()),
            ChangeKind::Left(vec![UserId(2), UserId(3)]),
            ChangeKind::RoleChanged(UserId(3), Role::Admin),
        ];
        for (version, kind) in (1..).zip(kinds) {
            let change = MembershipChange { group: GroupId(4), version, kind };
            assert_eq!(decode_membership_change(&encode_membership_change(&change)).unwrap(), change);
        }
    }

    #[test]
    fn impossible_changes_are_refused() {
        let change = MembershipChange { group: GroupId(4), version: 2, kind: ChangeKind::Left(vec![UserId(2)]) };
        let wire = pb::MembershipChange::from(&change);
        let encode = |c: pb::MembershipChange| c.encode_to_vec();

        assert!(invalid(decode_membership_change(&encode(pb::MembershipChange { group: 0, ..wire.clone() }))));
        assert!(invalid(decode_membership_change(&encode(pb::MembershipChange { version: 0, ..wire.clone() }))));
        assert!(invalid(decode_membership_change(&encode(pb::MembershipChange { kind: None, ..wire.clone() }))));
        let bad_role =
            pb::MembershipChange { kind: Some(Kind::RoleChanged(pb::SetRole { user: 2, role: 0 })), ..wire.clone() };
        assert!(invalid(decode_membership_change(&encode(bad_role))));
        let bad_member = pb::MembershipChange {
            kind: Some(Kind::Joined(pb::MemberList { members: vec![pb::Member::default()] })),
            ..wire
        };
        assert!(invalid(decode_membership_change(&encode(bad_member))));
        assert!(invalid(decode_membership_change(b"\xff\xff not protobuf")));
    }

    #[test]
    fn group_memberships_round_trip() {
        let list: Vec<_> = members().into_iter().map(|m| (group(), m)).collect();
        assert_eq!(from_group_memberships(group_memberships(&list)).unwrap(), list);
        let missing = pb::GroupMemberships { groups: vec![pb::GroupMembership { group: None, member: None }] };
        assert!(invalid(from_group_memberships(missing)));
    }

    #[test]
    fn change_requests_round_trip_for_every_op() {
        let ops = [
            MembershipOp::Add(vec![UserId(5), UserId(6)]),
            MembershipOp::Remove(UserId(5)),
            MembershipOp::Leave,
            MembershipOp::SetRole(UserId(6), Role::Admin),
        ];
        for op in ops {
            let request = ChangeRequest { group: GroupId(4), actor: UserId(1), op, boundary: Seq(12) };
            let wire = pb::ChangeMembershipRequest::from(&request);
            assert_eq!(ChangeRequest::try_from(wire).unwrap(), request);
        }
        let no_op = pb::ChangeMembershipRequest { group: 4, actor: 1, boundary: 0, op: None };
        assert!(invalid(ChangeRequest::try_from(no_op)));
    }

    #[test]
    fn create_requests_round_trip_but_for_the_time() {
        let group = NewGroup {
            name: "friends".into(),
            owner: UserId(1),
            members: vec![UserId(2), UserId(3)],
            history_visible: true,
            created_at_ms: 0,
        };
        let wire = pb::CreateGroupRequest::from(&group);
        assert_eq!(new_group(wire, 99).unwrap(), NewGroup { created_at_ms: 99, ..group });
        assert!(invalid(new_group(pb::CreateGroupRequest::default(), 0)));
    }
}
