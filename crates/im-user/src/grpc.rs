//! `im.user.v1.UserService` over [`UserDirectory`]. The caller's identity
//! comes from the `authorization` metadata only.
//!
//! Who may call what: the admin calls need an admin credential (checked by
//! the directory); `GetUser` takes a user's token, an admin credential, or a
//! service credential of scope [`Scope::Users`] (a node looking up a
//! recipient) — not one of another scope.

use std::time::Duration;

use im_auth::{Identity, Role, Scope};
use im_core::{ImError, StatusChange, UserId};
use im_proto::convert::status;
use im_proto::user::{self as pb, user_service_server::UserService};
use tonic::{Request, Response, Status};

use crate::UserDirectory;

/// The longest token lifetime an admin may ask for: one year.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct UserGrpc {
    directory: UserDirectory,
}

impl UserGrpc {
    pub fn new(directory: UserDirectory) -> Self {
        Self { directory }
    }

    pub fn into_server(self) -> pb::user_service_server::UserServiceServer<Self> {
        pb::user_service_server::UserServiceServer::new(self)
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<im_auth::Identity, Status> {
        identity(self.directory.tokens(), request)
    }

    async fn change_status(
        &self,
        request: Request<pb::UserStatusRequest>,
        change: StatusChange,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request)?;
        let user = UserId(request.get_ref().user_id);
        let user = self.directory.change_status(&caller, user, change).await.map_err(status)?;
        Ok(Response::new(to_pb(user)))
    }
}

