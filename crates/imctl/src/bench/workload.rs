//! The load itself: when each connection sends, to whom (a user, or its
//! group), what the body carries, and the per-connection task that sends and
//! receives.
//!
//! One task per connection: its writer and reader halves are two futures
//! joined inside that task, so reading never waits for a blocked write (and
//! the other way round) without a task or channel hop per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use im_proto::client::{self as proto, ClientFrame, SendRequest, client_frame, server_frame};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::layout::GroupLayout;
use super::stats::fanout::FanoutTracker;
use super::stats::{Counters, ErrorTally, Latencies};
use crate::cli::Pairing;
use crate::client::{self, Recipient, WsStream};
use crate::error::frame_code_name;

/// First bytes of every bench body, so a stray push is not mistaken for one.
pub const BODY_MAGIC: [u8; 4] = *b"imb1";
/// Magic, scheduled send time (u64 LE, ns since the run's epoch), message key (u64 LE).
pub const BODY_HEADER_LEN: usize = 20;
pub const CONTENT_TYPE: &str = "application/x-imctl-bench";
/// First bytes of a text body (`--text`): what a server-side text filter reads.
pub const TEXT_MAGIC: [u8; 4] = *b"imt1";
/// Magic, then the send time and the key as 16 lowercase hex digits each.
pub const TEXT_HEADER_LEN: usize = 36;
pub const TEXT_CONTENT_TYPE: &str = "text/plain";
/// What fills a text body after its header: ordinary words, cycled.
const TEXT_FILLER: &[u8] = b" hello there, how are you today? fine thanks, and you?";

/// Identifies a message across the run: the sending connection and the
/// message's number on it (which is also its req_id).
pub fn message_key(connection: u32, number: u32) -> u64 {
    (u64::from(connection) << 32) | u64::from(number)
}

/// Writes a body of `size` bytes (at least [`BODY_HEADER_LEN`]) into `arena`
/// and returns it; the arena's allocation is reused once earlier bodies are dropped.
pub fn write_body(arena: &mut BytesMut, sent_ns: u64, key: u64, size: usize) -> Bytes {
    debug_assert!(size >= BODY_HEADER_LEN);
    arena.reserve(size);
    arena.put_slice(&BODY_MAGIC);
    arena.put_u64_le(sent_ns);
    arena.put_u64_le(key);
    arena.put_bytes(b'.', size.saturating_sub(BODY_HEADER_LEN));
    arena.split().freeze()
}

/// Writes a text body of `size` bytes (at least [`TEXT_HEADER_LEN`]): the
/// header in ASCII hex, then words. A filter that masks some of the words
/// leaves the header readable.
pub fn write_text_body(arena: &mut BytesMut, sent_ns: u64, key: u64, size: usize) -> Bytes {
    let size = size.max(TEXT_HEADER_LEN);
    arena.reserve(size);
    arena.put_slice(&TEXT_MAGIC);
    for value in [sent_ns, key] {
        for shift in (0..16).rev() {
            arena.put_u8(b"0123456789abcdef"[((value >> (shift * 4)) & 0xf) as usize]);
        }
    }
    let mut left = size - TEXT_HEADER_LEN;
    while left > 0 {
        let part = &TEXT_FILLER[..left.min(TEXT_FILLER.len())];
        arena.put_slice(part);
        left -= part.len();
    }
    arena.split().freeze()
}

/// (scheduled send time, message key) of a bench body, binary or text.
pub fn read_body(body: &[u8]) -> Option<(u64, u64)> {
    if body.starts_with(&TEXT_MAGIC) {
        let hex = |range: std::ops::Range<usize>| {
            std::str::from_utf8(body.get(range)?).ok().and_then(|digits| u64::from_str_radix(digits, 16).ok())
        };
        return Some((hex(4..20)?, hex(20..36)?));
    }
    let header = body.get(..BODY_HEADER_LEN)?;
    if header[..4] != BODY_MAGIC {
        return None;
    }
    let sent_ns = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let key = u64::from_le_bytes(header[12..20].try_into().ok()?);
    Some((sent_ns, key))
}

