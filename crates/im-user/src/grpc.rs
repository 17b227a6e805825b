//! `im.user.v1.UserService` over [`UserDirectory`]. The caller's identity
//! comes from the `authorization` metadata only.

use std::time::Duration;

use im_core::{StatusChange, UserId};
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
        let (user, token) = self.directory.create_user(&caller, &request.get_ref().name).await.map_err(status)?;
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
        self.caller(&request)?;
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
}