/// Who calls: the verified token of the `authorization` metadata.
pub(crate) fn identity<T>(tokens: &im_auth::Tokens, request: &Request<T>) -> Result<im_auth::Identity, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` metadata"))?;
    tokens.verify_bearer(header).map_err(status)
}

/// Whether `caller` may look users up: services only with the `users`
/// scope, so a `push` or `groups` credential that leaks reads no directory.
fn may_look_up(caller: &Identity) -> Result<(), ImError> {
    match caller.role {
        Role::User | Role::Admin => Ok(()),
        Role::Service(_) => caller.require_service(Scope::Users),
    }
}

fn to_pb(user: im_core::ports::User) -> pb::User {
    pb::User {
        id: user.id.0,
        name: user.name,
        created_at_ms: user.created_at_ms,
        disabled: user.status.disabled,
        token_generation: user.status.token_generation,
    }
}

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let password = (!req.password.is_empty()).then_some(req.password.as_str());
        let (user, token) = self.directory.create_user_with(&caller, &req.name, password).await.map_err(status)?;
        Ok(Response::new(pb::CreateUserResponse { user: Some(to_pb(user)), token }))
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let ttl = match req.ttl_seconds {
            0 => None,
            s if Duration::from_secs(s) > MAX_TOKEN_TTL => {
                return Err(Status::invalid_argument("ttl_seconds may be at most one year"));
            }
            s => Some(Duration::from_secs(s)),
        };
        let token = self.directory.issue_token(&caller, UserId(req.user_id), ttl).await.map_err(status)?;
        Ok(Response::new(pb::IssueTokenResponse { token }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        may_look_up(&self.caller(&request)?).map_err(status)?;
        let user = match &request.get_ref().key {
            Some(pb::get_user_request::Key::Id(id)) => self.directory.user_by_id(UserId(*id)).await,
            Some(pb::get_user_request::Key::Name(name)) => self.directory.user_by_name(name).await,
            None => return Err(Status::invalid_argument("give an id or a name")),
        }
        .map_err(status)?;
        Ok(Response::new(to_pb(user)))
    }

    async fn disable_user(&self, request: Request<pb::UserStatusRequest>) -> Result<Response<pb::User>, Status> {
        self.change_status(request, StatusChange::Disable).await
    }

    async fn enable_user(&self, request: Request<pb::UserStatusRequest>) -> Result<Response<pb::User>, Status> {
        self.change_status(request, StatusChange::Enable).await
    }

    async fn revoke_tokens(&self, request: Request<pb::UserStatusRequest>) -> Result<Response<pb::User>, Status> {
        self.change_status(request, StatusChange::RevokeTokens).await
    }

    async fn set_password(&self, request: Request<pb::SetPasswordRequest>) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let user = self.directory.set_password(&caller, UserId(req.user_id), &req.password).await.map_err(status)?;
        Ok(Response::new(to_pb(user)))
    }

    /// No caller identity: signing in is how a client gets one.
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let req = request.get_ref();
        let (user, token) = self.directory.login(&req.name, &req.password).await.map_err(status)?;
        Ok(Response::new(pb::LoginResponse { user: Some(to_pb(user)), token }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use im_auth::Tokens;
    use im_backends::SqliteStore;
    use im_backends::memory::MemoryUserStatusBoard;

    use super::*;
    use crate::passwords::{PasswordParams, Passwords};

    const SECRET: &[u8] = b"user-grpc-test-secret-0123456789";
    const TTL: Duration = Duration::from_secs(60);

    async fn api() -> (UserGrpc, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("im.db")).await.unwrap());
        let board = Arc::new(MemoryUserStatusBoard::default());
        let tokens = Tokens::new(SECRET).unwrap();
        let passwords = Passwords::new(store.clone(), PasswordParams::for_tests()).unwrap();
        (UserGrpc::new(UserDirectory::new(store.clone(), store, board, passwords, tokens, TTL)), dir)
    }

    fn with_token<T>(message: T, token: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    fn by_name(name: &str) -> pb::GetUserRequest {
        pb::GetUserRequest { key: Some(pb::get_user_request::Key::Name(name.into())) }
    }

    #[tokio::test]
    async fn a_users_service_credential_looks_users_up_and_other_scopes_do_not() {
        let (api, _dir) = api().await;
        let tokens = Tokens::new(SECRET).unwrap();
        let admin = tokens.issue_admin(TTL);
        let created = api
            .create_user(with_token(pb::CreateUserRequest { name: "alice".into(), ..Default::default() }, &admin))
            .await;
        let alice = created.unwrap().into_inner();

        let node = tokens.issue_service(Scope::Users, TTL);
        assert_eq!(api.get_user(with_token(by_name("alice"), &node)).await.unwrap().into_inner().name, "alice");
        // imctl looks users up with the admin credential, users with their own token.
        assert!(api.get_user(with_token(by_name("alice"), &admin)).await.is_ok());
        assert!(api.get_user(with_token(by_name("alice"), &alice.token)).await.is_ok());

        for scope in [Scope::Push, Scope::Groups] {
            let status =
                api.get_user(with_token(by_name("alice"), &tokens.issue_service(scope, TTL))).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            assert!(status.message().contains("scope `users`"), "{}", status.message());
        }
    }

    #[tokio::test]
    async fn a_service_credential_is_no_admin() {
        let (api, _dir) = api().await;
        let node = Tokens::new(SECRET).unwrap().issue_service(Scope::Users, TTL);
        let status = api
            .create_user(with_token(pb::CreateUserRequest { name: "eve".into(), ..Default::default() }, &node))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        let status = api.issue_token(with_token(pb::IssueTokenRequest { user_id: 1, ttl_seconds: 0 }, &node)).await;
        assert_eq!(status.unwrap_err().code(), tonic::Code::PermissionDenied);
        let status = api.disable_user(with_token(pb::UserStatusRequest { user_id: 1 }, &node)).await;
        assert_eq!(status.unwrap_err().code(), tonic::Code::PermissionDenied);
    }

    fn login(name: &str, password: &str) -> Request<pb::LoginRequest> {
        Request::new(pb::LoginRequest { name: name.into(), password: password.into() })
    }

    #[tokio::test]
    async fn a_user_created_with_a_password_signs_in_without_metadata_and_a_wrong_one_is_a_typed_error() {
        let (api, _dir) = api().await;
        let tokens = Tokens::new(SECRET).unwrap();
        let admin = tokens.issue_admin(TTL);
        let create = pb::CreateUserRequest { name: "alice".into(), password: "correct horse".into() };
        let alice = api.create_user(with_token(create, &admin)).await.unwrap().into_inner().user.unwrap();

        let signed_in = api.login(login("alice", "correct horse")).await.unwrap().into_inner();
        assert_eq!(signed_in.user.unwrap().id, alice.id);
        assert_eq!(tokens.verify(&signed_in.token).unwrap().user, UserId(alice.id));

        for (name, password) in [("alice", "wrong horse"), ("bob", "correct horse")] {
            let refused = im_proto::convert::from_status(&api.login(login(name, password)).await.unwrap_err());
            assert_eq!(refused.code, im_core::ErrorCode::Unauthenticated);
            assert_eq!(refused.reason, Some(im_core::ErrorReason::InvalidCredentials), "{name}");
        }
    }

    #[tokio::test]
    async fn a_refused_password_creates_no_user_and_only_an_admin_sets_one() {
        let (api, _dir) = api().await;
        let tokens = Tokens::new(SECRET).unwrap();
        let admin = tokens.issue_admin(TTL);
        let short = pb::CreateUserRequest { name: "alice".into(), password: "short".into() };
        let status = api.create_user(with_token(short, &admin)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(api.get_user(with_token(by_name("alice"), &admin)).await.unwrap_err().code(), tonic::Code::NotFound);

        let create = pb::CreateUserRequest { name: "alice".into(), ..Default::default() };
        let alice = api.create_user(with_token(create, &admin)).await.unwrap().into_inner();
        let id = alice.user.unwrap().id;
        let set =
            |token: &str| with_token(pb::SetPasswordRequest { user_id: id, password: "correct horse".into() }, token);
        assert_eq!(api.set_password(set(&alice.token)).await.unwrap_err().code(), tonic::Code::PermissionDenied);
        api.set_password(set(&admin)).await.unwrap();
        assert!(api.login(login("alice", "correct horse")).await.is_ok());
    }
}
