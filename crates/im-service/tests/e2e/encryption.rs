//! Encryption at rest end to end (issue 13): the real binaries, clients over
//! WebSocket, and a real KMS — moto speaking the AWS KMS API on
//! 127.0.0.1:8080 (started by `scripts/servers.sh`; a test that needs it
//! fails when it does not answer). Each test creates its KMS key of its own.
//!
//! - embedded mode, local master key: no body of the encrypted era in the
//!   SQLite files (main file, WAL, shared memory), rows marked with their data
//!   key, sync and pushes in clear, `master.key` mode 0600, everything
//!   readable after a restart, a row stored before encryption was turned on
//!   still readable (the per-row marker);
//! - tampering, embedded: a flipped bit, two ciphertexts swapped, a corrupt
//!   wrapped key of a retired data key: `DATA_LOSS` naming the message, other
//!   conversations unaffected, readable again once the bytes are restored; a
//!   corrupt wrapped key of the active data key: the node refuses to start,
//!   exit 1 naming encryption;
//! - production (MariaDB, Redis, etcd, Kafka, two nodes, two gateways, the
//!   KMS): two nodes activating at the same moment end with one data key; no
//!   plaintext in the MariaDB rows nor on the `group_msg` and `offline_msg`
//!   topics; sync and pushes in clear; `/ready` lists `kms`;
//! - a KMS outage (embedded, the KMS behind a proxy of the test, so the
//!   shared moto stays up): sends go on with the cached key, `/ready` stays
//!   200 with `kms` down, `UNAVAILABLE` once the cache expired, recovery by
//!   itself when the KMS is back.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use im_proto::client::{self as pb, ErrorCode, server_frame};
use prost::Message as _;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::harness::{ClusterBuilder, SHARED_MARIADB, read_topic};
use crate::support::{Client, GroupApi, Node, ack, conversation_id, error, free_port, group_conversation, http_get};

/// moto, from `scripts/servers.sh`.
pub(crate) const KMS: &str = "127.0.0.1:8080";
/// The credentials and region moto takes (it checks no signature).
const AWS_ENV: [(&str, &str); 3] =
    [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")];
const WAIT: Duration = Duration::from_secs(10);
/// Envelope v1 (`im_crypto::envelope`), written out here so a change of the
/// storage format shows: `[0x01] [key id: u64 BE] [nonce: 12] [ciphertext]
/// [tag: 16]`.
const ENVELOPE_VERSION: u8 = 0x01;
const ENVELOPE_HEADER: usize = 1 + 8 + 12;
const ENVELOPE_OVERHEAD: usize = ENVELOPE_HEADER + 16;
const DAY_MS: i64 = 24 * 3600 * 1000;

// ---------------------------------------------------------------------------
// The KMS.

/// Panics, naming `scripts/servers.sh`, unless moto answers on 127.0.0.1:8080
/// (its dashboard path exists only on moto).
async fn require_kms() {
    let port: u16 = KMS.rsplit_once(':').unwrap().1.parse().unwrap();
    match tokio::time::timeout(Duration::from_secs(5), http_get(port, "/moto-api/")).await {
        Ok(Ok((200, _))) => {}
        other => panic!(
            "the KMS (moto) does not answer at {KMS} ({other:?}): start the test servers with scripts/servers.sh"
        ),
    }
}

/// One call of the AWS KMS API (JSON 1.1) to moto at `addr`: (status,
/// body). moto checks no signature; the credential scope of the
/// `Authorization` header tells it the service and region.
pub(crate) async fn kms_call(addr: &str, action: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to the KMS at {addr} timed out"))
        .unwrap_or_else(|e| panic!("the KMS at {addr} does not answer ({e}): run scripts/servers.sh"));
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: TrentService.{action}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/kms/aws4_request, \
         SignedHeaders=host, Signature=00\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
        .await
        .expect("the KMS answers within 10 s")
        .expect("reading the KMS answer");
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A new symmetric key of the test's own on moto; returns its id.
pub(crate) async fn create_kms_key() -> String {
    require_kms().await;
    let (status, body) = kms_call(KMS, "CreateKey", r#"{"Description":"im e2e encryption"}"#).await;
    assert_eq!(status, 200, "CreateKey answered {status}: {body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("CreateKey answers JSON");
    created["KeyMetadata"]["KeyId"].as_str().expect("a KeyId").to_owned()
}

/// What a node needs to use the KMS at `endpoint` with key `key_id`.
pub(crate) fn kms_env(endpoint: &str, key_id: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("ENCRYPTION_ENABLED".to_owned(), "true".to_owned()),
        ("KMS_ENDPOINT".to_owned(), endpoint.to_owned()),
        ("KMS_KEY_ID".to_owned(), key_id.to_owned()),
    ];
    env.extend(AWS_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// How long the proxy holds a GenerateDataKey at most: under the SDK's 2 s
/// for a whole operation (`im_crypto::kms::OPERATION_TIMEOUT`).
const HOLD_AT_MOST: Duration = Duration::from_millis(1000);

/// The KMS behind a proxy of the test. [`KmsProxy::cut_off`] drops every
/// relayed connection and refuses new ones until [`KmsProxy::restore`], so
/// the shared moto never stops. The proxy reads the first request of each
/// connection: it counts GenerateDataKey calls, and can hold them until
/// several arrived (two nodes racing to create the first data key).
struct KmsProxy {
    port: u16,
    up: watch::Sender<bool>,
    gate: Arc<Gate>,
}

struct Gate {
    /// GenerateDataKey calls seen (first requests of connections).
    generated: watch::Sender<usize>,
    /// Hold each GenerateDataKey until this many were seen (0: never hold).
    hold_until: AtomicUsize,
}

impl KmsProxy {
    async fn start(target: &str) -> KmsProxy {
        require_kms().await;
        let port = free_port();
        let (up, up_rx) = watch::channel(true);
        let gate = Arc::new(Gate { generated: watch::Sender::new(0), hold_until: AtomicUsize::new(0) });
        tokio::spawn(kms_proxy(port, target.to_owned(), up_rx, gate.clone()));
        // Listening before it is handed to a node.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "the KMS proxy did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        KmsProxy { port, up, gate }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cut_off(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }

    fn generated(&self) -> usize {
        *self.gate.generated.borrow()
    }

    /// Holds GenerateDataKey calls until `count` were seen in all (or
    /// [`HOLD_AT_MOST`]); 0 lets them through.
    fn hold_generate_until(&self, count: usize) {
        self.gate.hold_until.store(count, Ordering::SeqCst);
    }
}

impl Drop for KmsProxy {
    fn drop(&mut self) {
        // Closes the listener and the relays; the task ends with the sender.
        self.up.send_replace(false);
    }
}

/// Relays `port` to `target` while `up`; when it goes down, closes the
/// listener (connects are refused) and every relayed connection.
async fn kms_proxy(port: u16, target: String, mut up: watch::Receiver<bool>, gate: Arc<Gate>) {
    loop {
        while !*up.borrow_and_update() {
            if up.changed().await.is_err() {
                return;
            }
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("the KMS proxy port is free");
        let mut relays = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((client, _)) = accepted else { continue };
                    relays.spawn(relay(client, target.clone(), gate.clone()));
                }
                changed = up.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !*up.borrow_and_update() {
                        break;
                    }
                }
            }
        }
        // Dropping the set aborts the relays: their sockets close.
    }
}

async fn relay(mut client: TcpStream, target: String, gate: Arc<Gate>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            break;
        }
    }
    if amz_target(&head).as_deref() == Some("TrentService.GenerateDataKey") {
        gate.generated.send_modify(|n| *n += 1);
        let hold = gate.hold_until.load(Ordering::SeqCst);
        if hold > 0 {
            let mut seen = gate.generated.subscribe();
            let _ = tokio::time::timeout(HOLD_AT_MOST, seen.wait_for(|n| *n >= hold)).await;
        }
    }
    let Ok(mut upstream) = TcpStream::connect(&target).await else { return };
    if upstream.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// The `X-Amz-Target` of an HTTP request head.
fn amz_target(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("x-amz-target").then(|| value.trim().to_owned())
    })
}

