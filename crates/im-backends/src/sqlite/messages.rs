//! `MessageStore` over the `messages` and `conversation_members` tables.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use im_core::error::BackendError;
use im_core::message::{AppendOutcome, ConversationSummary, ExpiryStep, Page};
use im_core::ports::AuditQuery;
use im_core::ports::{BackendResult, CommitExtras, MessageStore};
use im_core::{
    Ack, AuditRecord, ClientMsgId, ConversationId, FirstSend, MessageId, NewMessage, RequestDigest, Seq, UserId,
};
use sqlx::SqliteExecutor;

/// A statement with its arguments, as built by `sqlx::query`.
pub(super) type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

use super::SqliteStore;
use super::columns::{conversation_from_column, from_column, seq_from_column, to_bound, to_column};
use super::error::map_sqlx;
use super::members::member_rows;
use crate::batch::BatchPlan;
use crate::sql::audit;
use crate::sql::expiry::{self, Window, WindowRow};
use crate::sql::gaps;
use crate::sql::outbox;
use crate::sql::{MultiRow, chunks};
use crate::telemetry::{DbOperation, dependency_metrics};

/// The multi-row statements of an append, built once per store.
#[derive(Debug)]
pub(super) struct AppendStatements {
    /// `DO NOTHING` skips a row whose key an earlier batch stored; `OR FAIL`
    /// makes any other constraint (a seq clash) fail the statement. FAIL,
    /// unlike the default ABORT, does not undo the statement's own rows, so
    /// SQLite needs no statement journal (a copy of every page the statement
    /// touches); the whole transaction is rolled back instead.
    insert_messages: MultiRow,
    insert_members: MultiRow,
    insert_audits: MultiRow,
}

/// The route outbox row of a batch in column form (see `sql::outbox`).
struct OutboxColumns {
    id: i64,
    created_ms: i64,
    entries: String,
}

impl OutboxColumns {
    /// The row of `extras` for the messages stored now (`stored`; `None`:
    /// all), if any entry remains.
    fn new(
        extras: &CommitExtras<'_>,
        stored: Option<std::collections::HashSet<MessageId>>,
    ) -> BackendResult<Option<Self>> {
        let Some(row) = extras.outbox else { return Ok(None) };
        let Some(entries) = outbox::entries_of_stored(row, stored) else { return Ok(None) };
        Ok(Some(Self { id: to_column(row.id, "outbox id")?, created_ms: row.created_ms, entries }))
    }

    fn bind<'q>(&'q self, query: SqliteQuery<'q>) -> SqliteQuery<'q> {
        query.bind(self.id).bind(self.created_ms).bind(&self.entries)
    }
}

impl AppendStatements {
    pub fn new() -> Self {
        Self {
            insert_messages: MultiRow::new(
                "INSERT OR FAIL INTO messages (conversation, seq, msg_id, sender, recipient, \
                 client_msg_id, body, content_type, server_time_ms, sealed_with, request_digest) VALUES",
                "(?,?,?,?,?,?,?,?,?,?,?)",
                ",",
                "ON CONFLICT (sender, client_msg_id) DO NOTHING",
            ),
            insert_members: MultiRow::new(
                "INSERT INTO conversation_members (user_id, conversation) VALUES",
                "(?,?)",
                ",",
                "ON CONFLICT DO NOTHING",
            ),
            insert_audits: audit::insert_statement(),
        }
    }
}

/// An audit record in column form, converted before the transaction begins.
struct AuditRow {
    msg_id: i64,
    conversation: String,
    seq: i64,
    sender: i64,
    entries: String,
    server_time_ms: i64,
}

impl AuditRow {
    fn new(record: &AuditRecord) -> BackendResult<Self> {
        Ok(Self {
            msg_id: to_column(record.msg_id.0, "msg_id")?,
            conversation: record.conversation.to_string(),
            seq: to_column(record.seq.0, "seq")?,
            sender: to_column(record.sender.0, "sender")?,
            entries: audit::entries_column(&record.entries),
            server_time_ms: record.server_time_ms,
        })
    }

    fn bind<'q>(&'q self, query: SqliteQuery<'q>) -> SqliteQuery<'q> {
        query
            .bind(self.msg_id)
            .bind(&self.conversation)
            .bind(self.seq)
            .bind(self.sender)
            .bind(&self.entries)
            .bind(self.server_time_ms)
    }
}

