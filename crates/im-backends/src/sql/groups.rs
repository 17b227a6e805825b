//! What the SQL group stores do alike: which users a create or a change
//! names, whether a change is allowed (`im_core::group::authorize` against
//! the rows read under the group's lock), what it writes, and in which order
//! (`create`, `change`); the statements both dialects run, and how rows read
//! back become groups, members and rosters ([`Columns`]). The stores only
//! bind, read and write rows, through [`GroupRows`].

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use im_core::error::BackendError;
use im_core::group::{
    ChangeKind, Group, Member, MembershipChange, MembershipOp, NewGroup, Role, Roster, authorize, check_name,
    check_user_count,
};
use im_core::ports::BackendResult;
use im_core::{ErrorCode, GroupId, ImError, Seq, UserId};

use super::MultiRow;

/// The multi-row statements of [`GroupRows`], alike in both dialects.
pub(crate) struct GroupStatements {
    pub known_users: MultiRow,
    pub members_among: MultiRow,
    pub insert_members: MultiRow,
}

/// The same texts for every store, so built once per process.
pub(crate) static STATEMENTS: LazyLock<GroupStatements> = LazyLock::new(|| GroupStatements {
    known_users: MultiRow::new("SELECT id FROM users WHERE id IN (", "?", ",", ")"),
    members_among: MultiRow::new(
        "SELECT user_id, role, joined_after FROM group_members WHERE group_id = ? AND user_id IN (",
        "?",
        ",",
        ")",
    ),
    insert_members: MultiRow::new(
        "INSERT INTO group_members (group_id, user_id, role, joined_after) VALUES",
        "(?,?,?,?)",
        ",",
        "",
    ),
});

// The single statements both dialects run. `groups` is quoted: it is a
// reserved word in MySQL 8, and SQLite takes MySQL's quotes.

/// A group and its members, [`RosterRow`]s: one statement, so one
/// consistent read (the members are those of the version read).
pub(crate) const SELECT_ROSTER: &str = "SELECT g.name, g.owner, g.history_visible, g.created_at_ms, g.version, \
            m.user_id, m.role, m.joined_after \
     FROM `groups` g LEFT JOIN group_members m ON m.group_id = g.id \
     WHERE g.id = ? ORDER BY m.user_id";

/// A user's groups with the membership, [`MembershipRow`]s, by group id.
pub(crate) const SELECT_GROUPS_OF: &str = "SELECT g.id, g.name, g.owner, g.history_visible, g.created_at_ms, \
            m.user_id, m.role, m.joined_after \
     FROM group_members m JOIN `groups` g ON g.id = m.group_id \
     WHERE m.user_id = ? ORDER BY m.group_id";

pub(crate) const DELETE_MEMBER: &str = "DELETE FROM group_members WHERE group_id = ? AND user_id = ?";

pub(crate) const SET_ROLE: &str = "UPDATE group_members SET role = ? WHERE group_id = ? AND user_id = ?";

pub(crate) const SET_VERSION: &str = "UPDATE `groups` SET version = ? WHERE id = ?";

/// How a dialect's columns hold what the group tables store; the rest of
/// reading rows back is the same for both ([`roster_from_rows`] and the like).
pub(crate) trait Columns {
    /// Ids, seqs and versions as read: `BIGINT UNSIGNED` (u64) on MySQL,
    /// i64 on SQLite.
    type Int: Clone;
    /// Names and roles as read: bytes on MySQL (binary collation), `String`
    /// on SQLite.
    type Text: Clone;

    /// An id, seq or version read back, `what` naming it in the error.
    fn int(value: Self::Int, what: &str) -> Result<u64, BackendError>;

    /// A name or role read back, `what` naming it in the error.
    fn text(value: Self::Text, what: &str) -> Result<String, BackendError>;
}

/// `groups` columns: id, name, owner, history_visible, created_at_ms.
type GroupColumns<C> = (<C as Columns>::Int, <C as Columns>::Text, <C as Columns>::Int, bool, i64);

/// `group_members` columns: user_id, role, joined_after.
pub(crate) type MemberColumns<C> = (<C as Columns>::Int, <C as Columns>::Text, <C as Columns>::Int);

