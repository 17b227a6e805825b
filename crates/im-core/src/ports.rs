//! The ports: one small trait per concern, each with an embedded and (later)
//! a production implementation in `im-backends`. Every implementation keeps
//! this method order and these doc comments, and passes the conformance suite
//! for its port (`im_backends::conformance`).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BackendError;
use crate::group::{Group, Member, MembershipChange, MembershipOp, NewGroup, Roster};
use crate::message::{AppendOutcome, ConversationSummary, ExpiryStep, Page, ReadStatus};
use crate::{
    Ack, AuditRecord, ClientMsgId, ConversationId, DeviceId, FirstSend, GatewayId, GroupId, ImError, MessageId,
    NewMessage, RequestDigest, Seq, StatusChange, UserId, UserStatus,
};

pub type BackendResult<T> = Result<T, BackendError>;

/// Durable message timeline (SQLite, MySQL).
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Appends a batch in one transaction that is committed durably (fsync)
    /// before this returns: one commit for the whole batch (group commit).
    /// Outcomes are in batch order. A message whose `(sender, client_msg_id)`
    /// is already stored is not stored again; its outcome carries the first
    /// ack. On error nothing of the batch is stored.
    async fn append(&self, batch: &[NewMessage]) -> BackendResult<Vec<AppendOutcome>> {
        self.append_audited(batch, &[]).await
    }

    /// [`MessageStore::append`], storing in the same transaction the audit
    /// record of each message of `audits` (matched by `msg_id`) that is
    /// stored now. A duplicate's record is dropped: the message stored first
    /// was filtered, and recorded, when it was sent.
    async fn append_audited(&self, batch: &[NewMessage], audits: &[AuditRecord]) -> BackendResult<Vec<AppendOutcome>> {
        self.append_with(batch, &CommitExtras { audits, ..CommitExtras::default() }).await
    }

    /// [`MessageStore::append`], with what `extras` adds to the same
    /// transaction: the audit records and the outbox entries of the messages
    /// stored now (matched by `msg_id`; a duplicate's are dropped, as its
    /// first send had them). An outbox row none of whose entries remain is
    /// not written.
    async fn append_with(&self, batch: &[NewMessage], extras: &CommitExtras<'_>) -> BackendResult<Vec<AppendOutcome>>;

    /// Audit records, newest (highest msg_id) first, at most `query.limit`.
    async fn audit_records(&self, query: &AuditQuery) -> BackendResult<Vec<AuditRecord>>;

    /// Messages of `conversation` with seq > `after`, ascending, at most
    /// `limit`; `has_more` tells whether more follow. `skipped` lists the
    /// seqs recorded by [`MessageStore::record_skipped`] between `after` and
    /// the last message returned (none past it, none when no message is).
    async fn fetch(&self, conversation: ConversationId, after: Seq, limit: u32) -> BackendResult<Page>;

    /// Records seqs that will never be stored: allocated for a batch whose
    /// commit returned, to messages it did not store (`Duplicate`,
    /// `Conflict`). Sync then steps over them at once instead of waiting
    /// `SYNC_GAP_GRACE` for another node to commit them. Never a seq of a
    /// failed commit (it may have landed) nor of a stored message. Recording
    /// a seq again changes nothing; `recorded_ms` (unix ms) is what retention
    /// ages the record by.
    async fn record_skipped(&self, seqs: &[(ConversationId, Seq)], recorded_ms: i64) -> BackendResult<()>;

    /// The ack of a stored message, by its idempotency key.
    async fn find_by_client_msg_id(&self, sender: UserId, client_msg_id: &ClientMsgId) -> BackendResult<Option<Ack>>;

    /// The private conversations `user` is in, with max seq, read position
    /// and unread count, most recently active first. (Groups are listed from
    /// the membership: a group message is stored once, not per member.)
    async fn conversations_of(&self, user: UserId) -> BackendResult<Vec<ConversationSummary>>;

    /// Highest stored seq of a conversation (`Seq::ZERO` when empty).
    async fn max_seq(&self, conversation: ConversationId) -> BackendResult<Seq>;

    /// How many messages of `conversation` with seq > `after` were sent by
    /// someone other than `reader`: a group member's unread count.
    async fn count_unread(&self, conversation: ConversationId, reader: UserId, after: Seq) -> BackendResult<u64>;

    /// How many stored messages each data key seals (`sealed_with`), with
    /// `None` for the messages stored in clear; keys sealing no message are
    /// not listed. For `imctl keys status`: a scan of the whole table.
    async fn rows_by_key(&self) -> BackendResult<Vec<(Option<u64>, u64)>>;

    /// A cheap round trip to the store, for `/ready`.
    async fn ping(&self) -> BackendResult<()>;

    /// One step of the retention walk (`MESSAGE_RETENTION_DAYS`): examines
    /// at most `limit` messages in storage order (commit order) after
    /// position `after` (0: from the start), and deletes those with
    /// `server_time_ms < before_ms` whose successor (the next stored message
    /// of their conversation) is older than `before_ms` too. So each
    /// conversation keeps its newest message whatever its age (`max_seq`,
    /// the conversation list and read positions keep their meaning), and a
    /// gap retention leaves always lies below an expired message (sync
    /// steps over it at once). A step that ends the walk (`done`) also
    /// deletes at most `limit` records of [`MessageStore::record_skipped`]
    /// older than `before_ms`, oldest first, so they stay bounded. Short:
    /// one small transaction, committed before this returns; safe to run on
    /// several nodes at once.
    async fn expire_messages(&self, before_ms: i64, after: u64, limit: u32) -> BackendResult<ExpiryStep>;
}

