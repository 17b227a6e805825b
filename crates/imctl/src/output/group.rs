//! What the `group` commands print: a JSON shape per answer (`--json`) and
//! the text people read. The text is made from the JSON shape, so both
//! always say the same.

use anyhow::Context;
use im_proto::message::ReadStatus;
use im_proto::user::{self, membership_change::Kind};
use serde::Serialize;

use super::table;

/// The name of a role on the wire (`ROLE_ADMIN` → `admin`).
pub fn role_name(role: i32) -> &'static str {
    match user::Role::try_from(role) {
        Ok(user::Role::Owner) => "owner",
        Ok(user::Role::Admin) => "admin",
        Ok(user::Role::Member) => "member",
        Ok(user::Role::Unspecified) | Err(_) => "unknown",
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberJson {
    pub user: u64,
    pub role: &'static str,
    /// The member sees the group's messages with a seq above this.
    pub joined_after: u64,
}

impl From<&user::Member> for MemberJson {
    fn from(m: &user::Member) -> Self {
        Self { user: m.user, role: role_name(m.role), joined_after: m.joined_after }
    }
}

fn members(list: &[user::Member]) -> Vec<MemberJson> {
    list.iter().map(MemberJson::from).collect()
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupJson<'a> {
    pub id: u64,
    pub name: &'a str,
    pub owner: u64,
    pub history_visible: bool,
    pub created_at_ms: i64,
}

impl<'a> GroupJson<'a> {
    fn of(group: Option<&'a user::Group>) -> anyhow::Result<Self> {
        let g = group.context("the server's answer has no group")?;
        Ok(Self {
            id: g.id,
            name: &g.name,
            owner: g.owner,
            history_visible: g.history_visible,
            created_at_ms: g.created_at_ms,
        })
    }
}

/// `group create`, `group members`: the group and its members.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RosterJson<'a> {
    #[serde(flatten)]
    pub group: GroupJson<'a>,
    pub version: u64,
    pub members: Vec<MemberJson>,
}

impl<'a> RosterJson<'a> {
    pub fn of(roster: &'a user::Roster) -> anyhow::Result<Self> {
        Ok(Self {
            group: GroupJson::of(roster.group.as_ref())?,
            version: roster.version,
            members: members(&roster.members),
        })
    }

    pub fn text(&self) -> String {
        let g = &self.group;
        let history = if g.history_visible { "see the history" } else { "see messages from their join on" };
        let mut s = format!(
            "group {} {:?}: owner {}, {} member(s), version {}; newcomers {history}\n",
            g.id,
            g.name,
            g.owner,
            self.members.len(),
            self.version
        );
        let rows = self.members.iter().map(|m| vec![m.user.to_string(), m.role.into(), m.joined_after.to_string()]);
        s.push_str(&table(&["USER", "ROLE", "SEES AFTER SEQ"], rows));
        s
    }
}

/// What a change did, by kind (`"change"` in JSON).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ChangeKindJson {
    Created {
        members: Vec<MemberJson>,
    },
    Joined {
        members: Vec<MemberJson>,
    },
    Left {
        users: Vec<u64>,
    },
    RoleChanged {
        user: u64,
        role: &'static str,
    },
    /// A kind this imctl does not know (a newer server).
    Other,
}

/// `group add|remove|leave|role`: the change as applied.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChangeJson {
    pub group: u64,
    /// The group's version after the change.
    pub version: u64,
    #[serde(flatten)]
    pub kind: ChangeKindJson,
}

impl From<&user::MembershipChange> for ChangeJson {
    fn from(c: &user::MembershipChange) -> Self {
        let kind = match &c.kind {
            Some(Kind::Created(list)) => ChangeKindJson::Created { members: members(&list.members) },
            Some(Kind::Joined(list)) => ChangeKindJson::Joined { members: members(&list.members) },
            Some(Kind::Left(list)) => ChangeKindJson::Left { users: list.users.clone() },
            Some(Kind::RoleChanged(r)) => ChangeKindJson::RoleChanged { user: r.user, role: role_name(r.role) },
            None => ChangeKindJson::Other,
        };
        Self { group: c.group, version: c.version, kind }
    }
}