/// A row of [`SELECT_ROSTER`]: the group's name, owner, history_visible,
/// created_at_ms and version, then a member's columns (none for a group
/// without members).
pub(crate) type RosterRow<C> = (
    <C as Columns>::Text,
    <C as Columns>::Int,
    bool,
    i64,
    <C as Columns>::Int,
    Option<<C as Columns>::Int>,
    Option<<C as Columns>::Text>,
    Option<<C as Columns>::Int>,
);

/// A row of [`SELECT_GROUPS_OF`]: the group's columns, then the member's.
pub(crate) type MembershipRow<C> = (
    <C as Columns>::Int,
    <C as Columns>::Text,
    <C as Columns>::Int,
    bool,
    i64,
    <C as Columns>::Int,
    <C as Columns>::Text,
    <C as Columns>::Int,
);

fn group_from_columns<C: Columns>(
    (id, name, owner, history_visible, created_at_ms): GroupColumns<C>,
) -> Result<Group, BackendError> {
    Ok(Group {
        id: GroupId(C::int(id, "group id")?),
        name: C::text(name, "group name")?,
        owner: UserId(C::int(owner, "owner")?),
        history_visible,
        created_at_ms,
    })
}

pub(crate) fn member_from_columns<C: Columns>(
    (user, role, joined_after): MemberColumns<C>,
) -> Result<Member, BackendError> {
    Ok(Member {
        user: UserId(C::int(user, "user id")?),
        role: role_from_column(&C::text(role, "group role")?)?,
        joined_after: Seq(C::int(joined_after, "seq")?),
    })
}

/// The roster of group `id` (as bound in [`SELECT_ROSTER`]) from the rows
/// read; `None` without rows: there is no such group.
pub(crate) fn roster_from_rows<C: Columns>(id: C::Int, rows: Vec<RosterRow<C>>) -> BackendResult<Option<Roster>> {
    let Some((name, owner, history_visible, created_at_ms, version, ..)) = rows.first().cloned() else {
        return Ok(None);
    };
    let group = group_from_columns::<C>((id, name, owner, history_visible, created_at_ms))?;
    let members = rows
        .into_iter()
        .filter_map(|(.., user, role, joined_after)| Some((user?, role?, joined_after?)))
        .map(member_from_columns::<C>)
        .collect::<BackendResult<Vec<_>>>()?;
    Ok(Some(Roster { group, version: C::int(version, "group version")?, members }))
}

/// A user's groups and memberships from the rows of [`SELECT_GROUPS_OF`].
pub(crate) fn memberships_from_rows<C: Columns>(rows: Vec<MembershipRow<C>>) -> BackendResult<Vec<(Group, Member)>> {
    rows.into_iter()
        .map(|(id, name, owner, history_visible, created_at_ms, user, role, joined_after)| {
            Ok((
                group_from_columns::<C>((id, name, owner, history_visible, created_at_ms))?,
                member_from_columns::<C>((user, role, joined_after))?,
            ))
        })
        .collect()
}

/// The row reads and writes of a create or a change, inside one open
/// transaction of a store.
pub(crate) trait GroupRows {
    /// Which of `users` the directory has.
    async fn known_users(&mut self, users: &[UserId]) -> BackendResult<HashSet<UserId>>;

    /// Stores a new group at version 1 and returns its id.
    async fn insert_group(&mut self, group: &NewGroup) -> BackendResult<GroupId>;

    /// Locks `group` against other changes until the transaction ends and
    /// returns its version and member count, as of after the lock was
    /// granted; `None` if there is no such group.
    async fn lock_group(&mut self, group: GroupId) -> BackendResult<Option<(u64, usize)>>;

    /// The memberships in `group` of those of `users` who are members.
    async fn members_among(&mut self, group: GroupId, users: &[UserId]) -> BackendResult<HashMap<UserId, Member>>;

    async fn insert_members(&mut self, group: GroupId, members: &[Member]) -> BackendResult<()>;

    async fn delete_member(&mut self, group: GroupId, user: UserId) -> BackendResult<()>;

    async fn set_role(&mut self, group: GroupId, user: UserId, role: Role) -> BackendResult<()>;

    async fn set_version(&mut self, group: GroupId, version: u64) -> BackendResult<()>;
}