/// The audit rows of the messages of `rows` (those about to be stored).
fn audit_rows(audits: &[AuditRecord], rows: &[&MessageRow<'_>]) -> BackendResult<Vec<AuditRow>> {
    audit::of_stored(audits, rows.iter().map(|row| row.message.msg_id)).into_iter().map(AuditRow::new).collect()
}

/// How an append treats keys that earlier batches stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resends {
    /// Assume there are none; give up (roll back) if an insert skips a row.
    Unexpected,
    /// Look every key up first and insert only the new messages.
    LookedUp,
}

/// The columns of a message that need converting, checked before the write
/// transaction begins so a bad value never holds the write lock.
struct MessageRow<'a> {
    message: &'a NewMessage,
    conversation: String,
    seq: i64,
    msg_id: i64,
    sender: i64,
    recipient: i64,
    sealed_with: Option<i64>,
    /// The request's digest, its bits as a signed column.
    digest: Option<RequestDigest>,
}

impl<'a> MessageRow<'a> {
    /// Binds the row's columns in the order of the messages insert.
    fn bind<'q>(&'q self, query: SqliteQuery<'q>) -> SqliteQuery<'q> {
        let m = self.message;
        query
            .bind(&self.conversation)
            .bind(self.seq)
            .bind(self.msg_id)
            .bind(self.sender)
            .bind(self.recipient)
            .bind(m.client_msg_id.as_str())
            .bind(&m.body[..])
            .bind(&m.content_type)
            .bind(m.server_time_ms)
            .bind(self.sealed_with)
            .bind(self.digest.map(digest_column))
    }

    fn new(message: &'a NewMessage, digest: Option<RequestDigest>) -> BackendResult<Self> {
        Ok(Self {
            message,
            conversation: message.conversation.to_string(),
            seq: to_column(message.seq.0, "seq")?,
            msg_id: to_column(message.msg_id.0, "msg_id")?,
            sender: to_column(message.sender.0, "sender")?,
            // The column predates groups: a group message has no single
            // addressee and stores 0 (no user has id 0).
            recipient: to_column(message.recipient().map_or(0, |user| user.0), "recipient")?,
            sealed_with: message.sealed_with.map(|id| to_column(id, "sealed_with")).transpose()?,
            digest,
        })
    }
}

/// A digest as SQLite's signed 64-bit column holds it (the same bits).
fn digest_column(digest: RequestDigest) -> i64 {
    digest.0 as i64
}

/// The first send stored under `(sender, client_msg_id)`.
async fn first_by_key<'c>(
    executor: impl SqliteExecutor<'c>,
    sender: i64,
    client_msg_id: &str,
) -> BackendResult<Option<FirstSend>> {
    let row: Option<(i64, String, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT msg_id, conversation, seq, server_time_ms, request_digest FROM messages \
         WHERE sender = ? AND client_msg_id = ?",
    )
    .bind(sender)
    .bind(client_msg_id)
    .fetch_optional(executor)
    .await
    .map_err(map_sqlx)?;
    row.map(|(msg_id, conversation, seq, server_time_ms, digest)| {
        let ack = Ack {
            msg_id: MessageId(from_column(msg_id, "msg_id")?),
            conversation: conversation_from_column(&conversation)?,
            seq: seq_from_column(seq)?,
            server_time_ms,
            body_masked: false,
        };
        Ok(FirstSend { ack, digest: digest.map(|bits| RequestDigest(bits as u64)) })
    })
    .transpose()
}

/// The columns `fetch` reads; `recipient` is not among them, as the message
/// derives it from its conversation and sender.
pub(super) type MessageColumns = (i64, i64, i64, String, Vec<u8>, String, i64, Option<i64>);

pub(super) fn message_from_columns(conversation: ConversationId, columns: MessageColumns) -> BackendResult<NewMessage> {
    let (seq, msg_id, sender, client_msg_id, body, content_type, server_time_ms, sealed_with) = columns;
    Ok(NewMessage {
        msg_id: MessageId(from_column(msg_id, "msg_id")?),
        conversation,
        seq: seq_from_column(seq)?,
        sender: UserId(from_column(sender, "sender")?),
        client_msg_id: ClientMsgId::parse(&client_msg_id)
            .map_err(|_| BackendError::Other(format!("stored client_msg_id {client_msg_id:?} is malformed")))?,
        body: Bytes::from(body),
        content_type,
        server_time_ms,
        sealed_with: sealed_with.map(|id| from_column(id, "sealed_with")).transpose()?,
    })
}

