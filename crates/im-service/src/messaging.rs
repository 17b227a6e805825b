//! The IM service's API (`im_core::ports::Messaging`): validation and access
//! rules in front of the send pipeline, the store and the router. Both the
//! gateway and the gRPC server call this; `user` is always the authenticated
//! identity.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use im_core::group::Member;
use im_core::message::{ConversationList, ConversationSummary, Page};
use im_core::ports::{Addressee, Event, GroupDirectory, MessageStore, Messaging, PushEvent, ReceiptStore, SendCommand};
use im_core::{Ack, ClientMsgId, ConversationId, DeviceId, ImError, Seq, UserId, limits};
use tokio::sync::{mpsc, oneshot};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::breaker::SendBreakers;
use crate::encryption::BodyCipher;
use crate::filter::{Checked, ContentFilter};
use crate::groups::MembershipCache;
use crate::known_users::KnownUsers;
use crate::metrics::Metrics;
use crate::pipeline::SendJob;
use crate::rate_limits::UserRateLimits;
use crate::router::RouteWork;
use crate::telemetry::MessageTrace;
use crate::telemetry::propagation::child_span;

pub struct MessagingService {
    /// Messages and body bytes per user and second.
    pub rate_limits: Arc<UserRateLimits>,
    pub jobs: mpsc::Sender<SendJob>,
    pub routes: mpsc::Sender<RouteWork>,
    pub store: Arc<dyn MessageStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    /// Offline entries a read makes moot are forgotten here.
    pub offline: Arc<dyn im_core::ports::OfflineStore>,
    pub users: KnownUsers,
    /// Who is in which group (the send path, sync and receipts ask it).
    pub groups: Arc<MembershipCache>,
    /// A user's groups, for the conversation list.
    pub directory: Arc<dyn GroupDirectory>,
    pub metrics: Arc<Metrics>,
    pub max_message_size: usize,
    /// How long sync waits for a missing seq before it shows what follows
    /// (`im_core::message::visible_prefix`).
    pub sync_gap_grace: std::time::Duration,
    /// `SYNC_PAGE_MAX_BYTES`: body bytes per sync page.
    pub sync_page_max_bytes: usize,
    /// The sensitive-word filter, when `filter.enabled`.
    pub filter: Option<Arc<ContentFilter>>,
    /// Opens sealed bodies (encryption at rest); none when no master key
    /// is configured.
    pub cipher: Option<Arc<BodyCipher>>,
    /// The circuit breakers of the store and of Redis: a send is refused at
    /// once while one is open, and released when one opens while it waits.
    pub breakers: SendBreakers,
}

impl MessagingService {
    async fn send_in(&self, user: UserId, device: &DeviceId, cmd: SendCommand, span: &Span) -> Result<Ack, ImError> {
        let accepted_at = Instant::now();
        // First: a user over the limit costs no more than this.
        self.rate_limits.check_send(user, cmd.body.len()).map_err(|e| self.failed(e))?;
        let (conversation, client_msg_id) = self.validate_send(user, &cmd).await.map_err(|e| self.failed(e))?;
        // Of the request as sent: a resend is filtered again, to the same.
        let digest = crate::request_digest::of(conversation, &cmd.content_type, &cmd.body);
        // After validation, before a seq: a blocked send uses none, stores
        // nothing, and leaves no dedup entry (its corrected resend may reuse
        // the client_msg_id).
        let checked = match &self.filter {
            Some(filter) => filter.check(&cmd.content_type, &cmd.body).map_err(|e| self.failed(e))?,
            None => Checked::Unchanged,
        };
        let (body, body_masked, audit) = match checked {
            Checked::Unchanged => (cmd.body, false, None),
            Checked::Masked(masked) => (masked, true, None),
            Checked::Audited(entries) => (cmd.body, false, Some(entries)),
        };
        let trace = MessageTrace::of(span);
        if trace.context().is_some() {
            span.record("conversation", tracing::field::display(conversation));
        }
        let (reply, ack) = oneshot::channel();
        let job = SendJob {
            sender: user,
            device: device.clone(),
            conversation,
            client_msg_id,
            digest,
            body,
            content_type: cmd.content_type,
            accepted_at,
            trace,
            audit,
            reply,
        };
        // G9: not queued behind a store that is down, and not held by one
        // that went down meanwhile (the commit may still land: a resend gets
        // the first ack).
        self.breakers.check().map_err(|e| self.failed(e))?;
        let released = self.breakers.opened();
        let committed = async {
            self.jobs.send(job).await.map_err(|_| self.failed(ImError::unavailable("the service is shutting down")))?;
            ack.await.map_err(|_| ImError::unavailable("the service is shutting down"))?
        };
        let mut ack = tokio::select! {
            biased;
            answer = committed => answer?,
            refusal = released => return Err(self.failed(refusal)),
        };
        ack.body_masked = body_masked;
        if !span.is_none() {
            span.record("msg_id", ack.msg_id.0).record("seq", ack.seq.0);
        }
        Ok(ack)
    }

    fn failed(&self, e: ImError) -> ImError {
        self.metrics.fail(e.code);
        e
    }

    async fn validate_send(&self, user: UserId, cmd: &SendCommand) -> Result<(ConversationId, ClientMsgId), ImError> {
        limits::check_body(cmd.body.len(), self.max_message_size)?;
        limits::check_content_type(&cmd.content_type)?;
        let client_msg_id = ClientMsgId::parse(&cmd.client_msg_id)?;
        let conversation = match cmd.to {
            Addressee::User(to) => {
                let conversation = ConversationId::private(user, to)?;
                if !self.users.exists(to).await? {
                    return Err(ImError::not_found(format!("no user {to}")));
                }
                conversation
            }
            // G6: only members send; from the cache, no round trip.
            Addressee::Group(group) => {
                self.groups.member(group, user).await?;
                ConversationId::Group(group)
            }
        };
        Ok((conversation, client_msg_id))
    }