/// Creates `group` with `users` (from [`users_of_new_group`]) in the open
/// transaction of `rows`. On a refusal nothing was written; the caller
/// commits only on `Ok(Ok(_))`.
pub(crate) async fn create(
    rows: &mut impl GroupRows,
    group: &NewGroup,
    users: &[UserId],
) -> BackendResult<Result<Roster, ImError>> {
    if let Err(refusal) = check_known(users, &rows.known_users(users).await?) {
        return Ok(Err(refusal));
    }
    let roster = new_roster(rows.insert_group(group).await?, group, users);
    rows.insert_members(roster.group.id, &roster.members).await?;
    Ok(Ok(roster))
}

/// Applies `op` by `actor` in the open transaction of `rows`: locks the
/// group, reads what the rule needs, decides, writes and bumps the version.
/// On a refusal nothing was written; the caller commits only on `Ok(Ok(_))`.
pub(crate) async fn change(
    rows: &mut impl GroupRows,
    group: GroupId,
    actor: UserId,
    op: &MembershipOp,
    boundary: Seq,
    max_members: usize,
) -> BackendResult<Result<MembershipChange, ImError>> {
    let Some((version, size)) = rows.lock_group(group).await? else { return Ok(Err(unknown_group(group))) };
    let stored = Stored { version, size, members: rows.members_among(group, &users_to_read(actor, op)).await? };
    let decision = match decide(group, actor, op, &stored, boundary, max_members) {
        Ok(decision) => decision,
        Err(refusal) => return Ok(Err(refusal)),
    };
    match &decision.write {
        Write::Insert(joiners) => {
            // After the rule: who may not add learns nothing about who exists.
            let users: Vec<UserId> = joiners.iter().map(|m| m.user).collect();
            if let Err(refusal) = check_known(&users, &rows.known_users(&users).await?) {
                return Ok(Err(refusal));
            }
            rows.insert_members(group, joiners).await?;
        }
        Write::Delete(user) => rows.delete_member(group, *user).await?,
        Write::SetRole(user, role) => rows.set_role(group, *user, *role).await?,
    }
    rows.set_version(group, decision.change.version).await?;
    Ok(Ok(decision.change))
}

/// The users a create names: the owner first, then the members in the order
/// given, without repeats and without the owner. Refuses a bad name or too
/// many users (counted as asked, repeats included) before anything is read.
pub(crate) fn users_of_new_group(group: &NewGroup) -> Result<Vec<UserId>, ImError> {
    check_name(&group.name)?;
    check_user_count(group.members.len())?;
    Ok(distinct(std::iter::once(group.owner).chain(group.members.iter().copied())))
}

/// `users` in first-seen order, each once.
fn distinct(users: impl IntoIterator<Item = UserId>) -> Vec<UserId> {
    let mut seen = HashSet::new();
    users.into_iter().filter(|user| seen.insert(*user)).collect()
}

/// The refusal for the first of `users` the directory does not have.
fn check_known(users: &[UserId], known: &HashSet<UserId>) -> Result<(), ImError> {
    match users.iter().find(|user| !known.contains(user)) {
        Some(user) => Err(ImError::not_found(format!("user {user} does not exist"))),
        None => Ok(()),
    }
}

/// The roster of a group just created from `users` (as from
/// [`users_of_new_group`]): the owner, everyone else a member, all with
/// boundary 0, by user id as a stored roster is read.
fn new_roster(id: GroupId, group: &NewGroup, users: &[UserId]) -> Roster {
    let mut members: Vec<Member> = users
        .iter()
        .map(|&user| Member {
            user,
            role: if user == group.owner { Role::Owner } else { Role::Member },
            joined_after: Seq::ZERO,
        })
        .collect();
    members.sort_by_key(|member| member.user);
    Roster {
        group: Group {
            id,
            name: group.name.clone(),
            owner: group.owner,
            history_visible: group.history_visible,
            created_at_ms: group.created_at_ms,
        },
        version: 1,
        members,
    }
}

/// The users whose membership a change by `actor` depends on: the actor, and
/// whom the op is about.
fn users_to_read(actor: UserId, op: &MembershipOp) -> Vec<UserId> {
    match op {
        MembershipOp::Add(users) => distinct(std::iter::once(actor).chain(users.iter().copied())),
        MembershipOp::Remove(user) | MembershipOp::SetRole(user, _) => distinct([actor, *user]),
        MembershipOp::Leave => vec![actor],
    }
}

