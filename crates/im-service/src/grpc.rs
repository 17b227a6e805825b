//! `im.v1.MessageService` over [`Messaging`]: the acting user is the token in
//! the `authorization` metadata, never a request field.

use std::sync::Arc;

use im_auth::Tokens;
use im_core::ports::{Messaging, SendCommand};
use im_core::{ConversationId, DeviceId, ImError, Seq, UserId};
use im_proto::client as pb;
use im_proto::convert::status;
use im_proto::message::message_service_server::{MessageService, MessageServiceServer};
use tonic::{Request, Response, Status};

/// gRPC callers are one "device" for skip-own-device purposes.
const GRPC_DEVICE: &str = "grpc";

pub struct MessageGrpc {
    messaging: Arc<dyn Messaging>,
    tokens: Tokens,
    device: DeviceId,
}

impl MessageGrpc {
    pub fn server(messaging: Arc<dyn Messaging>, tokens: Tokens) -> MessageServiceServer<Self> {
        MessageServiceServer::new(Self { messaging, tokens, device: DeviceId(GRPC_DEVICE.into()) })
    }

    fn user<T>(&self, request: &Request<T>) -> Result<UserId, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` metadata"))?;
        let identity = self.tokens.verify_bearer(header).map_err(status)?;
        if identity.admin {
            return Err(status(ImError::denied("an admin credential cannot act as a user")));
        }
        Ok(identity.user)
    }
}

fn conversation(raw: &str) -> Result<ConversationId, Status> {
    raw.parse().map_err(status)
}

#[tonic::async_trait]
impl MessageService for MessageGrpc {
    async fn send_message(&self, request: Request<pb::SendRequest>) -> Result<Response<pb::SendAck>, Status> {
        let user = self.user(&request)?;
        let req = request.into_inner();
        let cmd = SendCommand {
            to_user: UserId(req.to_user),
            client_msg_id: req.client_msg_id,
            body: req.body,
            content_type: req.content_type,
        };
        let ack = self.messaging.send(user, &self.device, cmd).await.map_err(status)?;
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
        let req = request.into_inner();
        let conv = conversation(&req.conversation_id)?;
        let read = self.messaging.mark_read(user, &self.device, conv, Seq(req.seq)).await.map_err(status)?;
        Ok(Response::new(pb::MarkReadResponse { conversation_id: req.conversation_id, read_seq: read.0 }))
    }
}
