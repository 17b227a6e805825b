//! Groups (DESIGN.md G6): roles, who may change the membership, and which
//! messages a member sees.
//!
//! The boundaries are seqs of the group's own timeline, stamped when the
//! change is made: a member who joined at boundary `B` sees the messages with
//! seq > `B` (all of them when the group shows history to newcomers). The
//! IM service takes `B` from its seq allocator (`SeqAllocator::current_seq`):
//! every seq handed out before the change is ≤ `B`, every seq handed out
//! after it is > `B`, so "from the join on" is exact on every node. A member
//! who left is no longer a member and sees nothing: the group's messages are
//! not theirs to read any more.

use std::fmt;

use crate::{GroupId, ImError, Seq, UserId};

/// Longest group name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most users one add (or a create) may name.
pub const MAX_USERS_PER_CHANGE: usize = 10_000;
/// Default for `group.max_members` (`GROUP_MAX_MEMBERS`).
pub const DEFAULT_MAX_MEMBERS: usize = 10_000;
/// Default for `group.read_receipt_details_max`: groups up to this size tell
/// who read a message, larger ones only how many.
pub const DEFAULT_READ_RECEIPT_DETAILS_MAX: usize = 100;

/// What a member may do. Only the owner and admins change the membership of
/// others; the owner cannot be removed, and cannot leave (there is always an
/// owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Result<Self, ImError> {
        match text {
            "member" => Ok(Self::Member),
            "admin" => Ok(Self::Admin),
            "owner" => Ok(Self::Owner),
            other => Err(ImError::invalid(format!("unknown role {other:?}: member, admin or owner"))),
        }
    }

    /// The owner and admins manage the membership.
    pub fn manages(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub owner: UserId,
    /// Newcomers see the messages from before they joined.
    pub history_visible: bool,
    pub created_at_ms: i64,
}

/// One member of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub user: UserId,
    pub role: Role,
    /// The member sees the group's messages with seq > `joined_after`.
    pub joined_after: Seq,
}

impl Member {
    /// Whether the message with `seq` is this member's to receive and sync.
    pub fn sees(&self, seq: Seq) -> bool {
        seq > self.joined_after
    }
}

/// A group's membership as of `version`. Every change bumps the version by
/// one, so a cache that applies changes in version order knows when it missed
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    pub group: Group,
    pub version: u64,
    pub members: Vec<Member>,
}

/// A group to create: `owner` becomes its owner, `members` plain members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGroup {
    pub name: String,
    pub owner: UserId,
    pub members: Vec<UserId>,
    pub history_visible: bool,
    pub created_at_ms: i64,
}

/// A change asked for by a member (`actor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipOp {
    /// Adds users as plain members (those already in are left as they are).
    Add(Vec<UserId>),
    /// Removes another member.
    Remove(UserId),
    /// The actor leaves.
    Leave,
    /// Makes a member an admin, or an admin a member.
    SetRole(UserId, Role),
}

/// A change as it was applied, at `version`: what `membership_change`
/// carries and every node's cache applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    pub group: GroupId,
    pub version: u64,
    pub kind: ChangeKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// The group was created (version 1) with these members, owner included.
    Created(Vec<Member>),
    /// These users joined.
    Joined(Vec<Member>),
    /// These users left or were removed.
    Left(Vec<UserId>),
    /// A member's role changed.
    RoleChanged(UserId, Role),
}

impl Roster {
    pub fn member(&self, user: UserId) -> Option<&Member> {
        self.members.iter().find(|m| m.user == user)
    }

    /// Applies a change that follows this roster (`change.version ==
    /// self.version + 1`); false, and nothing changed, otherwise — the caller
    /// reloads the roster.
    pub fn apply(&mut self, change: &MembershipChange) -> bool {
        if change.group != self.group.id || change.version != self.version + 1 {
            return false;
        }
        match &change.kind {
            ChangeKind::Created(members) => self.members.clone_from(members),
            ChangeKind::Joined(joined) => {
                for member in joined {
                    if self.member(member.user).is_none() {
                        self.members.push(*member);
                    }
                }
            }
            ChangeKind::Left(users) => self.members.retain(|m| !users.contains(&m.user)),
            ChangeKind::RoleChanged(user, role) => {
                if let Some(member) = self.members.iter_mut().find(|m| m.user == *user) {
                    member.role = *role;
                }
            }
        }
        self.version = change.version;
        true
    }
}

/// Checks a group name.
/// The one answer for a group that does not exist and for one the caller is
/// not a member of: which of the two it is must not leak (group ids are
/// sequential, so telling them apart would list every group).
pub fn not_visible(group: GroupId) -> ImError {
    ImError::not_found(format!("group {group} does not exist, or you are not a member of it"))
}

