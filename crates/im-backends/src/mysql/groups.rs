//! `GroupStore` over the `groups` and `group_members` tables. What a create
//! or a change does is in [`crate::sql::groups`]; this module reads and
//! writes the rows.
//!
//! A change locks its group's row first (`SELECT ... FOR UPDATE`), so changes
//! of one group run one after the other, and changes of different groups do
//! not wait for each other. The reads that follow are plain (consistent)
//! reads: InnoDB takes a transaction's snapshot at its first consistent read,
//! which comes after the lock is granted, so they see every change committed
//! before this one, and no gap locks are taken that could block inserts into
//! neighbouring groups.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::group::{Group, Member, MembershipChange, MembershipOp, NewGroup, Role, Roster};
use im_core::ports::{BackendResult, GroupStore};
use im_core::{GroupId, ImError, Seq, UserId};
use sqlx::MySqlConnection;

use super::MysqlStore;
use super::columns::{count_from_column, text_from_column};
use super::error::map_sqlx;
use super::messages::MySqlQuery;
use crate::sql::chunks;
use crate::sql::groups::{
    self, Columns, GroupRows, MemberColumns, MembershipRow, RosterRow, STATEMENTS, member_from_columns,
    memberships_from_rows, roster_from_rows, users_of_new_group,
};
use crate::telemetry::DbOperation;
use sqlx::Connection;

impl Columns for MysqlStore {
    type Int = u64;
    type Text = Vec<u8>;

    fn int(value: u64, _: &str) -> Result<u64, BackendError> {
        Ok(value)
    }

    fn text(value: Vec<u8>, what: &str) -> Result<String, BackendError> {
        text_from_column(value, what)
    }
}

/// The rows of groups inside one open transaction.
struct Rows<'c>(&'c mut MySqlConnection);

impl Rows<'_> {
    /// Runs a statement that returns no rows.
    async fn execute(&mut self, statement: MySqlQuery<'_>) -> BackendResult<()> {
        statement.execute(&mut *self.0).await.map_err(map_sqlx)?;
        Ok(())
    }
}

impl GroupRows for Rows<'_> {
    async fn known_users(&mut self, users: &[UserId]) -> BackendResult<HashSet<UserId>> {
        let mut known = HashSet::with_capacity(users.len());
        for range in chunks(users.len()) {
            let chunk = &users[range];
            let mut select = sqlx::query_as::<_, (u64,)>(STATEMENTS.known_users.sql(chunk.len()));
            for user in chunk {
                select = select.bind(user.0);
            }
            let found = select.fetch_all(&mut *self.0).await.map_err(map_sqlx)?;
            known.extend(found.into_iter().map(|(id,)| UserId(id)));
        }
        Ok(known)
    }

    async fn insert_group(&mut self, group: &NewGroup) -> BackendResult<GroupId> {
        // No RETURNING on MySQL: the new id is the statement's AUTO_INCREMENT
        // value, which the server sends back.
        let done = sqlx::query(
            "INSERT INTO `groups` (name, owner, history_visible, created_at_ms, version) VALUES (?, ?, ?, ?, 1)",
        )
        .bind(group.name.as_bytes())
        .bind(group.owner.0)
        .bind(group.history_visible)
        .bind(group.created_at_ms)
        .execute(&mut *self.0)
        .await
        .map_err(map_sqlx)?;
        Ok(GroupId(done.last_insert_id()))
    }

    async fn lock_group(&mut self, group: GroupId) -> BackendResult<Option<(u64, usize)>> {
        let row: Option<(u64,)> = sqlx::query_as("SELECT version FROM `groups` WHERE id = ? FOR UPDATE")
            .bind(group.0)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(map_sqlx)?;
        let Some((version,)) = row else { return Ok(None) };
        // The transaction's first consistent read: its snapshot is taken now,
        // with the lock held (see the module docs).
        let (size,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM group_members WHERE group_id = ?")
            .bind(group.0)
            .fetch_one(&mut *self.0)
            .await
            .map_err(map_sqlx)?;
        Ok(Some((version, count_from_column(size, "member count")? as usize)))
    }

    async fn members_among(&mut self, group: GroupId, users: &[UserId]) -> BackendResult<HashMap<UserId, Member>> {
        let mut members = HashMap::with_capacity(users.len());
        for range in chunks(users.len()) {
            let chunk = &users[range];
            let mut select =
                sqlx::query_as::<_, MemberColumns<MysqlStore>>(STATEMENTS.members_among.sql(chunk.len())).bind(group.0);
            for user in chunk {
                select = select.bind(user.0);
            }
            for columns in select.fetch_all(&mut *self.0).await.map_err(map_sqlx)? {
                let member = member_from_columns::<MysqlStore>(columns)?;
                members.insert(member.user, member);
            }
        }
        Ok(members)
    }

    async fn insert_members(&mut self, group: GroupId, members: &[Member]) -> BackendResult<()> {
        for range in chunks(members.len()) {
            let chunk = &members[range];
            let mut insert = sqlx::query(STATEMENTS.insert_members.sql(chunk.len()));
            for m in chunk {
                insert = insert.bind(group.0).bind(m.user.0).bind(m.role.as_str()).bind(m.joined_after.0);
            }
            insert.execute(&mut *self.0).await.map_err(map_sqlx)?;
        }
        Ok(())
    }

    async fn delete_member(&mut self, group: GroupId, user: UserId) -> BackendResult<()> {
        self.execute(sqlx::query(groups::DELETE_MEMBER).bind(group.0).bind(user.0)).await
    }

    async fn set_role(&mut self, group: GroupId, user: UserId, role: Role) -> BackendResult<()> {
        self.execute(sqlx::query(groups::SET_ROLE).bind(role.as_str()).bind(group.0).bind(user.0)).await
    }

    async fn set_version(&mut self, group: GroupId, version: u64) -> BackendResult<()> {
        self.execute(sqlx::query(groups::SET_VERSION).bind(version).bind(group.0)).await
    }
}

