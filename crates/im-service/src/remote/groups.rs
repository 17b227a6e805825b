//! [`RemoteGroups`]: the `GroupDirectory` port over
//! `im.user.v1.GroupDirectory`, with a `groups` service credential.
//!
//! Refusals keep their code (`im_proto::convert::from_status`): a user told
//! `PERMISSION_DENIED` by the directory hears the same from this node, and a
//! directory that cannot be reached is `UNAVAILABLE`.

use std::time::Duration;

use async_trait::async_trait;
use im_auth::{Scope, Tokens};
use im_core::group::{Group, Member, MembershipChange, MembershipOp, NewGroup, Roster};
use im_core::ports::{BackendResult, GroupDirectory};
use im_core::{GroupId, ImError, Seq, UserId};
use im_proto::convert::{self, ChangeRequest, from_status};
use im_proto::user::group_directory_client::GroupDirectoryClient;
use im_proto::user::{self as pb};
use tonic::transport::Channel;

use super::channel::lazy_channel;
use super::credential::ServiceCredential;
use crate::tls::CallTls;

/// The group directory of an `im-user` process.
pub struct RemoteGroups {
    client: GroupDirectoryClient<Channel>,
    credential: ServiceCredential,
}

impl RemoteGroups {
    /// `addr` and `timeout` are `USER_SERVICE_ADDR` and `USER_SERVICE_TIMEOUT`;
    /// calls carry a `groups` service credential signed with `tokens`.
    pub fn new(addr: &str, timeout: Duration, tls: &CallTls, tokens: Tokens) -> BackendResult<Self> {
        let credential = ServiceCredential::new(tokens, Scope::Groups);
        Ok(Self { client: GroupDirectoryClient::new(lazy_channel(addr, timeout, tls)?), credential })
    }

    #[cfg(test)]
    pub(super) fn credential(&self) -> &ServiceCredential {
        &self.credential
    }
}

/// An answer of the directory in domain terms. One that does not convert is
/// the directory's fault, not the caller's: `INTERNAL`, not the
/// `INVALID_ARGUMENT` the conversion reports.
pub(super) fn answer<W, T>(call: &str, wire: W, convert: impl FnOnce(W) -> Result<T, ImError>) -> Result<T, ImError> {
    convert(wire).map_err(|e| {
        tracing::error!(call, error = %e.message, "the group directory answered something impossible");
        ImError::internal(format!("the group directory answered {call} with an impossible value"))
    })
}

#[async_trait]
impl GroupDirectory for RemoteGroups {
    async fn create_group(&self, group: NewGroup) -> Result<Roster, ImError> {
        let request = self.credential.request(pb::CreateGroupRequest::from(&group));
        let roster = self.client.clone().create_group(request).await.map_err(|s| from_status(&s))?;
        answer("CreateGroup", roster.into_inner(), Roster::try_from)
    }

    async fn change_membership(
        &self,
        group: GroupId,
        actor: UserId,
        op: MembershipOp,
        boundary: Seq,
    ) -> Result<MembershipChange, ImError> {
        let request = ChangeRequest { group, actor, op, boundary };
        let request = self.credential.request(pb::ChangeMembershipRequest::from(&request));
        let change = self.client.clone().change_membership(request).await.map_err(|s| from_status(&s))?;
        answer("ChangeMembership", change.into_inner(), MembershipChange::try_from)
    }

