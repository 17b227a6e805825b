//! The sensitive-word filter end to end (issue 12): the real binaries,
//! clients over WebSocket, the admin API over gRPC.
//!
//! - embedded mode, each action: block (a typed error with its reason,
//!   nothing stored, no seq used, the same client_msg_id reusable), replace
//!   (every reader sees the masked text, the ack says so), audit (delivered
//!   unchanged, one record in the table and in `AuditService`);
//! - evasion through the service (full width, case, invisible characters,
//!   combining marks), whole words in Latin, anywhere in CJK, non-text
//!   bodies untouched;
//! - production mode: the reason survives the gateway's gRPC hop, and audit
//!   records reach the `content_audit` topic and the MariaDB table;
//! - the list replaced 10 times under load, SIGHUP, a bad list at reload;
//! - a missing list at start: exit 2 before binding.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use im_proto::audit::audit_service_client::AuditServiceClient;
use im_proto::audit::{self as audit_pb, ListAuditRecordsRequest};
use im_proto::client::{self as pb, ErrorCode, client_frame, server_frame};

use crate::harness::{Cluster, ClusterBuilder, read_topic};
use crate::support::{
    Client, GroupApi, Node, UserAdmin, ack, conversation_id, error, free_port, group_conversation, http_get,
};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);
/// The reload's debounce (`filter::reload::QUIET`, 300 ms) and a margin.
const AFTER_RELOAD: Duration = Duration::from_millis(900);

// ---------------------------------------------------------------------------
// Helpers.