// ---------------------------------------------------------------------------
// Helpers.

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `/metrics` of the process on `port`.
async fn metrics(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "/metrics answered {status}");
    body
}

/// The value of the sample `series` (name and labels exactly as exported).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What `/ready` says: its status, and its entry for `kms`.
async fn kms_readiness(port: u16) -> (u16, serde_json::Value) {
    let (status, body) = http_get(port, "/ready").await.expect("/ready answers");
    let report: serde_json::Value = serde_json::from_str(&body).expect("/ready is JSON");
    (status, report["dependencies"]["kms"].clone())
}

/// `/ready`'s KMS entry once it says `status`, or the last one after 10 s:
/// the probes run in the background, and right after a start the first may
/// still be under way (or have met a KMS slow to answer on a busy machine).
async fn kms_readiness_when(port: u16, status: &str) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, entry) = kms_readiness(port).await;
        if entry["status"] == status || Instant::now() > deadline {
            return (code, entry);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn push(body: Option<server_frame::Body>) -> pb::Message {
    match body {
        Some(server_frame::Body::Push(m)) => m,
        other => panic!("expected a push, got {other:?}"),
    }
}

/// The bodies of the next `count` pushes to `client`, as text, sorted.
async fn pushed_bodies(client: &mut Client, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        match client.next_event(WAIT).await {
            Some(server_frame::Body::Push(m)) => got.push(text(&m.body)),
            Some(_) => {}
            None => panic!("{} of {count} pushes within {WAIT:?}: {got:?}", got.len()),
        }
    }
    got.sort();
    got
}

/// The bodies `client` syncs in `conversation`, as text, in seq order.
async fn synced(client: &mut Client, conversation: &str) -> Vec<String> {
    client.sync_all(conversation, 0).await.iter().map(|m| text(&m.body)).collect()
}

/// Asserts `answer` is a `DATA_LOSS` error that names `msg_id`.
fn assert_data_loss(answer: server_frame::Body, msg_id: u64, what: &str) {
    if let Some(problem) = data_loss_problem(answer, msg_id, what) {
        panic!("{problem}");
    }
}

/// Asserts `answer` is a `DATA_LOSS` error; what is wrong with its message
/// (it does not name `msg_id`), if anything.
fn data_loss_problem(answer: server_frame::Body, msg_id: u64, what: &str) -> Option<String> {
    let e = error(answer);
    assert_eq!(e.code(), ErrorCode::DataLoss, "{what}: {e:?}");
    (!e.message.contains(&msg_id.to_string()))
        .then(|| format!("{what}: the error does not name message {msg_id}: {e:?}"))
}

fn assert_unavailable(answer: server_frame::Body, what: &str) {
    let e = error(answer);
    assert_eq!(e.code(), ErrorCode::Unavailable, "{what}: {e:?}");
}