/// The phases of a run, in ns since its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Sending starts.
    pub start: u64,
    /// Warm-up ends; the measured window starts.
    pub measure_from: u64,
    /// Sending stops; the measured window ends; the drain starts.
    pub send_until: u64,
}

impl Plan {
    pub fn new(start: Duration, warmup: Duration, duration: Duration) -> Self {
        let start = start.as_nanos() as u64;
        let measure_from = start + warmup.as_nanos() as u64;
        Self { start, measure_from, send_until: measure_from + duration.as_nanos() as u64 }
    }

    pub fn in_window(&self, t: u64) -> bool {
        (self.measure_from..self.send_until).contains(&t)
    }

    pub fn measured(&self) -> Duration {
        Duration::from_nanos(self.send_until - self.measure_from)
    }
}

/// How senders pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Fixed schedule: `rate` messages per second over all connections.
    Open { rate: f64 },
    /// Each connection keeps `window` sends awaiting their ack.
    Closed { window: u32 },
}

/// Open-loop send times of one connection: the total rate is split evenly
/// over the connections, and their phases are staggered so the whole load
/// is evenly spaced too (not a burst of every connection at once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    start_ns: u64,
    phase_ns: f64,
    interval_ns: f64,
}

impl Schedule {
    pub fn new(start_ns: u64, total_rate: f64, connections: u32, index: u32) -> Self {
        debug_assert!(total_rate > 0.0 && connections > 0 && index < connections);
        let interval_ns = 1e9 * f64::from(connections) / total_rate;
        let phase_ns = interval_ns * f64::from(index) / f64::from(connections);
        Self { start_ns, phase_ns, interval_ns }
    }

    /// When message `k` (from 0) is due.
    pub fn due(&self, k: u64) -> u64 {
        self.start_ns + (self.phase_ns + k as f64 * self.interval_ns) as u64
    }

    /// How many messages are due before `end_ns`: the messages this
    /// connection sends when sending stops at `end_ns`.
    pub fn count_before(&self, end_ns: u64) -> u64 {
        (0..).take_while(|&k| self.due(k) < end_ns).count() as u64
    }
}

/// Picks each message's recipient (user indexes; see [`Pairing`]).
pub fn pick_recipient(pairing: Pairing, from: usize, users: usize, rng: &mut impl Rng) -> usize {
    debug_assert!(users >= 2 && from < users);
    match pairing {
        Pairing::Ring => (from + 1) % users,
        Pairing::Pairs => (from + users / 2) % users,
        Pairing::Random => {
            let other = rng.random_range(0..users - 1);
            if other >= from { other + 1 } else { other }
        }
    }
}

/// Who the messages go to.
#[derive(Debug)]
pub enum Traffic {
    /// 1:1 messages between the users.
    Private { pairing: Pairing },
    /// Each sender writes to its group; every member receives.
    Groups { layout: GroupLayout, ids: Vec<u64>, tracker: FanoutTracker },
}

/// What every connection task shares.
#[derive(Debug)]
pub struct Run {
    pub epoch: Instant,
    pub plan: Plan,
    pub load: Load,
    pub traffic: Traffic,
    pub body_size: usize,
    /// `text/plain` bodies ([`write_text_body`]) instead of binary ones.
    pub text_bodies: bool,
    /// User ids by user index.
    pub users: Vec<u64>,
    /// Connections `0..senders` send; the others only receive.
    pub senders: u32,
    pub latencies: Latencies,
    pub errors: ErrorTally,
}

impl Run {
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// Where the next message of `conn` goes.
    fn recipient(&self, conn: Connection, rng: &mut SmallRng) -> Recipient {
        match &self.traffic {
            Traffic::Private { pairing } => {
                let to = pick_recipient(*pairing, conn.user_index as usize, self.users.len(), rng);
                Recipient::User(self.users[to])
            }
            Traffic::Groups { layout, ids, .. } => Recipient::Group(ids[layout.position(conn.user_index).0 as usize]),
        }
    }

    /// Whether a push to user `me` is a bench message for them to count: a
    /// private one addressed to them, or a group one another member sent.
    fn counts_push(&self, push: &proto::Message, me: u64) -> bool {
        match self.traffic {
            Traffic::Private { .. } => push.to_user == me,
            Traffic::Groups { .. } => push.to_user == 0 && push.from_user != me,
        }
    }
}