    async fn roster(&self, group: GroupId) -> Result<Option<Roster>, ImError> {
        let request = self.credential.request(pb::GetRosterRequest { group: group.0 });
        match self.client.clone().get_roster(request).await {
            Ok(roster) => answer("GetRoster", roster.into_inner(), Roster::try_from).map(Some),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(from_status(&status)),
        }
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<(Group, Member)>, ImError> {
        let request = self.credential.request(pb::GroupsOfRequest { user: user.0 });
        let list = self.client.clone().groups_of(request).await.map_err(|s| from_status(&s))?;
        answer("GroupsOf", list.into_inner(), convert::from_group_memberships)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use im_auth::Tokens;
    use im_core::ErrorCode;
    use im_core::group::{ChangeKind, Role};
    use im_user::groups::grpc::GroupDirectoryGrpc;
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;

    const SECRET: &[u8] = b"remote-groups-test-secret-012345";

    /// Group 1 exists, with owner 1 and member 2; member 2 may change nothing.
    struct FakeDirectory;

    fn roster() -> Roster {
        let group =
            Group { id: GroupId(1), name: "g".into(), owner: UserId(1), history_visible: false, created_at_ms: 3 };
        let member = |user, role| Member { user: UserId(user), role, joined_after: Seq::ZERO };
        Roster { group, version: 2, members: vec![member(1, Role::Owner), member(2, Role::Member)] }
    }

    #[async_trait]
    impl GroupDirectory for FakeDirectory {
        async fn create_group(&self, group: NewGroup) -> Result<Roster, ImError> {
            Ok(Roster { group: Group { name: group.name, ..roster().group }, version: 1, ..roster() })
        }

        async fn change_membership(
            &self,
            group: GroupId,
            actor: UserId,
            op: MembershipOp,
            boundary: Seq,
        ) -> Result<MembershipChange, ImError> {
            match (actor, op) {
                (UserId(1), MembershipOp::Add(users)) => {
                    let joined =
                        users.into_iter().map(|user| Member { user, role: Role::Member, joined_after: boundary });
                    Ok(MembershipChange { group, version: 3, kind: ChangeKind::Joined(joined.collect()) })
                }
                _ => Err(ImError::denied("only the owner and admins add members")),
            }
        }

        async fn roster(&self, group: GroupId) -> Result<Option<Roster>, ImError> {
            Ok((group == GroupId(1)).then(roster))
        }

        async fn groups_of(&self, user: UserId) -> Result<Vec<(Group, Member)>, ImError> {
            Ok(roster().member(user).map(|m| (roster().group, *m)).into_iter().collect())
        }
    }

    /// A directory on a loopback port; its address.
    async fn directory() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = GroupDirectoryGrpc::new(Arc::new(FakeDirectory), Tokens::new(SECRET).unwrap()).into_server();
        let server = tonic::transport::Server::builder().add_service(service);
        tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
        addr
    }

    fn client(addr: &str, secret: &[u8]) -> RemoteGroups {
        RemoteGroups::new(addr, Duration::from_secs(5), &CallTls::none(), Tokens::new(secret).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn every_call_round_trips() {
        let groups = client(&directory().await, SECRET);
        let new = NewGroup {
            name: "new".into(),
            owner: UserId(1),
            members: vec![],
            history_visible: false,
            created_at_ms: 0,
        };
        assert_eq!(groups.create_group(new).await.unwrap().group.name, "new");
        let change = groups.change_membership(GroupId(1), UserId(1), MembershipOp::Add(vec![UserId(5)]), Seq(9)).await;
        let joined = Member { user: UserId(5), role: Role::Member, joined_after: Seq(9) };
        assert_eq!(
            change.unwrap(),
            MembershipChange { group: GroupId(1), version: 3, kind: ChangeKind::Joined(vec![joined]) }
        );
        assert_eq!(groups.roster(GroupId(1)).await.unwrap(), Some(roster()));
        assert_eq!(groups.roster(GroupId(2)).await.unwrap(), None, "NOT_FOUND is no roster");
        assert_eq!(groups.groups_of(UserId(2)).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn refusals_keep_their_code() {
        let groups = client(&directory().await, SECRET);
        let refused = groups.change_membership(GroupId(1), UserId(2), MembershipOp::Leave, Seq(1)).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::PermissionDenied);
        assert_eq!(refused.message, "only the owner and admins add members");
    }

    #[tokio::test]
    async fn a_wrong_credential_and_a_missing_directory_are_told_apart() {
        let addr = directory().await;
        let forged = client(&addr, b"another-secret-another-secret-an");
        assert_eq!(forged.groups_of(UserId(1)).await.unwrap_err().code, ErrorCode::Unauthenticated);

        // A port nothing listens on.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        assert_eq!(client(&free, SECRET).roster(GroupId(1)).await.unwrap_err().code, ErrorCode::Unavailable);
    }
}
