//! `im.user.v1.GroupDirectory` over the `GroupDirectory` port. Only a
//! service credential of scope [`Scope::Groups`] may call it: the requests
//! name the acting user (`actor`, `owner`) and the boundary, which only an IM
//! service node that authenticated that user may vouch for. Not an admin
//! credential either, reads included: no operator tool calls it, and the
//! client-facing `im.v1.GroupService` is where groups are read.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use im_auth::{Scope, Tokens};
use im_core::ports::GroupDirectory;
use im_core::{GroupId, ImError, UserId};
use im_proto::convert::{self, ChangeRequest, status};
use im_proto::user::group_directory_server::{self as server, GroupDirectoryServer};
use im_proto::user::{self as pb};
use tonic::{Request, Response, Status};

/// The group directory's gRPC server.
pub struct GroupDirectoryGrpc {
    directory: Arc<dyn GroupDirectory>,
    tokens: Tokens,
}

impl GroupDirectoryGrpc {
    pub fn new(directory: Arc<dyn GroupDirectory>, tokens: Tokens) -> Self {
        Self { directory, tokens }
    }

    pub fn into_server(self) -> GroupDirectoryServer<Self> {
        GroupDirectoryServer::new(self)
    }

    fn require_service<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let caller = crate::grpc::identity(&self.tokens, request)?;
        caller.require_service(Scope::Groups).map_err(status)
    }
}

/// Now, in milliseconds since the epoch: a new group's creation time.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[tonic::async_trait]
impl server::GroupDirectory for GroupDirectoryGrpc {
    async fn create_group(&self, request: Request<pb::CreateGroupRequest>) -> Result<Response<pb::Roster>, Status> {
        self.require_service(&request)?;
        let group = convert::new_group(request.into_inner(), now_ms()).map_err(status)?;
        let roster = self.directory.create_group(group).await.map_err(status)?;
        Ok(Response::new((&roster).into()))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipChange>, Status> {
        self.require_service(&request)?;
        let ChangeRequest { group, actor, op, boundary } = request.into_inner().try_into().map_err(status)?;
        let change = self.directory.change_membership(group, actor, op, boundary).await.map_err(status)?;
        Ok(Response::new((&change).into()))
    }

    async fn get_roster(&self, request: Request<pb::GetRosterRequest>) -> Result<Response<pb::Roster>, Status> {
        self.require_service(&request)?;
        let group = GroupId(request.into_inner().group);
        match self.directory.roster(group).await.map_err(status)? {
            Some(roster) => Ok(Response::new((&roster).into())),
            None => Err(status(ImError::not_found(format!("no group {group}")))),
        }
    }

    async fn groups_of(&self, request: Request<pb::GroupsOfRequest>) -> Result<Response<pb::GroupMemberships>, Status> {
        self.require_service(&request)?;
        let groups = self.directory.groups_of(UserId(request.into_inner().user)).await.map_err(status)?;
        Ok(Response::new(convert::group_memberships(&groups)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use im_core::group::{MembershipChange, MembershipOp, Roster};
    use im_core::{Seq, UserId};
    use server::GroupDirectory as _;

    use super::*;
    use crate::groups::GroupService;
    use crate::groups::testkit::{FakeStore, FlakyBus};

    const SECRET: &[u8] = b"group-directory-test-secret-0123";

    fn api() -> GroupDirectoryGrpc {
        let service = GroupService::new(
            Arc::new(FakeStore::default()),
            Arc::new(FlakyBus::default()),
            "membership_change".into(),
            10,
        );
        GroupDirectoryGrpc::new(Arc::new(service), Tokens::new(SECRET).unwrap())
    }

    fn with_token<T>(message: T, token: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    fn from_service<T>(message: T) -> Request<T> {
        with_token(message, &Tokens::new(SECRET).unwrap().issue_service(Scope::Groups, Duration::from_secs(60)))
    }

    fn create(owner: u64, members: &[u64]) -> pb::CreateGroupRequest {
        pb::CreateGroupRequest { owner, name: "friends".into(), members: members.to_vec(), history_visible: false }
    }

    #[tokio::test]
    async fn create_change_and_read_over_the_wire() {
        let api = api();
        let roster = api.create_group(from_service(create(1, &[2]))).await.unwrap().into_inner();
        let roster = Roster::try_from(roster).unwrap();
        assert!(roster.group.created_at_ms > 0, "the directory stamps the creation time");
        let group = roster.group.id;

        let add = ChangeRequest { group, actor: UserId(1), op: MembershipOp::Add(vec![UserId(3)]), boundary: Seq(4) };
        let change = api.change_membership(from_service((&add).into())).await.unwrap().into_inner();
        assert_eq!(MembershipChange::try_from(change).unwrap().version, 2);

        let read = api.get_roster(from_service(pb::GetRosterRequest { group: group.0 })).await.unwrap();
        assert_eq!(Roster::try_from(read.into_inner()).unwrap().members.len(), 3);
        let mine = api.groups_of(from_service(pb::GroupsOfRequest { user: 3 })).await.unwrap().into_inner();
        assert_eq!(convert::from_group_memberships(mine).unwrap()[0].1.joined_after, Seq(4));
    }

    #[tokio::test]
    async fn refusals_keep_their_code() {
        let api = api();
        let status = api.get_roster(from_service(pb::GetRosterRequest { group: 42 })).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        let too_big = create(1, &(2..=11).collect::<Vec<_>>());
        assert_eq!(api.create_group(from_service(too_big)).await.unwrap_err().code(), tonic::Code::ResourceExhausted);
        let no_op = pb::ChangeMembershipRequest { group: 1, actor: 1, boundary: 0, op: None };
        assert_eq!(api.change_membership(from_service(no_op)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn only_a_groups_service_credential_is_accepted() {
        let api = api();
        let status = api.create_group(Request::new(create(1, &[]))).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        // Admin and the other services' scopes, for changes and reads alike.
        let tokens = Tokens::new(SECRET).unwrap();
        let ttl = Duration::from_secs(60);
        let others =
            [tokens.issue_admin(ttl), tokens.issue_service(Scope::Push, ttl), tokens.issue_service(Scope::Users, ttl)];
        for token in &others {
            let status = api.create_group(with_token(create(1, &[]), token)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            assert!(status.message().contains("scope `groups`"), "{}", status.message());
            let status = api.get_roster(with_token(pb::GetRosterRequest { group: 1 }, token)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
        }

        // A user acting for themselves could name any actor and boundary.
        let user_token = Tokens::new(SECRET).unwrap().issue_user(UserId(1), "alice", Duration::from_secs(60));
        let status = api.create_group(with_token(create(1, &[]), &user_token)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        let status = api.groups_of(with_token(pb::GroupsOfRequest { user: 1 }, &user_token)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);

        let forged = Tokens::new(b"another-secret-another-secret-an")
            .unwrap()
            .issue_service(Scope::Groups, Duration::from_secs(60));
        let status = api.get_roster(with_token(pb::GetRosterRequest { group: 1 }, &forged)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}
