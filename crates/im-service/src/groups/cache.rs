//! The membership cache every node keeps (docs/groups.md): the send path,
//! sync and the fan-out ask it who is in a group, without a round trip to the
//! group directory per message.
//!
//! A roster is loaded from the directory on first use, then kept current by
//! the changes of `membership_change` ([`MembershipCache::apply`]), applied in
//! version order (`Roster::apply`). A change that does not follow the cached
//! version means one was missed: the roster is dropped and the next use
//! reloads it. A roster is also reloaded after [`REFRESH_AFTER`], which bounds
//! how long a change whose record never reached this node (the directory
//! could not publish it) can go unnoticed.
//!
//! While the directory cannot be asked (im-user down), a roster due for a
//! reload is served as last known (kept current by `membership_change`
//! meanwhile) rather than failing every send and sync of its group.
//!
//! Bounded (G10): at most `cache.group_members` (`CACHE_GROUP_MEMBERS`)
//! members across the cached rosters; past it the rosters loaded longest
//! ago are dropped (and loaded again on next use).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use im_core::group::{self, Member, MembershipChange, Roster};
use im_core::ports::GroupDirectory;
use im_core::{GroupId, ImError, UserId};

/// A cached roster is reloaded when it is older than this.
pub const REFRESH_AFTER: Duration = Duration::from_secs(60);

/// The most members the cached rosters hold together in tests: a
/// 5,000-member group counts 5,000.
#[cfg(test)]
pub const MAX_CACHED_MEMBERS: usize = 1_000_000;

/// A roster with its members indexed by user: a 5,000-member group answers
/// "is this sender a member" without a scan.
#[derive(Debug)]
pub struct GroupView {
    pub roster: Roster,
    index: HashMap<UserId, usize>,
}

impl GroupView {
    pub fn new(roster: Roster) -> Self {
        let index = roster.members.iter().enumerate().map(|(i, m)| (m.user, i)).collect();
        Self { roster, index }
    }

    pub fn member(&self, user: UserId) -> Option<&Member> {
        self.index.get(&user).map(|&i| &self.roster.members[i])
    }

    pub fn members(&self) -> &[Member] {
        &self.roster.members
    }

    pub fn version(&self) -> u64 {
        self.roster.version
    }
}

struct Entry {
    view: Arc<GroupView>,
    loaded_at: Instant,
}

#[derive(Default)]
struct State {
    rosters: HashMap<GroupId, Entry>,
    /// Members across `rosters`, for the bound.
    members: usize,
    /// The highest version a change record showed for each group, also for
    /// groups not cached: a roster loaded while a newer change was in flight
    /// is not kept as if it were current.
    latest_seen: HashMap<GroupId, u64>,
}

impl State {
    /// Drops the rosters loaded longest ago until the members fit in `max`
    /// (`keep`, just loaded, stays even alone past it: its caller needs it),
    /// and forgets the versions seen of groups no longer cached once they
    /// outnumber the cached ones (they only guard loads in flight).
    fn evict_beyond(&mut self, max: usize, keep: GroupId) {
        while self.members > max {
            let oldest = self
                .rosters
                .iter()
                .filter(|(group, _)| **group != keep)
                .min_by_key(|(_, entry)| entry.loaded_at)
                .map(|(group, _)| *group);
            let Some(oldest) = oldest else { break };
            if let Some(entry) = self.rosters.remove(&oldest) {
                self.members -= entry.view.members().len();
            }
        }
        if self.latest_seen.len() > 2 * self.rosters.len() + 1024 {
            let rosters = &self.rosters;
            self.latest_seen.retain(|group, _| rosters.contains_key(group));
        }
    }
}

pub struct MembershipCache {
    directory: Arc<dyn GroupDirectory>,
    state: RwLock<State>,
    refresh_after: Duration,
    max_members: usize,
}

impl MembershipCache {
    /// A cache of at most `max_members` members, refreshed after [`REFRESH_AFTER`].
    pub fn new(directory: Arc<dyn GroupDirectory>, max_members: usize) -> Self {
        Self::with_limits(directory, REFRESH_AFTER, max_members)
    }

    pub fn with_limits(directory: Arc<dyn GroupDirectory>, refresh_after: Duration, max_members: usize) -> Self {
        Self { directory, state: RwLock::default(), refresh_after, max_members }
    }

    /// The group's current roster as this node knows it; `NOT_FOUND` when
    /// there is no such group.
    pub async fn view(&self, group: GroupId) -> Result<Arc<GroupView>, ImError> {
        if let Some(view) = self.cached(group) {
            return Ok(view);
        }
        // A couple of attempts: a change may land between the load and the
        // insert; after that the roster is still the newest the directory had.
        for _ in 0..3 {
            let roster = match self.directory.roster(group).await {
                Ok(roster) => roster.ok_or_else(|| group::not_visible(group))?,
                // The directory is away: the roster as last known, if any.
                Err(e) => {
                    let stale = self.last_known(group).ok_or(e)?;
                    tracing::debug!(%group, version = stale.version(), "group directory unavailable: last known roster");
                    return Ok(stale);
                }
            };
            if let Some(view) = self.insert(roster) {
                return Ok(view);
            }
        }
        self.cached(group).ok_or_else(|| ImError::unavailable("group membership is changing; retry"))
    }

