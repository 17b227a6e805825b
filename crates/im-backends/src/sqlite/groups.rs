//! `GroupStore` over the `groups` and `group_members` tables. What a create
//! or a change does is in [`crate::sql::groups`]; this module reads and
//! writes the rows. Every write is one `BEGIN IMMEDIATE` transaction on the store's
//! single writer connection, so changes to a group are serialized (with each
//! other and with every other write) and read what the previous one wrote.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use async_trait::async_trait;
use im_core::group::{Group, Member, MembershipChange, MembershipOp, NewGroup, Role, Roster};
use im_core::ports::{BackendResult, GroupStore};
use im_core::{GroupId, ImError, Seq, UserId};
use sqlx::SqliteConnection;

use super::SqliteStore;
use super::columns::{from_column, seq_from_column, to_bound, to_column};
use super::error::map_sqlx;
use crate::sql::groups::{self, GroupRows, role_from_column, users_of_new_group};
use crate::sql::{MultiRow, chunks};

struct GroupStatements {
    known_users: MultiRow,
    members_among: MultiRow,
    insert_members: MultiRow,
}

/// The same texts for every store, so built once per process.
static STATEMENTS: LazyLock<GroupStatements> = LazyLock::new(|| GroupStatements {
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

type GroupColumns = (i64, String, i64, bool, i64);
type MemberColumns = (i64, String, i64);

fn group_from_columns((id, name, owner, history_visible, created_at_ms): GroupColumns) -> BackendResult<Group> {
    Ok(Group {
        id: GroupId(from_column(id, "group id")?),
        name,
        owner: UserId(from_column(owner, "owner")?),
        history_visible,
        created_at_ms,
    })
}

fn member_from_columns((user, role, joined_after): MemberColumns) -> BackendResult<Member> {
    Ok(Member {
        user: UserId(from_column(user, "user id")?),
        role: role_from_column(&role)?,
        joined_after: seq_from_column(joined_after)?,
    })
}

/// The rows of groups inside one open transaction of the writer connection.
struct Rows<'c>(&'c mut SqliteConnection);

fn id_column(group: GroupId) -> BackendResult<i64> {
    to_column(group.0, "group id")
}

fn user_column(user: UserId) -> BackendResult<i64> {
    to_column(user.0, "user id")
}

impl GroupRows for Rows<'_> {
    async fn known_users(&mut self, users: &[UserId]) -> BackendResult<HashSet<UserId>> {
        let mut known = HashSet::with_capacity(users.len());
        for range in chunks(users.len()) {
            let chunk = &users[range];
            let mut select = sqlx::query_as::<_, (i64,)>(STATEMENTS.known_users.sql(chunk.len()));
            for user in chunk {
                // Past the column range: no such user, but still a value.
                select = select.bind(to_bound(user.0));
            }
            for (id,) in select.fetch_all(&mut *self.0).await.map_err(map_sqlx)? {
                known.insert(UserId(from_column(id, "user id")?));
            }
        }
        Ok(known)
    }

    async fn insert_group(&mut self, group: &NewGroup) -> BackendResult<GroupId> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO groups (name, owner, history_visible, created_at_ms, version) VALUES (?, ?, ?, ?, 1) \
             RETURNING id",
        )
        .bind(&group.name)
        .bind(user_column(group.owner)?)
        .bind(group.history_visible)
        .bind(group.created_at_ms)
        .fetch_one(&mut *self.0)
        .await
        .map_err(map_sqlx)?;
        Ok(GroupId(from_column(id, "group id")?))
    }

    async fn lock_group(&mut self, group: GroupId) -> BackendResult<Option<(u64, usize)>> {
        // The transaction already holds the write lock (BEGIN IMMEDIATE).
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT version, (SELECT COUNT(*) FROM group_members WHERE group_id = groups.id) FROM groups WHERE id = ?",
        )
        .bind(to_bound(group.0))
        .fetch_optional(&mut *self.0)
        .await
        .map_err(map_sqlx)?;
        row.map(|(version, size)| {
            Ok((from_column(version, "group version")?, from_column(size, "member count")? as usize))
        })
        .transpose()
    }

    async fn members_among(&mut self, group: GroupId, users: &[UserId]) -> BackendResult<HashMap<UserId, Member>> {
        let mut members = HashMap::with_capacity(users.len());
        for range in chunks(users.len()) {
            let chunk = &users[range];
            let mut select =
                sqlx::query_as::<_, MemberColumns>(STATEMENTS.members_among.sql(chunk.len())).bind(id_column(group)?);
            for user in chunk {
                select = select.bind(to_bound(user.0));
            }
            for columns in select.fetch_all(&mut *self.0).await.map_err(map_sqlx)? {
                let member = member_from_columns(columns)?;
                members.insert(member.user, member);
            }
        }
        Ok(members)
    }

    async fn insert_members(&mut self, group: GroupId, members: &[Member]) -> BackendResult<()> {
        let group = id_column(group)?;
        let rows = members
            .iter()
            .map(|m| Ok((user_column(m.user)?, m.role.as_str(), to_column(m.joined_after.0, "boundary")?)))
            .collect::<BackendResult<Vec<_>>>()?;
        for range in chunks(rows.len()) {
            let chunk = &rows[range];
            let mut insert = sqlx::query(STATEMENTS.insert_members.sql(chunk.len()));
            for (user, role, joined_after) in chunk {
                insert = insert.bind(group).bind(*user).bind(*role).bind(*joined_after);
            }
            insert.execute(&mut *self.0).await.map_err(map_sqlx)?;
        }
        Ok(())
    }

    async fn delete_member(&mut self, group: GroupId, user: UserId) -> BackendResult<()> {
        sqlx::query("DELETE FROM group_members WHERE group_id = ? AND user_id = ?")
            .bind(id_column(group)?)
            .bind(user_column(user)?)
            .execute(&mut *self.0)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    async fn set_role(&mut self, group: GroupId, user: UserId, role: Role) -> BackendResult<()> {
        sqlx::query("UPDATE group_members SET role = ? WHERE group_id = ? AND user_id = ?")
            .bind(role.as_str())
            .bind(id_column(group)?)
            .bind(user_column(user)?)
            .execute(&mut *self.0)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    async fn set_version(&mut self, group: GroupId, version: u64) -> BackendResult<()> {
        sqlx::query("UPDATE groups SET version = ? WHERE id = ?")
            .bind(to_column(version, "group version")?)
            .bind(id_column(group)?)
            .execute(&mut *self.0)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }
}

#[async_trait]
impl GroupStore for SqliteStore {
    /// Creates a group at version 1: the owner with role owner, `members`
    /// (other than the owner, repeats ignored) as members, all with boundary
    /// 0. Unknown users are a typed refusal.
    async fn create_group(&self, group: &NewGroup) -> BackendResult<Result<Roster, ImError>> {
        let users = match users_of_new_group(group) {
            Ok(users) => users,
            Err(refusal) => return Ok(Err(refusal)),
        };
        // IMMEDIATE: the write lock up front (see `messages.rs`). Every early
        // return drops `tx`, which rolls back.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(map_sqlx)?;
        let created = groups::create(&mut Rows(&mut tx), group, &users).await?;
        if created.is_ok() {
            tx.commit().await.map_err(map_sqlx)?;
        }
        Ok(created)
    }

    /// The group and its members at one version, in one consistent read.
    async fn roster(&self, group: GroupId) -> BackendResult<Option<Roster>> {
        // One statement is one snapshot: the members are those of `version`.
        let rows: Vec<(String, i64, bool, i64, i64, Option<i64>, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT g.name, g.owner, g.history_visible, g.created_at_ms, g.version, \
                    m.user_id, m.role, m.joined_after \
             FROM groups g LEFT JOIN group_members m ON m.group_id = g.id \
             WHERE g.id = ? ORDER BY m.user_id",
        )
        .bind(to_bound(group.0))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        let Some((name, owner, history_visible, created_at_ms, version, ..)) = rows.first().cloned() else {
            return Ok(None);
        };
        let group = group_from_columns((to_bound(group.0), name, owner, history_visible, created_at_ms))?;
        let members = rows
            .into_iter()
            .filter_map(|(.., user, role, joined_after)| Some((user?, role?, joined_after?)))
            .map(member_from_columns)
            .collect::<BackendResult<Vec<_>>>()?;
        Ok(Some(Roster { group, version: from_column(version, "group version")?, members }))
    }

    /// The groups `user` is a member of, with their membership, by group id.
    async fn groups_of(&self, user: UserId) -> BackendResult<Vec<(Group, Member)>> {
        let rows: Vec<(i64, String, i64, bool, i64, i64, String, i64)> = sqlx::query_as(
            "SELECT g.id, g.name, g.owner, g.history_visible, g.created_at_ms, m.user_id, m.role, m.joined_after \
             FROM group_members m JOIN groups g ON g.id = m.group_id \
             WHERE m.user_id = ? ORDER BY m.group_id",
        )
        .bind(to_bound(user.0))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.into_iter()
            .map(|(id, name, owner, history_visible, created_at_ms, user, role, joined_after)| {
                Ok((
                    group_from_columns((id, name, owner, history_visible, created_at_ms))?,
                    member_from_columns((user, role, joined_after))?,
                ))
            })
            .collect()
    }

    /// Applies `op` by `actor` in one transaction: the rule is checked
    /// against the stored roles (a refusal changes nothing), joiners get
    /// `boundary` (`im_core::group::join_boundary` of the current seq), the
    /// version moves up by one. `max_members` bounds the group's size.
    /// Adding only users already in changes nothing and is refused as
    /// `FAILED_PRECONDITION`; unknown users and groups are `NOT_FOUND`.
    async fn change_membership(
        &self,
        group: GroupId,
        actor: UserId,
        op: &MembershipOp,
        boundary: Seq,
        max_members: usize,
    ) -> BackendResult<Result<MembershipChange, ImError>> {
        // Reads and writes under the write lock: no other change of the
        // group comes between them.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(map_sqlx)?;
        let changed = groups::change(&mut Rows(&mut tx), group, actor, op, boundary, max_members).await?;
        if changed.is_ok() {
            tx.commit().await.map_err(map_sqlx)?;
        }
        Ok(changed)
    }
}