/// One connection of the run.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub index: u32,
    pub user_index: u32,
}

/// What a connection task hands back for the delivery check.
#[derive(Debug, Default)]
pub struct ConnectionReport {
    /// Keys of the messages this connection sent that were acked.
    pub acked: Vec<u64>,
    /// Keys of the bench messages pushed to this connection as the recipient.
    pub received: Vec<u64>,
}

/// Sends whose ack is awaited: req_id (the message number) → scheduled send time.
type InFlight = Mutex<HashMap<u32, u64>>;

/// The timer has 1 ms granularity and fires late, never early: wake up that
/// much before the scheduled time and send then, so the timer adds no latency.
const TIMER_SLACK_NS: u64 = 1_000_000;

/// The time an open-loop message's latency is measured from. Sent late (the
/// sender fell behind, e.g. the server stalled it): the scheduled time, so
/// the delay counts against the server (no coordinated omission). Sent
/// early (the timer slack): the actual time, so nothing is under-counted.
pub fn send_stamp(due_ns: u64, now_ns: u64) -> u64 {
    due_ns.min(now_ns)
}

/// Drives one connection until `stop` turns true (after the drain).
pub async fn run_connection(
    ws: WsStream,
    conn: Connection,
    run: Arc<Run>,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
) -> ConnectionReport {
    let (sink, stream) = ws.split();
    let in_flight: InFlight = Mutex::new(HashMap::new());
    let permits = Semaphore::new(match run.load {
        Load::Closed { window } => window as usize,
        Load::Open { .. } => 0,
    });
    let mut writer_stop = stop.clone();
    let writer = async {
        // Sending ends by itself at the end of the window, unless a write is
        // stuck (a server that stopped reading): then the run's stop ends it.
        tokio::select! {
            sink = write_loop(sink, conn, &run, &counters, &in_flight, &permits) => Some(sink),
            _ = writer_stop.wait_for(|stopped| *stopped) => None,
        }
    };
    let reader = read_loop(stream, conn, &run, &counters, &in_flight, &permits, stop);
    let (sink, (acked, received)) = tokio::join!(writer, reader);
    match sink {
        Some(mut sink) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        }
        None => {
            Counters::add(&counters.errors);
            run.errors.add("SEND_STUCK");
        }
    }
    ConnectionReport { acked, received }
}

/// The reusable send frame of one connection: only req_id, recipient, id and body change.
struct Outgoing {
    frame: ClientFrame,
    frame_buf: BytesMut,
    body_arena: BytesMut,
    text_bodies: bool,
}

impl Outgoing {
    fn new(text_bodies: bool) -> Self {
        let send = SendRequest {
            client_msg_id: String::with_capacity(20),
            content_type: if text_bodies { TEXT_CONTENT_TYPE } else { CONTENT_TYPE }.to_owned(),
            ..SendRequest::default()
        };
        Self {
            frame: ClientFrame { req_id: 0, body: Some(client_frame::Body::Send(send)) },
            frame_buf: BytesMut::with_capacity(64 * 1024),
            body_arena: BytesMut::with_capacity(64 * 1024),
            text_bodies,
        }
    }

    fn message(&mut self, conn: u32, number: u32, to: Recipient, sent_ns: u64, body_size: usize) -> Message {
        self.frame.req_id = u64::from(number);
        let Some(client_frame::Body::Send(send)) = &mut self.frame.body else { unreachable!("always a send") };
        to.address(send);
        // Unique per user: users are new each run, and a user's connections have distinct indexes.
        send.client_msg_id.clear();
        push_hex(&mut send.client_msg_id, u64::from(conn));
        send.client_msg_id.push('-');
        push_hex(&mut send.client_msg_id, u64::from(number));
        let key = message_key(conn, number);
        send.body = if self.text_bodies {
            write_text_body(&mut self.body_arena, sent_ns, key, body_size)
        } else {
            write_body(&mut self.body_arena, sent_ns, key, body_size)
        };
        client::encode(&self.frame, &mut self.frame_buf)
    }
}