/// Writes `contents` to `path` the way editors and deployment tools do: a
/// new file beside it, renamed over it.
fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_file_name(format!("{}.tmp", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `dir/lists/wordlist.txt` holding `list`, apart from the node's data.
fn word_list(dir: &Path, list: &str) -> PathBuf {
    let lists = dir.join("lists");
    std::fs::create_dir_all(&lists).unwrap();
    let path = lists.join("wordlist.txt");
    std::fs::write(&path, list).unwrap();
    path
}

/// A node with the filter on, `action`, reading `list`.
async fn filter_node(dir: &Path, action: &str, list: &str) -> (Node, PathBuf) {
    let path = word_list(dir, list);
    let path_text = path.display().to_string();
    let env = [("FILTER_ENABLED", "true"), ("FILTER_ACTION", action), ("FILTER_WORDLIST_PATH", path_text.as_str())];
    (Node::start_with(&dir.join("data"), &env).await, path)
}

fn push(body: Option<server_frame::Body>) -> pb::Message {
    match body {
        Some(server_frame::Body::Push(m)) => m,
        other => panic!("expected a push, got {other:?}"),
    }
}

fn send_request(to_user: u64, client_msg_id: &str, content_type: &str, body: &[u8]) -> client_frame::Body {
    client_frame::Body::Send(pb::SendRequest {
        to_user,
        client_msg_id: client_msg_id.into(),
        body: body.to_vec().into(),
        content_type: content_type.into(),
        ..Default::default()
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
}

/// `/metrics` of the process on `port`.
async fn metrics(port: u16) -> String {
    http_get(port, "/metrics").await.expect("/metrics answers").1
}

/// The value of the sample `series` (name and labels exactly as exported).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `series` on `port` is at least `value`; returns it.
async fn wait_for_sample(port: u16, series: &str, value: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let now = sample(&metrics(port).await, series).unwrap_or(0.0);
        if now >= value {
            return now;
        }
        assert!(Instant::now() < deadline, "{series} is {now}, not {value}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `AuditService/ListAuditRecords` with `token`, for `conversation` (empty:
/// every one).
async fn list_audit(
    grpc_port: u16,
    token: &str,
    conversation: &str,
) -> Result<Vec<audit_pb::AuditRecord>, tonic::Status> {
    let mut client = AuditServiceClient::connect(format!("http://127.0.0.1:{grpc_port}")).await.expect("grpc connect");
    let mut request = tonic::Request::new(ListAuditRecordsRequest {
        limit: 0,
        before_msg_id: 0,
        conversation_id: conversation.into(),
    });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.list_audit_records(request).await.map(|r| r.into_inner().records)
}

// ---------------------------------------------------------------------------
// Embedded mode: each action over WebSocket.

#[tokio::test]
async fn block_refuses_with_content_blocked_stores_nothing_and_frees_the_client_msg_id() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _list) = filter_node(dir.path(), "block", "bad\n").await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let conv = conversation_id(alice, bob);

    // The very first message is refused: typed, with the reason, without
    // echoing the list.
    let refused = error(alice_phone.send_text(bob, "m1", "you are bad").await);
    assert_eq!(refused.code, ErrorCode::FailedPrecondition as i32, "{refused:?}");
    assert_eq!(refused.reason, "content_blocked", "{refused:?}");
    assert!(!refused.message.contains("bad"), "the error echoes the list: {refused:?}");
    assert!(bob_phone.next_event(QUIET).await.is_none(), "a blocked message was pushed");
    assert!(bob_phone.conversations().await.is_empty(), "a blocked message created the conversation");
    assert!(bob_phone.sync_all(&conv, 0).await.is_empty(), "a blocked message was stored");

    // The corrected resend with the same client_msg_id goes through (the
    // dedup cache did not remember the refusal), and takes seq 1.
    let first = ack(alice_phone.send_text(bob, "m1", "you are kind").await);
    assert_eq!(first.seq, 1, "the blocked send used a seq");
    assert!(!first.body_masked);
    assert_eq!(&push(bob_phone.next_event(WAIT).await).body[..], b"you are kind");

    // Blocked in the middle: the next accepted message is seq 2.
    let refused = error(alice_phone.send_text(bob, "m2", "BAD again").await);
    assert_eq!((refused.code, refused.reason.as_str()), (ErrorCode::FailedPrecondition as i32, "content_blocked"));
    let second = ack(alice_phone.send_text(bob, "m3", "fine again").await);
    assert_eq!(second.seq, 2, "the blocked send used a seq");

    let stored = bob_phone.sync_all(&conv, 0).await;
    let got: Vec<(u64, &str, &[u8])> = stored.iter().map(|m| (m.seq, m.client_msg_id.as_str(), &m.body[..])).collect();
    assert_eq!(got, [(1, "m1", &b"you are kind"[..]), (2, "m3", &b"fine again"[..])]);

    // The group send path is filtered too.
    let mut alice_groups = GroupApi::connect(node.grpc_port, &alice_token).await;
    let group = alice_groups.create("filtered", &[bob], false).await;
    let refused = error(alice_phone.send_group_text(group, "g1", "a bad idea").await);
    assert_eq!((refused.code, refused.reason.as_str()), (ErrorCode::FailedPrecondition as i32, "content_blocked"));
    let accepted = ack(alice_phone.send_group_text(group, "g1", "a good idea").await);
    assert_eq!(accepted.seq, 1, "the blocked group send used a seq");
    let got: Vec<Vec<u8>> =
        bob_phone.sync_all(&group_conversation(group), 0).await.iter().map(|m| m.body.to_vec()).collect();
    assert_eq!(got, [b"a good idea".to_vec()]);

    let scrape = metrics(node.http_port).await;
    assert_eq!(sample(&scrape, "im_filter_matches_total{action=\"block\"}"), Some(3.0), "{scrape}");
    assert_eq!(sample(&scrape, "im_filter_wordlist_entries"), Some(1.0), "{scrape}");
    assert_eq!(sample(&scrape, "im_messages_failed_total{code=\"FAILED_PRECONDITION\"}"), Some(3.0), "{scrape}");
}

#[tokio::test]
async fn replace_masks_what_every_reader_sees_and_the_ack_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _list) = filter_node(dir.path(), "replace", "bad\n").await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let mut alice_laptop = node.connect(&alice_token, "laptop").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let conv = conversation_id(alice, bob);

    let masked = ack(alice_phone.send_text(bob, "r1", "you are bad, BAD!").await);
    assert!(masked.body_masked, "{masked:?}");
    assert_eq!(masked.seq, 1);
    for device in [&mut bob_phone, &mut alice_laptop] {
        let m = push(device.next_event(WAIT).await);
        assert_eq!((m.msg_id, text(&m.body)), (masked.msg_id, "you are ***, ***!".to_owned()));
    }
    // A resend of the same message returns the first ack, flag included.
    assert_eq!(ack(alice_phone.send_text(bob, "r1", "you are bad, BAD!").await), masked);

    let clean = ack(alice_phone.send_text(bob, "r2", "you are good").await);
    assert!(!clean.body_masked, "{clean:?}");
    for device in [&mut bob_phone, &mut alice_laptop] {
        assert_eq!(text(&push(device.next_event(WAIT).await).body), "you are good");
    }

    // What the store holds, read back by both sides.
    let want = ["you are ***, ***!", "you are good"];
    for device in [&mut bob_phone, &mut alice_laptop] {
        let bodies: Vec<String> = device.sync_all(&conv, 0).await.iter().map(|m| text(&m.body)).collect();
        assert_eq!(bodies, want);
    }

    // Group messages are masked the same way.
    let mut alice_groups = GroupApi::connect(node.grpc_port, &alice_token).await;
    let group = alice_groups.create("masked", &[bob], false).await;
    let group_ack = ack(alice_phone.send_group_text(group, "g1", "bad news").await);
    assert!(group_ack.body_masked);
    assert_eq!(text(&push(bob_phone.next_event(WAIT).await).body), "*** news");
    let synced: Vec<String> =
        bob_phone.sync_all(&group_conversation(group), 0).await.iter().map(|m| text(&m.body)).collect();
    assert_eq!(synced, ["*** news"]);

    let scrape = metrics(node.http_port).await;
    // r1 and g1 at least (a resend is checked again before dedup answers).
    assert!(sample(&scrape, "im_filter_matches_total{action=\"replace\"}").is_some_and(|n| n >= 2.0), "{scrape}");
}

#[tokio::test]
async fn audit_delivers_unchanged_and_records_the_match_for_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _list) = filter_node(dir.path(), "audit", "bad\nugly\nunused\n").await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let conv = conversation_id(alice, bob);

    let clean = ack(alice_phone.send_text(bob, "a1", "hello").await);
    let audited = ack(alice_phone.send_text(bob, "a2", "bad, ugly and BAD").await);
    assert!(!audited.body_masked, "audit does not change the body");
    assert_eq!(text(&push(bob_phone.next_event(WAIT).await).body), "hello");
    assert_eq!(text(&push(bob_phone.next_event(WAIT).await).body), "bad, ugly and BAD");
    let bodies: Vec<String> = bob_phone.sync_all(&conv, 0).await.iter().map(|m| text(&m.body)).collect();
    assert_eq!(bodies, ["hello", "bad, ugly and BAD"]);

    let admin = node.admin_token();
    let records = list_audit(node.grpc_port, &admin, "").await.expect("an admin lists the records");
    assert_eq!(
        records,
        [audit_pb::AuditRecord {
            msg_id: audited.msg_id,
            conversation_id: conv.clone(),
            seq: audited.seq,
            sender: alice,
            entries: vec!["bad".into(), "ugly".into()],
            server_time_ms: audited.server_time_ms,
        }],
        "one record, for the message that matched (not {})",
        clean.msg_id
    );
    assert_eq!(list_audit(node.grpc_port, &admin, &conv).await.unwrap().len(), 1);
    assert!(list_audit(node.grpc_port, &admin, &conversation_id(alice, bob + 1000)).await.unwrap().is_empty());

    let refused = list_audit(node.grpc_port, &alice_token, "").await.expect_err("a user token is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // The row itself, in the node's SQLite file (read-only beside it).
    use sqlx::{ConnectOptions, Connection};
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(node.data_dir.join("im.db")).read_only(true);
    let mut db = options.connect().await.expect("open the node's store read-only");
    let rows: Vec<(i64, String, i64, i64, String)> =
        sqlx::query_as("SELECT msg_id, conversation, seq, sender, entries FROM content_audit")
            .fetch_all(&mut db)
            .await
            .unwrap();
    db.close().await.unwrap();
    assert_eq!(
        rows,
        [(audited.msg_id as i64, conv, audited.seq as i64, alice as i64, "bad\nugly".to_owned())],
        "the content_audit table"
    );

    let scrape = metrics(node.http_port).await;
    assert_eq!(sample(&scrape, "im_filter_matches_total{action=\"audit\"}"), Some(1.0), "{scrape}");
}

// ---------------------------------------------------------------------------
// Evasion, and what must not match.

#[tokio::test]
async fn evasions_are_caught_words_inside_words_are_not_and_non_text_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _list) = filter_node(dir.path(), "replace", "bad\nass\n敏感\n").await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;

    // (content type, body sent, body every reader must see)
    let cases: [(&str, &[u8], &[u8]); 10] = [
        ("text/plain", "ｂａｄ".as_bytes(), b"***"),
        ("text/plain", b"so BAD", b"so ***"),
        // A zero-width joiner inside the word is masked with it.
        ("text/plain", "b\u{200D}ad".as_bytes(), b"****"),
        // Combining marks: each is a character of the word.
        ("text/plain", "ba\u{0301}d!".as_bytes(), b"****!"),
        // Whole words in Latin: not inside `class`, but on its own.
        ("text/plain", b"a first class seat", b"a first class seat"),
        ("", b"you ass!", b"you ***!"),
        // CJK entries match inside a sentence.
        ("text/plain", "这是敏感的话题".as_bytes(), "这是**的话题".as_bytes()),
        ("TEXT/markdown; charset=utf-8", b"**bad**", b"*******"),
        // Not text: untouched, even when it is not UTF-8.
        ("image/png", b"\x89PNG bad\xff", b"\x89PNG bad\xff"),
        ("application/json", br#"{"w":"bad"}"#, br#"{"w":"bad"}"#),
    ];
    let mut want = Vec::new();
    for (i, (content_type, sent, seen)) in cases.iter().enumerate() {
        let acked = ack(alice_phone.request(send_request(bob, &format!("e{i}"), content_type, sent)).await);
        assert_eq!(acked.body_masked, sent != seen, "case {i}: {content_type} {:?}", String::from_utf8_lossy(sent));
        let m = push(bob_phone.next_event(WAIT).await);
        assert_eq!(
            (&m.body[..], m.content_type.as_str()),
            (*seen, *content_type),
            "case {i}: {:?} pushed as {:?}",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(&m.body)
        );
        want.push(seen.to_vec());
    }
    let stored: Vec<Vec<u8>> =
        bob_phone.sync_all(&conversation_id(alice, bob), 0).await.iter().map(|m| m.body.to_vec()).collect();
    assert_eq!(stored, want, "what sync returns");
}

