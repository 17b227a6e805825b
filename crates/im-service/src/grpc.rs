//! `im.v1.MessageService` over [`Messaging`]: the acting user is the token in
//! the `authorization` metadata, never a request field.

use std::sync::Arc;

use im_auth::Tokens;
use im_core::ports::Messaging;
use im_core::{ConversationId, DeviceId, ImError, Seq, UserId};
use im_proto::client as pb;
use im_proto::convert::status;
use im_proto::message::message_service_server::{MessageService, MessageServiceServer};
use tonic::{Request, Response, Status};

/// A gRPC caller that names no device is one "device" for skip-own-device
/// purposes.
const GRPC_DEVICE: &str = "grpc";
/// Metadata naming the acting device (a gateway forwarding a client's
/// request). Not identity: it only picks which of the user's own devices a
/// push skips.
pub const DEVICE_METADATA: &str = "x-im-device";
/// The longest device id taken from metadata, as on the WebSocket handshake.
const MAX_DEVICE_LEN: usize = 64;

pub struct MessageGrpc {
    messaging: Arc<dyn Messaging>,
    tokens: Tokens,
    default_device: DeviceId,
}

impl MessageGrpc {
    pub fn server(messaging: Arc<dyn Messaging>, tokens: Tokens) -> MessageServiceServer<Self> {
        MessageServiceServer::new(Self { messaging, tokens, default_device: DeviceId(GRPC_DEVICE.into()) })
    }

    fn user<T>(&self, request: &Request<T>) -> Result<UserId, Status> {
        acting_user(&self.tokens, request)
    }

    fn device<T>(&self, request: &Request<T>) -> Result<DeviceId, Status> {
        match request.metadata().get(DEVICE_METADATA).map(|v| v.to_str()) {
            None => Ok(self.default_device.clone()),
            // A value that is not ASCII is refused like an empty one.
            Some(device) => device_id(device.unwrap_or_default(), DEVICE_METADATA).map_err(status),
        }
    }
}

/// A device id a gateway names (metadata or a relayed send), as long as the
/// WebSocket handshake allows: 1-64 bytes.
pub fn device_id(raw: &str, what: &str) -> Result<DeviceId, ImError> {
    if raw.is_empty() || raw.len() > MAX_DEVICE_LEN {
        return Err(ImError::invalid(format!("{what} must be 1-{MAX_DEVICE_LEN} ASCII bytes")));
    }
    Ok(DeviceId(raw.to_owned()))
}

/// The user a request acts as: the subject of the token in its
/// `authorization` metadata. An admin or service credential is not a user.
pub fn acting_user<T>(tokens: &Tokens, request: &Request<T>) -> Result<UserId, Status> {
    let identity = caller(tokens, request)?;
    if !identity.is_user() {
        return Err(status(ImError::denied(format!("{} cannot act as a user", identity.described()))));
    }
    Ok(identity.user)
}

/// Who calls: the verified token of the `authorization` metadata.
fn caller<T>(tokens: &Tokens, request: &Request<T>) -> Result<im_auth::Identity, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` metadata"))?;
    tokens.verify_bearer(header).map_err(status)
}

/// Refuses every caller but a service credential of `scope`.
pub fn require_service<T>(tokens: &Tokens, request: &Request<T>, scope: im_auth::Scope) -> Result<(), Status> {
    caller(tokens, request)?.require_service(scope).map_err(status)
}

/// Refuses every caller but an admin credential (a service credential too:
/// it is no admin, whatever its scope).
pub fn require_admin<T>(tokens: &Tokens, request: &Request<T>) -> Result<(), Status> {
    if caller(tokens, request)?.is_admin() {
        Ok(())
    } else {
        Err(status(ImError::denied("this call needs the admin credential")))
    }
}

fn conversation(raw: &str) -> Result<ConversationId, Status> {
    raw.parse().map_err(status)
}

#[tonic::async_trait]
impl MessageService for MessageGrpc {
    async fn send_message(&self, request: Request<pb::SendRequest>) -> Result<Response<pb::SendAck>, Status> {
        let user = self.user(&request)?;
        let device = self.device(&request)?;
        let cmd = im_proto::convert::send_command(request.into_inner()).map_err(status)?;
        let ack = self.messaging.send(user, &device, cmd).await.map_err(status)?;
        Ok(Response::new(ack.into()))
    }

    async fn sync(&self, request: Request<pb::SyncRequest>) -> Result<Response<pb::SyncResponse>, Status> {
        let user = self.user(&request)?;
        let req = request.into_inner();
        let conv = conversation(&req.conversation_id)?;
        let page = self.messaging.sync(user, conv, Seq(req.after_seq), req.limit).await.map_err(status)?;
        Ok(Response::new(pb::SyncResponse {
            conversation_id: req.conversation_id,
            messages: page.messages.iter().map(Into::into).collect(),
            has_more: page.has_more,
        }))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ConversationList>, Status> {
        let user = self.user(&request)?;
        let list = self.messaging.conversations(user).await.map_err(status)?;
        Ok(Response::new(im_proto::convert::conversation_list(&list, user)))
    }

    async fn mark_read(&self, request: Request<pb::MarkReadRequest>) -> Result<Response<pb::MarkReadResponse>, Status> {
        let user = self.user(&request)?;
        let device = self.device(&request)?;
        let req = request.into_inner();
        let conv = conversation(&req.conversation_id)?;
        let read = self.messaging.mark_read(user, &device, conv, Seq(req.seq)).await.map_err(status)?;
        Ok(Response::new(pb::MarkReadResponse { conversation_id: req.conversation_id, read_seq: read.0 }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use im_auth::Scope;

    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn tokens() -> Tokens {
        Tokens::new(b"grpc-caller-test-secret-01234567").unwrap()
    }

    fn with_token(token: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    #[test]
    fn only_a_users_token_acts_as_a_user() {
        let tokens = tokens();
        let alice = tokens.issue_user(UserId(7), "alice", TTL);
        assert_eq!(acting_user(&tokens, &with_token(&alice)).unwrap(), UserId(7));
        let admin = acting_user(&tokens, &with_token(&tokens.issue_admin(TTL))).unwrap_err();
        assert_eq!(admin.code(), tonic::Code::PermissionDenied);
        for scope in Scope::ALL {
            let service = acting_user(&tokens, &with_token(&tokens.issue_service(scope, TTL))).unwrap_err();
            assert_eq!(service.code(), tonic::Code::PermissionDenied, "{scope}");
        }
    }

    #[test]
    fn a_service_credential_is_no_admin() {
        let tokens = tokens();
        assert!(require_admin(&tokens, &with_token(&tokens.issue_admin(TTL))).is_ok());
        for scope in Scope::ALL {
            let refused = require_admin(&tokens, &with_token(&tokens.issue_service(scope, TTL))).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{scope}");
        }
    }
}
