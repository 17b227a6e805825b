//! The send pipeline: dedup, seq allocation and group commit, in one writer
//! task per node.
//!
//! Why one task: seqs are allocated and stored in the same order, so the
//! store never holds seq N+1 of a conversation while N may still be written
//! (G4's watermark holds by construction on a node), and every message that
//! arrives while a commit is in flight joins the next commit — one fsync for
//! all of them (G1 with group commit). Senders wait on a oneshot for their
//! ack; the ack is sent only after the commit returned.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use im_core::message::AppendOutcome;
use im_core::ports::{BackendResult, CommitExtras, DedupCache, MessageStore, OfflineEntry, OutboxRow, SeqAllocator};
use im_core::{
    Ack, AuditRecord, ClientMsgId, ConversationId, DeviceId, FirstSend, ImError, NewMessage, RequestDigest, UserId,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::breaker::SendBreakers;
use crate::commit_window::CommitWindow;
use crate::encryption::BodyCipher;
use crate::filter::audit::AuditQueue;
use crate::metrics::Metrics;
use crate::msg_id::MessageIdGenerator;
use crate::router::RouteWork;
use crate::telemetry::MessageTrace;
use crate::telemetry::propagation::stage_spans;

/// Most messages in one commit. Bounds the transaction size and the latency
/// of the first message of a batch.
const MAX_BATCH: usize = 1024;

/// A validated send waiting for its seq and commit.
pub struct SendJob {
    pub sender: UserId,
    pub device: DeviceId,
    /// Private or group; the recipient of a private message follows from it.
    pub conversation: ConversationId,
    pub client_msg_id: ClientMsgId,
    /// The request as the client sent it ([`crate::request_digest`]): a
    /// resend of its key is only answered with the first ack if it is the
    /// same request.
    pub digest: RequestDigest,
    pub body: Bytes,
    pub content_type: String,
    pub accepted_at: Instant,
    /// The message's trace, when sampled: the stages below make their spans
    /// for it.
    pub trace: MessageTrace,
    /// The word-list entries the filter found, when it audits rather than
    /// blocks or masks: stored with the message as its audit record.
    pub audit: Option<Vec<String>>,
    pub reply: oneshot::Sender<Result<Ack, ImError>>,
}

/// What one commit stored.
#[derive(Default)]
struct Stored {
    /// The newly stored messages, for the router.
    committed: Vec<Committed>,
    /// The route outbox row written with them.
    outbox: Option<u64>,
    /// Their first sends, in the same order, for the dedup cache
    /// ([`Pipeline::record_first_sends`]).
    first_sends: Vec<FirstSend>,
}

/// A message that was just committed, on its way to the router.
pub struct Committed {
    pub message: Arc<NewMessage>,
    pub device: DeviceId,
    pub accepted_at: Instant,
    pub trace: MessageTrace,
}

pub struct Pipeline {
    pub store: Arc<dyn MessageStore>,
    pub seqs: Arc<dyn SeqAllocator>,
    pub dedup: Arc<dyn DedupCache>,
    pub ids: Arc<MessageIdGenerator>,
    pub metrics: Arc<Metrics>,
    /// Where stored audit records are published (`content_audit`, on Kafka
    /// only); none elsewhere: the table alone keeps them.
    pub audits: Option<AuditQueue>,
    /// Seals bodies before they are stored, with encryption at rest.
    pub cipher: Option<Arc<BodyCipher>>,
    /// Over the commit (the store's) and over the dedup and seq calls
    /// (Redis's): while either is down a batch is refused before its dedup
    /// and seqs, at once.
    pub breakers: SendBreakers,
    /// Whether each commit writes its route outbox row ([`crate::outbox`]):
    /// on when offline entries are recorded.
    pub outbox: bool,
    /// Bounds the recordings of skipped seqs in flight.
    pub skip_recordings: SkipRecordings,
    /// How long a small batch waits for company under load.
    pub window: CommitWindow,
}

/// Recordings of skipped seqs that may run at once (G10): beyond, a batch's
/// are not recorded, and sync waits out the grace on those holes as it
/// would without the record. Burnt seqs are rare (a resend the dedup cache
/// missed), so the bound only matters in a storm against a slow store.
const MAX_SKIP_RECORDINGS: usize = 16;

/// The slots of [`MAX_SKIP_RECORDINGS`].
#[derive(Clone)]
pub struct SkipRecordings(Arc<Semaphore>);

impl Default for SkipRecordings {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_SKIP_RECORDINGS)))
    }
}