// ---------------------------------------------------------------------------
// Production mode: im-user, two nodes, two gateways, Kafka.

/// A cluster whose nodes filter with `action` and `list`; its audit topic
/// is this test's alone. Returns the topic too.
async fn filter_cluster(dir: &Path, action: &str, list: &str) -> (Cluster, String) {
    let path = word_list(dir, list);
    let topic = im_backends::conformance::fixtures::unique_name("e2e-content-audit");
    let cluster = ClusterBuilder::new()
        .node_env("FILTER_ENABLED", "true")
        .node_env("FILTER_ACTION", action)
        .node_env("FILTER_WORDLIST_PATH", path.display())
        .node_env("KAFKA_TOPIC_CONTENT_AUDIT", &topic)
        .start()
        .await;
    (cluster, topic)
}

#[tokio::test]
async fn production_block_carries_its_reason_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _topic) = filter_cluster(dir.path(), "block", "bad\n").await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let mut alice_phone = cluster.client(0, &alice, "phone").await;
    let mut bob_phone = cluster.client(1, &bob, "phone").await;

    let refused = error(alice_phone.send_text(bob.id, "p1", "a bad word").await);
    assert_eq!(refused.code, ErrorCode::FailedPrecondition as i32, "{refused:?}");
    assert_eq!(refused.reason, "content_blocked", "the reason is lost between node and gateway: {refused:?}");
    assert!(!refused.message.contains("bad"), "{refused:?}");

    let accepted = ack(alice_phone.send_text(bob.id, "p1", "a kind word").await);
    assert_eq!(accepted.seq, 1, "the blocked send used a seq");
    assert_eq!(text(&push(bob_phone.next_event(Duration::from_secs(10)).await).body), "a kind word");
    let bodies: Vec<String> =
        bob_phone.sync_all(&conversation_id(alice.id, bob.id), 0).await.iter().map(|m| text(&m.body)).collect();
    assert_eq!(bodies, ["a kind word"]);
}

