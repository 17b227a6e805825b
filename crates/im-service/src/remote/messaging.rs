//! [`RemoteMessaging`]: the `Messaging` port over `im.v1`, as a gateway
//! process reaches the IM service. Sends go on the relay stream
//! ([`RelayClient`], a service credential of scope `relay`, the user named
//! in each send); the other calls are unary on `im.v1.MessageService`.
//!
//! The unary calls act as the user the gateway authenticated at the
//! WebSocket handshake ([`ActingUser`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use im_auth::Scope;
use im_core::message::{ConversationList, Page};
use im_core::ports::{Messaging, SendCommand};
use im_core::{Ack, ConversationId, DeviceId, ImError, NewMessage, Seq, UserId};
use im_proto::client as pb;
use im_proto::convert::from_status;
use im_proto::message::message_service_client::MessageServiceClient;
use tonic::transport::Channel;

use super::ServiceCredential;
use super::acting_user::ActingUser;
use super::relay::RelayClient;

/// The IM service as a gateway process sees it.
pub struct RemoteMessaging {
    client: MessageServiceClient<Channel>,
    relay: RelayClient,
    acting: Arc<ActingUser>,
}

impl RemoteMessaging {
    /// `channel` reaches an IM service node (or a balancer in front of
    /// several); a send waits at most `send_deadline` for its answer.
    /// `acting` signs the user's token its unary calls carry.
    pub fn new(channel: Channel, acting: Arc<ActingUser>, send_deadline: Duration) -> Self {
        let credential = ServiceCredential::new(acting.tokens().clone(), Scope::Relay);
        Self {
            client: MessageServiceClient::new(channel.clone()),
            relay: RelayClient::start(channel, credential, send_deadline),
            acting,
        }
    }

    fn request<T>(&self, user: UserId, device: Option<&DeviceId>, message: T) -> tonic::Request<T> {
        self.acting.request(user, device, message)
    }
}

#[async_trait]
impl Messaging for RemoteMessaging {
    /// Stores the message durably and returns its ack; then pushes it.
    async fn send(&self, user: UserId, device: &DeviceId, cmd: SendCommand) -> Result<Ack, ImError> {
        self.relay.send(user, device, cmd).await
    }

    /// A page of a conversation `user` is a member of.
    async fn sync(&self, user: UserId, conversation: ConversationId, after: Seq, limit: u32) -> Result<Page, ImError> {
        let request = pb::SyncRequest { conversation_id: conversation.to_string(), after_seq: after.0, limit };
        let page = self.client.clone().sync(self.request(user, None, request)).await.map_err(|s| from_status(&s))?;
        let page = page.into_inner();
        let messages = page.messages.into_iter().map(NewMessage::try_from).collect::<Result<Vec<_>, _>>()?;
        Ok(Page { messages, has_more: page.has_more, skipped: Vec::new() })
    }

    /// `user`'s conversations.
    async fn conversations(&self, user: UserId) -> Result<ConversationList, ImError> {
        let list = self
            .client
            .clone()
            .list_conversations(self.request(user, None, pb::ListConversationsRequest::default()))
            .await
            .map_err(|s| from_status(&s))?;
        im_proto::convert::conversation_summaries(list.into_inner())
    }

    /// Moves the read position forward and tells the other side.
    async fn mark_read(
        &self,
        user: UserId,
        device: &DeviceId,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<Seq, ImError> {
        let request = pb::MarkReadRequest { conversation_id: conversation.to_string(), seq: seq.0 };
        let read = self
            .client
            .clone()
            .mark_read(self.request(user, Some(device), request))
            .await
            .map_err(|s| from_status(&s))?;
        Ok(Seq(read.into_inner().read_seq))
    }
}