/// Checks that `stored` is a v1 envelope of a `plain_len`-byte body sealed
/// with data key `key`, and holds none of `plaintexts`.
fn assert_sealed(stored: &[u8], key: u64, plain_len: usize, plaintexts: &[&str], what: &str) {
    assert_eq!(stored.len(), plain_len + ENVELOPE_OVERHEAD, "{what}: not a sealed body of {plain_len} bytes");
    assert_eq!(stored[0], ENVELOPE_VERSION, "{what}: envelope version");
    assert_eq!(u64::from_be_bytes(stored[1..9].try_into().unwrap()), key, "{what}: the envelope names another key");
    for plaintext in plaintexts {
        assert!(!contains(stored, plaintext.as_bytes()), "{what}: holds {plaintext:?} in clear");
    }
}

// ---------------------------------------------------------------------------
// The SQLite file of an embedded node, beside it (WAL: a second connection
// may read and write while the node runs; the busy timeout waits out its
// writer).

async fn sqlite(data_dir: &Path) -> SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("im.db"))
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("open the node's SQLite file")
}

/// A `messages` row: msg_id, conversation, seq, sealed_with, body.
type Row = (i64, String, i64, Option<i64>, Vec<u8>);

async fn rows(db: &mut SqliteConnection) -> Vec<Row> {
    sqlx::query_as("SELECT msg_id, conversation, seq, sealed_with, body FROM messages ORDER BY id")
        .fetch_all(db)
        .await
        .expect("read the messages rows")
}

fn row_of(rows: &[Row], msg_id: u64) -> &Row {
    rows.iter().find(|r| r.0 as u64 == msg_id).unwrap_or_else(|| panic!("no row for msg {msg_id}"))
}

async fn stored_body(db: &mut SqliteConnection, msg_id: u64) -> Vec<u8> {
    sqlx::query_scalar("SELECT body FROM messages WHERE msg_id = ?")
        .bind(msg_id as i64)
        .fetch_one(db)
        .await
        .expect("read a body")
}

async fn set_body(db: &mut SqliteConnection, msg_id: u64, body: &[u8]) {
    let done = sqlx::query("UPDATE messages SET body = ? WHERE msg_id = ?")
        .bind(body)
        .bind(msg_id as i64)
        .execute(db)
        .await
        .expect("write a body");
    assert_eq!(done.rows_affected(), 1, "msg {msg_id} is not stored");
}

async fn wrapped_key(db: &mut SqliteConnection, id: i64) -> Vec<u8> {
    sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE id = ?").bind(id).fetch_one(db).await.expect("a data key")
}

async fn set_wrapped_key(db: &mut SqliteConnection, id: i64, wrapped: &[u8]) {
    let done = sqlx::query("UPDATE data_keys SET wrapped = ? WHERE id = ?")
        .bind(wrapped)
        .bind(id)
        .execute(db)
        .await
        .expect("write a wrapped key");
    assert_eq!(done.rows_affected(), 1, "no data key {id}");
}

/// (id, retired) of every data key, and the active one.
async fn data_keys(db: &mut SqliteConnection) -> (Vec<(i64, bool)>, Option<i64>) {
    let keys: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT id, retired_ms FROM data_keys ORDER BY id").fetch_all(&mut *db).await.unwrap();
    let active: Option<i64> =
        sqlx::query_scalar("SELECT dek_id FROM active_data_key WHERE slot = 1").fetch_one(db).await.unwrap();
    (keys.into_iter().map(|(id, retired)| (id, retired.is_some())).collect(), active)
}

fn flip_bit(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[at] ^= 0x10;
    flipped
}