impl Pipeline {
    /// Runs until every sender handle is dropped.
    pub async fn run(self, mut jobs: mpsc::Receiver<SendJob>, routed: mpsc::Sender<RouteWork>) {
        let mut batch: Vec<SendJob> = Vec::with_capacity(MAX_BATCH);
        let mut under_load = false;
        while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.window.fill(&mut batch, &mut jobs, MAX_BATCH, under_load).await;
            let Stored { committed, outbox, first_sends } = self.commit(&mut batch).await;
            under_load = !jobs.is_empty();
            if committed.is_empty() {
                continue;
            }
            let stored: Vec<Arc<NewMessage>> = committed.iter().map(|c| Arc::clone(&c.message)).collect();
            // Routed before the acks are recorded in the dedup cache, so that
            // the pushes do not wait for a Redis round trip. Waits only when
            // the router is behind (out of CPU): the lanes, not the router,
            // wait for gateways.
            if routed.send(RouteWork::Messages { committed, outbox }).await.is_err() {
                tracing::warn!("router stopped; committed messages will reach devices by sync only");
            }
            self.record_first_sends(&stored, first_sends).await;
        }
        tracing::info!("send pipeline stopped");
    }

    /// Dedups, allocates seqs, stores the batch in one commit and answers
    /// every job; returns what it stored (nothing when the batch failed).
    async fn commit(&self, batch: &mut Vec<SendJob>) -> Stored {
        // G9: sends queued before the breaker opened fail now, not after the
        // store's timeouts; no seq is used.
        if let Err(refused) = self.breakers.check() {
            for job in batch.drain(..) {
                self.reject(job.reply, refused.clone());
            }
            return Stored::default();
        }
        // G3: dedup before a seq is allocated, the whole batch in one call.
        let keys: Vec<_> = batch.iter().map(|job| (job.sender, &job.client_msg_id)).collect();
        let spans = stage_spans!(batch.iter().map(|job| &job.trace), "im.dedup", batch = batch.len());
        let firsts = match self.on_redis(self.dedup.get_many(&keys)).await {
            Ok(firsts) => firsts,
            // The store's unique key still catches a duplicate.
            Err(e) => {
                tracing::warn!(error = %e, "dedup cache unavailable, relying on the store's unique key");
                vec![None; batch.len()]
            }
        };
        drop(spans);
        let mut fresh = Vec::with_capacity(batch.len());
        for (job, first) in batch.drain(..).zip(firsts) {
            match first {
                Some(first) if first.is_repeated_by(job.digest) => {
                    self.metrics.duplicates.inc();
                    let _ = job.reply.send(Ok(first.ack));
                }
                // The key answers another request: this one is not stored,
                // and the sender must not be told it was.
                Some(_) => self.reject(job.reply, ImError::client_msg_id_reused()),
                None => fresh.push(job),
            }
        }
        if fresh.is_empty() {
            return Stored::default();
        }
        // The sealing key before any seq: a batch that cannot be sealed (the
        // KMS down, the key no longer in memory) is refused without a gap.
        let sealing_key = match &self.cipher {
            None => None,
            Some(cipher) => match cipher.sealing_key().await {
                Ok(key) => Some(key),
                Err(err) => {
                    tracing::warn!(error = %err, batch = fresh.len(), "no key to seal the batch with");
                    for job in fresh {
                        self.reject(job.reply, err.clone());
                    }
                    return Stored::default();
                }
            },
        };
        // One allocation for the batch: new conversations' ceilings are
        // loaded and raised in one round trip each, not one fsync apiece.
        let conversations: Vec<ConversationId> = fresh.iter().map(|job| job.conversation).collect();
        let spans = stage_spans!(fresh.iter().map(|job| &job.trace), "im.seq", batch = fresh.len());
        let seqs = match self.on_redis(self.seqs.next_seqs(&conversations)).await {
            Ok(seqs) => seqs,
            Err(e) => {
                tracing::error!(error = %e, batch = fresh.len(), "seq allocation failed");
                let err: ImError = e.into();
                for job in fresh {
                    self.reject(job.reply, err.clone());
                }
                return Stored::default();
            }
        };
        drop(spans);
        let mut waiting = Vec::with_capacity(fresh.len());
        let mut messages = Vec::with_capacity(fresh.len());
        let mut digests = Vec::with_capacity(fresh.len());
        let mut audits = Vec::new();
        for (job, seq) in fresh.into_iter().zip(seqs) {
            digests.push(job.digest);
            let (msg_id, server_time_ms) = self.ids.next();
            if let Some(entries) = job.audit {
                audits.push(AuditRecord {
                    msg_id,
                    conversation: job.conversation,
                    seq,
                    sender: job.sender,
                    entries,
                    server_time_ms,
                });
            }
            messages.push(NewMessage {
                msg_id,
                conversation: job.conversation,
                seq,
                sender: job.sender,
                client_msg_id: job.client_msg_id,
                body: job.body,
                content_type: job.content_type,
                server_time_ms,
                sealed_with: None,
            });
            waiting.push((job.reply, job.device, job.accepted_at, job.trace));
        }
        if messages.is_empty() {
            return Stored::default();
        }
        self.metrics.commit_batch_size.observe(messages.len() as f64);

        // With encryption at rest, what is stored is sealed; the router still
        // pushes the clear text of private messages.
        let sealed = sealing_key.map(|key| BodyCipher::seal(&key, &messages));
        let stored = sealed.as_deref().unwrap_or(&messages);
        let outbox = self.outbox_row(&messages);
        let extras = CommitExtras { audits: &audits, outbox: outbox.as_ref(), digests: &digests };
        let spans = stage_spans!(waiting.iter().map(|(_, _, _, trace)| trace), "im.commit", batch = messages.len());
        let outcomes = match self.breakers.store.call(self.store.append_with(stored, &extras)).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // Nothing of the batch is stored; its seqs become a gap (G2).
                tracing::error!(error = %e, batch = messages.len(), "commit failed");
                let err: ImError = e.into();
                for (reply, _, _, _) in waiting {
                    self.reject(reply, err.clone());
                }
                return Stored::default();
            }
        };
        drop(spans);
        debug_assert_eq!(outcomes.len(), messages.len());

        let mut committed = Vec::with_capacity(messages.len());
        let mut first_sends = Vec::with_capacity(messages.len());
        // The seqs of the messages the store did not store: this node alone
        // was given them and the batch is over, so nobody will commit them.
        let mut skipped = Vec::new();
        let mut sealed = sealed.map(Vec::into_iter);
        for (((message, (reply, device, accepted_at, trace)), outcome), digest) in
            messages.into_iter().zip(waiting).zip(outcomes).zip(digests)
        {
            let sealed = sealed.as_mut().and_then(Iterator::next);
            match outcome {
                AppendOutcome::Stored => {}
                AppendOutcome::Duplicate(first) => {
                    self.metrics.duplicates.inc();
                    skipped.push((message.conversation, message.seq));
                    let _ = reply.send(Ok(first));
                    continue;
                }
                AppendOutcome::Conflict(_) => {
                    skipped.push((message.conversation, message.seq));
                    self.reject(reply, ImError::client_msg_id_reused());
                    continue;
                }
            }
            first_sends.push(FirstSend { ack: message.ack(), digest: Some(digest) });
            self.metrics.accepted.inc();
            let _ = reply.send(Ok(message.ack()));
            // A group message is not pushed from here but published on
            // group_msg: it travels as stored, sealed.
            let message = match sealed {
                Some(sealed) if message.conversation.group().is_some() => sealed,
                _ => message,
            };
            committed.push(Committed { message: Arc::new(message), device, accepted_at, trace });
        }
        self.record_skipped(skipped);
        if let Some(queue) = self.audits.as_ref().filter(|_| !audits.is_empty()) {
            // Only the records the store kept: those of messages stored now.
            let stored: std::collections::HashSet<_> = committed.iter().map(|c| c.message.msg_id).collect();
            queue.enqueue(audits.into_iter().filter(|audit| stored.contains(&audit.msg_id)));
        }
        Stored { committed, outbox: outbox.map(|row| row.id), first_sends }
    }

    /// Records the first sends of `stored` in the dedup cache, after their
    /// acks: a resend that overtakes this record misses the cache and is
    /// caught by the store's unique key (same first ack).
    async fn record_first_sends(&self, stored: &[Arc<NewMessage>], first_sends: Vec<FirstSend>) {
        let acks: Vec<_> = stored
            .iter()
            .zip(first_sends)
            .map(|(message, first)| (message.sender, &message.client_msg_id, first))
            .collect();
        if let Err(e) = self.on_redis(self.dedup.put_many_if_absent(&acks)).await {
            tracing::warn!(error = %e, "could not record the acks in the dedup cache");
        }
    }

    /// Records, off the commit path, the seqs a committed batch burnt
    /// (`MessageStore::record_skipped`), so sync steps over them at once.
    /// Best effort: without the record a reader waits `SYNC_GAP_GRACE` on
    /// the hole, as for any other gap. Only ever called after a commit that
    /// returned: a failed one may have landed.
    fn record_skipped(&self, skipped: Vec<(ConversationId, im_core::Seq)>) {
        if skipped.is_empty() {
            return;
        }
        let Ok(slot) = self.skip_recordings.0.clone().try_acquire_owned() else {
            tracing::debug!(
                seqs = skipped.len(),
                "too many recordings of skipped seqs in flight; sync waits out the grace"
            );
            return;
        };
        let store = Arc::clone(&self.store);
        let recorded_ms = crate::clock::unix_ms();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = store.record_skipped(&skipped, recorded_ms).await {
                tracing::warn!(error = %e, seqs = skipped.len(), "could not record skipped seqs; sync waits out the grace on them");
            }
        });
    }

    /// The route outbox row of `messages`: the entry each private message
    /// would need, under the first message's (unique) msg_id.
    fn outbox_row(&self, messages: &[NewMessage]) -> Option<OutboxRow> {
        let first = messages.first().filter(|_| self.outbox)?;
        let entries: Vec<OfflineEntry> = messages.iter().filter_map(OfflineEntry::of).collect();
        (!entries.is_empty()).then_some(OutboxRow { id: first.msg_id.0, created_ms: first.server_time_ms, entries })
    }

    /// A call to the seq allocator or the dedup cache, through Redis's
    /// breaker when they are Redis: one that hangs or keeps failing opens it.
    async fn on_redis<T>(&self, call: impl std::future::Future<Output = BackendResult<T>>) -> BackendResult<T> {
        match &self.breakers.seqs {
            Some(breaker) => breaker.call(call).await,
            None => call.await,
        }
    }

    fn reject(&self, reply: oneshot::Sender<Result<Ack, ImError>>, err: ImError) {
        self.metrics.fail(err.code);
        let _ = reply.send(Err(err));
    }
}