#[tokio::test]
async fn production_audit_records_reach_the_topic_and_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, topic) = filter_cluster(dir.path(), "audit", "bad\n敏感\n").await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let mut alice_phone = cluster.client(0, &alice, "phone").await;
    let mut bob_phone = cluster.client(1, &bob, "phone").await;
    let conv = conversation_id(alice.id, bob.id);

    ack(alice_phone.send_text(bob.id, "c1", "nothing to see").await);
    let audited = ack(alice_phone.send_text(bob.id, "c2", "bad 敏感 stuff").await);
    assert!(!audited.body_masked);
    let bodies: Vec<String> = {
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(text(&push(bob_phone.next_event(Duration::from_secs(10)).await).body));
        }
        got
    };
    assert_eq!(bodies, ["nothing to see", "bad 敏感 stuff"], "delivered unchanged");

    let want = audit_pb::AuditRecord {
        msg_id: audited.msg_id,
        conversation_id: conv.clone(),
        seq: audited.seq,
        sender: alice.id,
        entries: vec!["bad".into(), "敏感".into()],
        server_time_ms: audited.server_time_ms,
    };

    // The topic: one record, keyed by the conversation.
    let reading = topic.clone();
    let records =
        tokio::task::spawn_blocking(move || read_topic(&reading, 1, Duration::from_secs(1), Duration::from_secs(30)))
            .await
            .unwrap();
    let decoded: Vec<(String, im_core::AuditRecord)> = records
        .iter()
        .map(|(key, payload)| {
            (
                String::from_utf8_lossy(key).into_owned(),
                im_proto::convert::decode_audit_record(payload).expect("an im.audit.v1.AuditRecord"),
            )
        })
        .collect();
    assert_eq!(decoded.len(), 1, "records on {topic}: {decoded:?}");
    let (key, record) = &decoded[0];
    assert_eq!(key, &conv, "keyed by conversation");
    assert_eq!(&audit_pb::AuditRecord::from(record), &want);

    // The table, through the admin API of either node (one MariaDB).
    let admin = im_auth::Tokens::new(cluster.nodes[0].env("JWT_SECRET").as_bytes())
        .unwrap()
        .issue_admin(Duration::from_secs(600));
    for node in 0..2 {
        let listed = list_audit(cluster.node_grpc_port(node), &admin, "").await.expect("an admin lists the records");
        assert_eq!(listed, std::slice::from_ref(&want), "AuditService of node {node}");
    }
    let refused = list_audit(cluster.node_grpc_port(0), &alice.token, "").await.expect_err("a user is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // And the row as MariaDB holds it.
    let output = tokio::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B", "-e"])
        .arg("SELECT msg_id, conversation, seq, sender, REPLACE(entries, '\\n', '|') FROM content_audit")
        .arg(&cluster.database)
        .output()
        .await
        .expect("running mariadb");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{}\t{conv}\t{}\t{}\tbad|敏感", audited.msg_id, audited.seq, alice.id)
    );
}

