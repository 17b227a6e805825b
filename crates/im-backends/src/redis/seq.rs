//! [`RedisSeqAllocator`]: seq counters in Redis under durable ceilings and an
//! allocator epoch (DESIGN.md §4). The algorithm and why it is safe are in
//! the [module docs](super); the server side is `allocate.lua`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use ::redis::{Script, Value};
use async_trait::async_trait;
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CeilingStore, EpochStore, SeqAllocator};
use im_core::{ConversationId, Seq};
use tokio::sync::{Mutex, MutexGuard};
use tracing::{info, warn};

use super::connection::RedisConnection;
use crate::telemetry::RedisOperation;

/// Rounds of "script, then load and raise ceilings" one batch may take before
/// it gives up. One round is the common case; two when a ceiling must be
/// raised or a counter is new; more only while other allocators win races for
/// the same conversations.
const MAX_ROUNDS: usize = 32;

/// Lua numbers are doubles: counters are exact up to 2^53.
const MAX_SEQ: u64 = 1 << 53;

/// Locks that let one caller per conversation (of this node) raise ceilings
/// at a time; conversations share them by hash.
const RAISE_STRIPES: usize = 64;

/// Hands out seqs from counters in Redis, shared by every node on the same
/// Redis and ceiling store. A seq is handed out only under a ceiling that is
/// durable in the [`CeilingStore`]; a counter Redis does not have (new,
/// flushed, or of an older epoch) restarts from that ceiling, never from
/// zero; a Redis that is not the server process the current epoch was used on
/// (restarted from a snapshot, a promoted replica) makes the allocator bump
/// the epoch in the [`EpochStore`], so no counter it kept is trusted again.
///
/// A batch costs one Redis round trip (one `EVALSHA`) while its counters are
/// below their ceilings; otherwise one `load_ceilings` (for counters Redis
/// lacks), one `raise_ceilings`, and a second round trip.
pub struct RedisSeqAllocator {
    redis: RedisConnection,
    ceilings: Arc<dyn CeilingStore>,
    epochs: Arc<dyn EpochStore>,
    interval: u64,
    /// Key prefix, and the scope of the epoch in the [`EpochStore`].
    prefix: String,
    /// The epoch this node allocates in; only moves up.
    epoch: AtomicU64,
    script: Script,
    /// `current.lua`, the read-only look at one counter for `current_seq`.
    current: Script,
    /// Held by a caller of this node from its first short reply to its
    /// return. Without them, concurrent callers of one conversation would
    /// each raise the ceiling and then find the fresh range taken by the
    /// callers that had not needed to wait for a raise, again and again.
    raise_stripes: Box<[Mutex<()>]>,
    /// Raises done by this node, to tell a caller that waited for a stripe
    /// whether the range it lacked may have come meanwhile.
    raises_done: AtomicU64,
    stripe_hasher: RandomState,
}

impl fmt::Debug for RedisSeqAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSeqAllocator")
            .field("redis", &self.redis)
            .field("interval", &self.interval)
            .field("prefix", &self.prefix)
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What one distinct conversation of a batch needs, and what the next round
/// tells Redis about it.
#[derive(Debug)]
struct Want {
    conversation: ConversationId,
    count: u64,
    /// The stored ceiling, loaded after the marker of the last reply was
    /// read: where the counter starts if Redis still lacks it.
    floor: Option<Seq>,
    /// A ceiling now durable in the store, to publish in Redis.
    ceiling: Option<Seq>,
}

/// What the script replied.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// The batch's seqs: the first per counter, in the order sent.
    Granted { marker: String, firsts: Vec<u64> },
    /// Nothing handed out: per counter `(last, published ceiling)`, `None`
    /// where Redis has no counter (or could not start it from the floor).
    Short { marker: String, states: Vec<Option<(u64, u64)>> },
    /// Another node allocates in a later epoch.
    NewerEpoch(u64),
    /// The epoch's counters were kept by another Redis server process.
    Stale { run_id: String },
}