    /// Checks that `user` may read `conversation`; for a group, returns the
    /// membership (its boundary limits what they see).
    async fn access(&self, user: UserId, conversation: ConversationId) -> Result<Option<Member>, ImError> {
        match conversation.group() {
            Some(group) => Ok(Some(self.groups.member(group, user).await?.1)),
            None if conversation.is_pair_member(user) => Ok(None),
            None => Err(ImError::denied(format!("you are not a member of {conversation}"))),
        }
    }

    /// The list entries of `user`'s groups: max seq, read position, and the
    /// unread messages of others they can see.
    /// The summaries of `user`'s groups, and whether the list is unchecked:
    /// with the group directory away, the groups this node has cached.
    async fn group_summaries(&self, user: UserId) -> Result<(Vec<ConversationSummary>, bool), ImError> {
        let (groups, unchecked) = match self.directory.groups_of(user).await {
            Ok(groups) => (groups.into_iter().map(|(group, member)| (group.id, member)).collect(), false),
            Err(error) => {
                tracing::debug!(%error, user = user.0, "group directory unavailable: listing the cached groups");
                (self.groups.cached_groups_of(user), true)
            }
        };
        let mut summaries = Vec::with_capacity(groups.len());
        for (group, member) in groups {
            let conversation = ConversationId::Group(group);
            let max_seq = self.store.max_seq(conversation).await?;
            let read_seq = self.receipts.read_position(user, conversation).await?;
            let unread = self.store.count_unread(conversation, user, read_seq.max(member.joined_after)).await?;
            let peer_read_seq = Seq::ZERO;
            summaries.push(ConversationSummary { conversation, max_seq, read_seq, unread, peer_read_seq });
        }
        Ok((summaries, unchecked))
    }
}

/// Opens the sealed bodies of `messages` in place. A sealed body with no
/// cipher (encryption turned off and no master key configured) cannot be
/// read: `UNAVAILABLE` until the master key is configured again.
pub async fn open_sealed(cipher: Option<&BodyCipher>, messages: &mut [im_core::NewMessage]) -> Result<(), ImError> {
    match cipher {
        Some(cipher) => cipher.open(messages).await,
        None if messages.iter().any(|m| m.sealed_with.is_some()) => {
            Err(ImError::unavailable("this conversation holds encrypted messages and no master key is configured"))
        }
        None => Ok(()),
    }
}

#[async_trait]
impl Messaging for MessagingService {
    async fn send(&self, user: UserId, device: &DeviceId, cmd: SendCommand) -> Result<Ack, ImError> {
        // Within the call's trace, if it has one; never the body.
        let span = child_span!("im.send", conversation = Empty, msg_id = Empty, seq = Empty);
        self.send_in(user, device, cmd, &span).instrument(span.clone()).await
    }

    async fn sync(&self, user: UserId, conversation: ConversationId, after: Seq, limit: u32) -> Result<Page, ImError> {
        // A group member sees what follows their join, whatever cursor they
        // ask from.
        let after = match self.access(user, conversation).await? {
            Some(member) => after.max(member.joined_after),
            None => after,
        };
        let mut page = self.store.fetch(conversation, after, limits::sync_page_size(limit)).await?;
        let now_ms = crate::clock::unix_ms();
        let grace_ms = i64::try_from(self.sync_gap_grace.as_millis()).unwrap_or(i64::MAX);
        // Seqs recorded as never to be stored are no reason to wait.
        let visible = im_core::message::visible_prefix(&page.messages, &page.skipped, after, now_ms, grace_ms);
        if visible < page.messages.len() {
            // The reader comes back when the missing seq is pushed, or the
            // grace ran out; more pages now would only repeat the wait.
            page.messages.truncate(visible);
            page.has_more = false;
        }
        // A page of 500 bodies of 10 KiB is a 5 MiB frame, over what clients
        // accept by default: bounded in bytes too.
        let fits = limits::page_prefix_within(page.messages.iter().map(|m| m.body.len()), self.sync_page_max_bytes);
        if fits < page.messages.len() {
            page.messages.truncate(fits);
            page.has_more = true;
        }
        // `skipped` stays within the messages returned.
        let last = page.messages.last().map_or(after, |m| m.seq);
        page.skipped.retain(|&seq| seq < last);
        open_sealed(self.cipher.as_deref(), &mut page.messages).await?;
        self.metrics.synced.inc_by(page.messages.len() as u64);
        Ok(page)
    }

    async fn conversations(&self, user: UserId) -> Result<ConversationList, ImError> {
        let mut summaries = self.store.conversations_of(user).await?;
        let (groups, groups_unchecked) = self.group_summaries(user).await?;
        summaries.extend(groups);
        Ok(ConversationList { summaries, groups_unchecked })
    }

    async fn mark_read(
        &self,
        user: UserId,
        device: &DeviceId,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<Seq, ImError> {
        self.access(user, conversation).await?;
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
            // The peer of a private conversation is told; in a group, the
            // reader's own devices only (members ask GetReadStatus: telling
            // 5,000 members of every read is not worth it).
            let mut events: Vec<PushEvent> = conversation
                .peer_of(user)
                .map(|peer| PushEvent { user: peer, skip_device: None, event: event.clone() })
                .into_iter()
                .collect();
            events.push(PushEvent { user, skip_device: Some(device.clone()), event });
            // Best effort, like every push: the position is stored either way.
            // Never waiting: a router too far behind drops the receipt push
            // (the position is stored; other devices see it on their next
            // list or sync).
            let _ = self.routes.try_send(RouteWork::Events(events));
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