/// Appends `v` in lower-case hex without going through the formatter.
pub fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let nibbles = (64 - v.leading_zeros()).div_ceil(4).max(1);
    for i in (0..nibbles).rev() {
        out.push(DIGITS[((v >> (i * 4)) & 0xf) as usize] as char);
    }
}

async fn write_loop(
    mut sink: SplitSink<WsStream, Message>,
    conn: Connection,
    run: &Run,
    counters: &Counters,
    in_flight: &InFlight,
    permits: &Semaphore,
) -> SplitSink<WsStream, Message> {
    if conn.index >= run.senders {
        return sink;
    }
    let mut out = Outgoing::new(run.text_bodies);
    let mut rng = SmallRng::seed_from_u64(rand::random::<u64>() ^ u64::from(conn.index));
    let mut number: u32 = 0;
    let mut send_one = |sent_ns: u64| {
        number += 1;
        let to = run.recipient(conn, &mut rng);
        in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(number, sent_ns);
        out.message(conn.index, number, to, sent_ns, run.body_size)
    };
    let timer = tokio::time::sleep_until(run.instant(run.plan.start));
    tokio::pin!(timer);

    let failed = match run.load {
        Load::Open { rate } => {
            let schedule = Schedule::new(run.plan.start, rate, run.senders, conn.index);
            let mut k = 0u64;
            loop {
                let due = schedule.due(k);
                if due >= run.plan.send_until {
                    break false;
                }
                if due > run.now_ns() + TIMER_SLACK_NS {
                    timer.as_mut().reset(run.instant(due - TIMER_SLACK_NS));
                    timer.as_mut().await;
                }
                let message = send_one(send_stamp(due, run.now_ns()));
                k += 1;
                if sink.feed(message).await.is_err() {
                    break true;
                }
                Counters::add(&counters.sent);
                // Write now unless the next one is already due (behind
                // schedule): then they go out together in one write.
                if schedule.due(k) > run.now_ns() && sink.flush().await.is_err() {
                    break true;
                }
            }
        }
        Load::Closed { .. } => {
            timer.as_mut().await;
            timer.as_mut().reset(run.instant(run.plan.send_until));
            'send: loop {
                tokio::select! {
                    biased;
                    _ = &mut timer => break 'send false,
                    permit = permits.acquire() => match permit {
                        Ok(permit) => permit.forget(),
                        Err(_) => break 'send false,
                    },
                }
                let mut batch = 1;
                loop {
                    if sink.feed(send_one(run.now_ns())).await.is_err() {
                        break 'send true;
                    }
                    Counters::add(&counters.sent);
                    match permits.try_acquire() {
                        Ok(permit) if batch < 64 => {
                            permit.forget();
                            batch += 1;
                        }
                        _ => break,
                    }
                }
                if sink.flush().await.is_err() {
                    break 'send true;
                }
            }
        }
    };
    if failed || sink.flush().await.is_err() {
        Counters::add(&counters.errors);
        run.errors.add("SEND_FAILED");
    }
    sink
}