pub fn check_name(name: &str) -> Result<(), ImError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ImError::invalid(format!("a group name is 1 to {MAX_NAME_LEN} bytes, not blank")));
    }
    if name.chars().any(char::is_control) {
        return Err(ImError::invalid("a group name has no control characters"));
    }
    Ok(())
}

/// Checks how many users one create or add names.
pub fn check_user_count(count: usize) -> Result<(), ImError> {
    if count > MAX_USERS_PER_CHANGE {
        return Err(ImError::exhausted(format!("{count} users in one request; at most {MAX_USERS_PER_CHANGE}")));
    }
    Ok(())
}

/// Who may do what (G6, G7). `actor` is the member asking (`None` when not a
/// member), `target` the member the op is about (`None` when not a member);
/// `size_after` is the membership count if the op succeeds. Returns the
/// error to answer with, which changes nothing.
pub fn authorize(
    actor: Option<&Member>,
    op: &MembershipOp,
    target: Option<&Member>,
    size_after: usize,
    max_members: usize,
) -> Result<(), ImError> {
    let Some(actor) = actor else {
        // As for a group that does not exist (see `not_visible`); callers
        // that know the group answer with its id.
        return Err(ImError::not_found("the group does not exist, or you are not a member of it"));
    };
    match op {
        MembershipOp::Add(users) => {
            if !actor.role.manages() {
                return Err(ImError::denied("only the owner and admins add members"));
            }
            check_user_count(users.len())?;
            if size_after > max_members {
                return Err(ImError::exhausted(format!(
                    "the group would have {size_after} members; the limit is {max_members} (GROUP_MAX_MEMBERS)"
                )));
            }
            Ok(())
        }
        MembershipOp::Remove(user) => {
            if *user == actor.user {
                return Err(ImError::invalid("to remove yourself, leave the group"));
            }
            if !actor.role.manages() {
                return Err(ImError::denied("only the owner and admins remove members"));
            }
            let target = target.ok_or_else(|| ImError::not_found(format!("user {user} is not a member")))?;
            match target.role {
                Role::Owner => Err(ImError::denied("the owner cannot be removed")),
                Role::Admin if actor.role != Role::Owner => Err(ImError::denied("only the owner removes an admin")),
                _ => Ok(()),
            }
        }
        MembershipOp::Leave => {
            if actor.role == Role::Owner {
                return Err(ImError::new(
                    crate::ErrorCode::FailedPrecondition,
                    "the owner cannot leave the group (a group always has its owner)",
                ));
            }
            Ok(())
        }
        MembershipOp::SetRole(user, role) => {
            if actor.role != Role::Owner {
                return Err(ImError::denied("only the owner changes roles"));
            }
            if *role == Role::Owner {
                return Err(ImError::invalid("a group has one owner; make the member an admin"));
            }
            let target = target.ok_or_else(|| ImError::not_found(format!("user {user} is not a member")))?;
            if target.role == Role::Owner {
                return Err(ImError::invalid("the owner's role does not change"));
            }
            Ok(())
        }
    }
}