/// Which audit records to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records of messages with a lower id (the last id of the previous
    /// page); none: from the newest.
    pub before: Option<MessageId>,
    /// Only this conversation's records.
    pub conversation: Option<ConversationId>,
    pub limit: u32,
}

/// Read positions (G5).
#[async_trait]
pub trait ReceiptStore: Send + Sync + 'static {
    /// Moves `user`'s read position in `conversation` to `max(old, seq)` and
    /// returns the position after the call.
    async fn mark_read(&self, user: UserId, conversation: ConversationId, seq: Seq) -> BackendResult<Seq>;

    /// The read position (`Seq::ZERO` if never read).
    async fn read_position(&self, user: UserId, conversation: ConversationId) -> BackendResult<Seq>;

    /// The users whose read position in `conversation` is at least `seq`,
    /// ascending by id, at most `limit` of them.
    async fn readers(&self, conversation: ConversationId, seq: Seq, limit: u32) -> BackendResult<Vec<UserId>>;
}

/// Durable per-conversation seq ceilings (DESIGN.md §4). Batch-first: the
/// send pipeline loads and raises the ceilings of a whole batch in one round
/// trip and one durable write.
#[async_trait]
pub trait CeilingStore: Send + Sync + 'static {
    /// The stored ceilings, in the order asked, `Seq::ZERO` where none.
    async fn load_ceilings(&self, conversations: &[ConversationId]) -> BackendResult<Vec<Seq>>;

    /// Raises every listed ceiling durably, in one write: when this returns
    /// all of them are on disk (on error, none may be relied on). A value
    /// lower than the stored one leaves the stored one: ceilings never move
    /// down.
    async fn raise_ceilings(&self, raises: &[(ConversationId, Seq)]) -> BackendResult<()>;

    /// [`CeilingStore::load_ceilings`] for one conversation.
    async fn load_ceiling(&self, conversation: ConversationId) -> BackendResult<Seq> {
        Ok(self.load_ceilings(&[conversation]).await?[0])
    }

    /// [`CeilingStore::raise_ceilings`] for one conversation.
    async fn raise_ceiling(&self, conversation: ConversationId, ceiling: Seq) -> BackendResult<()> {
        self.raise_ceilings(&[(conversation, ceiling)]).await
    }
}