/// The bytes of the node's SQLite files: the database, its WAL and its
/// shared-memory index, whichever exist.
fn sqlite_files(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["im.db", "im.db-wal", "im.db-shm"]
        .iter()
        .filter_map(|name| std::fs::read(data_dir.join(name)).ok().map(|bytes| (name.to_string(), bytes)))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Embedded mode, local master key.

#[tokio::test]
async fn embedded_bodies_are_sealed_in_the_sqlite_files_and_sync_in_clear_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    // Encryption off first: a row stored in clear.
    let clear = "CLEAR-kept-from-before-encryption-4b1d9e";
    // A node killed leaves a gap in the seqs it had reserved: sync holds back
    // what follows a gap for SYNC_GAP_GRACE (45 s by default).
    let grace = ("SYNC_GAP_GRACE", "1s");
    let (alice, alice_token, bob, bob_token, before) = {
        let node = Node::start_with(data, &[grace]).await;
        let (alice, alice_token) = node.create_user("alice").await;
        let (bob, bob_token) = node.create_user("bob").await;
        let mut alice_phone = node.connect(&alice_token, "phone").await;
        let before = ack(alice_phone.send_text(bob, "clear-1", clear).await);
        (alice, alice_token, bob, bob_token, before)
        // The node is killed here.
    };
    assert!(!data.join("master.key").exists(), "a master key without encryption");

    let mut node = Node::start_with(data, &[("ENCRYPTION_ENABLED", "true"), grace]).await;
    let master = data.join("master.key");
    let mode = std::fs::metadata(&master).expect("master.key created at the first encrypted start").permissions();
    assert_eq!(mode.mode() & 0o777, 0o600, "master.key mode");
    assert_eq!(std::fs::read(&master).unwrap().len(), 32, "master.key holds an AES-256 key");
    let (status, kms) = kms_readiness_when(node.http_port, "up").await;
    assert_eq!((status, &kms["status"], &kms["degrades_only"]), (200, &"up".into(), &true.into()), "{kms}");

    let (carol, carol_token) = node.create_user("carol").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let mut carol_phone = node.connect(&carol_token, "phone").await;
    let mut groups = GroupApi::connect(node.grpc_port, &alice_token).await;
    let group = groups.create("sealed", &[bob, carol], false).await;

    let long = format!("SECRET-long-{}", "Zq7x".repeat(1000));
    let private: Vec<String> = ["SECRET-private-one-8c2f71", "SECRET-private-two-d94ae0", long.as_str()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let grouped = ["SECRET-group-one-5e13b6", "SECRET-group-two-a70c42"];
    let reply = "SECRET-reply-from-bob-0f6e29";
    let mut acks = Vec::new();
    for (i, body) in private.iter().enumerate() {
        acks.push((ack(alice_phone.send_text(bob, &format!("p{i}"), body).await), body.clone()));
    }
    for (i, body) in grouped.iter().enumerate() {
        acks.push((ack(alice_phone.send_group_text(group, &format!("g{i}"), body).await), body.to_string()));
    }
    acks.push((ack(bob_phone.send_text(alice, "r0", reply).await), reply.to_owned()));
    let secrets: Vec<&str> = acks.iter().map(|(_, body)| body.as_str()).collect();

    // Pushes carry the clear text: bob's three private and two group
    // messages, carol's two group messages.
    let mut want_bob: Vec<String> = private.iter().cloned().chain(grouped.iter().map(|s| s.to_string())).collect();
    want_bob.sort();
    assert_eq!(pushed_bodies(&mut bob_phone, 5).await, want_bob);
    assert_eq!(pushed_bodies(&mut carol_phone, 2).await, grouped);

    // The files hold none of the bodies of the encrypted era, and do hold
    // the row written in clear (the scan can find a body).
    let files = sqlite_files(data);
    assert!(files.iter().any(|(name, _)| name == "im.db-wal"), "the node runs in WAL mode");
    assert!(files.iter().any(|(_, bytes)| contains(bytes, clear.as_bytes())), "the clear row is not in the files");
    for (name, bytes) in &files {
        for secret in &secrets {
            // A prefix long enough to be distinctive, short enough to be on
            // one page.
            let needle = &secret.as_bytes()[..secret.len().min(64)];
            assert!(!contains(bytes, needle), "{name} holds {:?} in clear", &secret[..secret.len().min(64)]);
        }
    }

    // Each row names its data key; the clear one names none.
    let mut db = sqlite(data).await;
    let stored = rows(&mut db).await;
    let before_row = row_of(&stored, before.msg_id);
    assert_eq!((before_row.3, before_row.4.as_slice()), (None, clear.as_bytes()), "the row stored in clear");
    let key = row_of(&stored, acks[0].0.msg_id).3.expect("a sealed row names its data key");
    let (keys, active) = data_keys(&mut db).await;
    assert_eq!((keys, active), (vec![(key, false)], Some(key)), "one data key, active");
    for (a, body) in &acks {
        let row = row_of(&stored, a.msg_id);
        assert_eq!(row.3, Some(key), "msg {} is not marked sealed", a.msg_id);
        assert_sealed(&row.4, key as u64, body.len(), &secrets, &format!("msg {}", a.msg_id));
    }
    db.close().await.ok();

    // Past the grace of the gap the restart left after the clear row.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pair = conversation_id(alice, bob);
    let gconv = group_conversation(group);
    let mut want_pair = vec![clear.to_owned()];
    want_pair.extend(private.iter().cloned());
    want_pair.push(reply.to_owned());
    assert_eq!(synced(&mut alice_phone, &pair).await, want_pair, "alice's sync");
    assert_eq!(synced(&mut bob_phone, &pair).await, want_pair, "bob's sync");
    assert_eq!(synced(&mut bob_phone, &gconv).await, grouped, "bob's group sync");
    assert_eq!(synced(&mut carol_phone, &gconv).await, grouped, "carol's group sync");

    let scrape = metrics(node.http_port).await;
    assert!(sample(&scrape, "im_dek_cache_hits_total").unwrap_or(0.0) >= 1.0, "{scrape}");
    assert!(sample(&scrape, "im_encryption_active_dek_age_seconds").is_some(), "{scrape}");

    // After a restart (the key unwrapped again from the file), the same.
    drop((alice_phone, bob_phone, carol_phone));
    node.kill9();
    node.restart().await;
    let mut alice_phone = node.connect(&alice_token, "laptop").await;
    let mut bob_phone = node.connect(&bob_token, "laptop").await;
    let mut carol_phone = node.connect(&carol_token, "laptop").await;
    assert_eq!(synced(&mut alice_phone, &pair).await, want_pair, "alice's sync after the restart");
    assert_eq!(synced(&mut bob_phone, &pair).await, want_pair, "bob's sync after the restart");
    assert_eq!(synced(&mut carol_phone, &gconv).await, grouped, "carol's group sync after the restart");
    let (keys, _) = data_keys(&mut sqlite(data).await).await;
    assert_eq!(keys.len(), 1, "a restart made another data key: {keys:?}");

    // And a new message after the restart is sealed with the same key.
    let after = ack(alice_phone.send_text(bob, "p-after", "SECRET-after-restart-31c8aa").await);
    let row = row_of(&rows(&mut sqlite(data).await).await, after.msg_id).clone();
    assert_eq!(row.3, Some(key));
    assert_sealed(&row.4, key as u64, "SECRET-after-restart-31c8aa".len(), &["SECRET-after"], "after the restart");
    assert_eq!(push(bob_phone.next_event(WAIT).await).body, "SECRET-after-restart-31c8aa".as_bytes());
}

// ---------------------------------------------------------------------------
// 2. Tampering.

#[tokio::test]
async fn tampered_bodies_and_wrapped_keys_are_data_loss_naming_the_message_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let env = [("ENCRYPTION_ENABLED", "true")];
    let mut node = Node::start_with(data, &env).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let (carol, carol_token) = node.create_user("carol").await;
    let ab = conversation_id(alice, bob);
    let ac = conversation_id(alice, carol);
    let bc = conversation_id(bob, carol);
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let ab_bodies = ["ab first", "ab second", "ab third"];
    let ac_bodies = ["ac first", "ac second"];
    let mut ab_acks = Vec::new();
    for (i, body) in ab_bodies.iter().enumerate() {
        ab_acks.push(ack(alice_phone.send_text(bob, &format!("ab{i}"), body).await));
    }
    let mut ac_acks = Vec::new();
    for (i, body) in ac_bodies.iter().enumerate() {
        ac_acks.push(ack(alice_phone.send_text(carol, &format!("ac{i}"), body).await));
    }
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let mut carol_phone = node.connect(&carol_token, "phone").await;
    assert_eq!(synced(&mut bob_phone, &ab).await, ab_bodies);

    let mut db = sqlite(data).await;
    let [m1, m2, m3] = [ab_acks[0].msg_id, ab_acks[1].msg_id, ab_acks[2].msg_id];
    let originals = [stored_body(&mut db, m1).await, stored_body(&mut db, m2).await, stored_body(&mut db, m3).await];

    // One bit of m2's ciphertext flipped, the node running.
    set_body(&mut db, m2, &flip_bit(&originals[1], ENVELOPE_HEADER + 2)).await;
    assert_data_loss(bob_phone.sync(&ab, 0).await, m2, "a flipped bit");
    assert_data_loss(alice_phone.sync(&ab, 0).await, m2, "a flipped bit, the other side");
    // What follows it is readable, and so is the other conversation.
    match bob_phone.sync(&ab, ab_acks[1].seq).await {
        server_frame::Body::Sync(page) => {
            assert_eq!(page.messages.iter().map(|m| text(&m.body)).collect::<Vec<_>>(), ["ab third"])
        }
        other => panic!("sync after the tampered message answered {other:?}"),
    }
    assert_eq!(synced(&mut carol_phone, &ac).await, ac_bodies, "another conversation is affected");
    // A flipped bit of the header (the key id) is caught too.
    set_body(&mut db, m2, &flip_bit(&originals[1], 8)).await;
    assert_data_loss(bob_phone.sync(&ab, 0).await, m2, "a flipped bit in the key id");
    // The tag.
    set_body(&mut db, m2, &flip_bit(&originals[1], originals[1].len() - 1)).await;
    assert_data_loss(bob_phone.sync(&ab, 0).await, m2, "a flipped bit in the tag");
    set_body(&mut db, m2, &originals[1]).await;
    assert_eq!(synced(&mut bob_phone, &ab).await, ab_bodies, "restored, readable again");

    // Two ciphertexts of one conversation swapped (same key, same sender):
    // each is bound to its own row.
    set_body(&mut db, m1, &originals[2]).await;
    set_body(&mut db, m3, &originals[0]).await;
    assert_data_loss(bob_phone.sync(&ab, 0).await, m1, "swapped ciphertexts");
    assert_data_loss(bob_phone.sync(&ab, ab_acks[0].seq).await, m3, "swapped ciphertexts, the second");
    // A ciphertext copied over a row of another conversation.
    let ac_first = stored_body(&mut db, ac_acks[0].msg_id).await;
    set_body(&mut db, m1, &ac_first).await;
    assert_data_loss(bob_phone.sync(&ab, 0).await, m1, "a ciphertext moved from another conversation");
    assert_eq!(synced(&mut carol_phone, &ac).await, ac_bodies, "the copied-from conversation is affected");
    set_body(&mut db, m1, &originals[0]).await;
    set_body(&mut db, m3, &originals[2]).await;
    assert_eq!(synced(&mut bob_phone, &ab).await, ab_bodies, "restored, readable again");

    // A corrupt wrapped key, not in the cache: stop the node, make the key
    // due for rotation (90 days by default) and corrupt its wrapped form.
    // The node starts (it unwraps only the new active key); what the old key
    // sealed is DATA_LOSS naming the message, what the new one seals reads.
    drop((alice_phone, bob_phone, carol_phone));
    node.kill9();
    let (keys, active) = data_keys(&mut db).await;
    let old = active.expect("a data key is active");
    assert_eq!(keys, [(old, false)]);
    let old_wrapped = wrapped_key(&mut db, old).await;
    set_wrapped_key(&mut db, old, &flip_bit(&old_wrapped, old_wrapped.len() / 2)).await;
    sqlx::query("UPDATE data_keys SET created_ms = created_ms - ? WHERE id = ?")
        .bind(91 * DAY_MS)
        .bind(old)
        .execute(&mut db)
        .await
        .unwrap();
    node.restart().await;
    let (keys, active) = data_keys(&mut db).await;
    let new = active.unwrap();
    assert_eq!(keys, [(old, true), (new, false)], "the key due was not rotated");
    let mut alice_phone = node.connect(&alice_token, "laptop").await;
    let mut bob_phone = node.connect(&bob_token, "laptop").await;
    let mut carol_phone = node.connect(&carol_token, "laptop").await;
    let bc_ack = ack(bob_phone.send_text(carol, "bc0", "bc under the new key").await);
    assert_eq!(row_of(&rows(&mut db).await, bc_ack.msg_id).3, Some(new));
    assert_eq!(synced(&mut carol_phone, &bc).await, ["bc under the new key"], "the new key's conversation");
    // Typed at once; that the error names the message is checked at the end,
    // so that one wrong text does not hide what follows.
    let mut unnamed = Vec::new();
    unnamed.extend(data_loss_problem(bob_phone.sync(&ab, 0).await, m1, "a corrupt wrapped key"));
    unnamed.extend(data_loss_problem(carol_phone.sync(&ac, 0).await, ac_acks[0].msg_id, "a corrupt wrapped key (ac)"));
    // The failed unwrap is not cached: the key restored, it reads again.
    set_wrapped_key(&mut db, old, &old_wrapped).await;
    assert_eq!(synced(&mut bob_phone, &ab).await, ab_bodies, "the wrapped key restored");
    assert_eq!(synced(&mut alice_phone, &ac).await, ac_bodies);

    // A corrupt wrapped form of the ACTIVE key: the node cannot seal, and
    // refuses to start with a clear error (exit 1, not a signal).
    drop((alice_phone, bob_phone, carol_phone));
    node.kill9();
    let new_wrapped = wrapped_key(&mut db, new).await;
    set_wrapped_key(&mut db, new, &flip_bit(&new_wrapped, 3)).await;
    let env_owned: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut refused =
        tokio::process::Command::from(Node::command(data, (free_port(), free_port(), free_port()), &env_owned));
    refused.stderr(std::process::Stdio::piped()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), refused.output())
        .await
        .expect("a node with a corrupt active key exits within 30 s")
        .expect("running im-service");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.signal(), None, "killed by a signal: {stderr}");
    assert_eq!(output.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(stderr.contains("ENCRYPTION_ENABLED"), "the error does not name encryption:\n{stderr}");
    assert!(stderr.contains(&format!("data key {new}")), "the error does not name the data key:\n{stderr}");
    let master_hex: String =
        std::fs::read(data.join("master.key")).unwrap().iter().map(|b| format!("{b:02x}")).collect();
    assert!(!stderr.to_lowercase().contains(&master_hex), "the master key is in the error");
    set_wrapped_key(&mut db, new, &new_wrapped).await;
    db.close().await.ok();

    // Restored: everything reads, nothing was lost.
    node.restart().await;
    let mut bob_phone = node.connect(&bob_token, "tablet").await;
    let mut carol_phone = node.connect(&carol_token, "tablet").await;
    assert_eq!(synced(&mut bob_phone, &ab).await, ab_bodies);
    assert_eq!(synced(&mut carol_phone, &ac).await, ac_bodies);
    assert_eq!(synced(&mut carol_phone, &bc).await, ["bc under the new key"]);
    assert!(unnamed.is_empty(), "DATA_LOSS must name the message (issue 13):\n{}", unnamed.join("\n"));
}