impl RedisSeqAllocator {
    /// An allocator over `redis`, keeping its keys under `key_prefix` (which
    /// is also its scope in `epochs`). `interval` is
    /// `SEQUENCE_SNAPSHOT_INTERVAL`: seqs reserved per ceiling write, and the
    /// largest gap a loss of Redis data leaves. Reads the current epoch from
    /// `epochs`; does not need Redis to be up.
    ///
    /// # Panics
    /// If `interval` is 0 (config validation rejects it first) or `key_prefix`
    /// is empty.
    pub async fn new(
        redis: RedisConnection,
        ceilings: Arc<dyn CeilingStore>,
        epochs: Arc<dyn EpochStore>,
        interval: u64,
        key_prefix: impl Into<String>,
    ) -> BackendResult<Self> {
        assert!(interval > 0, "SEQUENCE_SNAPSHOT_INTERVAL must be positive");
        let prefix = key_prefix.into();
        assert!(!prefix.is_empty(), "the Redis key prefix must not be empty");
        let epoch = epochs.current_epoch(&prefix).await?;
        Ok(Self {
            redis,
            ceilings,
            epochs,
            interval,
            prefix,
            epoch: AtomicU64::new(epoch),
            script: Script::new(include_str!("allocate.lua")),
            current: Script::new(include_str!("current.lua")),
            raise_stripes: (0..RAISE_STRIPES).map(|_| Mutex::new(())).collect(),
            raises_done: AtomicU64::new(0),
            stripe_hasher: RandomState::new(),
        })
    }

    /// The epoch this allocator currently allocates in.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The Redis key of a conversation's counter in `epoch`.
    pub fn counter_key(&self, epoch: u64, conversation: ConversationId) -> String {
        format!("{}:e{epoch}:s:{conversation}", self.prefix)
    }

    /// Runs the script once for `wants`.
    async fn round(&self, epoch: u64, token: &str, marker: &str, wants: &[Want]) -> BackendResult<Reply> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(format!("{}:epoch", self.prefix)).key(format!("{}:e{epoch}:live", self.prefix));
        for want in wants {
            invocation.key(self.counter_key(epoch, want.conversation));
        }
        invocation.arg(epoch).arg(token).arg(marker);
        let optional = |seq: Option<Seq>| seq.map_or_else(String::new, |s| s.0.to_string());
        for want in wants {
            invocation.arg(want.count).arg(optional(want.floor)).arg(optional(want.ceiling));
        }
        let value: Value = self
            .redis
            .call(RedisOperation::SeqAllocate, "seq allocation script", |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        parse_reply(value, wants.len()).map_err(|e| {
            BackendError::other(format!("redis seq allocation script at {}: unexpected reply: {e}", self.redis.addr()))
        })
    }

    /// After a short reply: loads the floors of the counters Redis lacks, and
    /// durably raises the ceiling of every counter that cannot take its
    /// count, in one load and one write. The next round sends both.
    async fn reserve(&self, wants: &mut [Want], states: &[Option<(u64, u64)>]) -> BackendResult<()> {
        let missing: Vec<ConversationId> =
            wants.iter().zip(states).filter(|(_, state)| state.is_none()).map(|(want, _)| want.conversation).collect();
        let mut floors =
            if missing.is_empty() { Vec::new() } else { self.ceilings.load_ceilings(&missing).await? }.into_iter();
        let mut raises = Vec::new();
        for (want, state) in wants.iter_mut().zip(states) {
            let (last, ceiling) = match *state {
                Some(state) => {
                    want.floor = None;
                    state
                }
                None => {
                    let floor = floors.next().expect("one stored ceiling per missing counter");
                    want.floor = Some(floor);
                    (floor.0, floor.0)
                }
            };
            let needed = last + want.count;
            want.ceiling =
                (needed > ceiling).then(|| Seq(ceiling + (needed - ceiling).div_ceil(self.interval) * self.interval));
            if let Some(raise_to) = want.ceiling {
                if raise_to.0 > MAX_SEQ {
                    return Err(BackendError::other(format!("seqs of {} would pass 2^53", want.conversation)));
                }
                raises.push((want.conversation, raise_to));
            }
        }
        if !raises.is_empty() {
            self.ceilings.raise_ceilings(&raises).await?;
        }
        Ok(())
    }