/// Allocator epochs (DESIGN.md §4), one per `scope` (a deployment's counter
/// namespace, such as its Redis key prefix). Counters are kept under the
/// current epoch; when they may have gone back in time (a Redis restarted
/// from an old snapshot, a failover to a stale replica) the epoch is bumped,
/// so the counters of older epochs are never trusted again and every
/// conversation restarts from its stored ceiling.
#[async_trait]
pub trait EpochStore: Send + Sync + 'static {
    /// The stored epoch of `scope`, 0 when never bumped.
    async fn current_epoch(&self, scope: &str) -> BackendResult<u64>;

    /// Durably moves `scope`'s epoch past `seen` and returns the stored epoch:
    /// `max(stored, seen + 1)`. Nodes that saw the same stale epoch and bump
    /// concurrently end on the same new epoch.
    async fn bump_epoch(&self, scope: &str, seen: u64) -> BackendResult<u64>;
}

/// The longest `master_key_id` a [`DataKeyStore`] keeps, in bytes: the
/// longest AWS KMS key ARN. A longer one is refused (`BackendError::Other`).
pub const MAX_MASTER_KEY_ID_BYTES: usize = 2048;

/// The longest wrapped data key a [`DataKeyStore`] keeps, in bytes (a KMS
/// ciphertext blob of an AES-256 key is about 200). A longer one is refused
/// (`BackendError::Other`).
pub const MAX_WRAPPED_DATA_KEY_BYTES: usize = 65_535;

/// A data key as stored: only its wrapped form (encrypted by the master key)
/// ever reaches the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDataKey {
    /// Given by the store, increasing with each activation and never reused:
    /// sealed bodies name their key by it.
    pub id: u64,
    /// The data key encrypted under the master key (a KMS ciphertext blob).
    pub wrapped: Vec<u8>,
    /// The master key that wrapped it (a KMS key id or ARN).
    pub master_key_id: String,
    pub created_ms: i64,
    /// When another key became active; the key stays readable.
    pub retired_ms: Option<i64>,
}

/// Durable data keys of envelope encryption (SQLite, MySQL): every key ever
/// activated, in wrapped form, and which one is active. One active key per
/// store, shared by every node on it.
#[async_trait]
pub trait DataKeyStore: Send + Sync + 'static {
    /// The key new bodies are sealed with, if any.
    async fn active_data_key(&self) -> BackendResult<Option<StoredDataKey>>;

    /// Compare-and-swap activation: stores the new wrapped key and makes it
    /// active only if the active key's id is still `expected` (None: no key
    /// active yet); the key it replaces gets `retired_ms = created_ms`.
    /// Returns the active key after the call: the new one, or, when another
    /// node won the race (or `expected` was stale), the winner's, and then
    /// nothing is stored: the losing wrapped key is dropped, never kept nor
    /// made active. Two nodes activating at once with the same `expected` end
    /// with ONE active key, both told the same one. `expected` naming a key
    /// while none is active is an error (`BackendError::Other`): there is no
    /// winner to return.
    async fn activate_data_key(
        &self,
        expected: Option<u64>,
        wrapped: &[u8],
        master_key_id: &str,
        created_ms: i64,
    ) -> BackendResult<StoredDataKey>;

    /// A key by id, active or retired (sealed bodies name their key's id).
    async fn data_key(&self, id: u64) -> BackendResult<Option<StoredDataKey>>;

    /// Every key, oldest first.
    async fn data_keys(&self) -> BackendResult<Vec<StoredDataKey>>;

    /// Replaces key `id`'s wrapped form (re-wrapped under a new master key,
    /// `master_key_id`) if it is still `old_wrapped` (CAS); false if it
    /// changed meanwhile or there is no such key.
    async fn rewrap_data_key(
        &self,
        id: u64,
        old_wrapped: &[u8],
        new_wrapped: &[u8],
        master_key_id: &str,
    ) -> BackendResult<bool>;
}

/// A stored message whose body is not sealed with the active data key, as
/// [`ResealStore::bodies_to_reseal`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBody {
    /// Its storage position (commit order, never reused): the cursor of the
    /// walk.
    pub position: u64,
    /// As stored: `sealed_with` names the key `body` is sealed with, `None`
    /// for a body stored in clear.
    pub message: NewMessage,
}

