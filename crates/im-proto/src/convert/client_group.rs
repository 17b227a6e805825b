//! Groups as the client protocol (`im.client.v1`) shows them: a browser
//! manages its groups over its WebSocket, with the same rules as
//! `im.v1.GroupService`.

use im_core::group::{Group, Member, Role, Roster};
use im_core::message::ReadStatus;
use im_core::{GroupId, Seq};

use crate::client as pb;

fn client_role(role: Role) -> pb::GroupRole {
    match role {
        Role::Member => pb::GroupRole::Member,
        Role::Admin => pb::GroupRole::Admin,
        Role::Owner => pb::GroupRole::Owner,
    }
}

fn client_group(group: &Group) -> pb::GroupInfo {
    pb::GroupInfo {
        group_id: group.id.0,
        name: group.name.clone(),
        owner: group.owner.0,
        history_visible: group.history_visible,
        created_at_ms: group.created_at_ms,
    }
}

fn client_member(member: &Member) -> pb::GroupMember {
    pb::GroupMember { user: member.user.0, role: client_role(member.role) as i32 }
}

/// A group and its members (the answer to `create_group` and `list_members`).
pub fn client_roster(roster: &Roster) -> pb::GroupRoster {
    pb::GroupRoster {
        group: Some(client_group(&roster.group)),
        version: roster.version,
        members: roster.members.iter().map(client_member).collect(),
    }
}

/// A user's groups with the user's role in each (`list_groups`).
pub fn client_group_list(groups: &[(Group, Member)]) -> pb::GroupList {
    pb::GroupList {
        groups: groups
            .iter()
            .map(|(group, member)| pb::GroupMembership {
                group: Some(client_group(group)),
                role: client_role(member.role) as i32,
            })
            .collect(),
    }
}

/// Who read a group message (`read_status`).
pub fn client_read_status(group: GroupId, seq: Seq, status: &ReadStatus) -> pb::GroupReadStatus {
    pb::GroupReadStatus {
        group_id: group.0,
        seq: seq.0,
        read_count: status.read_count,
        readers: status.readers.iter().map(|user| user.0).collect(),
        detailed: status.detailed,
    }
}

#[cfg(test)]
mod tests {
    use im_core::UserId;

    use super::*;

    #[test]
    fn a_roster_keeps_its_group_version_and_roles() {
        let roster = Roster {
            group: Group {
                id: GroupId(4),
                name: "trip".into(),
                owner: UserId(1),
                history_visible: true,
                created_at_ms: 9,
            },
            version: 3,
            members: vec![
                Member { user: UserId(1), role: Role::Owner, joined_after: Seq::ZERO },
                Member { user: UserId(2), role: Role::Admin, joined_after: Seq(5) },
                Member { user: UserId(3), role: Role::Member, joined_after: Seq(5) },
            ],
        };
        let wire = client_roster(&roster);
        let group = wire.group.unwrap();
        assert_eq!((group.group_id, group.name.as_str(), group.owner, group.history_visible), (4, "trip", 1, true));
        assert_eq!(group.created_at_ms, 9);
        assert_eq!(wire.version, 3);
        let roles: Vec<_> = wire.members.iter().map(|m| (m.user, m.role())).collect();
        assert_eq!(roles, [(1, pb::GroupRole::Owner), (2, pb::GroupRole::Admin), (3, pb::GroupRole::Member)]);
    }

    #[test]
    fn read_status_names_its_message() {
        let status = ReadStatus { read_count: 2, readers: vec![UserId(2), UserId(3)], detailed: true };
        let wire = client_read_status(GroupId(4), Seq(7), &status);
        assert_eq!((wire.group_id, wire.seq, wire.read_count, wire.detailed), (4, 7, 2, true));
        assert_eq!(wire.readers, [2, 3]);
    }
}
