//! `GroupStore` over the `groups` and `group_members` tables. What a create
//! or a change does is in [`crate::sql::groups`]; this module reads and
//! writes the rows. Every write is one `BEGIN IMMEDIATE` transaction on the store's
//! single writer connection, so changes to a group are serialized (with each
//! other and with every other write) and read what the previous one wrote.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::group::{Group, Member, MembershipChange, MembershipOp, NewGroup, Role, Roster};
use im_core::ports::{BackendResult, GroupStore};
use im_core::{GroupId, ImError, Seq, UserId};
use sqlx::SqliteConnection;

use super::SqliteStore;
use super::columns::{from_column, to_bound, to_column};
use super::error::map_sqlx;
use super::messages::SqliteQuery;
use crate::sql::chunks;
use crate::sql::groups::{
    self, Columns, GroupRows, MemberColumns, MembershipRow, RosterRow, STATEMENTS, member_from_columns,
    memberships_from_rows, roster_from_rows, users_of_new_group,
};

impl Columns for SqliteStore {
    type Int = i64;
    type Text = String;

    fn int(value: i64, what: &str) -> Result<u64, BackendError> {
        from_column(value, what)
    }

    fn text(value: String, _: &str) -> Result<String, BackendError> {
        Ok(value)
    }
}

/// The rows of groups inside one open transaction of the writer connection.
struct Rows<'c>(&'c mut SqliteConnection);

impl Rows<'_> {
    /// Runs a statement that returns no rows.
    async fn execute(&mut self, statement: SqliteQuery<'_>) -> BackendResult<()> {
        statement.execute(&mut *self.0).await.map_err(map_sqlx)?;
        Ok(())
    }
}

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
            let mut select = sqlx::query_as::<_, MemberColumns<SqliteStore>>(STATEMENTS.members_among.sql(chunk.len()))
                .bind(id_column(group)?);
            for user in chunk {
                select = select.bind(to_bound(user.0));
            }
            for columns in select.fetch_all(&mut *self.0).await.map_err(map_sqlx)? {
                let member = member_from_columns::<SqliteStore>(columns)?;
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
        self.execute(sqlx::query(groups::DELETE_MEMBER).bind(id_column(group)?).bind(user_column(user)?)).await
    }

    async fn set_role(&mut self, group: GroupId, user: UserId, role: Role) -> BackendResult<()> {
        self.execute(sqlx::query(groups::SET_ROLE).bind(role.as_str()).bind(id_column(group)?).bind(user_column(user)?))
            .await
    }

    async fn set_version(&mut self, group: GroupId, version: u64) -> BackendResult<()> {
        self.execute(
            sqlx::query(groups::SET_VERSION).bind(to_column(version, "group version")?).bind(id_column(group)?),
        )
        .await
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
        // IMMEDIATE: the write lock up front (see `Writer`). Every early
        // return drops `tx`, which rolls back.
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin_immediate().await?;
        let created = groups::create(&mut Rows(&mut tx), group, &users).await?;
        if created.is_ok() {
            tx.commit().await.map_err(map_sqlx)?;
        }
        Ok(created)
    }

    /// The group and its members at one version, in one consistent read.
    async fn roster(&self, group: GroupId) -> BackendResult<Option<Roster>> {
        // One statement is one snapshot: the members are those of `version`.
        let rows: Vec<RosterRow<Self>> = sqlx::query_as(groups::SELECT_ROSTER)
            .bind(to_bound(group.0))
            .fetch_all(&self.reader)
            .await
            .map_err(map_sqlx)?;
        roster_from_rows::<Self>(to_bound(group.0), rows)
    }

    /// The groups `user` is a member of, with their membership, by group id.
    async fn groups_of(&self, user: UserId) -> BackendResult<Vec<(Group, Member)>> {
        let rows: Vec<MembershipRow<Self>> = sqlx::query_as(groups::SELECT_GROUPS_OF)
            .bind(to_bound(user.0))
            .fetch_all(&self.reader)
            .await
            .map_err(map_sqlx)?;
        memberships_from_rows::<Self>(rows)
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
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin_immediate().await?;
        let changed = groups::change(&mut Rows(&mut tx), group, actor, op, boundary, max_members).await?;
        if changed.is_ok() {
            tx.commit().await.map_err(map_sqlx)?;
        }
        Ok(changed)
    }
}