impl SqliteStore {
    /// Writes `rows` (distinct keys) and `members` in one durable transaction
    /// and returns, for each row, the first send found under its key (`None`:
    /// stored now), or `None` (and nothing written)
    /// if an insert skipped a row in [`Resends::Unexpected`] mode.
    async fn write_batch(
        &self,
        rows: &[MessageRow<'_>],
        members: &[(i64, String)],
        extras: &CommitExtras<'_>,
        resends: Resends,
    ) -> BackendResult<Option<Vec<Option<FirstSend>>>> {
        let audits = extras.audits;
        if resends == Resends::Unexpected {
            let audits = audit_rows(audits, &rows.iter().collect::<Vec<_>>())?;
            let outbox = OutboxColumns::new(extras, None)?;
            return self.write_batch_in_one_round_trip(rows, members, &audits, outbox.as_ref()).await;
        }
        // Converted before the write lock is taken, as the message rows are;
        // the records of the messages found stored are left out below.
        let all_audits = audit_rows(audits, &rows.iter().collect::<Vec<_>>())?;
        // Every early return drops `tx`, which rolls back.
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin_immediate().await?;
        let mut outcomes = Vec::with_capacity(rows.len());
        let mut new_rows = Vec::with_capacity(rows.len());
        for row in rows {
            let first = match resends {
                Resends::Unexpected => None,
                Resends::LookedUp => first_by_key(&mut *tx, row.sender, row.message.client_msg_id.as_str()).await?,
            };
            match first {
                Some(first) => outcomes.push(Some(first)),
                None => {
                    outcomes.push(None);
                    new_rows.push(row);
                }
            }
        }
        for range in chunks(new_rows.len()) {
            let chunk = &new_rows[range];
            let mut insert = sqlx::query(self.append.insert_messages.sql(chunk.len()));
            for row in chunk {
                insert = row.bind(insert);
            }
            let stored = insert.execute(&mut *tx).await.map_err(map_sqlx)?.rows_affected();
            if stored != chunk.len() as u64 {
                return Ok(None);
            }
        }
        for range in chunks(members.len()) {
            let chunk = &members[range];
            let mut insert = sqlx::query(self.append.insert_members.sql(chunk.len()));
            for (user, conversation) in chunk {
                insert = insert.bind(*user).bind(conversation);
            }
            insert.execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        let stored_ids: std::collections::HashSet<i64> = new_rows.iter().map(|row| row.msg_id).collect();
        let audits: Vec<&AuditRow> = all_audits.iter().filter(|audit| stored_ids.contains(&audit.msg_id)).collect();
        for range in chunks(audits.len()) {
            let chunk = &audits[range];
            let mut insert = sqlx::query(self.append.insert_audits.sql(chunk.len()));
            for audit in chunk {
                insert = audit.bind(insert);
            }
            insert.execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        let stored_messages = new_rows.iter().map(|row| row.message.msg_id).collect();
        if let Some(row) = OutboxColumns::new(extras, Some(stored_messages))? {
            row.bind(sqlx::query(outbox::INSERT)).execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(Some(outcomes))
    }
}

/// The largest batch whose one-round-trip statement stays prepared.
const MAX_PREPARED_BATCH: usize = 16;

impl SqliteStore {
    /// [`Resends::Unexpected`] mode of `write_batch` as ONE request to the
    /// SQLite worker thread: `BEGIN IMMEDIATE; inserts...; COMMIT` with all
    /// parameters bound in order. Each thread hand-off costs two context
    /// switches, which on small batches cost more than the inserts. After
    /// each message insert a guard row checks `changes()` against the chunk
    /// size: a skipped row (a key stored by an earlier batch) fails the guard's
    /// CHECK, the transaction is rolled back and `None` returned, as in the
    /// step-by-step path.
    async fn write_batch_in_one_round_trip(
        &self,
        rows: &[MessageRow<'_>],
        members: &[(i64, String)],
        audits: &[AuditRow],
        outbox: Option<&OutboxColumns>,
    ) -> BackendResult<Option<Vec<Option<FirstSend>>>> {
        let mut sql = String::from("BEGIN IMMEDIATE;");
        for range in chunks(rows.len()) {
            sql.push_str(self.append.insert_messages.sql(range.len()));
            sql.push_str(";INSERT INTO temp.append_guard (stored, expected) VALUES (changes(), ?);");
        }
        for range in chunks(members.len()) {
            sql.push_str(self.append.insert_members.sql(range.len()));
            sql.push(';');
        }
        for range in chunks(audits.len()) {
            sql.push_str(self.append.insert_audits.sql(range.len()));
            sql.push(';');
        }
        if outbox.is_some() {
            sql.push_str(outbox::INSERT);
            sql.push(';');
        }
        sql.push_str("DELETE FROM temp.append_guard;COMMIT;");

        // The text differs with every batch size (and with the members,
        // audits and outbox in it), so only small batches' statements are
        // kept prepared: SQLite's program for a 700-row insert is hundreds of
        // KiB, and sqlx's cache of 100 statements filled with them held
        // ~64 MB after a saturation run. A large batch is prepared afresh,
        // a cost its many messages share.
        let mut query = sqlx::query(&sql).persistent(rows.len() <= MAX_PREPARED_BATCH);
        for range in chunks(rows.len()) {
            let chunk = &rows[range];
            for row in chunk {
                query = row.bind(query);
            }
            query = query.bind(chunk.len() as i64);
        }
        for (user, conversation) in members {
            query = query.bind(*user).bind(conversation);
        }
        for audit in audits {
            query = audit.bind(query);
        }
        if let Some(outbox) = outbox {
            query = outbox.bind(query);
        }

        let mut conn = self.writer.lock().await?;
        let result = {
            let mut results = sqlx::Executor::fetch_many(&mut *conn, query);
            let mut outcome = Ok(());
            while let Some(item) = results.next().await {
                if let Err(e) = item {
                    outcome = Err(e);
                    break;
                }
            }
            outcome
        };
        let Err(error) = result else {
            return Ok(Some(vec![None; rows.len()]));
        };
        // The worker stopped at the failed statement: the transaction is
        // still open on this connection. A connection that cannot roll back
        // is replaced.
        if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
            conn.discard();
        }
        match &error {
            sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::CheckViolation => Ok(None),
            _ => Err(map_sqlx(error)),
        }
    }
}

impl SqliteStore {
    /// [`MessageStore::append_with`] of a batch that is not empty.
    async fn append_batch(&self, batch: &[NewMessage], extras: &CommitExtras<'_>) -> BackendResult<Vec<AppendOutcome>> {
        let plan = BatchPlan::new(batch);
        let rows = plan
            .firsts
            .iter()
            .map(|&i| MessageRow::new(&batch[i], extras.digests.get(i).copied()))
            .collect::<BackendResult<Vec<_>>>()?;
        let new_conversations = self.known_conversations.unknown(rows.iter().map(|row| row.message.conversation));
        let members = member_rows(&new_conversations)?;
        // A resend that reaches the store is rare (the dedup cache answers
        // most), so the first attempt only counts what each insert stored.
        // Should an insert skip a row, its transaction is rolled back and the
        // batch written again with a look-up per key: that is what tells a
        // resend from a first send when both are the very same message.
        let first_outcomes = match self.write_batch(&rows, &members, extras, Resends::Unexpected).await? {
            Some(outcomes) => outcomes,
            None => self
                .write_batch(&rows, &members, extras, Resends::LookedUp)
                .await?
                .ok_or_else(|| BackendError::other("an insert skipped a message whose key was not stored"))?,
        };
        self.known_conversations.committed(&new_conversations);
        Ok(plan.outcomes(batch, extras.digests, first_outcomes))
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    /// [`MessageStore::append`], with the audit records and the outbox
    /// entries of the messages stored now in the same transaction.
    async fn append_with(&self, batch: &[NewMessage], extras: &CommitExtras<'_>) -> BackendResult<Vec<AppendOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The group commit's duration, as MySQL records it (the other SQLite
        // calls are not timed: one process, nothing to compare them with).
        let started = std::time::Instant::now();
        let appended = self.append_batch(batch, extras).await;
        dependency_metrics().db_operation(DbOperation::Append, started);
        appended
    }

    /// Audit records, newest (highest msg_id) first, at most `query.limit`.
    async fn audit_records(&self, query: &AuditQuery) -> BackendResult<Vec<AuditRecord>> {
        // NULL parameters switch a condition off: one statement for the four
        // combinations.
        let rows: Vec<(i64, String, i64, i64, String, i64)> = sqlx::query_as(
            "SELECT msg_id, conversation, seq, sender, entries, server_time_ms FROM content_audit \
             WHERE (?1 IS NULL OR msg_id < ?1) AND (?2 IS NULL OR conversation = ?2) \
             ORDER BY msg_id DESC LIMIT ?3",
        )
        .bind(query.before.map(|id| to_bound(id.0)))
        .bind(query.conversation.map(|c| c.to_string()))
        .bind(i64::from(query.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.into_iter()
            .map(|(msg_id, conversation, seq, sender, entries, server_time_ms)| {
                Ok(AuditRecord {
                    msg_id: MessageId(from_column(msg_id, "msg_id")?),
                    conversation: conversation_from_column(&conversation)?,
                    seq: seq_from_column(seq)?,
                    sender: UserId(from_column(sender, "sender")?),
                    entries: audit::entries_from_column(&entries),
                    server_time_ms,
                })
            })
            .collect()
    }

    /// Messages of `conversation` with seq > `after`, ascending, at most
    /// `limit`; `has_more` tells whether more follow.
    async fn fetch(&self, conversation: ConversationId, after: Seq, limit: u32) -> BackendResult<Page> {
        let rows: Vec<MessageColumns> = sqlx::query_as(
            "SELECT seq, msg_id, sender, client_msg_id, body, content_type, server_time_ms, sealed_with \
             FROM messages WHERE conversation = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(conversation.to_string())
        .bind(to_bound(after.0))
        // One more than asked tells whether more follow.
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        let has_more = rows.len() > limit as usize;
        let messages = rows
            .into_iter()
            .take(limit as usize)
            .map(|columns| message_from_columns(conversation, columns))
            .collect::<BackendResult<Vec<_>>>()?;
        // A second query only for a page with a hole (rare).
        let skipped = match gaps::hole_below(after, &messages) {
            None => Vec::new(),
            Some(last) => {
                let seqs: Vec<(i64,)> = sqlx::query_as(gaps::BETWEEN)
                    .bind(conversation.to_string())
                    .bind(to_bound(after.0))
                    .bind(to_bound(last.0))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(map_sqlx)?;
                seqs.into_iter().map(|(seq,)| seq_from_column(seq)).collect::<BackendResult<Vec<_>>>()?
            }
        };
        Ok(Page { messages, has_more, skipped })
    }

    /// Records seqs that will never be stored, in one transaction; a seq
    /// recorded already is left as it is.
    async fn record_skipped(&self, seqs: &[(ConversationId, Seq)], recorded_ms: i64) -> BackendResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin_immediate().await?;
        for range in chunks(seqs.len()) {
            let chunk = &seqs[range];
            let mut insert = sqlx::query(gaps::INSERT_SQLITE.sql(chunk.len()));
            for (conversation, seq) in chunk {
                insert = insert.bind(conversation.to_string()).bind(to_column(seq.0, "seq")?).bind(recorded_ms);
            }
            insert.execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    /// The ack of a stored message, by its idempotency key.
    async fn find_by_client_msg_id(&self, sender: UserId, client_msg_id: &ClientMsgId) -> BackendResult<Option<Ack>> {
        Ok(first_by_key(&self.reader, to_bound(sender.0), client_msg_id.as_str()).await?.map(|first| first.ack))
    }

    /// The conversations `user` is a member of, with max seq, read position
    /// and unread count, most recently active first.
    async fn conversations_of(&self, user: UserId) -> BackendResult<Vec<ConversationSummary>> {
        // Each subquery is a range scan of the (conversation, seq) index.
        // `p` is the peer's receipt: a private conversation's receipts are
        // its two members'.
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT c.conversation, \
                    COALESCE((SELECT MAX(m.seq) FROM messages m WHERE m.conversation = c.conversation), 0), \
                    COALESCE(r.read_seq, 0), \
                    (SELECT COUNT(*) FROM messages m \
                      WHERE m.conversation = c.conversation AND m.seq > COALESCE(r.read_seq, 0) \
                        AND m.sender <> c.user_id), \
                    COALESCE(p.read_seq, 0) \
             FROM conversation_members c \
             LEFT JOIN receipts r ON r.user_id = c.user_id AND r.conversation = c.conversation \
             LEFT JOIN receipts p ON p.conversation = c.conversation AND p.user_id <> c.user_id \
             WHERE c.user_id = ? \
             ORDER BY (SELECT m.server_time_ms FROM messages m WHERE m.conversation = c.conversation \
                        ORDER BY m.seq DESC LIMIT 1) DESC, \
                      c.conversation",
        )
        .bind(to_bound(user.0))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.into_iter()
            .map(|(conversation, max_seq, read_seq, unread, peer_read_seq)| {
                Ok(ConversationSummary {
                    conversation: conversation_from_column(&conversation)?,
                    max_seq: seq_from_column(max_seq)?,
                    read_seq: seq_from_column(read_seq)?,
                    unread: from_column(unread, "unread count")?,
                    peer_read_seq: seq_from_column(peer_read_seq)?,
                })
            })
            .collect()
    }

    /// Highest stored seq of a conversation (`Seq::ZERO` when empty).
    async fn max_seq(&self, conversation: ConversationId) -> BackendResult<Seq> {
        let (max,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation = ?")
            .bind(conversation.to_string())
            .fetch_one(&self.reader)
            .await
            .map_err(map_sqlx)?;
        seq_from_column(max)
    }

    /// How many messages of `conversation` with seq > `after` were sent by
    /// someone other than `reader`: a group member's unread count.
    async fn count_unread(&self, conversation: ConversationId, reader: UserId, after: Seq) -> BackendResult<u64> {
        // A range scan of the (conversation, seq) index, as in
        // `conversations_of`.
        let (unread,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM messages WHERE conversation = ? AND seq > ? AND sender <> ?")
                .bind(conversation.to_string())
                .bind(to_bound(after.0))
                .bind(to_bound(reader.0))
                .fetch_one(&self.reader)
                .await
                .map_err(map_sqlx)?;
        from_column(unread, "unread count")
    }

    /// How many stored messages each data key seals (`sealed_with`), with
    /// `None` for the messages stored in clear; keys sealing no message are
    /// not listed. For `imctl keys status`: a scan of the whole table.
    async fn rows_by_key(&self) -> BackendResult<Vec<(Option<u64>, u64)>> {
        let rows: Vec<(Option<i64>, i64)> =
            sqlx::query_as("SELECT sealed_with, COUNT(*) FROM messages GROUP BY sealed_with ORDER BY sealed_with")
                .fetch_all(&self.reader)
                .await
                .map_err(map_sqlx)?;
        rows.into_iter()
            .map(|(key, count)| {
                Ok((key.map(|id| from_column(id, "sealed_with")).transpose()?, from_column(count, "row count")?))
            })
            .collect()
    }

    /// A cheap round trip to the store, for `/ready`.
    async fn ping(&self) -> BackendResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(map_sqlx)?;
        Ok(())
    }

    /// One step of the retention walk: examines at most `limit` messages in
    /// storage order after position `after`, deletes the expired ones whose
    /// successor in their conversation is expired too (see `sql::expiry`).
    async fn expire_messages(&self, before_ms: i64, after: u64, limit: u32) -> BackendResult<ExpiryStep> {
        // The read runs beside the writer (WAL); only the DELETE takes the
        // one write connection, for one short transaction.
        let rows: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(expiry::WINDOW_WITH_SUCCESSORS)
            .bind(to_bound(after))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_sqlx)?;
        let rows = rows
            .into_iter()
            .map(|(id, server_time_ms, successor_time_ms)| {
                Ok(WindowRow { id: from_column(id, "id")?, server_time_ms, successor_time_ms })
            })
            .collect::<BackendResult<Vec<_>>>()?;
        let window = Window::new(after, limit, before_ms, rows);
        let doomed = window.doomed();
        let mut deleted = 0;
        if !doomed.is_empty() {
            let mut writer = self.writer.lock().await?;
            let mut tx = writer.begin_immediate().await?;
            for range in chunks(doomed.len()) {
                let chunk = &doomed[range];
                let mut delete = sqlx::query(expiry::DELETE_EXPIRED.sql(chunk.len())).bind(before_ms);
                for &id in chunk {
                    delete = delete.bind(to_bound(id));
                }
                deleted += delete.execute(&mut *tx).await.map_err(map_sqlx)?.rows_affected();
            }
            tx.commit().await.map_err(map_sqlx)?;
        }
        let step = window.step(deleted);
        if step.done {
            // Once per walk: the recorded gaps as old as the messages it
            // deletes, so the table stays bounded.
            sqlx::query(gaps::DELETE_OLD_SQLITE)
                .bind(before_ms)
                .bind(i64::from(limit))
                .execute(&mut *self.writer.lock().await?)
                .await
                .map_err(map_sqlx)?;
        }
        Ok(step)
    }
}