    /// Locks the raise stripes of `wants`, in stripe order so that callers
    /// cannot deadlock.
    async fn lock_raises(&self, wants: &[Want]) -> Vec<MutexGuard<'_, ()>> {
        let stripes: BTreeSet<usize> = wants
            .iter()
            .map(|want| (self.stripe_hasher.hash_one(want.conversation) % RAISE_STRIPES as u64) as usize)
            .collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.raise_stripes[stripe].lock().await);
        }
        guards
    }

    fn adopt_epoch(&self, epoch: u64) {
        let before = self.epoch.fetch_max(epoch, Ordering::AcqRel);
        if epoch > before {
            info!(prefix = %self.prefix, from = before, to = epoch, "seq allocator moved to a new epoch");
        }
    }
}

#[async_trait]
impl SeqAllocator for RedisSeqAllocator {
    /// One seq per entry, in order; a conversation listed several times gets
    /// increasing seqs. The whole batch costs at most one ceiling load and one
    /// durable ceiling write (unless other allocators keep taking the raised
    /// range first). On error no seq of the batch was handed out.
    async fn next_seqs(&self, conversations: &[ConversationId]) -> BackendResult<Vec<Seq>> {
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        let mut counts: BTreeMap<ConversationId, u64> = BTreeMap::new();
        for &conversation in conversations {
            *counts.entry(conversation).or_default() += 1;
        }
        let mut wants: Vec<Want> = counts
            .into_iter()
            .map(|(conversation, count)| Want { conversation, count, floor: None, ceiling: None })
            .collect();
        // The marker of this epoch's data as last seen by this batch; floors
        // are loaded after it was seen, and only used while it stands.
        let mut marker = String::new();
        let mut raising: Option<Vec<MutexGuard<'_, ()>>> = None;
        for _ in 0..MAX_ROUNDS {
            let epoch = self.epoch();
            let token = fresh_token();
            let reply = self.round(epoch, &token, &marker, &wants).await?;
            if let Reply::Granted { marker: seen, .. } | Reply::Short { marker: seen, .. } = &reply
                && seen.ends_with(&format!(":{token}"))
            {
                info!(prefix = %self.prefix, epoch, "redis has no seq counters for this epoch (new epoch or data lost); they restart from the stored ceilings");
            }
            match reply {
                Reply::Granted { firsts, .. } => return Ok(spread(conversations, &wants, &firsts)),
                Reply::Short { marker: seen, states } => {
                    marker = seen;
                    if raising.is_none() {
                        let raises_before = self.raises_done.load(Ordering::Acquire);
                        raising = Some(self.lock_raises(&wants).await);
                        if self.raises_done.load(Ordering::Acquire) != raises_before {
                            // Another caller raised while this one waited:
                            // look again before raising too.
                            continue;
                        }
                    }
                    self.reserve(&mut wants, &states).await?;
                    self.raises_done.fetch_add(1, Ordering::AcqRel);
                }
                Reply::NewerEpoch(newer) => {
                    self.adopt_epoch(newer);
                    forget(&mut wants, &mut marker);
                }
                Reply::Stale { run_id } => {
                    warn!(
                        prefix = %self.prefix,
                        epoch,
                        run_id = %run_id,
                        "redis is not the server the seq counters were kept on (restart, restore or failover); bumping the epoch"
                    );
                    let bumped = self.epochs.bump_epoch(&self.prefix, epoch).await?;
                    self.adopt_epoch(bumped);
                    forget(&mut wants, &mut marker);
                }
            }
        }
        Err(BackendError::unavailable(format!(
            "seq allocation under {} did not settle in {MAX_ROUNDS} rounds (heavy contention or Redis changing underneath)",
            self.prefix
        )))
    }