/// A new sealing of a stored body, for [`ResealStore::reseal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reseal {
    pub position: u64,
    /// The key the row must still be sealed with (`None`: in clear) for the
    /// new body to replace it.
    pub expected: Option<u64>,
    pub body: Bytes,
    pub sealed_with: u64,
}

/// Re-encryption of stored bodies under the active data key (`imctl keys
/// reencrypt`), a walk in storage order that any number of walkers (and
/// live traffic) can share: every write is a compare-and-set on the row's
/// key, so a row changed since it was read is left as it is.
#[async_trait]
pub trait ResealStore: Send + Sync + 'static {
    /// At most `limit` messages whose body is not sealed with `key` (sealed
    /// with another key, or in clear), in storage order after position
    /// `after` (0: from the start). Fewer than `limit`: the walk is over.
    async fn bodies_to_reseal(&self, key: u64, after: u64, limit: u32) -> BackendResult<Vec<StoredBody>>;

    /// Replaces the body and key of each row given whose key is still
    /// `expected`, in one transaction committed before this returns; rows
    /// changed or deleted meanwhile are skipped. Returns how many rows were
    /// replaced.
    async fn reseal(&self, rows: &[Reseal]) -> BackendResult<u64>;
}

/// A user as the directory keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub created_at_ms: i64,
    pub status: UserStatus,
}

/// Outcome of creating a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateUser {
    Created(User),
    NameTaken,
}

/// The user directory (built in: SQLite; production: the User Service).
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user with a new id; a taken name is a typed outcome.
    async fn create_user(&self, name: &str) -> BackendResult<CreateUser>;

    async fn user_by_id(&self, id: UserId) -> BackendResult<Option<User>>;

    async fn user_by_name(&self, name: &str) -> BackendResult<Option<User>>;
}

/// Signing in with a name and a password: the user directory, in process or
/// the User Service's `Login` over gRPC. The gateway's `POST /login`.
#[async_trait]
pub trait SignIn: Send + Sync + 'static {
    /// The user named `name` and a fresh token for it, when `password` is
    /// its password. Failures are typed (`ErrorReason::InvalidCredentials`,
    /// `RateLimited`, `UserDisabled`).
    async fn sign_in(&self, name: &str, password: &str) -> Result<(User, String), ImError>;
}

/// Users' password hashes (PHC strings, argon2id), kept apart from the user
/// rows so that no user query reads them by accident. The user directory's
/// (SQLite, MySQL; `im-user` owns it in production).
#[async_trait]
pub trait PasswordStore: Send + Sync + 'static {
    /// Sets `user`'s password hash, replacing any earlier one; false when
    /// there is no such user (nothing stored).
    async fn set_password_hash(&self, user: UserId, hash: &str) -> BackendResult<bool>;

    /// `user`'s password hash; `None` when it has no password (or there is
    /// no such user).
    async fn password_hash(&self, user: UserId) -> BackendResult<Option<String>>;
}

/// Users' standing as stored: the truth a [`UserStatusBoard`] spreads to
/// every process (SQLite, MySQL; `im-user` owns it in production).
#[async_trait]
pub trait UserStatusStore: Send + Sync + 'static {
    /// Applies `change` to `user` and returns its new status; `None` when
    /// there is no such user (nothing changed).
    async fn change_user_status(&self, user: UserId, change: StatusChange) -> BackendResult<Option<UserStatus>>;

    /// Every user whose status is not the default, to load a board from.
    async fn changed_user_statuses(&self) -> BackendResult<Vec<(UserId, UserStatus)>>;
}

/// Called with each status a process learns of, after its view holds it.
pub type StatusListener = Box<dyn Fn(UserId, UserStatus) + Send + Sync>;

/// What this process knows of users' standing, read on every token check
/// without a round trip (an in-process map, or a watched etcd prefix).
pub trait UserStatusView: Send + Sync + 'static {
    /// `user`'s status as last heard; the default for users never changed.
    fn status(&self, user: UserId) -> UserStatus;

    /// Calls `listener` with every status change this process learns of
    /// from now on, its own publishes included (a gateway closes the
    /// connections a change refuses).
    fn on_change(&self, listener: StatusListener);
}