// ---------------------------------------------------------------------------
// Reloading the list.

/// One sender's sends: (sent at, acked at, index, the ack or the error).
type Sends = Vec<(Instant, Instant, usize, Result<pb::SendAck, pb::Error>)>;

#[tokio::test]
async fn the_list_replaced_ten_times_under_load_fails_no_send_and_applies_each_new_list() {
    // Each message holds a word of each list; the one list in force masks
    // exactly its word, so every stored body tells which list checked it.
    const LISTS: [&str; 3] = ["charlie\n", "alpha\n", "bravo\n"];
    let form = |list: usize, i: usize| match list {
        0 => format!("alpha bravo ******* {i}"),
        1 => format!("***** bravo charlie {i}"),
        _ => format!("alpha ***** charlie {i}"),
    };
    // The list written by swap k (1..=10): alpha, bravo, alpha... bravo.
    let list_of_swap = |k: usize| if k % 2 == 1 { 1 } else { 2 };
    const SWAPS: usize = 10;
    const SPACING: Duration = Duration::from_millis(800);
    // From a swap, when the new list must be in force: the debounce, and a
    // margin for the reload itself.
    const IN_FORCE: Duration = Duration::from_millis(600);
    /// A bound only: the senders run until the last window closes.
    const MAX_SENDS: usize = 3000;

    let dir = tempfile::tempdir().unwrap();
    let (node, list) = filter_node(dir.path(), "replace", LISTS[0]).await;
    let mut pairs = Vec::new();
    for n in 0..2 {
        let sender = node.create_user(&format!("sender{n}")).await;
        let reader = node.create_user(&format!("reader{n}")).await;
        pairs.push((sender, reader));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (sender, reader) in &pairs {
        let mut client = node.connect(&sender.1, "phone").await;
        let (to, stop) = (reader.0, stop.clone());
        senders.push(tokio::spawn(async move {
            let mut sends: Sends = Vec::new();
            for i in 0..MAX_SENDS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let sent = Instant::now();
                let answer = client.send_text(to, &format!("h{i}"), &format!("alpha bravo charlie {i}")).await;
                let result = match answer {
                    server_frame::Body::Ack(ack) => Ok(ack),
                    server_frame::Body::Error(e) => Err(e),
                    other => panic!("a send answered {other:?}"),
                };
                sends.push((sent, Instant::now(), i, result));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sends
        }));
    }

    let started = Instant::now();
    let mut swapped_at = vec![started];
    for k in 1..=SWAPS {
        tokio::time::sleep(SPACING).await;
        replace_file(&list, LISTS[list_of_swap(k)].as_bytes());
        swapped_at.push(Instant::now());
    }
    tokio::time::sleep(SPACING).await;
    stop.store(true, Ordering::SeqCst);
    let ended = Instant::now();
    let mut all_sends = Vec::new();
    for sender in senders {
        all_sends.push(sender.await.unwrap());
    }

    // The list in force over [from, to): the initial one, then each swap's
    // from IN_FORCE after it until the next swap.
    let windows: Vec<(Instant, Instant, usize)> = (0..=SWAPS)
        .map(|k| {
            let from = if k == 0 { started } else { swapped_at[k] + IN_FORCE };
            let to = swapped_at.get(k + 1).copied().unwrap_or(ended);
            (from, to, if k == 0 { 0 } else { list_of_swap(k) })
        })
        .collect();

    let mut windows_checked = vec![0usize; windows.len()];
    for (n, sends) in all_sends.iter().enumerate() {
        let failed: Vec<_> = sends.iter().filter(|s| s.3.is_err()).collect();
        assert!(failed.is_empty(), "sender {n}: {} sends failed during the reloads: {:?}", failed.len(), failed);
        assert!(sends.len() >= 50, "sender {n} sent only {} messages: no load", sends.len());
        assert!(sends.iter().all(|s| s.3.as_ref().unwrap().body_masked), "sender {n}: an unmasked ack");

        let (reader, reader_token) = &pairs[n].1;
        let mut reader_phone = node.connect(reader_token, "phone").await;
        let stored = reader_phone.sync_all(&conversation_id(pairs[n].0.0, *reader), 0).await;
        assert_eq!(stored.len(), sends.len(), "sender {n}: stored {} of {} acked", stored.len(), sends.len());
        for ((sent, acked, i, result), m) in sends.iter().zip(&stored) {
            assert_eq!(m.msg_id, result.as_ref().unwrap().msg_id);
            let body = text(&m.body);
            // Atomic: one list or another, never a mix nor none.
            let checked_by = (0..3).find(|&l| body == form(l, *i));
            let Some(checked_by) = checked_by else {
                panic!("sender {n}: message {i} stored as {body:?}, which no single list gives")
            };
            for (w, (from, to, in_force)) in windows.iter().enumerate() {
                if *sent >= *from && *acked <= *to {
                    windows_checked[w] += 1;
                    assert_eq!(
                        checked_by,
                        *in_force,
                        "sender {n}: message {i}, sent {:?} after swap {w}, was checked by list {checked_by} \
                         ({body:?}), not that swap's list {in_force}",
                        sent.saturating_duration_since(swapped_at[w])
                    );
                }
            }
        }
    }
    // The checks above were not vacuous: most windows held messages, the
    // last one (after the last swap) included.
    assert!(windows_checked[SWAPS] > 0, "no message was sent after the last swap took effect: {windows_checked:?}");
    let non_empty = windows_checked.iter().filter(|&&n| n > 0).count();
    assert!(non_empty >= 8, "only {non_empty} of {} windows held messages: {windows_checked:?}", windows.len());

    let scrape = metrics(node.http_port).await;
    let total: usize = all_sends.iter().map(Vec::len).sum();
    assert_eq!(sample(&scrape, "im_filter_reload_failures_total"), Some(0.0), "{scrape}");
    assert_eq!(sample(&scrape, "im_filter_wordlist_entries"), Some(1.0), "{scrape}");
    assert_eq!(sample(&scrape, "im_filter_matches_total{action=\"replace\"}"), Some(total as f64), "{scrape}");
}

/// An `im-service` whose log goes to a file the test reads.
struct LoggedNode {
    child: Child,
    data_dir: PathBuf,
    ws_port: u16,
    grpc_port: u16,
    http_port: u16,
    log: PathBuf,
}

impl LoggedNode {
    async fn start(dir: &Path, env: &[(&str, &str)]) -> LoggedNode {
        let data_dir = dir.join("data");
        let log = dir.join("im-service.log");
        let (ws_port, grpc_port, http_port) = (free_port(), free_port(), free_port());
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut command = Node::command(&data_dir, (ws_port, grpc_port, http_port), &env);
        command.stderr(File::create(&log).unwrap());
        let mut node = LoggedNode {
            child: command.spawn().expect("starting im-service"),
            data_dir,
            ws_port,
            grpc_port,
            http_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http_get(node.http_port, "/ready").await, Ok((200, _))) {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("im-service exited during start-up ({status}):\n{}", node.log());
            }
            assert!(Instant::now() < deadline, "im-service not ready within 20 s:\n{}", node.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn create_user(&self, name: &str) -> (u64, String) {
        let admin = std::fs::read_to_string(self.data_dir.join("admin.token")).unwrap();
        let mut users = UserAdmin::connect(&format!("127.0.0.1:{}", self.grpc_port), admin.trim()).await;
        users.create_user(name).await
    }

    async fn connect(&self, token: &str, device: &str) -> Client {
        Client::connect(&format!("ws://127.0.0.1:{}/ws", self.ws_port), token, device).await.expect("websocket connect")
    }

    fn hangup(&self) {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- im-service log ---\n{}", self.log());
        }
    }
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_list_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    // The node's list is a link in `watched/` to a file in `real/`: a
    // change of `real/` is not seen by the watcher of `watched/`, so only
    // SIGHUP can bring it in.
    let (watched, real) = (dir.path().join("watched"), dir.path().join("real"));
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    let target = real.join("list.txt");
    std::fs::write(&target, "alpha\n").unwrap();
    let list = watched.join("wordlist.txt");
    std::os::unix::fs::symlink(&target, &list).unwrap();
    let list_text = list.display().to_string();
    let env = [("FILTER_ENABLED", "true"), ("FILTER_ACTION", "replace"), ("FILTER_WORDLIST_PATH", list_text.as_str())];
    let node = LoggedNode::start(dir.path(), &env).await;
    let (_, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut alice = node.connect(&alice_token, "phone").await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let mut sent = 0;
    // Sends "alpha bravo charlie"; returns what bob gets.
    let mut probe = async || {
        sent += 1;
        ack(alice.send_text(bob, &format!("p{sent}"), "alpha bravo charlie").await);
        text(&push(bob_phone.next_event(WAIT).await).body)
    };
    const ALPHA: &str = "***** bravo charlie";
    const BRAVO: &str = "alpha ***** charlie";

    assert_eq!(probe().await, ALPHA);
    replace_file(&target, b"bravo\n");
    tokio::time::sleep(AFTER_RELOAD).await;
    assert_eq!(probe().await, ALPHA, "the test's premise: the watcher does not see a change behind the link");

    node.hangup();
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = probe().await;
        if seen == BRAVO {
            break;
        }
        assert_eq!(seen, ALPHA, "neither list");
        assert!(Instant::now() < deadline, "SIGHUP did not bring in the new list within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scrape = metrics(node.http_port).await;
    assert_eq!(sample(&scrape, "im_filter_reload_failures_total"), Some(0.0), "{scrape}");

    // A list that is not UTF-8 on line 2, renamed over the link: the
    // watcher reloads, the reload fails, the previous list stays.
    replace_file(&list, b"charlie\n\xff\xfe\n");
    wait_for_sample(node.http_port, "im_filter_reload_failures_total", 1.0, WAIT).await;
    tokio::time::sleep(AFTER_RELOAD).await;
    let scrape = metrics(node.http_port).await;
    assert_eq!(sample(&scrape, "im_filter_reload_failures_total"), Some(1.0), "one failed reload: {scrape}");
    assert_eq!(sample(&scrape, "im_filter_wordlist_entries"), Some(1.0), "{scrape}");
    assert_eq!(probe().await, BRAVO, "the previous list is still in force");

    // One error line, naming the path and the line; no entry in the log.
    // The log is written by a thread of its own: under load the line lands
    // a little after the counter moved.
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let log = node.log();
        if log.contains("ERROR") || Instant::now() >= deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains(&format!("{list_text} line 2: not valid UTF-8")), "{}", errors[0]);
    assert!(!log.contains("charlie") && !log.contains("bravo"), "the log shows list entries:\n{log}");
}

// ---------------------------------------------------------------------------
// Start-up.

/// Runs im-service with `extra` while the test holds all three of its
/// ports: a process that bound before refusing would fail on a port.
fn refused_before_binding(extra: &[(&str, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let held: Vec<std::net::TcpListener> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let ports: Vec<u16> = held.iter().map(|l| l.local_addr().unwrap().port()).collect();
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let output = Node::command(&data, (ports[0], ports[1], ports[2]), &extra)
        .stderr(Stdio::piped())
        .output()
        .expect("running im-service");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("ddress already in use"), "it bound before refusing: {stderr}");
    assert!(!data.exists(), "nothing is created before the configuration is accepted");
    stderr
}

#[test]
fn a_missing_or_invalid_list_exits_2_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt").display().to_string();
    let stderr =
        refused_before_binding(&[("FILTER_ENABLED", "true".into()), ("FILTER_WORDLIST_PATH", missing.clone())]);
    assert!(stderr.contains("FILTER_WORDLIST_PATH") && stderr.contains(&missing), "{stderr}");

    let invalid = dir.path().join("invalid.txt");
    std::fs::write(&invalid, b"zzfirstentry\nzzsecret\xff\n").unwrap();
    let invalid = invalid.display().to_string();
    let stderr = refused_before_binding(&[
        ("FILTER_ENABLED", "true".into()),
        ("FILTER_ACTION", "audit".into()),
        ("FILTER_WORDLIST_PATH", invalid.clone()),
    ]);
    assert!(stderr.contains(&format!("{invalid} line 2: not valid UTF-8")), "{stderr}");
    assert!(!stderr.contains("zzfirstentry") && !stderr.contains("zzsecret"), "start-up echoes the list: {stderr}");
}
