//! `MessageStore` over the `messages` and `conversation_members` tables.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use im_core::error::BackendError;
use im_core::message::{AppendOutcome, ConversationSummary, ExpiryStep, Page};
use im_core::ports::{AuditQuery, BackendResult, CommitExtras, MessageStore};
use im_core::{
    Ack, AuditRecord, ClientMsgId, ConversationId, FirstSend, MessageId, NewMessage, RequestDigest, Seq, UserId,
};
use sqlx::mysql::{MySql, MySqlArguments};
use sqlx::{MySqlConnection, MySqlExecutor};

use super::MAX_STATEMENT_BYTES;
use super::MysqlStore;
use super::columns::{client_msg_id_from_column, conversation_from_column, count_from_column, text_from_column};
use super::error::map_sqlx;
use super::members::member_rows;
use crate::batch::BatchPlan;
use crate::sql::audit;
use crate::sql::expiry::{self, Window, WindowRow};
use crate::sql::gaps;
use crate::sql::outbox;
use crate::sql::{MultiRow, chunks, chunks_within};
use crate::telemetry::DbOperation;
use sqlx::Connection;

/// A statement with its arguments, as built by `sqlx::query`.
pub(super) type MySqlQuery<'q> = sqlx::query::Query<'q, MySql, MySqlArguments>;

/// The multi-row statements of an append.
struct AppendStatements {
    /// A plain INSERT: any unique key it meets fails it (see [`Resends`]).
    insert_messages: MultiRow,
    /// A locking read: it sees the latest committed rows and holds their keys,
    /// or the gaps where they would go, until the commit, so no other writer
    /// stores one of these keys between the look-up and the insert.
    find_stored: MultiRow,
    /// The primary key is the table's only unique key, so the no-op update
    /// skips exactly the rows already there.
    insert_members: MultiRow,
    insert_audits: MultiRow,
}

/// The same texts for every store, so built once per process.
static STATEMENTS: LazyLock<AppendStatements> = LazyLock::new(|| AppendStatements {
    insert_messages: MultiRow::new(
        "INSERT INTO messages (conversation, seq, msg_id, sender, recipient, \
         client_msg_id, body, content_type, server_time_ms, sealed_with, request_digest) VALUES",
        "(?,?,?,?,?,?,?,?,?,?,?)",
        ",",
        "",
    ),
    find_stored: MultiRow::new(
        "SELECT sender, client_msg_id, msg_id, conversation, seq, server_time_ms, request_digest FROM messages WHERE",
        "(sender = ? AND client_msg_id = ?)",
        " OR ",
        "FOR UPDATE",
    ),
    insert_members: MultiRow::new(
        "INSERT INTO conversation_members (user_id, conversation) VALUES",
        "(?,?)",
        ",",
        "ON DUPLICATE KEY UPDATE user_id = user_id",
    ),
    insert_audits: audit::insert_statement(),
});

/// Bytes a row takes in a statement besides its text columns: nine numbers
/// and the length prefixes.
const ROW_OVERHEAD: usize = 128;

/// How an append treats keys that earlier batches stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resends {
    /// Assume there are none; give up (roll back) if an insert meets a
    /// unique key.
    Unexpected,
    /// Look every key up first and insert only the new messages.
    LookedUp,
}

/// A message with its conversation in column form and its size, worked out
/// before the transaction begins.
struct MessageRow<'a> {
    message: &'a NewMessage,
    conversation: String,
    bytes: usize,
    digest: Option<RequestDigest>,
}

impl<'a> MessageRow<'a> {
    fn new(message: &'a NewMessage, digest: Option<RequestDigest>) -> Self {
        let conversation = message.conversation.to_string();
        let bytes = ROW_OVERHEAD
            + conversation.len()
            + message.client_msg_id.as_str().len()
            + message.body.len()
            + message.content_type.len();
        Self { message, conversation, bytes, digest }
    }