/// Spreads users' standing to every process (embedded: in process;
/// production: etcd, within the watch latency).
#[async_trait]
pub trait UserStatusBoard: UserStatusView {
    /// Makes `status` the one every process sees for `user`.
    async fn publish(&self, user: UserId, status: UserStatus) -> BackendResult<()>;
}

/// Hands out seqs per conversation: strictly increasing, never reused, also
/// across restarts and loss of the counter (G2).
#[async_trait]
pub trait SeqAllocator: Send + Sync + 'static {
    /// One seq per entry, in order; a conversation listed several times gets
    /// increasing seqs. The whole batch costs at most one ceiling load and one
    /// durable ceiling write. On error no seq of the batch was handed out.
    async fn next_seqs(&self, conversations: &[ConversationId]) -> BackendResult<Vec<Seq>>;

    /// A boundary in `conversation`'s seqs, for group membership changes
    /// (`im_core::group`): at least every seq handed out before this call
    /// (on any node), and below every seq handed out after it returns. Hands
    /// nothing out and writes nothing.
    async fn current_seq(&self, conversation: ConversationId) -> BackendResult<Seq>;

    /// [`SeqAllocator::next_seqs`] for one message.
    async fn next_seq(&self, conversation: ConversationId) -> BackendResult<Seq> {
        Ok(self.next_seqs(&[conversation]).await?[0])
    }
}

/// Remembers the first ack per `(sender, client_msg_id)` for a while (G3).
/// The store's unique key stands behind it: a miss here is not proof that the
/// message is new.
#[async_trait]
pub trait DedupCache: Send + Sync + 'static {
    async fn get(&self, sender: UserId, client_msg_id: &ClientMsgId) -> BackendResult<Option<FirstSend>>;

    /// Records the first send unless one is already recorded; returns the
    /// recorded one.
    async fn put_if_absent(
        &self,
        sender: UserId,
        client_msg_id: &ClientMsgId,
        first: FirstSend,
    ) -> BackendResult<FirstSend>;

    /// [`DedupCache::get`] for a batch, in order. A networked cache answers
    /// the whole batch in one round trip: the send pipeline's single writer
    /// must not wait a round trip per message.
    async fn get_many(&self, keys: &[(UserId, &ClientMsgId)]) -> BackendResult<Vec<Option<FirstSend>>> {
        let mut found = Vec::with_capacity(keys.len());
        for &(sender, client_msg_id) in keys {
            found.push(self.get(sender, client_msg_id).await?);
        }
        Ok(found)
    }

    /// [`DedupCache::put_if_absent`] for a batch, in one round trip where the
    /// cache is networked. Keys already recorded keep their first send.
    async fn put_many_if_absent(&self, entries: &[(UserId, &ClientMsgId, FirstSend)]) -> BackendResult<()> {
        for (sender, client_msg_id, first) in entries {
            self.put_if_absent(*sender, client_msg_id, *first).await?;
        }
        Ok(())
    }
}

/// A record on a bus topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusRecord {
    /// Records with the same key keep their order.
    pub key: Bytes,
    pub payload: Bytes,
    /// What travels beside the payload (Kafka record headers).
    pub headers: RecordHeaders,
    /// Position in the topic (partition-local in Kafka).
    pub offset: u64,
}

/// Named values that travel with a bus record beside its payload, as Kafka
/// record headers do: metadata about the record (the W3C `traceparent` of
/// the message it carries), never part of the payload's contract. Most
/// records carry none, and an empty set does not allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordHeaders(Vec<(String, Bytes)>);

impl RecordHeaders {
    /// Sets `name` to `value`, replacing an earlier value of `name`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, value)| value)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every header, in the order first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }
}

/// A consumer of one topic within a consumer group.
#[async_trait]
pub trait BusConsumer: Send {
    /// Waits up to `timeout` for up to `max` records after the group's
    /// committed position (or what this consumer already received).
    async fn poll(&mut self, max: usize, timeout: Duration) -> BackendResult<Vec<BusRecord>>;

    /// Marks everything up to and including `record` as done for the group. A
    /// consumer that restarts resumes after the last commit.
    async fn commit(&mut self, record: &BusRecord) -> BackendResult<()>;

