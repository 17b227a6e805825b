//! What the `group` commands print: a JSON shape per answer (`--json`) and
//! the text people read. The text is made from the JSON shape, so both
//! always say the same; users in it are shown by name and id (`alice (1)`),
//! the names those of [`Named::users`] looked up in the user directory.

use anyhow::Context;
use im_proto::message::ReadStatus;
use im_proto::user::{self, membership_change::Kind};
use serde::Serialize;

use super::table;
use crate::users::Names;

/// An answer that names users: which ones (to look their names up), and
/// where their names go in its JSON.
pub trait Named {
    /// Every user the answer names.
    fn users(&self) -> Vec<u64>;
    /// Puts the names found into the JSON shape (users shown as objects get
    /// a `name`; null when it could not be found).
    fn add_names(&mut self, names: &Names);
}

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
    /// Null until [`Named::add_names`], or when the user directory did not say.
    pub name: Option<String>,
    pub role: &'static str,
    /// The member sees the group's messages with a seq above this.
    pub joined_after: u64,
}

impl From<&user::Member> for MemberJson {
    fn from(m: &user::Member) -> Self {
        Self { user: m.user, name: None, role: role_name(m.role), joined_after: m.joined_after }
    }
}

fn members(list: &[user::Member]) -> Vec<MemberJson> {
    list.iter().map(MemberJson::from).collect()
}

fn name_members(members: &mut [MemberJson], names: &Names) {
    for m in members {
        m.name = names.get(m.user).map(str::to_owned);
    }
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

    /// The group, then a table of its members; a name that could not be
    /// found is `?` (no user name has one).
    pub fn text(&self, names: &Names) -> String {
        let g = &self.group;
        let history = if g.history_visible { "see the history" } else { "see messages from their join on" };
        let mut s = format!(
            "group {} {:?}: owner {}, {} member(s), version {}; newcomers {history}\n",
            g.id,
            g.name,
            names.label(g.owner),
            self.members.len(),
            self.version
        );
        let rows = self.members.iter().map(|m| {
            let name = m.name.as_deref().unwrap_or("?");
            vec![m.user.to_string(), name.to_owned(), m.role.into(), m.joined_after.to_string()]
        });
        s.push_str(&table(&["USER", "NAME", "ROLE", "SEES AFTER SEQ"], rows));
        s
    }
}

impl Named for RosterJson<'_> {
    fn users(&self) -> Vec<u64> {
        std::iter::once(self.group.owner).chain(self.members.iter().map(|m| m.user)).collect()
    }

    fn add_names(&mut self, names: &Names) {
        name_members(&mut self.members, names);
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
        /// Null until [`Named::add_names`], or when the user directory did not say.
        name: Option<String>,
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
            Some(Kind::RoleChanged(r)) => {
                ChangeKindJson::RoleChanged { user: r.user, name: None, role: role_name(r.role) }
            }
            None => ChangeKindJson::Other,
        };
        Self { group: c.group, version: c.version, kind }
    }
}

impl ChangeJson {
    pub fn text(&self, names: &Names) -> String {
        let what = match &self.kind {
            ChangeKindJson::Created { members } => format!("created with {} member(s)", members.len()),
            ChangeKindJson::Joined { members } if members.is_empty() => "nobody added".into(),
            ChangeKindJson::Joined { members } => {
                let boundary = members[0].joined_after;
                if members.iter().all(|m| m.joined_after == boundary) {
                    let users: Vec<u64> = members.iter().map(|m| m.user).collect();
                    format!("added {}; they see messages after seq {boundary}", list(&users, names))
                } else {
                    let each: Vec<String> = members
                        .iter()
                        .map(|m| format!("{} who sees after seq {}", names.label(m.user), m.joined_after))
                        .collect();
                    format!("added {}", each.join(", "))
                }
            }
            ChangeKindJson::Left { users } if users.len() == 1 => {
                format!("{} is no longer a member", names.label(users[0]))
            }
            ChangeKindJson::Left { users } => format!("{} are no longer members", list(users, names)),
            ChangeKindJson::RoleChanged { user, role, .. } => format!("{} is now {role}", names.label(*user)),
            ChangeKindJson::Other => "changed".into(),
        };
        format!("group {} (version {}): {what}\n", self.group, self.version)
    }
}

impl Named for ChangeJson {
    fn users(&self) -> Vec<u64> {
        match &self.kind {
            ChangeKindJson::Created { members } | ChangeKindJson::Joined { members } => {
                members.iter().map(|m| m.user).collect()
            }
            ChangeKindJson::Left { users } => users.clone(),
            ChangeKindJson::RoleChanged { user, .. } => vec![*user],
            ChangeKindJson::Other => Vec::new(),
        }
    }

