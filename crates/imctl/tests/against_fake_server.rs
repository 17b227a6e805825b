//! imctl against an in-memory stand-in for the server (tests/support): the
//! client library, the load generator, and the binary's output and exit codes
//! (chat lines name their senders, or show their ids when the user directory
//! cannot).
//! The same calls work against the real im-service; only the URLs change.

#[path = "support/common.rs"]
mod common;
#[path = "support/fake_server.rs"]
mod fake_server;

use std::time::Duration;

use common::{TIMEOUT, admin, assert_all_delivered, bench_args, imctl, json_lines, stderr, stdout};
use fake_server::{ADMIN_TOKEN, FakeServer};
use im_proto::client::SendRequest;
use imctl::client::{Client, ConnectOptions, Event, Recipient};
use imctl::error::RemoteError;
use serde_json::Value;

fn options(server: &FakeServer, token: &str) -> ConnectOptions {
    ConnectOptions { url: server.ws_url.clone(), token: token.to_owned(), device: None, timeout: TIMEOUT, ca: None }
}

fn text(to_user: u64, body: &str) -> SendRequest {
    let id = imctl::client::random_client_msg_id();
    Recipient::User(to_user).message(id, body.as_bytes().to_vec().into(), "text/plain".into())
}

async fn next_event(events: &mut imctl::client::Events) -> Event {
    tokio::time::timeout(TIMEOUT, events.recv()).await.expect("no event in time").expect("connection closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sends_receives_syncs_and_reads() {
    let server = fake_server::start().await;
    let (alice, alice_token) = server.state.add_user("alice");
    let (bob, bob_token) = server.state.add_user("bob");
    let (a, mut a_events) = Client::connect(&options(&server, &alice_token)).await.unwrap();
    let (b, mut b_events) = Client::connect(&options(&server, &bob_token)).await.unwrap();

    let ack = a.send(text(bob, "hello bob")).await.unwrap();
    assert_eq!((ack.conversation_id.as_str(), ack.seq), ("p:1:2", 1));
    let Event::Message(pushed) = next_event(&mut b_events).await else { panic!("expected a message") };
    assert_eq!((pushed.from_user, pushed.to_user, pushed.seq), (alice, bob, 1));
    assert_eq!(&pushed.body[..], b"hello bob");

    let read = b.mark_read(&ack.conversation_id, 1).await.unwrap();
    assert_eq!(read.read_seq, 1);
    let Event::Receipt(receipt) = next_event(&mut a_events).await else { panic!("expected a receipt") };
    assert_eq!((receipt.reader, receipt.read_seq), (bob, 1));

    for i in 0..5 {
        a.send(text(bob, &format!("m{i}"))).await.unwrap();
    }
    let mut seqs = Vec::new();
    let last = b
        .sync_all(&ack.conversation_id, 0, 2, |m| {
            seqs.push(m.seq);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(last, 6);

    let list = b.list_conversations().await.unwrap().conversations;
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].peer, list[0].max_seq, list[0].read_seq, list[0].unread), (alice, 6, 1, 5));
    assert_eq!(a.ping(9).await.unwrap(), 9);

    let err = a.send(text(99, "nobody")).await.unwrap_err();
    let remote = err.downcast_ref::<RemoteError>().expect("a server error");
    assert_eq!(remote.code, "NOT_FOUND");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_and_a_missing_response_are_clear_errors() {
    let server = fake_server::start().await;
    let err = Client::connect(&options(&server, "tok-999")).await.unwrap_err();
    let shown = format!("{err:#}");
    assert!(shown.contains("HTTP 401") && shown.contains("invalid or missing token"), "{shown}");
    assert!(!shown.contains("tok-999"), "the token leaked into an error: {shown}");

    let (_, token) = server.state.add_user("carol");
    let (bob, _) = server.state.add_user("bob");
    server.state.swallow_sends.store(true, std::sync::atomic::Ordering::Relaxed);
    let opts = ConnectOptions { timeout: Duration::from_millis(200), ..options(&server, &token) };
    let (client, _events) = Client::connect(&opts).await.unwrap();
    let err = client.send(text(bob, "into the void")).await.unwrap_err();
    assert!(err.to_string().contains("no response to send within"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_bench_delivers_every_acked_message_to_every_device() {
    let server = fake_server::start().await;
    let args = bench_args("--users 4 --connections-per-user 2 --rate 400 --warmup 0.2 --duration 0.5 --body-size 64");
    let summary = imctl::bench::execute(&admin(&server).await, &server.ws_url, TIMEOUT, None, &args).await.unwrap();
    // 400 msg/s for 0.7 s in total.
    let counts = &summary.counts;
    assert!((250..=300).contains(&counts.sent), "sent {}", counts.sent);
    assert_all_delivered(counts, 2);
    assert!(summary.check.ok, "{:?}", summary.check);
    assert_eq!(server.state.message_count() as u64, counts.acked);
    assert!(summary.e2e_latency.count > 100 && summary.ack_latency.count > 50);
    assert!((250.0..=550.0).contains(&counts.acked_per_s), "{}", counts.acked_per_s);
    assert!((500.0..=1100.0).contains(&counts.delivered_per_s), "{}", counts.delivered_per_s);
    assert!(summary.human().contains("check       ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_bench_keeps_its_window_and_reports_json() {
    let server = fake_server::start().await;
    let pid = std::process::id();
    let args = bench_args(&format!(
        "--users 3 --closed-loop --window 4 --warmup 0.1 --duration 0.3 --pairing ring --server-pid {pid}"
    ));
    let summary = imctl::bench::execute(&admin(&server).await, &server.ws_url, TIMEOUT, None, &args).await.unwrap();
    assert!(summary.counts.sent > 50, "sent {}", summary.counts.sent);
    assert_eq!(summary.counts.delivered, summary.counts.acked);
    assert!(summary.check.ok);
    let cpu = summary.cpu.server_cpu.expect("server CPU measured");
    assert!(cpu.cpu_seconds >= 0.0 && cpu.us_per_delivered.is_some());
    let json: Value = serde_json::to_value(&summary).unwrap();
    for key in ["sent", "acked", "delivered", "errors_by_code", "acked_per_s", "delivered_per_s", "check"] {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    for key in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(json["e2e_latency"].get(key).is_some(), "no e2e {key}");
    }
    assert_eq!(json["config"]["mode"], "closed");
    assert_eq!(json["config"]["window"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_ends_on_time_when_the_server_stops_reading() {
    let server = fake_server::start().await;
    server.state.stall.store(true, std::sync::atomic::Ordering::Relaxed);
    let args = bench_args("--users 2 --rate 2000 --body-size 1000000 --warmup 0 --duration 1 --drain 0.5");
    let started = std::time::Instant::now();
    let admin = admin(&server).await;
    let run = imctl::bench::execute(&admin, &server.ws_url, TIMEOUT, None, &args);
    let summary = tokio::time::timeout(Duration::from_secs(10), run).await.expect("bench hung").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let counts = &summary.counts;
    assert_eq!(counts.acked, 0);
    assert_eq!(counts.unacked, counts.sent);
    assert_eq!(counts.errors_by_code.get("SEND_STUCK"), Some(&2), "{:?}", counts.errors_by_code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_user_passwords_come_from_stdin_and_a_refused_one_changes_nothing() {
    let server = fake_server::start().await;
    let admin = ["--admin-token", ADMIN_TOKEN];
    let out = imctl(
        &server,
        &[&admin[..], &["user", "create", "alice", "--password", "--json"]].concat(),
        Some("correct horse\nignored\n"),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["name"], "alice");
    assert_eq!(server.state.password_of(1).as_deref(), Some("correct horse"), "the first line, without its newline");

    let out = imctl(&server, &[&admin[..], &["user", "password", "alice"]].concat(), Some("battery staple\r\n")).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["id"], 1);
    assert_eq!(server.state.password_of(1).as_deref(), Some("battery staple"));

    // Refused by the server, missing, or for nobody: nothing changes.
    let out = imctl(&server, &[&admin[..], &["user", "password", "1"]].concat(), Some("short\n")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("INVALID_ARGUMENT: a password has at least 8 characters"), "{}", stderr(&out));
    let out = imctl(&server, &[&admin[..], &["user", "create", "bob", "--password"]].concat(), Some("")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no password given"), "{}", stderr(&out));
    let out = imctl(&server, &[&admin[..], &["user", "password", "carol"]].concat(), Some("correct horse\n")).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(server.state.password_of(1).as_deref(), Some("battery staple"));
    let out = imctl(&server, &[&admin[..], &["user", "get", "bob"]].concat(), None).await;
    assert_eq!(out.status.code(), Some(1), "bob was not created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_user_commands_print_json_and_server_errors() {
    let server = fake_server::start().await;
    let out = imctl(&server, &["--admin-token", ADMIN_TOKEN, "user", "create", "alice", "--json"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let created = &json_lines(&out)[0];
    assert_eq!((created["id"].as_u64(), created["name"].as_str()), (Some(1), Some("alice")));
    assert_eq!(created["token"], "tok-1");

    let out = imctl(&server, &["--admin-token", ADMIN_TOKEN, "user", "create", "alice"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "error: ALREADY_EXISTS: the name alice is taken");

    let out = imctl(&server, &["--admin-token", "wrong", "user", "token", "1"], None).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: UNAUTHENTICATED: invalid admin token"), "{err}");
    assert!(err.contains("hint: the admin token came from --admin-token") && !err.contains("wrong"), "{err}");

    // The credential file of a data directory is found without any flag.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("admin.token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let dir = data.path().to_str().unwrap();
    let out = imctl(&server, &["--data-dir", dir, "user", "token", "1", "--ttl", "60"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "tok-1");

    let empty = tempfile::tempdir().unwrap();
    let out = imctl(&server, &["--data-dir", empty.path().to_str().unwrap(), "user", "create", "bob"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&empty.path().join("admin.token").display().to_string()), "{}", stderr(&out));

    let out = imctl(&server, &["--admin-token", ADMIN_TOKEN, "user", "get", "alice"], None).await;
    assert_eq!(json_lines(&out)[0]["id"], 1);
    assert_eq!(json_lines(&out)[0]["disabled"], false);

    // Users are named by id or by name; each change prints the user after it.
    let out = imctl(&server, &["--admin-token", ADMIN_TOKEN, "user", "disable", "alice"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((json_lines(&out)[0]["id"].clone(), json_lines(&out)[0]["disabled"].clone()), (1.into(), true.into()));
    let out = imctl(&server, &["--admin-token", ADMIN_TOKEN, "user", "revoke-tokens", "1"], None).await;
    assert_eq!(json_lines(&out)[0]["token_generation"], 1);
    let out = imctl(&server, &["--admin-token", ADMIN_TOKEN, "user", "enable", "alice"], None).await;
    assert_eq!(json_lines(&out)[0]["disabled"], false);
    let out = imctl(&server, &["--admin-token", ADMIN_TOKEN, "user", "disable", "nobody"], None).await;
    assert_eq!(out.status.code(), Some(1), "an unknown name is an error");
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_client_commands_print_json_lines() {
    let server = fake_server::start().await;
    let (_, alice) = server.state.add_user("alice");
    let (_, bob) = server.state.add_user("bob");

    let out = imctl(&server, &["send", "--token", &alice, "--to", "2", "hi bob", "--client-msg-id", "c-1"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let ack = &json_lines(&out)[0];
    assert_eq!(ack["conversation_id"], "p:1:2");
    assert_eq!(ack["seq"], 1);
    assert!(ack["msg_id"].is_u64() && ack["server_time_ms"].is_i64());
    // A resend with the same client_msg_id returns the first ack.
    let again =
        imctl(&server, &["send", "--token", &alice, "--to", "2", "hi bob", "--client-msg-id", "c-1"], None).await;
    assert_eq!(&json_lines(&again)[0], ack);

    // A name is looked up in the user directory with the sender's token.
    let out =
        imctl(&server, &["send", "--token", &alice, "--to", "bob", "by name", "--client-msg-id", "c-2"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((&json_lines(&out)[0]["conversation_id"], &json_lines(&out)[0]["seq"]), (&"p:1:2".into(), &2.into()));
    let out = imctl(&server, &["send", "--token", &alice, "--to", "carol", "nobody"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "error: no user is named \"carol\"");

    let out = imctl(&server, &["send", "--token", &alice, "--to", "1", "me"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "error: INVALID_ARGUMENT: cannot send a private message to yourself");

    imctl(&server, &["send", "--token", &bob, "--to", "1", "hi alice"], None).await;
    let out = imctl(&server, &["sync", "--token", &bob], None).await;
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    assert_eq!((&lines[0]["body"], &lines[0]["from"], &lines[0]["to"]), (&"hi bob".into(), &1.into(), &2.into()));
    assert_eq!(lines[1]["body"], "by name");
    assert_eq!(lines[2]["seq"], 3);
    let out = imctl(&server, &["sync", "--token", &bob, "--conversation", "p:1:2", "--after", "1"], None).await;
    assert_eq!(json_lines(&out).len(), 2);

    let out = imctl(&server, &["read", "--token", &bob, "--conversation", "p:1:2", "--seq", "1"], None).await;
    assert_eq!(json_lines(&out)[0], serde_json::json!({"conversation_id": "p:1:2", "read_seq": 1}));
    let out = imctl(&server, &["conversations", "--token", &bob], None).await;
    assert_eq!(
        json_lines(&out)[0],
        serde_json::json!({"id": "p:1:2", "peer": 1, "group": 0, "max_seq": 3, "read_seq": 1, "unread": 2, "peer_read_seq": 0})
    );

    let out = imctl(&server, &["conversations", "--token", "tok-77"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("HTTP 401"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_chat_works_over_pipes() {
    let server = fake_server::start().await;
    let (alice_id, alice) = server.state.add_user("alice");
    let (bob_id, bob) = server.state.add_user("bob");
    let (a, _a_events) = Client::connect(&options(&server, &alice)).await.unwrap();
    a.send(text(bob_id, "earlier")).await.unwrap();

    // Bob chats from a pipe and stays for a while after his input ends;
    // alice answers once both of his lines are acked.
    let bob_args = ["chat", "--token", &bob, "--to", "1", "--linger", "2"];
    let bob_chat = imctl(&server, &bob_args, Some("hello alice\n\nsecond line\n"));
    let alice_side = async {
        server.state.wait_for_acks(3).await;
        a.send(text(bob_id, "hi from alice")).await.unwrap()
    };
    let (out, _) = tokio::join!(bob_chat, alice_side);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].starts_with('[') && lines[0].ends_with("] alice: earlier"), "{shown}");
    assert_eq!(lines[1], "✓ seq 2");
    assert_eq!(lines[2], "✓ seq 3");
    assert!(lines[3].ends_with("] alice: hi from alice"), "{shown}");
    assert_eq!(lines.len(), 4, "{shown}");
    assert!(stderr(&out).contains(&format!("chatting with alice ({alice_id})")), "{}", stderr(&out));
    // Bob marked alice's messages read.
    let list = a.list_conversations().await.unwrap().conversations;
    assert_eq!(list[0].max_seq, 4);
    let (b, _) = Client::connect(&options(&server, &bob)).await.unwrap();
    assert_eq!(b.list_conversations().await.unwrap().conversations[0].read_seq, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_chat_shows_a_sender_the_directory_does_not_know_by_id_and_goes_on() {
    let server = fake_server::start().await;
    let (alice_id, alice) = server.state.add_user("alice");
    let (bob_id, bob) = server.state.add_user("bob");
    server.state.hide_from_directory(alice_id);
    let (a, _a_events) = Client::connect(&options(&server, &alice)).await.unwrap();
    a.send(text(bob_id, "earlier")).await.unwrap();

    // Alice writes twice once bob's line is acked: both lines still come.
    let bob_args = ["chat", "--token", &bob, "--to", "1", "--linger", "2"];
    let bob_chat = imctl(&server, &bob_args, Some("hello\n"));
    let alice_side = async {
        server.state.wait_for_acks(2).await;
        a.send(text(bob_id, "still there?")).await.unwrap();
        a.send(text(bob_id, "and again")).await.unwrap()
    };
    let (out, _) = tokio::join!(bob_chat, alice_side);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].ends_with(&format!("] user {alice_id}: earlier")), "{shown}");
    assert_eq!(lines[1], "✓ seq 2");
    assert!(lines[2].ends_with(&format!("] user {alice_id}: still there?")), "{shown}");
    assert!(lines[3].ends_with(&format!("] user {alice_id}: and again")), "{shown}");
    assert_eq!(lines.len(), 4, "{shown}");
    let status = stderr(&out);
    assert!(status.contains(&format!("chatting with user {alice_id}:")), "{status}");
    assert!(!status.contains("warning"), "an unknown user is no failure of the directory: {status}");
    let (b, _) = Client::connect(&options(&server, &bob)).await.unwrap();
    assert_eq!(b.list_conversations().await.unwrap().conversations[0].read_seq, 4, "every line was read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_chat_without_the_user_directory_shows_ids_and_warns_once() {
    let server = fake_server::start().await;
    let (alice_id, alice) = server.state.add_user("alice");
    let (bob_id, bob) = server.state.add_user("bob");
    let (a, _a_events) = Client::connect(&options(&server, &alice)).await.unwrap();
    a.send(text(bob_id, "one")).await.unwrap();
    a.send(text(bob_id, "two")).await.unwrap();

    let out = imctl(&server, &["--grpc-url", "http://127.0.0.1:1", "chat", "--token", &bob, "--to", "1"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(lines[0].ends_with(&format!("] user {alice_id}: one")), "{shown}");
    assert!(lines[1].ends_with(&format!("] user {alice_id}: two")), "{shown}");
    let status = stderr(&out);
    let warning = "warning: user ids are shown instead of names: cannot reach the user service at http://127.0.0.1:1";
    assert_eq!(status.matches(warning).count(), 1, "{status}");
    assert!(status.contains(&format!("chatting with user {alice_id}:")), "{status}");
}