impl ChangeJson {
    pub fn text(&self) -> String {
        let what = match &self.kind {
            ChangeKindJson::Created { members } => format!("created with {} member(s)", members.len()),
            ChangeKindJson::Joined { members } if members.is_empty() => "nobody added".into(),
            ChangeKindJson::Joined { members } => {
                let boundary = members[0].joined_after;
                if members.iter().all(|m| m.joined_after == boundary) {
                    let users: Vec<u64> = members.iter().map(|m| m.user).collect();
                    format!("added {}; they see messages after seq {boundary}", list(&users))
                } else {
                    let each: Vec<String> =
                        members.iter().map(|m| format!("{} (sees after seq {})", m.user, m.joined_after)).collect();
                    format!("added {}", each.join(", "))
                }
            }
            ChangeKindJson::Left { users } if users.len() == 1 => format!("{} is no longer a member", users[0]),
            ChangeKindJson::Left { users } => format!("{} are no longer members", list(users)),
            ChangeKindJson::RoleChanged { user, role } => format!("{user} is now {role}"),
            ChangeKindJson::Other => "changed".into(),
        };
        format!("group {} (version {}): {what}\n", self.group, self.version)
    }
}

/// `group list`: one group of the caller, with the caller's place in it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MembershipJson<'a> {
    #[serde(flatten)]
    pub group: GroupJson<'a>,
    pub role: &'static str,
    pub joined_after: u64,
}

impl<'a> MembershipJson<'a> {
    pub fn of(m: &'a user::GroupMembership) -> anyhow::Result<Self> {
        let member = m.member.as_ref().context("the server's answer has a group without the member")?;
        Ok(Self {
            group: GroupJson::of(m.group.as_ref())?,
            role: role_name(member.role),
            joined_after: member.joined_after,
        })
    }
}

/// `group list` as text: one row per group.
pub fn memberships_text(groups: &[MembershipJson<'_>]) -> String {
    if groups.is_empty() {
        return "you are in no group\n".into();
    }
    let rows = groups.iter().map(|m| vec![m.group.id.to_string(), m.role.into(), m.group.name.to_owned()]);
    table(&["GROUP", "ROLE", "NAME"], rows)
}

/// `group read-status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadStatusJson {
    pub group: u64,
    pub seq: u64,
    pub read_count: u64,
    /// Who read it; empty when `detailed` is false (a group above the server's details limit).
    pub readers: Vec<u64>,
    pub detailed: bool,
}

impl ReadStatusJson {
    pub fn of(group: u64, seq: u64, status: &ReadStatus) -> Self {
        Self { group, seq, read_count: status.read_count, readers: status.readers.clone(), detailed: status.detailed }
    }

    pub fn text(&self) -> String {
        let who = match (self.detailed, self.readers.is_empty()) {
            (true, false) => format!(": {}", list(&self.readers)),
            (true, true) => String::new(),
            (false, _) => " (the group is too large for the server to say who)".into(),
        };
        format!("seq {} in group {}: read by {} member(s){who}\n", self.seq, self.group, self.read_count)
    }
}