    /// Binds the row's columns in the order of the messages insert.
    fn bind<'q>(&'q self, query: MySqlQuery<'q>) -> MySqlQuery<'q> {
        let m = self.message;
        query
            .bind(&self.conversation)
            .bind(m.seq.0)
            .bind(m.msg_id.0)
            .bind(m.sender.0)
            // The column predates groups: a group message has no single
            // addressee and stores 0 (no user has id 0).
            .bind(m.recipient().map_or(0, |user| user.0))
            .bind(m.client_msg_id.as_str().as_bytes())
            .bind(&m.body[..])
            .bind(&m.content_type)
            .bind(m.server_time_ms)
            .bind(m.sealed_with)
            .bind(self.digest.map(|digest| digest.0))
    }

    fn key(&self) -> (u64, &[u8]) {
        (self.message.sender.0, self.message.client_msg_id.as_str().as_bytes())
    }
}

type FirstSendColumns = (u64, Vec<u8>, u64, i64, Option<u64>);

fn first_send_from_columns(
    (msg_id, conversation, seq, server_time_ms, digest): FirstSendColumns,
) -> BackendResult<FirstSend> {
    let ack = Ack {
        msg_id: MessageId(msg_id),
        conversation: conversation_from_column(conversation)?,
        seq: Seq(seq),
        server_time_ms,
        body_masked: false,
    };
    Ok(FirstSend { ack, digest: digest.map(RequestDigest) })
}

/// The first send stored under `(sender, client_msg_id)`.
async fn first_by_key<'c>(
    executor: impl MySqlExecutor<'c>,
    sender: u64,
    client_msg_id: &[u8],
) -> BackendResult<Option<FirstSend>> {
    let row: Option<FirstSendColumns> = sqlx::query_as(
        "SELECT msg_id, conversation, seq, server_time_ms, request_digest FROM messages \
         WHERE sender = ? AND client_msg_id = ?",
    )
    .bind(sender)
    .bind(client_msg_id)
    .fetch_optional(executor)
    .await
    .map_err(map_sqlx)?;
    row.map(first_send_from_columns).transpose()
}