async fn read_loop(
    mut stream: SplitStream<WsStream>,
    conn: Connection,
    run: &Run,
    counters: &Counters,
    in_flight: &InFlight,
    permits: &Semaphore,
    mut stop: watch::Receiver<bool>,
) -> (Vec<u64>, Vec<u64>) {
    let me = run.users[conn.user_index as usize];
    let shard = conn.index as usize;
    let mut acked = Vec::new();
    let mut received = Vec::new();
    let lost = |code: &'static str| {
        Counters::add(&counters.errors);
        run.errors.add(code);
    };
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            next = stream.next() => next,
        };
        let data = match next {
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Close(_))) | None => {
                lost("DISCONNECTED");
                break;
            }
            Some(Err(_)) => {
                lost("DISCONNECTED");
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Ok(frame) = client::decode(data) else {
            lost("BAD_FRAME");
            continue;
        };
        let now = run.now_ns();
        match frame.body {
            Some(server_frame::Body::Ack(_)) => {
                let sent = in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&(frame.req_id as u32));
                let Some(sent_ns) = sent else { continue };
                Counters::add(&counters.acked);
                if run.plan.in_window(now) {
                    Counters::add(&counters.acked_in_window);
                }
                if run.plan.in_window(sent_ns) {
                    run.latencies.record_ack(shard, now.saturating_sub(sent_ns));
                }
                acked.push(message_key(conn.index, frame.req_id as u32));
                permits.add_permits(usize::from(matches!(run.load, Load::Closed { .. })));
            }
            Some(server_frame::Body::Error(e)) => {
                let was_send = in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&(frame.req_id as u32));
                if was_send.is_some() {
                    Counters::add(&counters.rejected);
                    permits.add_permits(usize::from(matches!(run.load, Load::Closed { .. })));
                }
                lost(frame_code_name(e.code));
            }
            Some(server_frame::Body::Push(m)) if run.counts_push(&m, me) => {
                let Some((sent_ns, key)) = read_body(&m.body) else { continue };
                Counters::add(&counters.delivered);
                if run.plan.in_window(now) {
                    Counters::add(&counters.delivered_in_window);
                }
                if run.plan.in_window(sent_ns) {
                    run.latencies.record_e2e(shard, now.saturating_sub(sent_ns));
                }
                match &run.traffic {
                    Traffic::Private { .. } => received.push(key),
                    Traffic::Groups { tracker, .. } => tracker.record(key, conn.user_index, sent_ns, now),
                }
            }
            // Copies of our own sends to this user's other devices, receipts, pongs.
            _ => {}
        }
    }
    (acked, received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_time_and_key_and_has_the_requested_size() {
        let mut arena = BytesMut::new();
        let body = write_body(&mut arena, 123_456_789, message_key(7, 42), 100);
        assert_eq!(body.len(), 100);
        assert_eq!(read_body(&body), Some((123_456_789, message_key(7, 42))));
        let minimal = write_body(&mut arena, 1, 2, BODY_HEADER_LEN);
        assert_eq!(read_body(&minimal), Some((1, 2)));
        assert_eq!(read_body(b"hello, this is not a bench body"), None);
        assert_eq!(read_body(&body[..10]), None);
    }

    #[test]
    fn keys_separate_connection_and_number() {
        assert_ne!(message_key(1, 0), message_key(0, 1));
        assert_eq!(message_key(1, 2), (1 << 32) | 2);
    }

    #[test]
    fn plan_windows() {
        let plan = Plan::new(Duration::from_millis(100), Duration::from_secs(2), Duration::from_secs(10));
        assert_eq!(plan.measure_from, 2_100_000_000);
        assert_eq!(plan.send_until, 12_100_000_000);
        assert!(!plan.in_window(2_099_999_999));
        assert!(plan.in_window(2_100_000_000));
        assert!(!plan.in_window(12_100_000_000));
        assert_eq!(plan.measured(), Duration::from_secs(10));
    }

    #[test]
    fn schedule_spaces_each_connection_evenly() {
        // 1000 msg/s over 100 connections: 10/s each, every 100 ms.
        let s = Schedule::new(5_000, 1000.0, 100, 0);
        assert_eq!(s.due(0), 5_000);
        assert_eq!(s.due(1) - s.due(0), 100_000_000);
        assert_eq!(s.due(10) - s.due(0), 1_000_000_000);
    }

    #[test]
    fn schedule_staggers_connections_so_the_total_is_evenly_spaced() {
        let (rate, conns) = (1000.0, 4);
        let mut all: Vec<u64> =
            (0..conns).flat_map(|i| (0..25).map(move |k| Schedule::new(0, rate, conns, i).due(k))).collect();
        all.sort_unstable();
        // 100 messages in 100 ms, one per ms.
        for (n, due) in all.iter().enumerate() {
            assert_eq!(*due, n as u64 * 1_000_000, "message {n}");
        }
    }

    #[test]
    fn schedule_sends_rate_times_duration_messages() {
        let (rate, conns, window_ns) = (2500.0, 7, 3_000_000_000u64);
        let count: u64 = (0..conns).map(|i| Schedule::new(0, rate, conns, i).count_before(window_ns)).sum();
        assert!((count as f64 - 7500.0).abs() <= f64::from(conns), "{count}");
    }

    #[test]
    fn latency_counts_from_the_schedule_when_late_and_from_the_send_when_early() {
        assert_eq!(send_stamp(1_000, 1_700), 1_000, "late: the wait counts");
        assert_eq!(send_stamp(1_000, 400), 400, "early: measured from the actual send");
    }

    #[test]
    fn recipients_are_never_the_sender() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [0u32; 5];
        for _ in 0..5_000 {
            let to = pick_recipient(Pairing::Random, 2, 5, &mut rng);
            assert_ne!(to, 2);
            seen[to] += 1;
        }
        assert!(seen.iter().enumerate().all(|(i, &n)| i == 2 || n > 1_000), "{seen:?}");
        assert_eq!(pick_recipient(Pairing::Ring, 4, 5, &mut rng), 0);
        assert_eq!(pick_recipient(Pairing::Ring, 1, 5, &mut rng), 2);
        for users in [2, 200] {
            for from in 0..users {
                let to = pick_recipient(Pairing::Pairs, from, users, &mut rng);
                assert_ne!(to, from);
                assert_eq!(pick_recipient(Pairing::Pairs, to, users, &mut rng), from, "pairs write to each other");
            }
        }
        assert_ne!(pick_recipient(Pairing::Pairs, 4, 5, &mut rng), 4, "odd counts never send to themselves");
    }

    #[test]
    fn hex_without_the_formatter() {
        for v in [0u64, 1, 15, 16, 255, 0xdead_beef, u64::MAX] {
            let mut s = String::new();
            push_hex(&mut s, v);
            assert_eq!(s, format!("{v:x}"));
        }
    }

    #[test]
    fn outgoing_frames_reuse_buffers_and_carry_distinct_ids() {
        use prost::Message as _;
        let mut out = Outgoing::new(false);
        let decode = |m: Message| {
            let Message::Binary(data) = m else { panic!("not binary") };
            let frame = ClientFrame::decode(data).unwrap();
            let Some(client_frame::Body::Send(send)) = frame.body else { panic!("not a send") };
            (frame.req_id, send)
        };
        let (req_a, a) = decode(out.message(3, 1, Recipient::User(70), 1_000, 64));
        let (req_b, b) = decode(out.message(3, 2, Recipient::User(71), 2_000, 64));
        let (_, c) = decode(out.message(3, 3, Recipient::Group(9), 3_000, 64));
        assert_eq!((req_a, req_b), (1, 2));
        assert_eq!((a.to_user, b.to_user), (70, 71));
        assert_eq!((a.to_group, c.to_user, c.to_group), (0, 0, 9));
        assert_eq!((a.client_msg_id.as_str(), b.client_msg_id.as_str()), ("3-1", "3-2"));
        assert_eq!(read_body(&b.body), Some((2_000, message_key(3, 2))));
        assert_eq!(a.content_type, CONTENT_TYPE);

        let mut text = Outgoing::new(true);
        let (_, t) = decode(text.message(4, 9, Recipient::User(70), 5_000, 64));
        assert_eq!(t.content_type, TEXT_CONTENT_TYPE);
        assert_eq!(read_body(&t.body), Some((5_000, message_key(4, 9))));
    }

    #[test]
    fn text_bodies_are_ascii_of_the_requested_size_and_survive_masked_words() {
        let mut arena = BytesMut::new();
        let body = write_text_body(&mut arena, 0xdead_beef, message_key(1, 2), 100);
        assert_eq!(body.len(), 100);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with("imt100000000deadbeef0000000100000002 hello there"), "{text}");
        assert_eq!(read_body(&body), Some((0xdead_beef, message_key(1, 2))));
        // A filter masking a word of the filler leaves the header readable.
        let masked = text.replace("today", "*****");
        assert_eq!(read_body(masked.as_bytes()), Some((0xdead_beef, message_key(1, 2))));
        // Never shorter than its header.
        assert_eq!(write_text_body(&mut arena, 1, 2, 20).len(), TEXT_HEADER_LEN);
        assert_eq!(read_body(b"imt1zz"), None);
    }
}
