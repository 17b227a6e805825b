//! The production seq allocator and dedup cache, over Redis, shared by every
//! im-service node.
//!
//! - `connection`: [`RedisConnection`], built from `redis.*` config: one
//!   self-reconnecting multiplexed connection, fail-fast timeouts, Redis
//!   errors as `BackendError` (unreachable → `Unavailable`, G9).
//! - `seq`: [`RedisSeqAllocator`]; its server side is `allocate.lua`, and
//!   `current.lua`, the read-only look at one counter behind `current_seq`.
//! - `dedup`: [`RedisDedupCache`], `SET NX GET` with a TTL.
//! - `sentinel`: the primary that Sentinels name, asked again after a call
//!   fails as a failover would make it fail.
//!
//! # Seqs (DESIGN.md §4)
//!
//! Redis keeps the counters, the durable store keeps a ceiling per
//! conversation ([`CeilingStore`](im_core::ports::CeilingStore)) and an
//! allocator epoch per key prefix ([`EpochStore`](im_core::ports::EpochStore)).
//! For a key prefix `P`:
//!
//! | key | holds |
//! |---|---|
//! | `P:epoch` | the highest epoch any node has allocated in on this Redis |
//! | `P:e{E}:live` | the marker of epoch `E`: `run_id:token`, the Redis server process its counters live on, and a token that is new whenever they were lost |
//! | `P:e{E}:s:{conversation}` | the counter: hash `n` = last seq handed out, `c` = its published ceiling |
//!
//! A batch runs `allocate.lua` once (`EVALSHA`) over all its conversations.
//! Atomically, the script
//!
//! 1. refuses if `P:epoch` is above the caller's epoch (the caller adopts it
//!    and runs again);
//! 2. reads `run_id` (`INFO server`) and refuses as *stale* if the epoch's
//!    marker names another process: the caller bumps the epoch durably
//!    (`bump_epoch(P, E)`, nodes that saw the same stale epoch agree on the
//!    next) and runs again under the new epoch, where Redis has no counters.
//!    A missing marker (new epoch, or flushed) is created with a fresh token;
//! 3. per counter: starts an absent one at the floor the caller sent, if the
//!    marker is still the one the floor was loaded under; raises `c` to the
//!    ceiling the caller sent (max only);
//! 4. if every counter has room (`n + count <= c`) hands out `n+1..=n+count`
//!    for each and replies with the firsts; otherwise hands out nothing and
//!    replies with the marker and every `(n, c)`, absent ones as such.
//!
//! After a short reply the caller, for the whole batch, loads the stored
//! ceilings of the absent counters (one `load_ceilings`: the floors), raises
//! every short counter's ceiling by whole intervals to cover its count (one
//! durable `raise_ceilings`), and runs the script again with the floors and
//! ceilings. So a batch costs one round trip while its counters have room,
//! and one load, one write and a second round trip when they do not. With
//! other nodes taking the same conversations' fresh range first, it goes
//! round again (bounded).
//!
//! # Why no seq is handed out twice (G2)
//!
//! Claim: every seq handed out for a conversation is above every seq handed
//! out for it before, on any node. So seqs never repeat, and each caller sees
//! them increase.
//!
//! - *Only under a durable ceiling.* `c` is only set to a value the caller
//!   has already written to the store, stored ceilings never go down, and no
//!   seq above `c` is handed out: every seq ever handed out is at most the
//!   stored ceiling from then on.
//! - *A counter only moves up while it exists* (`HINCRBY`), and has no TTL.
//! - *A counter starts above everything handed out before.* Its floor is the
//!   stored ceiling read after a reply showed marker `M` and the counter
//!   absent; the script starts it only if the marker is still `M` and the
//!   counter still absent. Seqs handed out before that reply are at most the
//!   stored ceiling then (first point), so at most the floor. Between the
//!   reply and the start none was handed out: not from this counter (absent
//!   both times while `M` stood: data lost in between would have taken `M`
//!   along, and a new marker carries a new token and the new `run_id`); not
//!   from an older epoch (`P:epoch` has been at least `E` since the reply,
//!   and scripts of older epochs are refused); not from a newer one (its
//!   script would have raised `P:epoch` above `E`, refusing ours).
//! - *Counters a Redis may have kept from the past are never trusted.* A
//!   Redis restarted from a snapshot, or a replica promoted with a lagging
//!   copy, is a new process with a new `run_id`: the markers it holds name
//!   the old one, every script of those epochs is refused as stale, and the
//!   bumped epoch's counters start from floors (previous point). A flush
//!   keeps the `run_id` but takes the markers and counters with it.
//!
//! Gaps: a counter has at most one interval of room (a raise covers just the
//! batch that needed it), so a restart from the stored ceiling skips about
//! one `SEQUENCE_SNAPSHOT_INTERVAL` (one more if a node died between writing
//! a raise and publishing it). Any Redis restart bumps the epoch, so costs
//! that gap once per conversation.
//!
//! # What the deployment must provide
//!
//! - Redis 7 or later (`SET NX GET`; an older one is refused at start), one
//!   primary (not Cluster: the script touches many keys), either at
//!   `redis.addr` or named by Sentinels (`sentinel`); the Redis user may run
//!   `INFO`. A replica promoted by the Sentinels is a new server process:
//!   the epoch is bumped, as after a restore (previous section).
//! - Counters are never evicted: `maxmemory-policy` `noeviction` or a
//!   `volatile-*` one (counters have no TTL; dedup entries do).
//! - One writable primary at a time. Two primaries serving different nodes at
//!   once (an old primary still reachable by some nodes after a failover) is
//!   not covered: both may raise from the same stored ceiling and hand out
//!   the same range. Fencing that needs the store to refuse raises from an
//!   old epoch (a `CeilingStore` change). With Sentinels, an old primary cut
//!   off from its replicas stops taking writes when it runs with
//!   `min-replicas-to-write 1` (docs/high-availability.md).
//! - Seqs stay below 2^53 (Lua numbers are doubles).
//!
//! The keys of an epoch left behind by a bump are not removed.

mod connection;
mod dedup;
mod sentinel;
mod seq;

pub use connection::RedisConnection;
pub use dedup::RedisDedupCache;
pub use seq::RedisSeqAllocator;
