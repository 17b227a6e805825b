//! [`RemoteMessaging`]: the `Messaging` port over `im.v1`, as a gateway
//! process reaches the IM service. Sends go on the relay stream
//! ([`RelayClient`], a service credential of scope `relay`, the user named
//! in each send); the other calls are unary on `im.v1.MessageService`.
//!
//! The IM service takes the acting user of a unary call from the
//! `authorization` metadata only, so every such call carries a token of the
//! user the gateway authenticated
//! at the WebSocket handshake, signed with the shared secret. Tokens are
//! cached per user and re-issued before they expire, or as soon as the
//! user's token generation moved (a revocation: the node would refuse the
//! older one; the gateway closes the connections opened with revoked tokens
//! itself). The device rides in
//! `x-im-device`: it only decides which of the user's own devices a push
//! skips, so it is not identity.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use im_auth::{Scope, Tokens};
use im_core::message::{ConversationList, Page};
use im_core::ports::{Messaging, SendCommand};
use im_core::{Ack, ConversationId, DeviceId, ImError, NewMessage, Seq, UserId};
use im_proto::client as pb;
use im_proto::convert::from_status;
use im_proto::message::message_service_client::MessageServiceClient;
use parking_lot::Mutex;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::ServiceCredential;
use super::credential::bearer;
use super::relay::RelayClient;
use crate::grpc::DEVICE_METADATA;

/// Lifetime of a forwarding token; re-issued at half its life.
const USER_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Forwarding tokens kept; past this the cache starts over (tokens are cheap
/// to sign, a few µs).
const MAX_CACHED_TOKENS: usize = 100_000;

/// A forwarding token: when it was issued, at which generation, the header.
struct CachedToken {
    issued: Instant,
    generation: u64,
    header: MetadataValue<Ascii>,
}

/// The IM service as a gateway process sees it.
pub struct RemoteMessaging {
    client: MessageServiceClient<Channel>,
    relay: RelayClient,
    tokens: Tokens,
    cache: Mutex<HashMap<UserId, CachedToken>>,
}

impl RemoteMessaging {
    /// `channel` reaches an IM service node (or a balancer in front of
    /// several); a send waits at most `send_deadline` for its answer.
    pub fn new(channel: Channel, tokens: Tokens, send_deadline: Duration) -> Self {
        let credential = ServiceCredential::new(tokens.clone(), Scope::Relay);
        Self {
            client: MessageServiceClient::new(channel.clone()),
            relay: RelayClient::start(channel, credential, send_deadline),
            tokens,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn authorization(&self, user: UserId) -> MetadataValue<Ascii> {
        let generation = self.tokens.token_generation(user);
        let mut cache = self.cache.lock();
        if let Some(cached) = cache.get(&user)
            && cached.issued.elapsed() < USER_TOKEN_TTL / 2
            && cached.generation == generation
        {
            return cached.header.clone();
        }
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.clear();
        }
        // The name claim is informational; the service reads the subject.
        let token = self.tokens.issue_user(user, "", USER_TOKEN_TTL);
        let header = bearer(&token);
        cache.insert(user, CachedToken { issued: Instant::now(), generation, header: header.clone() });
        header
    }

    fn request<T>(&self, user: UserId, device: Option<&DeviceId>, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization(user));
        if let Some(device) = device.and_then(|d| d.0.parse::<MetadataValue<Ascii>>().ok()) {
            request.metadata_mut().insert(DEVICE_METADATA, device);
        }
        // The gateway's `gateway.frame` span: the node's spans join it.
        crate::telemetry::propagation::inject_grpc(request.metadata_mut());
        request
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