    /// `user`'s membership of `group`: for a non-member the same
    /// `NOT_FOUND` as for a group that does not exist.
    pub async fn member(&self, group: GroupId, user: UserId) -> Result<(Arc<GroupView>, Member), ImError> {
        let view = self.view(group).await?;
        let member = *view.member(user).ok_or_else(|| group::not_visible(group))?;
        Ok((view, member))
    }

    /// Caches a roster the caller got from the directory (a group just
    /// created). Returns the cached view, or `None` when a newer change is
    /// known (the roster is stale: load again).
    pub fn insert(&self, roster: Roster) -> Option<Arc<GroupView>> {
        let group = roster.group.id;
        let mut state = self.write();
        if state.latest_seen.get(&group).is_some_and(|&seen| seen > roster.version) {
            return None;
        }
        if let Some(entry) = state.rosters.get(&group)
            && entry.view.version() > roster.version
        {
            return Some(entry.view.clone());
        }
        let view = Arc::new(GroupView::new(roster));
        state.members += view.members().len();
        if let Some(old) = state.rosters.insert(group, Entry { view: view.clone(), loaded_at: Instant::now() }) {
            state.members -= old.view.members().len();
        }
        state.evict_beyond(self.max_members, group);
        Some(view)
    }

    /// The groups of `user` among the cached rosters, however old: what a
    /// node can tell while the directory is away.
    pub fn cached_groups_of(&self, user: UserId) -> Vec<(GroupId, Member)> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut groups: Vec<(GroupId, Member)> = state
            .rosters
            .iter()
            .filter_map(|(group, entry)| entry.view.member(user).map(|member| (*group, *member)))
            .collect();
        groups.sort_by_key(|(group, _)| *group);
        groups
    }

    /// Applies a change from `membership_change` (or made by this node).
    pub fn apply(&self, change: &MembershipChange) {
        let mut state = self.write();
        let seen = state.latest_seen.entry(change.group).or_insert(0);
        *seen = (*seen).max(change.version);
        state.evict_beyond(self.max_members, change.group);
        let Some(entry) = state.rosters.get_mut(&change.group) else {
            return;
        };
        if change.version <= entry.view.version() {
            return; // already applied (this node made it, or a redelivery)
        }
        let mut roster = entry.view.roster.clone();
        let before = entry.view.members().len();
        if roster.apply(change) {
            entry.view = Arc::new(GroupView::new(roster));
            let after = entry.view.members().len();
            state.members = state.members + after - before;
        } else {
            tracing::debug!(group = %change.group, version = change.version, cached = entry.view.version(),
                "membership change out of order; the roster reloads on next use");
            state.rosters.remove(&change.group);
            state.members -= before;
        }
    }

    /// Groups currently cached (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state.read().unwrap_or_else(PoisonError::into_inner).rosters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached roster, if loaded less than `refresh_after` ago.
    fn cached(&self, group: GroupId) -> Option<Arc<GroupView>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let entry = state.rosters.get(&group)?;
        (entry.loaded_at.elapsed() < self.refresh_after).then(|| entry.view.clone())
    }

    /// The cached roster, however old.
    fn last_known(&self, group: GroupId) -> Option<Arc<GroupView>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.rosters.get(&group).map(|entry| entry.view.clone())
    }

    /// Members across the cached rosters.
    pub fn members_cached(&self) -> usize {
        self.state.read().unwrap_or_else(PoisonError::into_inner).members
    }

    // Nothing panics while the lock is held; a poisoned lock is still sound.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use im_core::group::{ChangeKind, Role};
    use im_core::{ErrorCode, Seq};

    use super::*;
    use crate::testkit::{ScriptedDirectory, roster};

    fn member(user: u64, role: Role) -> Member {
        Member { user: UserId(user), role, joined_after: Seq::ZERO }
    }

    /// Group 1: owner 1 and member 2.
    fn directory() -> Arc<ScriptedDirectory> {
        Arc::new(ScriptedDirectory::new([roster(1, vec![member(1, Role::Owner), member(2, Role::Member)])]))
    }

    fn left(version: u64, user: u64) -> MembershipChange {
        MembershipChange { group: GroupId(1), version, kind: ChangeKind::Left(vec![UserId(user)]) }
    }

    #[tokio::test]
    async fn loads_once_then_answers_from_memory() {
        let directory = directory();
        let cache = MembershipCache::new(directory.clone(), MAX_CACHED_MEMBERS);
        assert!(cache.member(GroupId(1), UserId(2)).await.is_ok());
        assert!(cache.member(GroupId(1), UserId(1)).await.is_ok());
        assert_eq!(cache.member(GroupId(1), UserId(3)).await.unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(cache.view(GroupId(9)).await.unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(directory.loads(), 2, "group 1 once, group 9 once");
    }

    #[tokio::test]
    async fn changes_apply_in_order_and_a_gap_reloads() {
        let directory = directory();
        let cache = MembershipCache::new(directory.clone(), MAX_CACHED_MEMBERS);
        cache.view(GroupId(1)).await.unwrap();
        cache.apply(&left(2, 2));
        assert_eq!(cache.member(GroupId(1), UserId(2)).await.unwrap_err().code, ErrorCode::NotFound);
        cache.apply(&left(2, 2)); // a redelivery changes nothing
        assert_eq!(cache.view(GroupId(1)).await.unwrap().version(), 2);

        // Version 3 was missed: 4 cannot apply, the roster is dropped and
        // reloaded from the directory, which has everything.
        directory.edit(GroupId(1), |roster| {
            roster.version = 4;
            roster.members.retain(|m| m.user == UserId(1));
        });
        cache.apply(&left(4, 2));
        let view = cache.view(GroupId(1)).await.unwrap();
        assert_eq!(view.version(), 4);
        assert_eq!(directory.loads(), 2);
    }

    #[tokio::test]
    async fn a_roster_older_than_a_seen_change_is_not_kept() {
        let directory = directory();
        let cache = MembershipCache::new(directory.clone(), MAX_CACHED_MEMBERS);
        // The change arrives before the group was ever loaded here.
        cache.apply(&left(2, 2));
        let stale = directory.stored(GroupId(1));
        assert!(cache.insert(stale).is_none(), "version 1 is older than the change seen");
        directory.edit(GroupId(1), |roster| {
            roster.version = 2;
            roster.members.retain(|m| m.user == UserId(1));
        });
        assert_eq!(cache.view(GroupId(1)).await.unwrap().version(), 2);
    }

    #[tokio::test]
    async fn old_rosters_are_refreshed() {
        let directory = directory();
        let cache = MembershipCache::with_limits(directory.clone(), Duration::ZERO, MAX_CACHED_MEMBERS);
        cache.view(GroupId(1)).await.unwrap();
        cache.view(GroupId(1)).await.unwrap();
        assert_eq!(directory.loads(), 2);
    }

    #[tokio::test]
    async fn with_the_directory_away_an_old_roster_is_served_as_last_known() {
        let directory = directory();
        let cache = MembershipCache::with_limits(directory.clone(), Duration::ZERO, MAX_CACHED_MEMBERS);
        cache.view(GroupId(1)).await.unwrap();
        directory.down.store(true, std::sync::atomic::Ordering::SeqCst);
        // Due for a reload, which fails: the last known roster, kept current
        // by the changes meanwhile.
        cache.apply(&left(2, 2));
        let view = cache.view(GroupId(1)).await.unwrap();
        assert_eq!((view.version(), view.members().len()), (2, 1));
        assert_eq!(cache.member(GroupId(1), UserId(2)).await.unwrap_err().code, ErrorCode::NotFound);
        // A group never loaded has nothing to fall back on.
        assert_eq!(cache.view(GroupId(9)).await.unwrap_err().code, ErrorCode::Unavailable);
        assert_eq!(cache.cached_groups_of(UserId(1)).iter().map(|(g, _)| *g).collect::<Vec<_>>(), [GroupId(1)]);
        assert!(cache.cached_groups_of(UserId(2)).is_empty(), "user 2 left");
        // Back: reloaded from the directory.
        directory.edit(GroupId(1), |roster| {
            roster.version = 3;
            roster.members.retain(|m| m.user == UserId(1));
        });
        directory.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(cache.view(GroupId(1)).await.unwrap().version(), 3);
    }

    #[tokio::test]
    async fn the_rosters_loaded_longest_ago_make_room_within_the_member_bound() {
        let members = |n: u64| (1..=n).map(|user| member(user, Role::Member)).collect::<Vec<_>>();
        let directory =
            Arc::new(ScriptedDirectory::new([roster(1, members(3)), roster(2, members(4)), roster(3, members(2))]));
        let cache = MembershipCache::with_limits(directory.clone(), REFRESH_AFTER, 7);
        cache.view(GroupId(1)).await.unwrap();
        cache.view(GroupId(2)).await.unwrap();
        assert_eq!((cache.len(), cache.members_cached()), (2, 7));
        // Group 3 does not fit beside both: group 1, loaded first, goes.
        cache.view(GroupId(3)).await.unwrap();
        assert_eq!((cache.len(), cache.members_cached()), (2, 6));
        assert_eq!(
            cache.cached_groups_of(UserId(1)).iter().map(|(g, _)| *g).collect::<Vec<_>>(),
            [GroupId(2), GroupId(3)]
        );
        // A change shrinking a cached roster is counted.
        cache.apply(&MembershipChange { group: GroupId(2), version: 2, kind: ChangeKind::Left(vec![UserId(2)]) });
        assert_eq!(cache.members_cached(), 5);
        // Group 1 is loaded again on use.
        cache.view(GroupId(1)).await.unwrap();
        assert_eq!(directory.loads(), 4);
        assert!(cache.members_cached() <= 7, "{}", cache.members_cached());
        // A roster larger than the bound alone is still served (and cached).
        let big = MembershipCache::with_limits(directory, REFRESH_AFTER, 1);
        assert_eq!(big.view(GroupId(2)).await.unwrap().members().len(), 4);
    }
}
