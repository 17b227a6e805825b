//! Test doubles the unit tests share: a fixed registry, a recording pusher,
//! a scripted group directory, and rosters to fill it with.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::group::{Group, Member, MembershipChange, MembershipOp, NewGroup, Roster};
use im_core::ports::{BackendResult, FanOut, GroupDirectory, PushEvent, PushReport, Pusher, Registry};
use im_core::{GatewayId, GroupId, ImError, Seq, UserId};

use crate::consumer::ConsumerSettings;
use crate::publisher::Backoff;

/// user -> gateways, fixed.
pub(crate) struct FixedRegistry(pub HashMap<UserId, Vec<GatewayId>>);

#[async_trait]
impl Registry for FixedRegistry {
    async fn register(&self, _: UserId, _: &GatewayId) -> BackendResult<()> {
        Ok(())
    }
    async fn unregister(&self, _: UserId, _: &GatewayId) -> BackendResult<()> {
        Ok(())
    }
    fn gateways_of(&self, user: UserId) -> Vec<GatewayId> {
        self.0.get(&user).cloned().unwrap_or_default()
    }
}

pub(crate) fn gw(name: &str) -> GatewayId {
    GatewayId(name.into())
}

/// Records every call, `push` and `fan_out` apart; fails the first
/// `failures` of them. Every push is delivered.
#[derive(Default)]
pub(crate) struct RecordingPusher {
    pub pushes: Mutex<Vec<(GatewayId, Vec<PushEvent>)>>,
    pub fan_outs: Mutex<Vec<(GatewayId, Vec<FanOut>)>>,
    pub failures: Mutex<u32>,
    /// Gateways whose fan-out calls are recorded and then never answered.
    pub hung: Mutex<Vec<GatewayId>>,
}

impl RecordingPusher {
    /// Takes one of the failures left, if any.
    fn fails(&self) -> BackendResult<()> {
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(BackendError::unavailable("gateway down"));
        }
        Ok(())
    }
}

#[async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, gateway: &GatewayId, batch: &[PushEvent]) -> BackendResult<PushReport> {
        self.pushes.lock().unwrap().push((gateway.clone(), batch.to_vec()));
        self.fails()?;
        Ok(PushReport { delivered: batch.len() as u32, offline: Vec::new() })
    }

    async fn fan_out(&self, gateway: &GatewayId, batch: &[FanOut]) -> BackendResult<u64> {
        self.fan_outs.lock().unwrap().push((gateway.clone(), batch.to_vec()));
        if self.hung.lock().unwrap().contains(gateway) {
            futures::future::pending::<()>().await;
        }
        self.fails()?;
        Ok(batch.iter().map(|f| f.users.len() as u64).sum())
    }
}

/// A group directory that serves rosters by group and counts the loads;
/// answers `UNAVAILABLE` while `down`. Nothing else is used.
#[derive(Default)]
pub(crate) struct ScriptedDirectory {
    rosters: Mutex<HashMap<GroupId, Roster>>,
    loads: Mutex<u32>,
    pub down: AtomicBool,
}

impl ScriptedDirectory {
    pub fn new(rosters: impl IntoIterator<Item = Roster>) -> Self {
        let directory = Self::default();
        directory.rosters.lock().unwrap().extend(rosters.into_iter().map(|r| (r.group.id, r)));
        directory
    }

    /// Changes the roster of `group` it serves.
    pub fn edit(&self, group: GroupId, change: impl FnOnce(&mut Roster)) {
        change(self.rosters.lock().unwrap().get_mut(&group).expect("a roster of the group"));
    }

    /// The roster of `group` it serves.
    pub fn stored(&self, group: GroupId) -> Roster {
        self.rosters.lock().unwrap()[&group].clone()
    }

    /// How many rosters were asked for.
    pub fn loads(&self) -> u32 {
        *self.loads.lock().unwrap()
    }
}

#[async_trait]
impl GroupDirectory for ScriptedDirectory {
    async fn create_group(&self, _: NewGroup) -> Result<Roster, ImError> {
        unreachable!("not used")
    }
    async fn change_membership(
        &self,
        _: GroupId,
        _: UserId,
        _: MembershipOp,
        _: Seq,
    ) -> Result<MembershipChange, ImError> {
        unreachable!("not used")
    }
    async fn roster(&self, group: GroupId) -> Result<Option<Roster>, ImError> {
        *self.loads.lock().unwrap() += 1;
        if self.down.load(Ordering::SeqCst) {
            return Err(ImError::unavailable("directory down"));
        }
        Ok(self.rosters.lock().unwrap().get(&group).cloned())
    }
    async fn groups_of(&self, _: UserId) -> Result<Vec<(Group, Member)>, ImError> {
        unreachable!("not used")
    }
}

/// Group `group` ("g", owned by user 1) at version 1 with `members`.
pub(crate) fn roster(group: u64, members: Vec<Member>) -> Roster {
    let group =
        Group { id: GroupId(group), name: "g".into(), owner: UserId(1), history_visible: false, created_at_ms: 0 };
    Roster { group, version: 1, members }
}

/// A consumer of `topic` in `group` for a test: one member, short waits
/// between retries, the lag read often.
pub(crate) fn consumer_settings(topic: &str, group: &str, poll_max: usize, poll_wait: Duration) -> ConsumerSettings {
    ConsumerSettings {
        backoff: Backoff { first: Duration::from_millis(10), max: Duration::from_millis(50) },
        lag_interval: Duration::from_millis(50),
        ..ConsumerSettings::new(topic.into(), group.into(), poll_max, poll_wait, 1)
    }
}