#[async_trait]
impl GroupStore for MysqlStore {
    /// Creates a group at version 1: the owner with role owner, `members`
    /// (other than the owner, repeats ignored) as members, all with boundary
    /// 0. Unknown users are a typed refusal.
    async fn create_group(&self, group: &NewGroup) -> BackendResult<Result<Roster, ImError>> {
        let users = match users_of_new_group(group) {
            Ok(users) => users,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.writing(DbOperation::CreateGroup, async |conn| {
            // Every early return drops `tx`, which rolls back.
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
            let created = groups::create(&mut Rows(&mut tx), group, &users).await?;
            if created.is_ok() {
                tx.commit().await.map_err(map_sqlx)?;
            }
            Ok(created)
        })
        .await
    }

    /// The group and its members at one version, in one consistent read.
    async fn roster(&self, group: GroupId) -> BackendResult<Option<Roster>> {
        // One statement is one consistent read: the members are those of
        // `version`, whatever the isolation level.
        let rows: Vec<RosterRow<Self>> = self
            .reading(DbOperation::Roster, async |conn| {
                sqlx::query_as(groups::SELECT_ROSTER).bind(group.0).fetch_all(&mut *conn).await.map_err(map_sqlx)
            })
            .await?;
        roster_from_rows::<Self>(group.0, rows)
    }

    /// The groups `user` is a member of, with their membership, by group id.
    async fn groups_of(&self, user: UserId) -> BackendResult<Vec<(Group, Member)>> {
        let rows: Vec<MembershipRow<Self>> = self
            .reading(DbOperation::GroupsOf, async |conn| {
                sqlx::query_as(groups::SELECT_GROUPS_OF).bind(user.0).fetch_all(&mut *conn).await.map_err(map_sqlx)
            })
            .await?;
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
        self.writing(DbOperation::ChangeMembership, async |conn| {
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
            let changed = groups::change(&mut Rows(&mut tx), group, actor, op, boundary, max_members).await?;
            if changed.is_ok() {
                tx.commit().await.map_err(map_sqlx)?;
            } else {
                // A refusal wrote nothing; end the transaction and its lock now.
                tx.rollback().await.map_err(map_sqlx)?;
            }
            Ok(changed)
        })
        .await
    }
}