/// The boundary a joiner gets: everything when the group shows history,
/// otherwise only what comes after `current` (the allocator's current seq).
pub fn join_boundary(group: &Group, current: Seq) -> Seq {
    if group.history_visible { Seq::ZERO } else { current }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn member(user: u64, role: Role) -> Member {
        Member { user: UserId(user), role, joined_after: Seq::ZERO }
    }

    fn code(result: Result<(), ImError>) -> Option<ErrorCode> {
        result.err().map(|e| e.code)
    }

    #[test]
    fn only_owner_and_admins_add_and_the_size_is_bounded() {
        let add = MembershipOp::Add(vec![UserId(9)]);
        assert_eq!(code(authorize(Some(&member(1, Role::Owner)), &add, None, 3, 10)), None);
        assert_eq!(code(authorize(Some(&member(2, Role::Admin)), &add, None, 3, 10)), None);
        assert_eq!(
            code(authorize(Some(&member(3, Role::Member)), &add, None, 3, 10)),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(code(authorize(None, &add, None, 3, 10)), Some(ErrorCode::NotFound), "as an absent group");
        assert_eq!(
            code(authorize(Some(&member(1, Role::Owner)), &add, None, 11, 10)),
            Some(ErrorCode::ResourceExhausted)
        );
    }

    #[test]
    fn removal_rules() {
        let owner = member(1, Role::Owner);
        let admin = member(2, Role::Admin);
        let plain = member(3, Role::Member);
        let remove = |user: u64| MembershipOp::Remove(UserId(user));
        assert_eq!(code(authorize(Some(&admin), &remove(3), Some(&plain), 2, 10)), None);
        assert_eq!(code(authorize(Some(&owner), &remove(2), Some(&admin), 2, 10)), None);
        assert_eq!(code(authorize(Some(&admin), &remove(1), Some(&owner), 2, 10)), Some(ErrorCode::PermissionDenied));
        let other_admin = member(4, Role::Admin);
        assert_eq!(
            code(authorize(Some(&admin), &remove(4), Some(&other_admin), 2, 10)),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(code(authorize(Some(&plain), &remove(2), Some(&admin), 2, 10)), Some(ErrorCode::PermissionDenied));
        assert_eq!(code(authorize(Some(&owner), &remove(7), None, 2, 10)), Some(ErrorCode::NotFound));
        assert_eq!(code(authorize(Some(&admin), &remove(2), Some(&admin), 2, 10)), Some(ErrorCode::InvalidArgument));
    }

    #[test]
    fn everyone_but_the_owner_may_leave() {
        assert_eq!(code(authorize(Some(&member(3, Role::Member)), &MembershipOp::Leave, None, 1, 10)), None);
        assert_eq!(code(authorize(Some(&member(2, Role::Admin)), &MembershipOp::Leave, None, 1, 10)), None);
        assert_eq!(
            code(authorize(Some(&member(1, Role::Owner)), &MembershipOp::Leave, None, 1, 10)),
            Some(ErrorCode::FailedPrecondition)
        );
        assert_eq!(code(authorize(None, &MembershipOp::Leave, None, 1, 10)), Some(ErrorCode::NotFound));
    }

    #[test]
    fn only_the_owner_sets_roles_and_there_is_one_owner() {
        let owner = member(1, Role::Owner);
        let plain = member(3, Role::Member);
        let promote = MembershipOp::SetRole(UserId(3), Role::Admin);
        assert_eq!(code(authorize(Some(&owner), &promote, Some(&plain), 2, 10)), None);
        assert_eq!(
            code(authorize(Some(&member(2, Role::Admin)), &promote, Some(&plain), 2, 10)),
            Some(ErrorCode::PermissionDenied)
        );
        let crown = MembershipOp::SetRole(UserId(3), Role::Owner);
        assert_eq!(code(authorize(Some(&owner), &crown, Some(&plain), 2, 10)), Some(ErrorCode::InvalidArgument));
        let demote_owner = MembershipOp::SetRole(UserId(1), Role::Member);
        assert_eq!(code(authorize(Some(&owner), &demote_owner, Some(&owner), 2, 10)), Some(ErrorCode::InvalidArgument));
    }

    #[test]
    fn a_member_sees_only_what_follows_the_join() {
        let joined = Member { user: UserId(5), role: Role::Member, joined_after: Seq(10) };
        assert!(!joined.sees(Seq(10)));
        assert!(joined.sees(Seq(11)));
        let group =
            Group { id: GroupId(1), name: "g".into(), owner: UserId(1), history_visible: false, created_at_ms: 0 };
        assert_eq!(join_boundary(&group, Seq(10)), Seq(10));
        assert_eq!(join_boundary(&Group { history_visible: true, ..group }, Seq(10)), Seq::ZERO);
    }

    #[test]
    fn rosters_apply_changes_in_version_order_only() {
        let group =
            Group { id: GroupId(1), name: "g".into(), owner: UserId(1), history_visible: false, created_at_ms: 0 };
        let mut roster = Roster { group, version: 1, members: vec![member(1, Role::Owner)] };
        let join = MembershipChange {
            group: GroupId(1),
            version: 2,
            kind: ChangeKind::Joined(vec![Member { user: UserId(2), role: Role::Member, joined_after: Seq(4) }]),
        };
        assert!(roster.apply(&join));
        assert_eq!(roster.member(UserId(2)).unwrap().joined_after, Seq(4));
        assert!(!roster.apply(&join), "an old change is not applied twice");
        let skipped = MembershipChange { group: GroupId(1), version: 4, kind: ChangeKind::Left(vec![UserId(2)]) };
        assert!(!roster.apply(&skipped), "a gap: the caller reloads");
        assert!(roster.member(UserId(2)).is_some());
        let promote =
            MembershipChange { group: GroupId(1), version: 3, kind: ChangeKind::RoleChanged(UserId(2), Role::Admin) };
        assert!(roster.apply(&promote));
        let leave = MembershipChange { group: GroupId(1), version: 4, kind: ChangeKind::Left(vec![UserId(2)]) };
        assert!(roster.apply(&leave));
        assert!(roster.member(UserId(2)).is_none());
        assert_eq!(roster.version, 4);
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("friends").is_ok());
        assert!(check_name("  ").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("a\nb").is_err());
        assert_eq!(check_user_count(MAX_USERS_PER_CHANGE + 1).unwrap_err().code, ErrorCode::ResourceExhausted);
    }
}