    /// Leaves the group and returns once the bus knows: what this member
    /// received and did not commit goes to the members that remain, and a
    /// member that joins afterwards does not overlap with this one. Dropping
    /// a consumer leaves too, but may return before the bus knows (Kafka's
    /// leave is a broker round trip, done on another thread).
    async fn close(self: Box<Self>) -> BackendResult<()> {
        drop(self);
        Ok(())
    }
}

/// The message bus: `group_msg`, `offline_msg`, `membership_change`.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes durably (acknowledged by the bus) before returning.
    async fn publish(&self, topic: &str, key: Bytes, payload: Bytes) -> BackendResult<()> {
        self.publish_with_headers(topic, key, payload, RecordHeaders::default()).await
    }

    /// [`Bus::publish`] with headers, which consumers get back on the
    /// record.
    async fn publish_with_headers(
        &self,
        topic: &str,
        key: Bytes,
        payload: Bytes,
        headers: RecordHeaders,
    ) -> BackendResult<()>;

    /// Joins `group` on `topic`. Members of one group share the records; each
    /// group sees every record.
    async fn subscribe(&self, topic: &str, group: &str) -> BackendResult<Box<dyn BusConsumer>>;
}

/// Where users are connected: user -> gateways.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Records that `user` has a device on `gateway`.
    async fn register(&self, user: UserId, gateway: &GatewayId) -> BackendResult<()>;

    /// Removes the record for `user` on `gateway` (its last device left).
    async fn unregister(&self, user: UserId, gateway: &GatewayId) -> BackendResult<()>;

    /// The gateways `user` is connected to, from a local view (no round trip
    /// per message in production: a watched cache).
    fn gateways_of(&self, user: UserId) -> Vec<GatewayId>;
}

/// Something to tell a user's connected devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Message(std::sync::Arc<NewMessage>),
    Receipt { conversation: ConversationId, reader: UserId, read_seq: Seq },
}

/// One event for the devices of one user on one gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    pub user: UserId,
    /// The device that caused the event (the sender's own device) is skipped.
    pub skip_device: Option<DeviceId>,
    pub event: Event,
}

/// What a gateway did with a push batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Events delivered to at least one device.
    pub delivered: u32,
    /// Indexes (into the batch) of events whose user had no device there.
    pub offline: Vec<u32>,
}

/// One event for many users of one gateway: a group message travels to the
/// gateway once, with the list of members connected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanOut {
    pub event: Event,
    pub users: Vec<UserId>,
    /// The sending device, which already has the message.
    pub skip: Option<(UserId, DeviceId)>,
}

/// The Gateway push API, as the IM service sees it (in process, or gRPC to
/// `im.gateway.v1.PushService`).
#[async_trait]
pub trait Pusher: Send + Sync + 'static {
    /// Delivers a batch to the connected devices of its users on `gateway`.
    async fn push(&self, gateway: &GatewayId, batch: &[PushEvent]) -> BackendResult<PushReport>;

    /// Delivers each fan-out to the connected devices of its users on
    /// `gateway`; returns how many (event, user) pairs reached a device.
    /// Implementations send and encode each event once, not once per user.
    async fn fan_out(&self, gateway: &GatewayId, batch: &[FanOut]) -> BackendResult<u64> {
        let mut events = Vec::new();
        for fan_out in batch {
            for &user in &fan_out.users {
                let skip_device =
                    fan_out.skip.as_ref().filter(|(sender, _)| *sender == user).map(|(_, device)| device.clone());
                events.push(PushEvent { user, skip_device, event: fan_out.event.clone() });
            }
        }
        Ok(u64::from(self.push(gateway, &events).await?.delivered))
    }
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressee {
    User(UserId),
    Group(GroupId),
}

/// A message as a client asks to send it; the sender comes from the
/// authenticated connection, never from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendCommand {
    pub to: Addressee,
    pub client_msg_id: String,
    pub body: Bytes,
    pub content_type: String,
}

