//! The IM service's API (`im_core::ports::Messaging`): validation and access
//! rules in front of the send pipeline, the store and the router. Both the
//! gateway and the gRPC server call this; `user` is always the authenticated
//! identity.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use im_core::message::{ConversationSummary, Page};
use im_core::ports::{Event, MessageStore, Messaging, PushEvent, ReceiptStore, SendCommand, UserStore};
use im_core::{Ack, ClientMsgId, ConversationId, DeviceId, ImError, Seq, UserId, limits};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::pipeline::SendJob;
use crate::router::RouteWork;

pub struct MessagingService {
    pub jobs: mpsc::Sender<SendJob>,
    pub routes: mpsc::UnboundedSender<RouteWork>,
    pub store: Arc<dyn MessageStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    /// Offline entries a read makes moot are forgotten here.
    pub offline: Arc<dyn im_core::ports::OfflineStore>,
    pub users: KnownUsers,
    pub metrics: Arc<Metrics>,
    pub max_message_size: usize,
    /// How long sync waits for a missing seq before it shows what follows
    /// (`im_core::message::visible_prefix`).
    pub sync_gap_grace: std::time::Duration,
}

/// Which user ids exist. Users are never deleted, so a positive answer is
/// cached for the life of the process: the send path checks the recipient
/// without a store round trip.
pub struct KnownUsers {
    store: Arc<dyn UserStore>,
    known: RwLock<HashSet<UserId>>,
}

impl KnownUsers {
    pub fn new(store: Arc<dyn UserStore>) -> Self {
        Self { store, known: RwLock::new(HashSet::new()) }
    }

    pub async fn exists(&self, user: UserId) -> Result<bool, ImError> {
        if self.known.read().expect("lock poisoned").contains(&user) {
            return Ok(true);
        }
        let found = self.store.user_by_id(user).await?.is_some();
        if found {
            self.known.write().expect("lock poisoned").insert(user);
        }
        Ok(found)
    }
}

impl MessagingService {
    fn failed(&self, e: ImError) -> ImError {
        self.metrics.fail(e.code);
        e
    }

    async fn validate_send(&self, user: UserId, cmd: &SendCommand) -> Result<(ConversationId, ClientMsgId), ImError> {
        limits::check_body(cmd.body.len(), self.max_message_size)?;
        limits::check_content_type(&cmd.content_type)?;
        let client_msg_id = ClientMsgId::parse(&cmd.client_msg_id)?;
        let conversation = ConversationId::private(user, cmd.to_user)?;
        if !self.users.exists(cmd.to_user).await? {
            return Err(ImError::not_found(format!("no user {}", cmd.to_user)));
        }
        Ok((conversation, client_msg_id))
    }
}

fn require_member(user: UserId, conversation: ConversationId) -> Result<(), ImError> {
    if conversation.has_member(user) {
        Ok(())
    } else {
        Err(ImError::denied(format!("you are not a member of {conversation}")))
    }
}

#[async_trait]
impl Messaging for MessagingService {
    async fn send(&self, user: UserId, device: &DeviceId, cmd: SendCommand) -> Result<Ack, ImError> {
        let accepted_at = Instant::now();
        let (conversation, client_msg_id) = self.validate_send(user, &cmd).await.map_err(|e| self.failed(e))?;
        let (reply, ack) = oneshot::channel();
        let job = SendJob {
            sender: user,
            device: device.clone(),
            recipient: cmd.to_user,
            conversation,
            client_msg_id,
            body: cmd.body,
            content_type: cmd.content_type,
            accepted_at,
            reply,
        };
        self.jobs.send(job).await.map_err(|_| self.failed(ImError::unavailable("the service is shutting down")))?;
        ack.await.map_err(|_| ImError::unavailable("the service is shutting down"))?
    }

    async fn sync(&self, user: UserId, conversation: ConversationId, after: Seq, limit: u32) -> Result<Page, ImError> {
        require_member(user, conversation)?;
        let mut page = self.store.fetch(conversation, after, limits::sync_page_size(limit)).await?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let grace_ms = i64::try_from(self.sync_gap_grace.as_millis()).unwrap_or(i64::MAX);
        let visible = im_core::message::visible_prefix(&page.messages, after, now_ms, grace_ms);
        if visible < page.messages.len() {
            // The reader comes back when the missing seq is pushed, or the
            // grace ran out; more pages now would only repeat the wait.
            page.messages.truncate(visible);
            page.has_more = false;
        }
        self.metrics.synced.inc_by(page.messages.len() as u64);
        Ok(page)
    }

    async fn conversations(&self, user: UserId) -> Result<Vec<ConversationSummary>, ImError> {
        Ok(self.store.conversations_of(user).await?)
    }

    async fn mark_read(
        &self,
        user: UserId,
        device: &DeviceId,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<Seq, ImError> {
        require_member(user, conversation)?;
        let max_seq = self.store.max_seq(conversation).await?;
        if seq > max_seq {
            return Err(ImError::invalid(format!(
                "seq {seq} is beyond the last message of {conversation} ({max_seq})"
            )));
        }
        let before = self.receipts.read_position(user, conversation).await?;
        let after = self.receipts.mark_read(user, conversation, seq).await?;
        self.metrics.receipts.inc();
        if after > before {
            let event = Event::Receipt { conversation, reader: user, read_seq: after };
            let mut events: Vec<PushEvent> = conversation
                .members()
                .into_iter()
                .filter(|&member| member != user)
                .map(|member| PushEvent { user: member, skip_device: None, event: event.clone() })
                .collect();
            events.push(PushEvent { user, skip_device: Some(device.clone()), event });
            // Best effort, like every push: the position is stored either way.
            let _ = self.routes.send(RouteWork::Events(events));
            // What the user has read is no longer waiting for them. Off the
            // request path: the pending view filters by read position anyway,
            // so a failure here only leaves rows for a later read to remove.
            let offline = self.offline.clone();
            tokio::spawn(async move {
                if let Err(error) = offline.clear_offline(user, conversation, after).await {
                    tracing::debug!(%error, "could not clear read offline entries");
                }
            });
        }
        Ok(after)
    }
}