/// What a group holds, as read under the lock that serializes its changes.
#[derive(Debug)]
struct Stored {
    version: u64,
    /// How many members the group has.
    size: usize,
    /// The memberships of the users of [`users_to_read`], where they are
    /// members.
    members: HashMap<UserId, Member>,
}

/// A row change, in the terms of the `group_members` table.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Write {
    /// New rows, for users that must be in `users` ([`change`] checks).
    Insert(Vec<Member>),
    Delete(UserId),
    SetRole(UserId, Role),
}

/// An allowed change: the rows to write (then bump the version), and the
/// change to report.
#[derive(Debug)]
struct Decision {
    write: Write,
    change: MembershipChange,
}

/// Decides `op` by `actor` on `group` as `stored`: the refusal, which
/// changes nothing, or what to write. Joiners get `boundary`.
fn decide(
    group: GroupId,
    actor: UserId,
    op: &MembershipOp,
    stored: &Stored,
    boundary: Seq,
    max_members: usize,
) -> Result<Decision, ImError> {
    let member = |user: UserId| stored.members.get(&user);
    let (target, size_after, write) = match op {
        MembershipOp::Add(users) => {
            let joiners: Vec<Member> = distinct(users.iter().copied())
                .into_iter()
                .filter(|&user| member(user).is_none())
                .map(|user| Member { user, role: Role::Member, joined_after: boundary })
                .collect();
            (None, stored.size + joiners.len(), Write::Insert(joiners))
        }
        MembershipOp::Remove(user) => (member(*user), stored.size.saturating_sub(1), Write::Delete(*user)),
        MembershipOp::Leave => (None, stored.size.saturating_sub(1), Write::Delete(actor)),
        MembershipOp::SetRole(user, role) => (member(*user), stored.size, Write::SetRole(*user, *role)),
    };
    // A non-member learns no more than about a group that does not exist.
    let Some(acting) = member(actor) else { return Err(unknown_group(group)) };
    authorize(Some(acting), op, target, size_after, max_members)?;
    let kind = match &write {
        Write::Insert(joiners) if joiners.is_empty() => {
            return Err(ImError::new(ErrorCode::FailedPrecondition, "every user named is already a member"));
        }
        Write::Insert(joiners) => ChangeKind::Joined(joiners.clone()),
        Write::Delete(user) => ChangeKind::Left(vec![*user]),
        // A change that changes nothing is refused as an add of members
        // already in is: it would only make every cache reload.
        Write::SetRole(user, role) if target.is_some_and(|t| t.role == *role) => {
            return Err(ImError::new(ErrorCode::FailedPrecondition, format!("user {user} is already {role}")));
        }
        Write::SetRole(user, role) => ChangeKind::RoleChanged(*user, *role),
    };
    Ok(Decision { write, change: MembershipChange { group, version: stored.version + 1, kind } })
}

/// The refusal for a group the store does not have, or the caller is not
/// a member of: the same words.
fn unknown_group(group: GroupId) -> ImError {
    im_core::group::not_visible(group)
}