/// The IM service as its callers (the gateway, the gRPC server) see it. Every
/// method acts as `user`, the authenticated identity.
#[async_trait]
pub trait Messaging: Send + Sync + 'static {
    /// Stores the message durably and returns its ack; then pushes it.
    async fn send(&self, user: UserId, device: &DeviceId, cmd: SendCommand) -> Result<Ack, crate::ImError>;

    /// A page of a conversation `user` is a member of.
    async fn sync(
        &self,
        user: UserId,
        conversation: ConversationId,
        after: Seq,
        limit: u32,
    ) -> Result<Page, crate::ImError>;

    /// `user`'s conversations.
    async fn conversations(&self, user: UserId) -> Result<crate::message::ConversationList, crate::ImError>;

    /// Moves the read position forward and tells the other side.
    async fn mark_read(
        &self,
        user: UserId,
        device: &DeviceId,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<Seq, crate::ImError>;
}

/// A message that reached none of its addressee's devices (DESIGN.md §3): the
/// router publishes it on `offline_msg`, and the offline worker records it
/// for offline delivery (a notification service, a reconnecting device) and
/// unread counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineEntry {
    /// The addressee, who was offline.
    pub user: UserId,
    pub conversation: ConversationId,
    pub seq: Seq,
    pub msg_id: MessageId,
    pub server_time_ms: i64,
}

impl OfflineEntry {
    /// The entry `message` needs should it reach none of its addressee's
    /// devices; `None` for a group message (its members sync).
    pub fn of(message: &NewMessage) -> Option<Self> {
        Some(Self {
            user: message.recipient()?,
            conversation: message.conversation,
            seq: message.seq,
            msg_id: message.msg_id,
            server_time_ms: message.server_time_ms,
        })
    }
}

/// What a commit writes beside its messages, in the same transaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitExtras<'a> {
    /// What the sensitive-word filter found in messages it let through.
    pub audits: &'a [AuditRecord],
    /// The route outbox row of the batch: the offline entry each of its
    /// private messages would need should it reach no device.
    pub outbox: Option<&'a OutboxRow>,
    /// The request digest of each message of the batch, in order; empty
    /// when not known (the rows then keep none, and a repeat of their key
    /// counts as a resend).
    pub digests: &'a [RequestDigest],
}

/// One committed batch whose routing has not been settled yet (the route
/// outbox): written in the batch's own transaction, deleted once the router
/// knows which of its messages reached a device and has recorded the
/// others' entries. A row that outlives its node (kill -9) is found by age
/// and all its entries recorded: an entry too many, never one too few.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Unique per batch: the `msg_id` of its first message.
    pub id: u64,
    pub created_ms: i64,
    /// One per private message of the batch, for its addressee.
    pub entries: Vec<OfflineEntry>,
}

/// What waits for `user` in one conversation: the recorded entries above
/// their read position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingOffline {
    pub conversation: ConversationId,
    /// Entries recorded above the read position.
    pub count: u64,
    /// The lowest and the highest of their seqs: a device syncs from just
    /// below `first_seq`.
    pub first_seq: Seq,
    pub last_seq: Seq,
    /// `server_time_ms` of the latest entry.
    pub last_time_ms: i64,
}

/// Offline entries (MySQL in production), written in batches by the offline
/// worker. Read positions come from the same store's `ReceiptStore`: what a
/// user has read is not pending, whichever was written first.
#[async_trait]
pub trait OfflineStore: Send + Sync + 'static {
    /// Records a batch in one write, committed durably before this returns
    /// (on error, none of it may be relied on). Idempotent: an entry whose
    /// `(user, conversation, seq)` is already recorded, or repeated within
    /// the batch, is stored once, so a batch redelivered after a crash adds
    /// nothing.
    async fn record_offline(&self, entries: &[OfflineEntry]) -> BackendResult<()>;

    /// Per conversation, the entries of `user` with a seq above their read
    /// position; latest entry first, at most `limit` conversations.
    async fn pending_offline(&self, user: UserId, limit: u32) -> BackendResult<Vec<PendingOffline>>;

    /// Forgets the entries of `user` in `conversation` up to and including
    /// `up_to` (delivered or read); returns how many were removed.
    async fn clear_offline(&self, user: UserId, conversation: ConversationId, up_to: Seq) -> BackendResult<u64>;

    /// Settles route outbox rows: records `entries` (idempotently, as
    /// [`OfflineStore::record_offline`]) and deletes the rows `settled`, in
    /// one durable transaction. A row already gone is no error.
    async fn settle_outbox(&self, entries: &[OfflineEntry], settled: &[u64]) -> BackendResult<()>;

    /// Outbox rows created before `before_ms`, oldest first, at most `limit`:
    /// batches whose node stopped before settling them.
    async fn abandoned_outbox(&self, before_ms: i64, limit: u32) -> BackendResult<Vec<OutboxRow>>;
}

