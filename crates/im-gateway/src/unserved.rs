//! [`Unserved`]: users and groups where a gateway has no way to reach them
//! (a gateway process without `USER_SERVICE_ADDR`, a benchmark, a test of
//! the message path). Every call is `UNAVAILABLE` with the reason given;
//! the gateway's other requests are unaffected.

use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::group::{Group, Member, MembershipChange, MembershipOp, Roster};
use im_core::message::ReadStatus;
use im_core::ports::{BackendResult, CreateUser, Groups, User, UserStore};
use im_core::{GroupId, ImError, Seq, UserId};

/// Neither users nor groups are served; the text says why (and what to set).
pub struct Unserved(pub &'static str);

#[async_trait]
impl UserStore for Unserved {
    async fn create_user(&self, _name: &str) -> BackendResult<CreateUser> {
        Err(BackendError::unavailable(self.0))
    }
    async fn user_by_id(&self, _id: UserId) -> BackendResult<Option<User>> {
        Err(BackendError::unavailable(self.0))
    }
    async fn user_by_name(&self, _name: &str) -> BackendResult<Option<User>> {
        Err(BackendError::unavailable(self.0))
    }
}

#[async_trait]
impl Groups for Unserved {
    async fn create_group(&self, _: UserId, _: String, _: Vec<UserId>, _: bool) -> Result<Roster, ImError> {
        Err(ImError::unavailable(self.0))
    }
    async fn change_membership(&self, _: UserId, _: GroupId, _: MembershipOp) -> Result<MembershipChange, ImError> {
        Err(ImError::unavailable(self.0))
    }
    async fn roster(&self, _: UserId, _: GroupId) -> Result<Roster, ImError> {
        Err(ImError::unavailable(self.0))
    }
    async fn groups_of(&self, _: UserId) -> Result<Vec<(Group, Member)>, ImError> {
        Err(ImError::unavailable(self.0))
    }
    async fn read_status(&self, _: UserId, _: GroupId, _: Seq) -> Result<ReadStatus, ImError> {
        Err(ImError::unavailable(self.0))
    }
}