fn list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(user: u64, role: user::Role, joined_after: u64) -> user::Member {
        user::Member { user, role: role as i32, joined_after }
    }

    fn roster() -> user::Roster {
        user::Roster {
            group: Some(user::Group {
                id: 7,
                name: "team".into(),
                owner: 1,
                history_visible: false,
                created_at_ms: 1_700_000_000_000,
            }),
            version: 3,
            members: vec![member(1, user::Role::Owner, 0), member(12, user::Role::Member, 40)],
        }
    }

    #[test]
    fn roster_json_and_text() {
        let r = roster();
        let shown = RosterJson::of(&r).unwrap();
        assert_eq!(
            serde_json::to_value(&shown).unwrap(),
            json!({"id": 7, "name": "team", "owner": 1, "history_visible": false, "created_at_ms": 1_700_000_000_000_i64,
                   "version": 3, "members": [{"user": 1, "role": "owner", "joined_after": 0},
                                             {"user": 12, "role": "member", "joined_after": 40}]})
        );
        assert_eq!(
            shown.text(),
            "group 7 \"team\": owner 1, 2 member(s), version 3; newcomers see messages from their join on\n\
             USER  ROLE    SEES AFTER SEQ\n\
             1     owner   0\n\
             12    member  40\n"
        );
        let headless = user::Roster { group: None, ..roster() };
        assert!(RosterJson::of(&headless).unwrap_err().to_string().contains("no group"));
    }

    #[test]
    fn changes_by_kind() {
        let change = |kind| user::MembershipChange { group: 7, version: 4, kind: Some(kind) };
        let joined = change(Kind::Joined(user::MemberList {
            members: vec![member(4, user::Role::Member, 12), member(5, user::Role::Member, 12)],
        }));
        let shown = ChangeJson::from(&joined);
        assert_eq!(serde_json::to_value(&shown).unwrap()["change"], "joined");
        assert_eq!(shown.text(), "group 7 (version 4): added 4, 5; they see messages after seq 12\n");

        let left = ChangeJson::from(&change(Kind::Left(user::UserList { users: vec![4] })));
        assert_eq!(
            serde_json::to_value(&left).unwrap(),
            json!({"group": 7, "version": 4, "change": "left", "users": [4]})
        );
        assert_eq!(left.text(), "group 7 (version 4): 4 is no longer a member\n");

        let role = change(Kind::RoleChanged(user::SetRole { user: 5, role: user::Role::Admin as i32 }));
        let role = ChangeJson::from(&role);
        assert_eq!(
            serde_json::to_value(&role).unwrap(),
            json!({"group": 7, "version": 4, "change": "role_changed", "user": 5, "role": "admin"})
        );
        assert_eq!(role.text(), "group 7 (version 4): 5 is now admin\n");

        let unknown = user::MembershipChange { group: 7, version: 4, kind: None };
        assert_eq!(serde_json::to_value(ChangeJson::from(&unknown)).unwrap()["change"], "other");
    }

    #[test]
    fn memberships_and_read_status() {
        let r = roster();
        let m = user::GroupMembership { group: r.group.clone(), member: Some(member(12, user::Role::Admin, 40)) };
        let shown = MembershipJson::of(&m).unwrap();
        assert_eq!(
            serde_json::to_value(&shown).unwrap(),
            json!({"id": 7, "name": "team", "owner": 1, "history_visible": false,
                   "created_at_ms": 1_700_000_000_000_i64, "role": "admin", "joined_after": 40})
        );
        assert_eq!(memberships_text(&[shown]), "GROUP  ROLE   NAME\n7      admin  team\n");
        assert_eq!(memberships_text(&[]), "you are in no group\n");

        let detailed = ReadStatus { read_count: 2, readers: vec![3, 9], detailed: true };
        assert_eq!(ReadStatusJson::of(7, 5, &detailed).text(), "seq 5 in group 7: read by 2 member(s): 3, 9\n");
        let counted = ReadStatus { read_count: 300, readers: vec![], detailed: false };
        let shown = ReadStatusJson::of(7, 5, &counted);
        assert!(shown.text().contains("read by 300 member(s) (the group is too large"), "{}", shown.text());
        assert_eq!(
            serde_json::to_value(&shown).unwrap(),
            json!({"group": 7, "seq": 5, "read_count": 300, "readers": [], "detailed": false})
        );
    }

    #[test]
    fn unknown_roles_do_not_fail() {
        assert_eq!(role_name(user::Role::Owner as i32), "owner");
        assert_eq!(role_name(0), "unknown");
        assert_eq!(role_name(42), "unknown");
    }
}