/// Durable groups and their membership (the user service's store: SQLite
/// built in, MySQL in production). Every change is one transaction that
/// checks the rule (`im_core::group::authorize`) against the roles it reads,
/// writes, and bumps the group's version.
#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
    /// Creates a group at version 1: the owner with role owner, `members`
    /// (other than the owner, repeats ignored) as members, all with boundary
    /// 0. Unknown users are a typed refusal.
    async fn create_group(&self, group: &NewGroup) -> BackendResult<Result<Roster, ImError>>;

    /// The group and its members at one version, in one consistent read.
    async fn roster(&self, group: GroupId) -> BackendResult<Option<Roster>>;

    /// The groups `user` is a member of, with their membership, by group id.
    async fn groups_of(&self, user: UserId) -> BackendResult<Vec<(Group, Member)>>;

    /// Applies `op` by `actor` in one transaction: the rule is checked
    /// against the stored roles (a refusal changes nothing), joiners get
    /// `boundary` (`im_core::group::join_boundary` of the current seq), the
    /// version moves up by one. `max_members` bounds the group's size.
    /// Adding only users already in changes nothing and is refused as
    /// `FAILED_PRECONDITION`; unknown users and groups are `NOT_FOUND`.
    async fn change_membership(
        &self,
        group: GroupId,
        actor: UserId,
        op: &MembershipOp,
        boundary: Seq,
        max_members: usize,
    ) -> BackendResult<Result<MembershipChange, ImError>>;
}

/// The group directory as the IM service sees it (in process, or gRPC to
/// `im.user.v1.GroupDirectory`): it owns groups, checks who may change them,
/// writes durably and publishes every change on `membership_change`.
#[async_trait]
pub trait GroupDirectory: Send + Sync + 'static {
    async fn create_group(&self, group: NewGroup) -> Result<Roster, ImError>;

    /// Applies a change by `actor` at `boundary` (see [`GroupStore`]).
    async fn change_membership(
        &self,
        group: GroupId,
        actor: UserId,
        op: MembershipOp,
        boundary: Seq,
    ) -> Result<MembershipChange, ImError>;

    /// The authoritative roster (the caches load from it).
    async fn roster(&self, group: GroupId) -> Result<Option<Roster>, ImError>;

    async fn groups_of(&self, user: UserId) -> Result<Vec<(Group, Member)>, ImError>;
}

/// Groups as callers of the IM service see them (`im.v1.GroupService`);
/// every method acts as `user`, the authenticated identity.
#[async_trait]
pub trait Groups: Send + Sync + 'static {
    async fn create_group(
        &self,
        user: UserId,
        name: String,
        members: Vec<UserId>,
        history_visible: bool,
    ) -> Result<Roster, ImError>;

    /// Add, remove, leave, set a role; the boundary is stamped here.
    async fn change_membership(
        &self,
        user: UserId,
        group: GroupId,
        op: MembershipOp,
    ) -> Result<MembershipChange, ImError>;

    /// A group's members; only members may list them.
    async fn roster(&self, user: UserId, group: GroupId) -> Result<Roster, ImError>;

    /// `user`'s groups.
    async fn groups_of(&self, user: UserId) -> Result<Vec<(Group, Member)>, ImError>;

    /// How many members read the message with `seq`, and who, when the group
    /// is small enough; only members may ask.
    async fn read_status(&self, user: UserId, group: GroupId, seq: Seq) -> Result<ReadStatus, ImError>;
}
