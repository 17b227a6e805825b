//! The group side of imctl against the in-memory stand-in server
//! (tests/support): the `group` commands, `send --group`, `sync` and `chat`
//! of group conversations, and the group workload of the load generator.

#[path = "support/common.rs"]
mod common;
#[path = "support/fake_server.rs"]
mod fake_server;

use common::{TIMEOUT, admin, assert_all_delivered, bench_args, imctl, json_lines, stderr, stdout, words};
use fake_server::{ADMIN_TOKEN, FakeServer};
use serde_json::json;

/// Users alice (1), bob (2), carol (3), dave (4); returns their tokens.
fn four_users(server: &FakeServer) -> [String; 4] {
    ["alice", "bob", "carol", "dave"].map(|name| server.state.add_user(name).1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commands_manage_a_group_and_print_text_or_json() {
    let server = fake_server::start().await;
    let [alice, bob, carol, _dave] = four_users(&server);

    // Users are named by id or by name (looked up in the user directory).
    let out = imctl(&server, &["group", "create", "--token", &alice, "team", "--member", "bob"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "created group 1 \"team\": owner alice (1), 2 member(s), version 1; newcomers see messages from their join on\n\
         USER  NAME   ROLE    SEES AFTER SEQ\n\
         1     alice  owner   0\n\
         2     bob    member  0\n"
    );

    let out = imctl(&server, &["send", "--token", &bob, "--group", "1", "hello team"], None).await;
    assert_eq!(json_lines(&out)[0]["conversation_id"], "g:1");

    let out = imctl(&server, &["group", "add", "--token", &alice, "g:1", "zed", "3"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "error: no user is named \"zed\"");
    let out = imctl(&server, &["group", "add", "--token", &alice, "g:1", "carol", "4", "--json"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json_lines(&out)[0],
        json!({"group": 1, "version": 2, "change": "joined", "members": [
            {"user": 3, "name": "carol", "role": "member", "joined_after": 1},
            {"user": 4, "name": "dave", "role": "member", "joined_after": 1}]})
    );

    let out = imctl(&server, &["group", "role", "--token", &alice, "1", "carol", "admin"], None).await;
    assert_eq!(stdout(&out), "group 1 (version 3): carol (3) is now admin\n");
    let out = imctl(&server, &["group", "remove", "--token", &carol, "1", "dave"], None).await;
    assert_eq!(stdout(&out), "group 1 (version 4): dave (4) is no longer a member\n");
    let out = imctl(&server, &["group", "leave", "--token", &bob, "1", "--json"], None).await;
    assert_eq!(json_lines(&out)[0], json!({"group": 1, "version": 5, "change": "left", "users": [2]}));

    let out = imctl(&server, &["group", "members", "--token", &carol, "1", "--json"], None).await;
    let roster = &json_lines(&out)[0];
    assert_eq!((&roster["name"], &roster["owner"], &roster["version"]), (&json!("team"), &json!(1), &json!(5)));
    assert_eq!(
        roster["members"],
        json!([{"user": 1, "name": "alice", "role": "owner", "joined_after": 0},
               {"user": 3, "name": "carol", "role": "admin", "joined_after": 1}])
    );
    let out = imctl(&server, &["group", "members", "--token", &carol, "1"], None).await;
    assert_eq!(
        stdout(&out),
        "group 1 \"team\": owner alice (1), 2 member(s), version 5; newcomers see messages from their join on\n\
         USER  NAME   ROLE   SEES AFTER SEQ\n\
         1     alice  owner  0\n\
         3     carol  admin  1\n"
    );

    let out = imctl(&server, &["group", "list", "--token", &carol], None).await;
    assert_eq!(stdout(&out), "GROUP  ROLE   NAME\n1      admin  team\n");
    let out = imctl(&server, &["group", "list", "--token", &bob, "--json"], None).await;
    assert!(out.status.success() && stdout(&out).is_empty(), "bob left: {}", stdout(&out));
    let out = imctl(&server, &["group", "list", "--token", &bob], None).await;
    assert_eq!(stdout(&out), "you are in no group\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_keep_their_ids_when_a_name_cannot_be_found() {
    let server = fake_server::start().await;
    let [alice, _bob, _carol, _dave] = four_users(&server);
    imctl(&server, &["group", "create", "--token", &alice, "team", "--member", "2,4"], None).await;
    server.state.hide_from_directory(4);

    let out = imctl(&server, &["group", "members", "--token", &alice, "1"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "group 1 \"team\": owner alice (1), 3 member(s), version 1; newcomers see messages from their join on\n\
         USER  NAME   ROLE    SEES AFTER SEQ\n\
         1     alice  owner   0\n\
         2     bob    member  0\n\
         4     ?      member  0\n"
    );
    assert!(stderr(&out).is_empty(), "an unknown user is no failure of the directory: {}", stderr(&out));
    let out = imctl(&server, &["group", "members", "--token", &alice, "1", "--json"], None).await;
    let roster = &json_lines(&out)[0];
    assert_eq!((&roster["members"][0]["name"], &roster["members"][1]["name"]), (&json!("alice"), &json!("bob")));
    assert_eq!(roster["members"][2], json!({"user": 4, "name": null, "role": "member", "joined_after": 0}));

    // Without the user directory, the ids alone, and one warning.
    let args = ["--grpc-url", "http://127.0.0.1:1", "group", "members", "--token", &alice, "1"];
    let out = imctl(&server, &args, None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "group 1 \"team\": owner user 1, 3 member(s), version 1; newcomers see messages from their join on\n\
         USER  NAME  ROLE    SEES AFTER SEQ\n\
         1     ?     owner   0\n\
         2     ?     member  0\n\
         4     ?     member  0\n"
    );
    let warning = "warning: user ids are shown instead of names: cannot reach the user service at http://127.0.0.1:1";
    assert_eq!(stderr(&out).matches(warning).count(), 1, "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_errors_are_the_servers_status_with_exit_1() {
    let server = fake_server::start().await;
    let [alice, bob, _carol, _dave] = four_users(&server);
    imctl(&server, &["group", "create", "--token", &alice, "team", "--member", "2"], None).await;

    let refused: [(&[&str], &str); 6] = [
        (
            &["group", "add", "--token", &bob, "1", "3"],
            "error: PERMISSION_DENIED: only the owner and admins add members",
        ),
        (&["group", "leave", "--token", &alice, "1"], "error: FAILED_PRECONDITION: the owner cannot leave the group"),
        (&["group", "members", "--token", &alice, "9"], "error: NOT_FOUND: no group 9"),
        (&["group", "create", "--token", &alice, ""], "error: INVALID_ARGUMENT: a group name is 1 to 64 bytes"),
        (&["group", "list", "--token", "tok-99"], "error: UNAUTHENTICATED: invalid or missing token"),
        (
            &["send", "--token", "tok-3", "--group", "1", "hi"],
            "error: PERMISSION_DENIED: you are not a member of group 1",
        ),
    ];
    for (args, expected) in refused {
        let out = imctl(&server, args, None).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out).trim(), expected, "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}");
    }

    let nowhere = FakeServer { grpc_url: "http://127.0.0.1:1".into(), ..server };
    let out = imctl(&nowhere, &["group", "list", "--token", &alice], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach the IM service at http://127.0.0.1:1"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_usage_errors() {
    let server = fake_server::start().await;
    let usage: [(&[&str], &str); 6] = [
        (&["group", "add", "--token", "t", "1"], "<USER>..."),
        (&["group", "role", "--token", "t", "1", "2", "owner"], "invalid value 'owner'"),
        (&["group", "members", "--token", "t", "team"], "expected a group id such as 7 or g:7"),
        (&["send", "--token", "t", "--to", "2", "--group", "1", "x"], "cannot be used with"),
        (&["send", "--token", "t", "x"], "--to <USER>|--group <GROUP>"),
        (&["bench", "--group-size", "5", "--users", "9"], "cannot be used with"),
    ];
    for (args, expected) in usage {
        let out = imctl(&server, args, None).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_conversations_and_read_cover_group_conversations() {
    let server = fake_server::start().await;
    let [alice, bob, carol, _dave] = four_users(&server);
    imctl(&server, &["group", "create", "--token", &alice, "team", "--member", "2,3"], None).await;
    imctl(&server, &["send", "--token", &alice, "--group", "1", "one"], None).await;
    imctl(&server, &["send", "--token", &bob, "--to", "3", "private"], None).await;
    imctl(&server, &["send", "--token", &bob, "--group", "1", "two"], None).await;

    let out = imctl(&server, &["sync", "--token", &carol], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    let shown: Vec<(&str, u64, &str)> = lines
        .iter()
        .map(|m| (m["conversation_id"].as_str().unwrap(), m["to"].as_u64().unwrap(), m["body"].as_str().unwrap()))
        .collect();
    // The fake lists conversations by id.
    assert_eq!(shown, [("g:1", 0, "one"), ("g:1", 0, "two"), ("p:2:3", 3, "private")]);

    let out = imctl(&server, &["sync", "--token", &carol, "--conversation", "g:1", "--after", "1"], None).await;
    assert_eq!(json_lines(&out).len(), 1);
    let out = imctl(&server, &["read", "--token", &carol, "--conversation", "g:1", "--seq", "1"], None).await;
    assert_eq!(json_lines(&out)[0], json!({"conversation_id": "g:1", "read_seq": 1}));
    let out = imctl(&server, &["conversations", "--token", &carol], None).await;
    assert_eq!(
        json_lines(&out)[0],
        json!({"id": "g:1", "peer": 0, "group": 1, "max_seq": 2, "read_seq": 1, "unread": 1, "peer_read_seq": 0})
    );
    let out = imctl(&server, &["group", "read-status", "--token", &alice, "1", "1"], None).await;
    assert_eq!(stdout(&out), "seq 1 in group 1: read by 1 member(s): carol (3)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_a_group_over_pipes() {
    let server = fake_server::start().await;
    let [alice, bob, _carol, _dave] = four_users(&server);
    imctl(&server, &["group", "create", "--token", &alice, "team", "--member", "2,3"], None).await;
    imctl(&server, &["send", "--token", &alice, "--group", "1", "earlier"], None).await;

    // Carol answers once bob's line is acked.
    let bob_args = ["chat", "--token", &bob, "--group", "g:1", "--linger", "2"];
    let bob_chat = imctl(&server, &bob_args, Some("hi all\n"));
    let carol_side = async {
        server.state.wait_for_acks(2).await;
        imctl(&server, &["send", "--token", "tok-3", "--group", "1", "hi from carol"], None).await
    };
    let (out, sent) = tokio::join!(bob_chat, carol_side);
    assert!(out.status.success() && sent.status.success(), "{}{}", stderr(&out), stderr(&sent));
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].ends_with("] alice: earlier"), "{shown}");
    assert_eq!(lines[1], "✓ seq 2");
    assert!(lines[2].ends_with("] carol: hi from carol"), "{shown}");
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(stderr(&out).contains("chatting in group 1"), "{}", stderr(&out));

    let out = imctl(&server, &["conversations", "--token", &bob], None).await;
    assert_eq!(json_lines(&out)[0]["read_seq"], 3, "bob's chat marked the group read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_bench_reaches_every_member_and_times_the_last_one() {
    let server = fake_server::start().await;
    let args =
        bench_args("--group-size 5 --groups 2 --senders 2 --rate 200 --warmup 0.2 --duration 0.5 --body-size 64");
    let admin = admin(&server).await;
    let run = imctl::bench::group::execute(&admin, &server.grpc_url, &server.ws_url, TIMEOUT, None, &args);
    let summary = run.await.unwrap();
    // 200 msg/s for 0.7 s in total, from 4 senders.
    let counts = &summary.counts;
    assert!((120..=150).contains(&counts.sent), "sent {}", counts.sent);
    assert_all_delivered(counts, 4);
    assert!(summary.check.ok, "{:?}", summary.check);
    assert_eq!(summary.check.complete, counts.acked);
    assert_eq!(server.state.message_count() as u64, counts.acked);
    // Messages sent in the measured window: one last-member latency each, four push latencies each.
    let timed = summary.fanout_latency.count;
    assert!((80..=110).contains(&timed), "{timed}");
    assert_eq!(summary.push_latency.count, timed * 4);
    assert!(summary.fanout_latency.p50_us >= summary.push_latency.p50_us);
    assert!((350.0..=450.0 * 4.0).contains(&counts.delivered_per_s), "{}", counts.delivered_per_s);
    assert!(summary.human().contains("check       ok: all"), "{}", summary.human());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_bench_from_the_binary_prints_json_and_exits_0() {
    let server = fake_server::start().await;
    let pid = std::process::id();
    let args = format!(
        "--admin-token {ADMIN_TOKEN} bench --group-size 3 --rate 100 --warmup 0.1 --duration 0.3 --json --server-pid {pid}"
    );
    let out = imctl(&server, &words(&args), None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = &json_lines(&out)[0];
    assert_eq!(summary["config"]["group_size"], 3);
    assert_eq!(summary["check"]["ok"], true);
    assert_eq!(summary["delivered"], summary["expected_deliveries"]);
    assert!(summary["fanout_latency"]["p999_us"].is_u64() && summary["server_cpu"]["pid"].is_u64());
    assert!(stderr(&out).contains("1 group(s) of 3"), "{}", stderr(&out));
}