/// The first sends already stored under the keys of `rows`, by key, locking
/// those keys (or their gaps) until the transaction ends.
async fn stored_first_sends(
    conn: &mut MySqlConnection,
    rows: &[MessageRow<'_>],
) -> BackendResult<HashMap<(u64, Vec<u8>), FirstSend>> {
    let mut stored = HashMap::new();
    for range in chunks(rows.len()) {
        let chunk = &rows[range];
        let mut select = sqlx::query_as::<_, (u64, Vec<u8>, u64, Vec<u8>, u64, i64, Option<u64>)>(
            STATEMENTS.find_stored.sql(chunk.len()),
        );
        for row in chunk {
            let (sender, client_msg_id) = row.key();
            select = select.bind(sender).bind(client_msg_id);
        }
        for (sender, client_msg_id, msg_id, conversation, seq, server_time_ms, digest) in
            select.fetch_all(&mut *conn).await.map_err(map_sqlx)?
        {
            let first = first_send_from_columns((msg_id, conversation, seq, server_time_ms, digest))?;
            stored.insert((sender, client_msg_id), first);
        }
    }
    Ok(stored)
}

/// The columns `fetch` reads; `recipient` is not among them, as the message
/// derives it from its conversation and sender.
pub(super) type MessageColumns = (u64, u64, u64, Vec<u8>, Vec<u8>, Vec<u8>, i64, Option<u64>);

pub(super) fn message_from_columns(conversation: ConversationId, columns: MessageColumns) -> BackendResult<NewMessage> {
    let (seq, msg_id, sender, client_msg_id, body, content_type, server_time_ms, sealed_with) = columns;
    Ok(NewMessage {
        msg_id: MessageId(msg_id),
        conversation,
        seq: Seq(seq),
        sender: UserId(sender),
        client_msg_id: client_msg_id_from_column(client_msg_id)?,
        body: Bytes::from(body),
        content_type: text_from_column(content_type, "content_type")?,
        server_time_ms,
        sealed_with,
    })
}

impl MysqlStore {
    /// Writes `rows` (distinct keys) and `members` in one transaction,
    /// committed before this returns, and returns, for each row, the first send
    /// found under its key (`None`: stored now), or
    /// `None` (and nothing written) if an insert met a unique key in
    /// [`Resends::Unexpected`] mode.
    async fn write_batch(
        &self,
        conn: &mut MySqlConnection,
        rows: &[MessageRow<'_>],
        members: &[(u64, String)],
        extras: &CommitExtras<'_>,
        resends: Resends,
    ) -> BackendResult<Option<Vec<Option<FirstSend>>>> {
        // Every early return drops `tx`, which rolls back.
        let mut tx = conn.begin().await.map_err(map_sqlx)?;
        let (outcomes, new_rows): (Vec<Option<FirstSend>>, Vec<&MessageRow<'_>>) = match resends {
            Resends::Unexpected => (vec![None; rows.len()], rows.iter().collect()),
            Resends::LookedUp => {
                let stored = stored_first_sends(&mut tx, rows).await?;
                let mut outcomes = Vec::with_capacity(rows.len());
                let mut new_rows = Vec::with_capacity(rows.len());
                for row in rows {
                    let (sender, client_msg_id) = row.key();
                    match stored.get(&(sender, client_msg_id.to_vec())) {
                        Some(first) => outcomes.push(Some(*first)),
                        None => {
                            outcomes.push(None);
                            new_rows.push(row);
                        }
                    }
                }
                (outcomes, new_rows)
            }
        };
        let sizes: Vec<usize> = new_rows.iter().map(|row| row.bytes).collect();
        for range in chunks_within(&sizes, MAX_STATEMENT_BYTES) {
            let chunk = &new_rows[range];
            let mut insert = sqlx::query(STATEMENTS.insert_messages.sql(chunk.len()));
            for row in chunk {
                insert = row.bind(insert);
            }
            match insert.execute(&mut *tx).await {
                Ok(_) => {}
                // A key stored by an earlier batch, or a seq clash: the
                // look-up pass tells which.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && resends == Resends::Unexpected => {
                    tx.rollback().await.map_err(map_sqlx)?;
                    return Ok(None);
                }
                // Every key is known to be new and locked: only
                // `(conversation, seq)` is left to clash on.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(BackendError::Other(format!("two messages claim one (conversation, seq): {e}")));
                }
                Err(e) => return Err(map_sqlx(e)),
            }
        }
        for range in chunks(members.len()) {
            let chunk = &members[range];
            let mut insert = sqlx::query(STATEMENTS.insert_members.sql(chunk.len()));
            for (user, conversation) in chunk {
                insert = insert.bind(*user).bind(conversation);
            }
            insert.execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        let audits = audit::of_stored(extras.audits, new_rows.iter().map(|row| row.message.msg_id));
        for range in chunks(audits.len()) {
            let chunk = &audits[range];
            let mut insert = sqlx::query(STATEMENTS.insert_audits.sql(chunk.len()));
            for record in chunk {
                insert = insert
                    .bind(record.msg_id.0)
                    .bind(record.conversation.to_string())
                    .bind(record.seq.0)
                    .bind(record.sender.0)
                    .bind(audit::entries_column(&record.entries))
                    .bind(record.server_time_ms);
            }
            insert.execute(&mut *tx).await.map_err(map_sqlx)?;
        }
        if let Some(row) = extras.outbox {
            let stored =
                (resends == Resends::LookedUp).then(|| new_rows.iter().map(|row| row.message.msg_id).collect());
            if let Some(entries) = outbox::entries_of_stored(row, stored) {
                sqlx::query(outbox::INSERT)
                    .bind(row.id)
                    .bind(row.created_ms)
                    .bind(entries)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
            }
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(Some(outcomes))
    }
}

#[async_trait]
impl MessageStore for MysqlStore {
    /// [`MessageStore::append`], with the audit records and the outbox
    /// entries of the messages stored now in the same transaction.
    async fn append_with(&self, batch: &[NewMessage], extras: &CommitExtras<'_>) -> BackendResult<Vec<AppendOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let plan = BatchPlan::new(batch);
        let rows: Vec<MessageRow<'_>> =
            plan.firsts.iter().map(|&i| MessageRow::new(&batch[i], extras.digests.get(i).copied())).collect();
        let new_conversations = self.known_conversations.unknown(rows.iter().map(|row| row.message.conversation));
        let members = member_rows(&new_conversations);
        // A resend that reaches the store is rare (the dedup cache answers
        // most), so the first attempt inserts every message as new. Should
        // an insert meet a unique key, its transaction is rolled back and the
        // batch written again with a look-up of its keys: that is what tells
        // a resend from a first send when both are the very same message,
        // and a resend from a seq clash.
        let first_outcomes = self
            .writing(DbOperation::Append, async |conn| {
                match self.write_batch(conn, &rows, &members, extras, Resends::Unexpected).await? {
                    Some(outcomes) => Ok(outcomes),
                    None => self
                        .write_batch(conn, &rows, &members, extras, Resends::LookedUp)
                        .await?
                        .ok_or_else(|| BackendError::other("a looked-up append gave up on a unique key")),
                }
            })
            .await?;
        self.known_conversations.committed(&new_conversations);
        Ok(plan.outcomes(batch, extras.digests, first_outcomes))
    }

    /// Audit records, newest (highest msg_id) first, at most `query.limit`.
    async fn audit_records(&self, query: &AuditQuery) -> BackendResult<Vec<AuditRecord>> {
        let rows: Vec<(u64, Vec<u8>, u64, u64, Vec<u8>, i64)> = self
            .reading(DbOperation::AuditRecords, async |conn| {
                // NULL parameters switch a condition off: one statement for
                // the four combinations.
                let before = query.before.map(|id| id.0);
                let conversation = query.conversation.map(|c| c.to_string());
                sqlx::query_as(
                    "SELECT msg_id, conversation, seq, sender, entries, server_time_ms FROM content_audit \
                     WHERE (? IS NULL OR msg_id < ?) AND (? IS NULL OR conversation = ?) \
                     ORDER BY msg_id DESC LIMIT ?",
                )
                .bind(before)
                .bind(before)
                .bind(conversation.clone())
                .bind(conversation)
                .bind(query.limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(map_sqlx)
            })
            .await?;
        rows.into_iter()
            .map(|(msg_id, conversation, seq, sender, entries, server_time_ms)| {
                Ok(AuditRecord {
                    msg_id: MessageId(msg_id),
                    conversation: conversation_from_column(conversation)?,
                    seq: Seq(seq),
                    sender: UserId(sender),
                    entries: audit::entries_from_column(&text_from_column(entries, "entries")?),
                    server_time_ms,
                })
            })
            .collect()
    }

    /// Messages of `conversation` with seq > `after`, ascending, at most
    /// `limit`; `has_more` tells whether more follow.
    async fn fetch(&self, conversation: ConversationId, after: Seq, limit: u32) -> BackendResult<Page> {
        let rows: Vec<MessageColumns> = self
            .reading(DbOperation::Fetch, async |conn| {
                sqlx::query_as(
                    "SELECT seq, msg_id, sender, client_msg_id, body, content_type, server_time_ms, sealed_with \
                     FROM messages WHERE conversation = ? AND seq > ? ORDER BY seq LIMIT ?",
                )
                .bind(conversation.to_string())
                .bind(after.0)
                // One more than asked tells whether more follow.
                .bind(u64::from(limit) + 1)
                .fetch_all(&mut *conn)
                .await
                .map_err(map_sqlx)
            })
            .await?;
        let has_more = rows.len() > limit as usize;
        let messages = rows
            .into_iter()
            .take(limit as usize)
            .map(|columns| message_from_columns(conversation, columns))
            .collect::<BackendResult<Vec<_>>>()?;
        // A second round trip only for a page with a hole (rare).
        let skipped = match gaps::hole_below(after, &messages) {
            None => Vec::new(),
            Some(last) => {
                let seqs: Vec<(u64,)> = self
                    .reading(DbOperation::Fetch, async |conn| {
                        sqlx::query_as(gaps::BETWEEN)
                            .bind(conversation.to_string())
                            .bind(after.0)
                            .bind(last.0)
                            .fetch_all(&mut *conn)
                            .await
                            .map_err(map_sqlx)
                    })
                    .await?;
                seqs.into_iter().map(|(seq,)| Seq(seq)).collect()
            }
        };
        Ok(Page { messages, has_more, skipped })
    }

    /// Records seqs that will never be stored, in one short transaction per
    /// chunk; a seq recorded already is left as it is.
    async fn record_skipped(&self, seqs: &[(ConversationId, Seq)], recorded_ms: i64) -> BackendResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.writing(DbOperation::RecordSkipped, async |conn| {
            for range in chunks(seqs.len()) {
                let chunk = &seqs[range];
                let mut insert = sqlx::query(gaps::INSERT_MYSQL.sql(chunk.len()));
                for (conversation, seq) in chunk {
                    insert = insert.bind(conversation.to_string()).bind(seq.0).bind(recorded_ms);
                }
                insert.execute(&mut *conn).await.map_err(map_sqlx)?;
            }
            Ok(())
        })
        .await
    }

    /// The ack of a stored message, by its idempotency key.
    async fn find_by_client_msg_id(&self, sender: UserId, client_msg_id: &ClientMsgId) -> BackendResult<Option<Ack>> {
        self.reading(DbOperation::FindByClientMsgId, async |conn| {
            Ok(first_by_key(&mut *conn, sender.0, client_msg_id.as_str().as_bytes()).await?.map(|first| first.ack))
        })
        .await
    }

    /// The conversations `user` is a member of, with max seq, read position
    /// and unread count, most recently active first.
    async fn conversations_of(&self, user: UserId) -> BackendResult<Vec<ConversationSummary>> {
        // Each subquery is a range scan of the (conversation, seq) index. A
        // NULL (no message, no receipt) is left for Rust to read as zero:
        // COALESCE of an unsigned column and a literal has no single type
        // across the two servers.
        // `p` is the peer's receipt: a private conversation's receipts are
        // its two members'.
        let rows: Vec<(Vec<u8>, Option<u64>, Option<u64>, i64, Option<u64>)> = self
            .reading(DbOperation::ConversationsOf, async |conn| {
                sqlx::query_as(
                    "SELECT c.conversation, \
                            (SELECT MAX(m.seq) FROM messages m WHERE m.conversation = c.conversation), \
                            r.read_seq, \
                            (SELECT COUNT(*) FROM messages m \
                              WHERE m.conversation = c.conversation AND m.seq > COALESCE(r.read_seq, 0) \
                                AND m.sender <> c.user_id), \
                            p.read_seq \
                     FROM conversation_members c \
                     LEFT JOIN receipts r ON r.user_id = c.user_id AND r.conversation = c.conversation \
                     LEFT JOIN receipts p ON p.conversation = c.conversation AND p.user_id <> c.user_id \
                     WHERE c.user_id = ? \
                     ORDER BY (SELECT m.server_time_ms FROM messages m WHERE m.conversation = c.conversation \
                                ORDER BY m.seq DESC LIMIT 1) DESC, \
                              c.conversation",
                )
                .bind(user.0)
                .fetch_all(&mut *conn)
                .await
                .map_err(map_sqlx)
            })
            .await?;
        rows.into_iter()
            .map(|(conversation, max_seq, read_seq, unread, peer_read_seq)| {
                Ok(ConversationSummary {
                    conversation: conversation_from_column(conversation)?,
                    max_seq: Seq(max_seq.unwrap_or(0)),
                    read_seq: Seq(read_seq.unwrap_or(0)),
                    unread: count_from_column(unread, "unread count")?,
                    peer_read_seq: Seq(peer_read_seq.unwrap_or(0)),
                })
            })
            .collect()
    }

    /// Highest stored seq of a conversation (`Seq::ZERO` when empty).
    async fn max_seq(&self, conversation: ConversationId) -> BackendResult<Seq> {
        let (max,): (Option<u64>,) = self
            .reading(DbOperation::MaxSeq, async |conn| {
                sqlx::query_as("SELECT MAX(seq) FROM messages WHERE conversation = ?")
                    .bind(conversation.to_string())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        Ok(Seq(max.unwrap_or(0)))
    }

    /// How many messages of `conversation` with seq > `after` were sent by
    /// someone other than `reader`: a group member's unread count.
    async fn count_unread(&self, conversation: ConversationId, reader: UserId, after: Seq) -> BackendResult<u64> {
        // A range scan of the (conversation, seq) index, as in
        // `conversations_of`.
        let (unread,): (i64,) = self
            .reading(DbOperation::CountUnread, async |conn| {
                sqlx::query_as("SELECT COUNT(*) FROM messages WHERE conversation = ? AND seq > ? AND sender <> ?")
                    .bind(conversation.to_string())
                    .bind(after.0)
                    .bind(reader.0)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        count_from_column(unread, "unread count")
    }

    /// How many stored messages each data key seals (`sealed_with`), with
    /// `None` for the messages stored in clear; keys sealing no message are
    /// not listed. For `imctl keys status`: a scan of the whole table.
    async fn rows_by_key(&self) -> BackendResult<Vec<(Option<u64>, u64)>> {
        let rows: Vec<(Option<u64>, i64)> = self
            .reading(DbOperation::RowsByKey, async |conn| {
                sqlx::query_as("SELECT sealed_with, COUNT(*) FROM messages GROUP BY sealed_with ORDER BY sealed_with")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(map_sqlx)
            })
            .await?;
        rows.into_iter().map(|(key, count)| Ok((key, count_from_column(count, "row count")?))).collect()
    }

    /// A cheap write the server must accept, for `/ready`: an UPDATE whose
    /// WHERE is false changes and locks nothing, but a server that refuses
    /// writes refuses it as it would refuse every commit: read-only (a
    /// demoted primary, `read_only=1`) or a user without write grants. A
    /// `SELECT 1` would answer and call the store ready.
    async fn ping(&self) -> BackendResult<()> {
        self.writing(DbOperation::Ping, async |conn| {
            sqlx::query("UPDATE messages SET seq = seq WHERE 1 = 0").execute(&mut *conn).await.map_err(map_sqlx)?;
            Ok(())
        })
        .await
    }

    /// One step of the retention walk: examines at most `limit` messages in
    /// storage order after position `after`, deletes the expired ones whose
    /// successor in their conversation is expired too (see `sql::expiry`).
    async fn expire_messages(&self, before_ms: i64, after: u64, limit: u32) -> BackendResult<ExpiryStep> {
        // A plain (non-locking) read, then one autocommit DELETE by primary
        // key per chunk: row locks on the rows deleted only, held for that
        // statement, away from the right edge where appends insert.
        self.writing(DbOperation::ExpireMessages, async |conn| {
            let rows: Vec<(u64, Vec<u8>, u64, i64)> =
                sqlx::query_as(expiry::WINDOW).bind(after).bind(limit).fetch_all(&mut *conn).await.map_err(map_sqlx)?;
            // The successors of the expired ones (a young message stays
            // whatever follows it), one seek each. The conversation is bound
            // as text, as the column is: a binary operand would compare
            // byte-wise, outside the index.
            let expired = rows
                .iter()
                .filter(|(_, _, _, server_time_ms)| *server_time_ms < before_ms)
                .map(|(id, conversation, seq, _)| {
                    Ok((*id, text_from_column(conversation.clone(), "conversation")?, *seq))
                })
                .collect::<BackendResult<Vec<_>>>()?;
            let mut successors = HashMap::with_capacity(expired.len());
            for range in chunks(expired.len()) {
                let chunk = &expired[range];
                let mut select = sqlx::query_as::<_, (u64, i64)>(expiry::SUCCESSORS.sql(chunk.len()));
                for (id, conversation, seq) in chunk {
                    select = select.bind(*id).bind(conversation).bind(*seq);
                }
                successors.extend(select.fetch_all(&mut *conn).await.map_err(map_sqlx)?);
            }
            let rows = rows
                .into_iter()
                .map(|(id, _, _, server_time_ms)| WindowRow {
                    id,
                    server_time_ms,
                    successor_time_ms: successors.get(&id).copied(),
                })
                .collect();
            let window = Window::new(after, limit, before_ms, rows);
            let mut deleted = 0;
            let doomed = window.doomed();
            for range in chunks(doomed.len()) {
                let chunk = &doomed[range];
                let mut delete = sqlx::query(expiry::DELETE_EXPIRED.sql(chunk.len())).bind(before_ms);
                for &id in chunk {
                    delete = delete.bind(id);
                }
                deleted += delete.execute(&mut *conn).await.map_err(map_sqlx)?.rows_affected();
            }
            let step = window.step(deleted);
            if step.done {
                // Once per walk: the recorded gaps as old as the messages
                // it deletes, so the table stays bounded.
                sqlx::query(gaps::DELETE_OLD_MYSQL)
                    .bind(before_ms)
                    .bind(limit)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_sqlx)?;
            }
            Ok(step)
        })
        .await
    }
}