    /// A boundary in `conversation`'s seqs, for group membership changes
    /// (`im_core::group`): at least every seq handed out before this call
    /// (on any node), and below every seq handed out after it returns. Hands
    /// nothing out and writes nothing.
    ///
    /// Reads, in one script, the counter of the epoch Redis allocates in
    /// (the highest any node used there, which may be below this node's if
    /// the bump has not reached Redis yet: nodes still allocate in it).
    /// Where that counter is trusted (its marker names this server process),
    /// the answer is its `n`: every allocation came before (at most `n`), or
    /// comes after, from this counter (above `n`) or from a later epoch's,
    /// which starts from floors read after this script ran, so at least `n`.
    /// Where there is no trusted counter (none yet, lost to a flush, kept by
    /// another server process), the answer is the stored ceiling, read after
    /// Redis: every seq ever handed out is at most the stored ceiling, and
    /// the next allocation restarts from it.
    ///
    /// One window is not closed, as closing it takes a write: an allocation
    /// that loaded its floor and raised the ceiling but has not started the
    /// counter yet hands out seqs from the old floor, below the raised
    /// ceiling this returned. The boundary then errs high (a joiner misses a
    /// message that raced the join), never low (no message from before the
    /// join is shown).
    async fn current_seq(&self, conversation: ConversationId) -> BackendResult<Seq> {
        let mut epoch = self.epoch();
        for _ in 0..MAX_ROUNDS {
            match self.look(epoch, conversation).await? {
                Current::Counter(n) => return Ok(Seq(n)),
                Current::Restart => return self.ceilings.load_ceiling(conversation).await,
                Current::OtherEpoch(top) => {
                    // Only this node's view moves (and only up): nothing is
                    // written.
                    self.adopt_epoch(top);
                    epoch = top;
                }
            }
        }
        Err(BackendError::unavailable(format!(
            "the epoch under {} kept moving while reading the seq of {conversation}",
            self.prefix
        )))
    }
}

/// What `current.lua` replied.
#[derive(Debug, PartialEq, Eq)]
enum Current {
    /// Redis allocates in another epoch than the one asked about.
    OtherEpoch(u64),
    /// The last seq handed out under the epoch asked about.
    Counter(u64),
    /// No counter Redis holds is trusted (none, a flush, a new or stale
    /// epoch): the next allocation starts from the stored ceiling.
    Restart,
}

impl RedisSeqAllocator {
    /// Runs `current.lua` once for `conversation` under `epoch`.
    async fn look(&self, epoch: u64, conversation: ConversationId) -> BackendResult<Current> {
        let mut invocation = self.current.prepare_invoke();
        invocation
            .key(format!("{}:epoch", self.prefix))
            .key(format!("{}:e{epoch}:live", self.prefix))
            .key(self.counter_key(epoch, conversation))
            .arg(epoch);
        let value: Value = self
            .redis
            .call(RedisOperation::SeqLookup, "seq look-up script", |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        parse_current(value).map_err(|e| {
            BackendError::other(format!("redis seq look-up script at {}: unexpected reply: {e}", self.redis.addr()))
        })
    }
}

fn parse_current(value: Value) -> Result<Current, String> {
    let Value::Array(items) = value else { return Err(format!("{value:?}")) };
    let mut items = items.into_iter();
    let tag = text(items.next())?;
    let current = match tag.as_str() {
        "epoch" => Current::OtherEpoch(positive(integer(items.next())?)?),
        "counter" => Current::Counter(positive(integer(items.next())?)?),
        "restart" => Current::Restart,
        other => return Err(format!("unknown reply {other:?}")),
    };
    match items.next() {
        None => Ok(current),
        Some(extra) => Err(format!("unexpected {extra:?} after {tag:?}")),
    }
}

/// Drops what was learnt about the previous epoch.
fn forget(wants: &mut [Want], marker: &mut String) {
    marker.clear();
    for want in wants {
        want.floor = None;
        want.ceiling = None;
    }
}

/// The batch's seqs in batch order, from the first seq of each counter.
fn spread(conversations: &[ConversationId], wants: &[Want], firsts: &[u64]) -> Vec<Seq> {
    let mut next: HashMap<ConversationId, u64> =
        wants.iter().zip(firsts).map(|(want, &first)| (want.conversation, first)).collect();
    conversations
        .iter()
        .map(|conversation| {
            let seq = next.get_mut(conversation).expect("every conversation of the batch was granted");
            let taken = *seq;
            *seq += 1;
            Seq(taken)
        })
        .collect()
}

/// A token no other marker of any node is likely to carry: 64 bits from a
/// randomly keyed hash of the time, the process and a counter.
fn fresh_token() -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let hash =
        RandomState::new().hash_one((SystemTime::now(), std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed)));
    format!("{hash:016x}")
}