/// A stored role. Anything else means the row was written by something else.
fn role_from_column(text: &str) -> Result<Role, BackendError> {
    Role::parse(text).map_err(|_| BackendError::Other(format!("stored group role {text:?} is unknown")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: u64, role: Role) -> (UserId, Member) {
        (UserId(user), Member { user: UserId(user), role, joined_after: Seq::ZERO })
    }

    fn stored(members: &[(UserId, Member)], size: usize) -> Stored {
        Stored { version: 4, size, members: members.iter().copied().collect() }
    }

    fn new_group(owner: u64, members: &[u64]) -> NewGroup {
        NewGroup {
            name: "friends".into(),
            owner: UserId(owner),
            members: members.iter().copied().map(UserId).collect(),
            history_visible: false,
            created_at_ms: 1,
        }
    }

    #[test]
    fn a_new_group_names_the_owner_first_and_everyone_once() {
        let users = users_of_new_group(&new_group(5, &[3, 5, 9, 3])).unwrap();
        assert_eq!(users, vec![UserId(5), UserId(3), UserId(9)]);
        assert_eq!(
            users_of_new_group(&NewGroup { name: " ".into(), ..new_group(1, &[]) }).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let roster = new_roster(GroupId(2), &new_group(5, &[3, 9]), &users);
        let roles: Vec<(u64, Role)> = roster.members.iter().map(|m| (m.user.0, m.role)).collect();
        assert_eq!(roles, vec![(3, Role::Member), (5, Role::Owner), (9, Role::Member)]);
        assert_eq!(roster.version, 1);
    }

    #[test]
    fn the_first_unknown_user_is_named() {
        let known: HashSet<UserId> = [UserId(1), UserId(3)].into();
        assert!(check_known(&[UserId(1), UserId(3)], &known).is_ok());
        let refusal = check_known(&[UserId(1), UserId(7), UserId(8)], &known).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::NotFound);
        assert!(refusal.message.contains('7'), "{refusal:?}");
    }

    #[test]
    fn adds_skip_members_and_stamp_the_boundary() {
        let members = [member(1, Role::Owner), member(2, Role::Member)];
        let op = MembershipOp::Add(vec![UserId(2), UserId(3), UserId(3)]);
        let decision = decide(GroupId(8), UserId(1), &op, &stored(&members, 2), Seq(40), 10).unwrap();
        let joined = vec![Member { user: UserId(3), role: Role::Member, joined_after: Seq(40) }];
        assert_eq!(decision.write, Write::Insert(joined.clone()));
        assert_eq!(
            decision.change,
            MembershipChange { group: GroupId(8), version: 5, kind: ChangeKind::Joined(joined) }
        );

        let nothing_new = MembershipOp::Add(vec![UserId(2), UserId(1)]);
        let refusal = decide(GroupId(8), UserId(1), &nothing_new, &stored(&members, 2), Seq(40), 10).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::FailedPrecondition);
        // The size counts only who would join.
        let full = decide(GroupId(8), UserId(1), &op, &stored(&members, 2), Seq(40), 2).unwrap_err();
        assert_eq!(full.code, ErrorCode::ResourceExhausted);
        assert!(decide(GroupId(8), UserId(1), &op, &stored(&members, 2), Seq(40), 3).is_ok());
    }

    #[test]
    fn leaving_and_removing_report_who_left() {
        let members = [member(1, Role::Owner), member(2, Role::Admin), member(3, Role::Member)];
        let leave = decide(GroupId(8), UserId(3), &MembershipOp::Leave, &stored(&members, 3), Seq(0), 10).unwrap();
        assert_eq!(leave.write, Write::Delete(UserId(3)));
        assert_eq!(leave.change.kind, ChangeKind::Left(vec![UserId(3)]));
        let remove = MembershipOp::Remove(UserId(3));
        let removed = decide(GroupId(8), UserId(2), &remove, &stored(&members, 3), Seq(0), 10).unwrap();
        assert_eq!(removed.change.kind, ChangeKind::Left(vec![UserId(3)]));
        let not_in = decide(GroupId(8), UserId(7), &remove, &stored(&members, 3), Seq(0), 10).unwrap_err();
        assert_eq!(not_in, unknown_group(GroupId(8)), "an outsider hears what an absent group says");
    }

    #[test]
    fn a_role_change_must_change_the_role() {
        let members = [member(1, Role::Owner), member(2, Role::Admin)];
        let promote = MembershipOp::SetRole(UserId(2), Role::Admin);
        let refusal = decide(GroupId(8), UserId(1), &promote, &stored(&members, 2), Seq(0), 10).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::FailedPrecondition);
        let demote = MembershipOp::SetRole(UserId(2), Role::Member);
        let decision = decide(GroupId(8), UserId(1), &demote, &stored(&members, 2), Seq(0), 10).unwrap();
        assert_eq!(decision.change.kind, ChangeKind::RoleChanged(UserId(2), Role::Member));
    }

    #[test]
    fn the_users_read_are_the_actor_and_the_target() {
        let add = MembershipOp::Add(vec![UserId(4), UserId(1), UserId(4)]);
        assert_eq!(users_to_read(UserId(1), &add), vec![UserId(1), UserId(4)]);
        assert_eq!(users_to_read(UserId(1), &MembershipOp::Remove(UserId(2))), vec![UserId(1), UserId(2)]);
        assert_eq!(users_to_read(UserId(1), &MembershipOp::Leave), vec![UserId(1)]);
        assert!(role_from_column("king").is_err());
    }
}