    fn add_names(&mut self, names: &Names) {
        match &mut self.kind {
            ChangeKindJson::Created { members } | ChangeKindJson::Joined { members } => name_members(members, names),
            ChangeKindJson::RoleChanged { user, name, .. } => *name = names.get(*user).map(str::to_owned),
            // A list of ids keeps its shape.
            ChangeKindJson::Left { .. } | ChangeKindJson::Other => {}
        }
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

    pub fn text(&self, names: &Names) -> String {
        let who = match (self.detailed, self.readers.is_empty()) {
            (true, false) => format!(": {}", list(&self.readers, names)),
            (true, true) => String::new(),
            (false, _) => " (the group is too large for the server to say who)".into(),
        };
        format!("seq {} in group {}: read by {} member(s){who}\n", self.seq, self.group, self.read_count)
    }
}

impl Named for ReadStatusJson {
    fn users(&self) -> Vec<u64> {
        self.readers.clone()
    }

    /// `readers` is a list of ids and keeps its shape.
    fn add_names(&mut self, _: &Names) {}
}

fn list(ids: &[u64], names: &Names) -> String {
    ids.iter().map(|&id| names.label(id)).collect::<Vec<_>>().join(", ")
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

    /// The directory knows users 1 (alice) and 4 (dave), not the others.
    fn names() -> Names {
        [(1, "alice".to_owned()), (4, "dave".to_owned())].into_iter().collect()
    }

    #[test]
    fn roster_json_and_text() {
        let r = roster();
        let mut shown = RosterJson::of(&r).unwrap();
        assert_eq!(shown.users(), [1, 1, 12], "the owner, then the members");
        shown.add_names(&names());
        assert_eq!(
            serde_json::to_value(&shown).unwrap(),
            json!({"id": 7, "name": "team", "owner": 1, "history_visible": false, "created_at_ms": 1_700_000_000_000_i64,
                   "version": 3, "members": [{"user": 1, "name": "alice", "role": "owner", "joined_after": 0},
                                             {"user": 12, "name": null, "role": "member", "joined_after": 40}]})
        );
        assert_eq!(
            shown.text(&names()),
            "group 7 \"team\": owner alice (1), 2 member(s), version 3; newcomers see messages from their join on\n\
             USER  NAME   ROLE    SEES AFTER SEQ\n\
             1     alice  owner   0\n\
             12    ?      member  40\n"
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
        let mut shown = ChangeJson::from(&joined);
        assert_eq!(shown.users(), [4, 5]);
        shown.add_names(&names());
        assert_eq!(
            serde_json::to_value(&shown).unwrap(),
            json!({"group": 7, "version": 4, "change": "joined", "members": [
                {"user": 4, "name": "dave", "role": "member", "joined_after": 12},
                {"user": 5, "name": null, "role": "member", "joined_after": 12}]})
        );
        assert_eq!(
            shown.text(&names()),
            "group 7 (version 4): added dave (4), user 5; they see messages after seq 12\n"
        );
        let apart = change(Kind::Joined(user::MemberList {
            members: vec![member(4, user::Role::Member, 12), member(5, user::Role::Member, 3)],
        }));
        assert_eq!(
            ChangeJson::from(&apart).text(&names()),
            "group 7 (version 4): added dave (4) who sees after seq 12, user 5 who sees after seq 3\n"
        );

        let mut left = ChangeJson::from(&change(Kind::Left(user::UserList { users: vec![4] })));
        assert_eq!(left.users(), [4]);
        left.add_names(&names());
        assert_eq!(
            serde_json::to_value(&left).unwrap(),
            json!({"group": 7, "version": 4, "change": "left", "users": [4]}),
            "a list of ids keeps its shape"
        );
        assert_eq!(left.text(&names()), "group 7 (version 4): dave (4) is no longer a member\n");
        let both = ChangeJson::from(&change(Kind::Left(user::UserList { users: vec![4, 5] })));
        assert_eq!(both.text(&names()), "group 7 (version 4): dave (4), user 5 are no longer members\n");

        let role = change(Kind::RoleChanged(user::SetRole { user: 4, role: user::Role::Admin as i32 }));
        let mut role = ChangeJson::from(&role);
        role.add_names(&names());
        assert_eq!(
            serde_json::to_value(&role).unwrap(),
            json!({"group": 7, "version": 4, "change": "role_changed", "user": 4, "name": "dave", "role": "admin"})
        );
        assert_eq!(role.text(&names()), "group 7 (version 4): dave (4) is now admin\n");

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

        let detailed = ReadStatusJson::of(7, 5, &ReadStatus { read_count: 2, readers: vec![4, 9], detailed: true });
        assert_eq!(detailed.users(), [4, 9]);
        assert_eq!(detailed.text(&names()), "seq 5 in group 7: read by 2 member(s): dave (4), user 9\n");
        let counted = ReadStatus { read_count: 300, readers: vec![], detailed: false };
        let shown = ReadStatusJson::of(7, 5, &counted);
        let text = shown.text(&Names::default());
        assert!(text.contains("read by 300 member(s) (the group is too large"), "{text}");
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