// ---------------------------------------------------------------------------
// 3. Production mode with the KMS.

/// Runs `sql` on the test's database of the shared MariaDB; the rows, tab
/// separated.
async fn mariadb(database: &str, sql: &str) -> Vec<Vec<String>> {
    let (host, port) = SHARED_MARIADB.rsplit_once(':').unwrap();
    let output = tokio::process::Command::new("mariadb")
        .args(["-h", host, "-P", port, "-u", "root", "-N", "-B", "-e"])
        .arg(sql)
        .arg(database)
        .output()
        .await
        .expect("running mariadb");
    assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

async fn topic_records(topic: &str, want: usize) -> Vec<Vec<u8>> {
    let topic = topic.to_owned();
    let records =
        tokio::task::spawn_blocking(move || read_topic(&topic, want, Duration::from_secs(1), Duration::from_secs(30)))
            .await
            .unwrap();
    records.into_iter().map(|(_key, payload)| payload).collect()
}

#[tokio::test]
async fn production_two_nodes_race_to_one_data_key_and_nothing_is_stored_or_published_in_clear() {
    let key_id = create_kms_key().await;
    let kms = KmsProxy::start(KMS).await;
    let mut builder = ClusterBuilder::new();
    for (k, v) in kms_env(&kms.url(), &key_id) {
        builder = builder.node_env(&k, v);
    }
    let mut cluster = builder.start().await;
    let db = cluster.database.clone();
    assert!(kms.generated() >= 1, "the first node made its data key elsewhere than the KMS");

    // Two nodes enabling encryption at the same moment: both killed, the key
    // tables back to what the migrations leave (no key), both started at
    // once. The proxy holds each GenerateDataKey until both arrived, so
    // both nodes read "no key active" before either stores one; the store's
    // compare-and-swap must leave exactly one. (A node reads the active key
    // before it asks the KMS for a new one: two GenerateDataKey calls prove
    // the race happened. If one node was so late that the other had stored
    // its key already, try again.)
    let mut raced = false;
    for attempt in 1..=3 {
        for node in &mut cluster.nodes {
            node.kill9();
        }
        mariadb(&db, "UPDATE active_data_key SET dek_id = NULL; DELETE FROM data_keys").await;
        let before = kms.generated();
        kms.hold_generate_until(before + 2);
        let (first, second) = cluster.nodes.split_at_mut(1);
        tokio::join!(first[0].restart(), second[0].restart());
        kms.hold_generate_until(0);
        let generated = kms.generated() - before;

        let keys = mariadb(&db, "SELECT id, retired_ms IS NULL FROM data_keys").await;
        assert_eq!(keys.len(), 1, "attempt {attempt}: {generated} nodes generated a key; data_keys holds {keys:?}");
        assert_eq!(keys[0][1], "1", "the one key is retired: {keys:?}");
        let active = mariadb(&db, "SELECT COUNT(*), MAX(dek_id) FROM active_data_key").await;
        assert_eq!(active, [vec!["1".to_owned(), keys[0][0].clone()]], "active_data_key");
        if generated == 2 {
            raced = true;
            break;
        }
        eprintln!("attempt {attempt}: {generated} GenerateDataKey calls: the nodes did not race; again");
    }
    assert!(raced, "the two nodes never asked the KMS for a key at the same time");
    let key: u64 = mariadb(&db, "SELECT dek_id FROM active_data_key").await[0][0].parse().unwrap();

    for node in &cluster.nodes {
        let (status, kms_entry) = kms_readiness_when(node.http_port, "up").await;
        assert_eq!(status, 200, "{}: /ready", node.name);
        assert_eq!((&kms_entry["status"], &kms_entry["degrades_only"]), (&"up".into(), &true.into()), "{kms_entry}");
    }

    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let carol = cluster.create_user("carol").await;
    // Never online: what is sent to dave becomes an offline_msg record.
    let dave = cluster.create_user("dave").await;
    let mut groups = GroupApi::connect(cluster.node_grpc_port(0), &alice.token).await;
    let group = groups.create("sealed", &[bob.id, carol.id], false).await;
    // Gateway i forwards to node i: both nodes seal.
    let mut alice_phone = cluster.client(0, &alice, "phone").await;
    let mut bob_phone = cluster.client(1, &bob, "phone").await;
    let mut carol_phone = cluster.client(0, &carol, "phone").await;

    let p1 = "SECRET-prod-private-alice-1-6a0e3f";
    let p2 = "SECRET-prod-private-bob-2-c51b84";
    let p3 = "SECRET-prod-to-offline-dave-3-9d27e1";
    let g1 = "SECRET-prod-group-alice-1-e0f4a9";
    let g2 = "SECRET-prod-group-bob-2-17bc3d";
    let secrets = [p1, p2, p3, g1, g2];
    let mut sent = Vec::new();
    sent.push((ack(alice_phone.send_text(bob.id, "p1", p1).await), p1));
    sent.push((ack(bob_phone.send_text(alice.id, "p2", p2).await), p2));
    sent.push((ack(alice_phone.send_text(dave.id, "p3", p3).await), p3));
    sent.push((ack(alice_phone.send_group_text(group, "g1", g1).await), g1));
    sent.push((ack(bob_phone.send_group_text(group, "g2", g2).await), g2));

    // Pushes in clear, through the gateways.
    // (Sorted: "…-group-…" before "…-private-…".)
    assert_eq!(pushed_bodies(&mut bob_phone, 2).await, [g1, p1]);
    assert_eq!(pushed_bodies(&mut alice_phone, 2).await, [g2, p2]);
    assert_eq!(pushed_bodies(&mut carol_phone, 2).await, [g1, g2]);
    // Sync in clear, from either node.
    let pair = conversation_id(alice.id, bob.id);
    let gconv = group_conversation(group);
    assert_eq!(synced(&mut alice_phone, &pair).await, [p1, p2], "alice's sync (node 1)");
    assert_eq!(synced(&mut bob_phone, &pair).await, [p1, p2], "bob's sync (node 2)");
    assert_eq!(synced(&mut carol_phone, &gconv).await, [g1, g2], "carol's group sync");
    assert_eq!(synced(&mut alice_phone, &conversation_id(alice.id, dave.id)).await, [p3]);

    // MariaDB holds every body sealed with the one key.
    let rows = mariadb(&db, "SELECT msg_id, IFNULL(sealed_with, 0), HEX(body) FROM messages").await;
    assert_eq!(rows.len(), sent.len(), "messages rows: {rows:?}");
    for (a, body) in &sent {
        let row = rows.iter().find(|r| r[0] == a.msg_id.to_string()).expect("a row per message");
        assert_eq!(row[1], key.to_string(), "msg {}: sealed_with", a.msg_id);
        assert_sealed(&unhex(&row[2]), key, body.len(), &secrets, &format!("MariaDB row of msg {}", a.msg_id));
    }

    // group_msg carries the bodies sealed; offline_msg no body at all.
    let group_topic = cluster.nodes[0].env("KAFKA_TOPIC_GROUP_MSG").to_owned();
    let records = topic_records(&group_topic, 2).await;
    let mut published = Vec::new();
    for payload in &records {
        for secret in secrets {
            assert!(!contains(payload, secret.as_bytes()), "a {group_topic} record holds {secret:?} in clear");
        }
        let event = im_proto::fanout::GroupMessageEvent::decode(&payload[..]).expect("a GroupMessageEvent");
        assert_eq!(event.sealed_with, key, "a group_msg record not marked sealed");
        let message = event.message.expect("the event's message");
        let body = sent.iter().find(|(a, _)| a.msg_id == message.msg_id).expect("a sent group message").1;
        published.push(body);
        assert_sealed(
            &message.body,
            key,
            body.len(),
            &secrets,
            &format!("{group_topic} record of msg {}", message.msg_id),
        );
    }
    published.sort_unstable();
    published.dedup();
    assert_eq!(published, [g1, g2], "the group messages on {group_topic}");
    let offline_topic = cluster.nodes[0].env("KAFKA_TOPIC_OFFLINE_MSG").to_owned();
    let records = topic_records(&offline_topic, 1).await;
    assert!(!records.is_empty(), "nothing on {offline_topic}");
    for payload in &records {
        for secret in secrets {
            assert!(!contains(payload, secret.as_bytes()), "a {offline_topic} record holds {secret:?} in clear");
        }
    }
}

// ---------------------------------------------------------------------------
// 4. A KMS outage.

#[tokio::test]
async fn a_kms_outage_leaves_sends_on_the_cached_key_then_unavailable_then_recovers_by_itself() {
    const TTL: Duration = Duration::from_secs(4);
    let key_id = create_kms_key().await;
    let kms = KmsProxy::start(KMS).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = kms_env(&kms.url(), &key_id);
    env.push(("DEK_CACHE_TTL".to_owned(), format!("{}s", TTL.as_secs())));
    // A send refused after its seq was taken leaves a gap (G2), which sync
    // holds back what follows for SYNC_GAP_GRACE (45 s by default).
    env.push(("SYNC_GAP_GRACE".to_owned(), "1s".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::start_with(dir.path(), &env).await;
    let started = Instant::now();
    assert!(!dir.path().join("master.key").exists(), "a local master key beside the KMS");

    let scrape = metrics(node.http_port).await;
    let series = |op: &str, result: &str| format!("im_kms_requests_total{{op=\"{op}\",result=\"{result}\"}}");
    assert!(sample(&scrape, &series("generate_data_key", "ok")).unwrap_or(0.0) >= 1.0, "{scrape}");
    assert!(sample(&scrape, "im_kms_request_seconds_count").unwrap_or(0.0) >= 1.0, "{scrape}");
    let (status, kms_entry) = kms_readiness_when(node.http_port, "up").await;
    assert_eq!((status, &kms_entry["status"], &kms_entry["degrades_only"]), (200, &"up".into(), &true.into()));

    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let mut groups = GroupApi::connect(node.grpc_port, &alice_token).await;
    let group = groups.create("outage", &[bob], false).await;
    let pair = conversation_id(alice, bob);
    let mut want = vec!["m0".to_owned()];
    ack(alice_phone.send_text(bob, "m0", "m0").await);

    // The key was unwrapped at start-up, before /ready: once the TTL has
    // passed, the next send unwraps it again — now, a known instant.
    tokio::time::sleep(TTL.saturating_sub(started.elapsed()) + Duration::from_millis(300)).await;
    let decrypts = sample(&metrics(node.http_port).await, &series("decrypt", "ok")).unwrap_or(0.0);
    let fetched_after = Instant::now();
    ack(alice_phone.send_text(bob, "m1", "m1").await);
    let fetched_before = Instant::now();
    want.push("m1".into());
    let scrape = metrics(node.http_port).await;
    assert_eq!(
        sample(&scrape, &series("decrypt", "ok")),
        Some(decrypts + 1.0),
        "the expired key was not fetched again"
    );

    // The KMS goes away: sends (private and group) and reads go on with the
    // key in cache.
    kms.cut_off();
    for i in 2..5 {
        ack(alice_phone.send_text(bob, &format!("m{i}"), &format!("m{i}")).await);
        want.push(format!("m{i}"));
    }
    ack(alice_phone.send_group_text(group, "g0", "group during the outage").await);
    // Bob was online throughout: every message pushed in clear, the group
    // one opened by the fan-out on the cached key.
    assert_eq!(pushed_bodies(&mut bob_phone, 6).await, ["group during the outage", "m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(synced(&mut bob_phone, &pair).await, want, "sync on the cached key");
    assert!(
        fetched_after.elapsed() < TTL,
        "the test was too slow: the cache may have expired before the sends on the cached key ended"
    );
    // /ready reads the background probes' last results: the KMS shows down
    // within a probe period or two.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (status, kms_entry) = loop {
        let (status, kms_entry) = kms_readiness(node.http_port).await;
        if kms_entry["status"] == "down" || Instant::now() > deadline {
            break (status, kms_entry);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "/ready fails with the KMS down: {kms_entry}");
    assert_eq!((&kms_entry["status"], &kms_entry["degrades_only"]), (&"down".into(), &true.into()), "{kms_entry}");

    // The cache expired: what needs the key is UNAVAILABLE, typed, quickly.
    tokio::time::sleep((fetched_before + TTL + Duration::from_millis(300)).saturating_duration_since(Instant::now()))
        .await;
    let asked = Instant::now();
    assert_unavailable(alice_phone.send_text(bob, "m5", "m5").await, "a send with the key expired");
    assert_unavailable(bob_phone.sync(&pair, 0).await, "a sync with the key expired");
    assert!(asked.elapsed() < Duration::from_secs(8), "the typed errors took {:?}", asked.elapsed());
    let scrape = metrics(node.http_port).await;
    assert!(sample(&scrape, &series("decrypt", "unavailable")).unwrap_or(0.0) >= 1.0, "{scrape}");

    // The KMS back: the same send goes through without a restart, and
    // everything reads.
    kms.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match alice_phone.send_text(bob, "m5", "m5").await {
            server_frame::Body::Ack(_) => break,
            server_frame::Body::Error(e) if e.code() == ErrorCode::Unavailable => {}
            other => panic!("a send after the KMS came back answered {other:?}"),
        }
        assert!(Instant::now() < deadline, "sends still fail 20 s after the KMS came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    want.push("m5".into());
    // Past the grace of the gap the refused send left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(synced(&mut bob_phone, &pair).await, want, "sync after the KMS came back");
    assert_eq!(synced(&mut bob_phone, &group_conversation(group)).await, ["group during the outage"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, kms_entry) = kms_readiness(node.http_port).await;
        if status == 200 && kms_entry["status"] == "up" {
            break;
        }
        assert!(Instant::now() < deadline, "/ready still says {status} {kms_entry} 20 s after the KMS came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