fn parse_reply(value: Value, counters: usize) -> Result<Reply, String> {
    let Value::Array(items) = value else { return Err(format!("{value:?}")) };
    let mut items = items.into_iter();
    let tag = text(items.next())?;
    let reply = match tag.as_str() {
        "ok" => {
            let marker = text(items.next())?;
            let firsts = items.map(|v| integer(Some(v))).collect::<Result<Vec<i64>, _>>()?;
            let firsts: Vec<u64> = firsts.into_iter().map(positive).collect::<Result<_, _>>()?;
            Reply::Granted { marker, firsts }
        }
        "short" => {
            let marker = text(items.next())?;
            let numbers = items.map(|v| integer(Some(v))).collect::<Result<Vec<i64>, _>>()?;
            let states = numbers
                .chunks(2)
                .map(|pair| match *pair {
                    [-1, -1] => Ok(None),
                    [last, ceiling] if last >= 0 && ceiling >= 0 => Ok(Some((last as u64, ceiling as u64))),
                    _ => Err(format!("bad counter state {pair:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Reply::Short { marker, states }
        }
        "epoch" => return Ok(Reply::NewerEpoch(positive(integer(items.next())?)?)),
        "stale" => return Ok(Reply::Stale { run_id: text(items.next())? }),
        other => return Err(format!("unknown reply {other:?}")),
    };
    let len = match &reply {
        Reply::Granted { firsts, .. } => firsts.len(),
        Reply::Short { states, .. } => states.len(),
        _ => counters,
    };
    if len != counters {
        return Err(format!("{len} counters in the reply, {counters} asked"));
    }
    Ok(reply)
}

fn text(value: Option<Value>) -> Result<String, String> {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes).map_err(|e| e.to_string()),
        Some(Value::SimpleString(s)) => Ok(s),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn integer(value: Option<Value>) -> Result<i64, String> {
    match value {
        Some(Value::Int(n)) => Ok(n),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

fn positive(n: i64) -> Result<u64, String> {
    u64::try_from(n).map_err(|_| format!("negative number {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn replies_parse() {
        let ok = Value::Array(vec![bulk("ok"), bulk("r:t"), Value::Int(5), Value::Int(1)]);
        assert_eq!(parse_reply(ok, 2), Ok(Reply::Granted { marker: "r:t".into(), firsts: vec![5, 1] }));
        let short = Value::Array(vec![
            bulk("short"),
            bulk("r:t"),
            Value::Int(-1),
            Value::Int(-1),
            Value::Int(4),
            Value::Int(7),
        ]);
        assert_eq!(parse_reply(short, 2), Ok(Reply::Short { marker: "r:t".into(), states: vec![None, Some((4, 7))] }));
        assert_eq!(parse_reply(Value::Array(vec![bulk("epoch"), Value::Int(3)]), 2), Ok(Reply::NewerEpoch(3)));
        assert_eq!(
            parse_reply(Value::Array(vec![bulk("stale"), bulk("abc")]), 2),
            Ok(Reply::Stale { run_id: "abc".into() })
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(parse_reply(Value::Nil, 1).is_err());
        assert!(parse_reply(Value::Array(vec![bulk("ok"), bulk("m")]), 1).is_err(), "a counter is missing");
        assert!(parse_reply(Value::Array(vec![bulk("ok"), bulk("m"), Value::Int(-3)]), 1).is_err());
        assert!(parse_reply(Value::Array(vec![bulk("short"), bulk("m"), Value::Int(-1)]), 1).is_err());
        assert!(parse_reply(Value::Array(vec![bulk("what")]), 1).is_err());
    }

    #[test]
    fn look_up_replies_parse() {
        assert_eq!(parse_current(Value::Array(vec![bulk("counter"), Value::Int(7)])), Ok(Current::Counter(7)));
        assert_eq!(parse_current(Value::Array(vec![bulk("restart")])), Ok(Current::Restart));
        assert_eq!(parse_current(Value::Array(vec![bulk("epoch"), Value::Int(4)])), Ok(Current::OtherEpoch(4)));
        assert!(parse_current(Value::Array(vec![bulk("counter")])).is_err());
        assert!(parse_current(Value::Array(vec![bulk("counter"), Value::Int(-1)])).is_err());
        assert!(parse_current(Value::Array(vec![bulk("restart"), Value::Int(1)])).is_err());
        assert!(parse_current(Value::Nil).is_err());
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(fresh_token(), fresh_token());
    }
}
