//! `imctl audit list` against the in-memory stand-in server (tests/support,
//! `fake_audit.rs`): the records as JSON lines newest first, paging with the
//! hint on stderr, the conversation filter, the admin credential and its
//! hint, and usage errors.

// Shared with the other test files; this one uses a part of them.
#[allow(dead_code)]
#[path = "support/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "support/fake_server.rs"]
mod fake_server;

use common::{imctl, json_lines, stderr, stdout};
use fake_server::{ADMIN_TOKEN, FakeServer};
use im_proto::audit::audit_service_client::AuditServiceClient;
use im_proto::audit::{AuditRecord, ListAuditRecordsRequest};
use serde_json::{Value, json};

const HINT: &str = "more records: imctl audit list --before ";

fn record(msg_id: u64, conversation_id: &str, seq: u64, sender: u64, entries: &[&str]) -> AuditRecord {
    AuditRecord {
        msg_id,
        conversation_id: conversation_id.to_owned(),
        seq,
        sender,
        entries: entries.iter().map(|e| (*e).to_owned()).collect(),
        server_time_ms: 1_700_000_000_000 + msg_id as i64 * 1000,
    }
}

/// Five records in three conversations, seeded out of order; returns them
/// newest first, as JSON.
fn seed(server: &FakeServer) -> Vec<Value> {
    let records = [
        record(8, "p:1:2", 2, 2, &["badword"]),
        record(3, "p:1:2", 1, 1, &["badword"]),
        record(20, "g:7", 5, 1, &["foo"]),
        record(12, "p:2:3", 4, 3, &["Ünïcode wörd", "quote\"d"]),
        record(5, "g:7", 1, 2, &["foo", "bar baz"]),
    ];
    for r in records {
        server.state.add_audit_record(r);
    }
    vec![
        json!({"msg_id": 20, "conversation_id": "g:7", "seq": 5, "sender": 1, "entries": ["foo"],
               "server_time_ms": 1_700_000_020_000_i64}),
        json!({"msg_id": 12, "conversation_id": "p:2:3", "seq": 4, "sender": 3,
               "entries": ["Ünïcode wörd", "quote\"d"], "server_time_ms": 1_700_000_012_000_i64}),
        json!({"msg_id": 8, "conversation_id": "p:1:2", "seq": 2, "sender": 2, "entries": ["badword"],
               "server_time_ms": 1_700_000_008_000_i64}),
        json!({"msg_id": 5, "conversation_id": "g:7", "seq": 1, "sender": 2, "entries": ["foo", "bar baz"],
               "server_time_ms": 1_700_000_005_000_i64}),
        json!({"msg_id": 3, "conversation_id": "p:1:2", "seq": 1, "sender": 1, "entries": ["badword"],
               "server_time_ms": 1_700_000_003_000_i64}),
    ]
}

/// `imctl --admin-token <admin> audit list <extra>`.
async fn audit_list(server: &FakeServer, extra: &[&str]) -> std::process::Output {
    let args: Vec<&str> =
        ["--admin-token", ADMIN_TOKEN, "audit", "list"].into_iter().chain(extra.iter().copied()).collect();
    imctl(server, &args, None).await
}

/// The msg_ids of the JSON lines of a run.
fn msg_ids(out: &std::process::Output) -> Vec<u64> {
    json_lines(out).iter().map(|r| r["msg_id"].as_u64().unwrap()).collect()
}

/// The `--before` of the hint on stderr; `None` when stderr is empty.
fn next_before(out: &std::process::Output) -> Option<u64> {
    let err = stderr(out);
    if err.is_empty() {
        return None;
    }
    let n = err.strip_prefix(HINT).and_then(|rest| rest.strip_suffix('\n')).unwrap_or_else(|| panic!("{err:?}"));
    Some(n.parse().unwrap_or_else(|_| panic!("{err:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_every_record_newest_first_as_json_lines() {
    let server = fake_server::start().await;
    let expected = seed(&server);

    let out = audit_list(&server, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out), expected);
    // One page holds them all: no hint.
    assert_eq!(stderr(&out), "");
    // The fields in the documented order, one compact object a line.
    let first = stdout(&out).lines().next().unwrap().to_owned();
    assert_eq!(
        first,
        r#"{"msg_id":20,"conversation_id":"g:7","seq":5,"sender":1,"entries":["foo"],"server_time_ms":1700000020000}"#
    );
    assert_eq!(stdout(&out).lines().count(), 5);

    let empty = fake_server::start().await;
    let out = audit_list(&empty, &[]).await;
    assert_eq!((out.status.code(), stdout(&out), stderr(&out)), (Some(0), String::new(), String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_follows_the_hint_until_the_records_run_out() {
    let server = fake_server::start().await;
    let expected = seed(&server);

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut hints = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let before_arg = before.map(|b| b.to_string());
        let mut args = vec!["--limit", "2"];
        if let Some(b) = &before_arg {
            args.extend(["--before", b.as_str()]);
        }
        let out = audit_list(&server, &args).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let lines = json_lines(&out);
        pages.push(msg_ids(&out));
        seen.extend(lines);
        before = next_before(&out);
        hints.push(before);
        if before.is_none() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(pages, [vec![20, 12], vec![8, 5], vec![3]]);
    assert_eq!(hints, [Some(12), Some(5), None]);
    assert_eq!(seen, expected, "every record once, newest first");

    // A full last page still names a next one; that one is empty, without a hint.
    let out = audit_list(&server, &["--limit", "5"]).await;
    assert_eq!((msg_ids(&out), next_before(&out)), (vec![20, 12, 8, 5, 3], Some(3)));
    let out = audit_list(&server, &["--limit", "5", "--before", "3"]).await;
    assert_eq!((out.status.code(), stdout(&out), stderr(&out)), (Some(0), String::new(), String::new()));

    // --before alone starts below that msg_id, whether or not a record has it.
    let out = audit_list(&server, &["--before", "10"]).await;
    assert_eq!(json_lines(&out), expected[2..]);
    let out = audit_list(&server, &["--before", "8"]).await;
    assert_eq!(msg_ids(&out), [5, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_limit_a_page_is_50_records() {
    let server = fake_server::start().await;
    for id in 1..=51 {
        server.state.add_audit_record(record(id, "p:1:2", id, 1, &["w"]));
    }
    let out = audit_list(&server, &[]).await;
    assert_eq!(msg_ids(&out), (2..=51).rev().collect::<Vec<_>>());
    assert_eq!(stderr(&out), format!("{HINT}2\n"));
    let out = audit_list(&server, &["--before", "2"]).await;
    assert_eq!((msg_ids(&out), stderr(&out)), (vec![1], String::new()));
    let out = audit_list(&server, &["--limit", "1000"]).await;
    assert_eq!((msg_ids(&out).len(), stderr(&out)), (51, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_filter_lists_one_conversation_and_pages_within_it() {
    let server = fake_server::start().await;
    let expected = seed(&server);

    let out = audit_list(&server, &["--conversation", "g:7"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out), [expected[0].clone(), expected[3].clone()]);
    assert_eq!(stderr(&out), "");

    let out = audit_list(&server, &["--conversation", "p:2:3"]).await;
    assert_eq!(json_lines(&out), [expected[1].clone()]);
    let out = audit_list(&server, &["--conversation", "p:5:6"]).await;
    assert_eq!((out.status.code(), stdout(&out), stderr(&out)), (Some(0), String::new(), String::new()));

    // The hint of a filtered page keeps the filter: followed as printed, it
    // stays in the conversation.
    let out = audit_list(&server, &["--conversation", "p:1:2", "--limit", "1"]).await;
    assert_eq!(msg_ids(&out), [8]);
    assert_eq!(stderr(&out), "more records: imctl audit list --before 8 --conversation p:1:2\n");
    let out = audit_list(&server, &["--limit", "1", "--before", "8", "--conversation", "p:1:2"]).await;
    assert_eq!(json_lines(&out), [expected[4].clone()]);
    assert_eq!(stderr(&out), "more records: imctl audit list --before 3 --conversation p:1:2\n");
    let out = audit_list(&server, &["--limit", "1", "--before", "3", "--conversation", "p:1:2"]).await;
    assert_eq!((out.status.code(), stdout(&out), stderr(&out)), (Some(0), String::new(), String::new()));

    // A malformed id is the server's INVALID_ARGUMENT, without the token hint.
    let out = audit_list(&server, &["--conversation", "p:2:1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: INVALID_ARGUMENT: malformed conversation id \"p:2:1\"\n");
    assert_eq!(stdout(&out), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_credential_lists_and_a_refusal_says_where_the_token_came_from() {
    let server = fake_server::start().await;
    seed(&server);
    let (_, alice) = server.state.add_user("alice");

    let out = imctl(&server, &["--admin-token", &alice, "audit", "list"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "hint: the admin token came from --admin-token\n\
         error: PERMISSION_DENIED: this call needs the admin credential\n"
    );

    let out = imctl(&server, &["--admin-token", "wrong", "audit", "list"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "hint: the admin token came from --admin-token\nerror: UNAUTHENTICATED: invalid token\n");

    // The token file of a data directory: the hint names the file.
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("admin.token");
    std::fs::write(&file, format!("{alice}\n")).unwrap();
    let dir = data.path().to_str().unwrap();
    let out = imctl(&server, &["--data-dir", dir, "audit", "list"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "hint: the admin token came from {}\nerror: PERMISSION_DENIED: this call needs the admin credential\n",
            file.display()
        )
    );
    std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let out = imctl(&server, &["--data-dir", dir, "audit", "list", "--limit", "1"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!((msg_ids(&out), next_before(&out)), (vec![20], Some(20)));

    // No credential anywhere: nothing is asked of the server.
    let empty = tempfile::tempdir().unwrap();
    let out = imctl(&server, &["--data-dir", empty.path().to_str().unwrap(), "audit", "list"], None).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: no admin token: --admin-token and IM_ADMIN_TOKEN are not set"), "{err}");
    assert!(err.contains(&empty.path().join("admin.token").display().to_string()), "{err}");
    assert!(!err.contains("hint:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_goes_to_the_im_service_url() {
    let server = fake_server::start().await;
    seed(&server);
    // Not to --grpc-url (the user directory): nothing listens there.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args(["--grpc-url", "http://127.0.0.1:1", "--im-service-url", &server.grpc_url, "--timeout", "5"])
        .args(["--admin-token", ADMIN_TOKEN, "audit", "list", "--limit", "1"])
        .env_remove("IM_GRPC_URL")
        .env_remove("IM_SERVICE_URL")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(msg_ids(&out), [20]);

    let nowhere = FakeServer { grpc_url: "http://127.0.0.1:1".into(), ..server };
    let out = audit_list(&nowhere, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: cannot reach the IM service at http://127.0.0.1:1"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_usage_errors() {
    let server = fake_server::start().await;
    seed(&server);
    let usage: [(&[&str], &str); 6] = [
        (&["audit", "list", "--limit", "0"], "invalid value '0' for '--limit <LIMIT>': 0 is not in 1..=1000"),
        (&["audit", "list", "--limit", "1001"], "invalid value '1001' for '--limit <LIMIT>': 1001 is not in 1..=1000"),
        (&["audit", "list", "--limit", "-1"], "unexpected argument '-1' found"),
        (&["audit", "list", "--before", "new"], "invalid value 'new' for '--before <MSG_ID>'"),
        (&["audit", "list", "--conversation"], "a value is required for '--conversation <ID>'"),
        (&["audit"], "Usage: imctl audit"),
    ];
    for (args, expected) in usage {
        let args: Vec<&str> = ["--admin-token", ADMIN_TOKEN].iter().chain(args).copied().collect();
        let out = imctl(&server, &args, None).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
    }
}

/// The fake itself, called directly: what imctl cannot send (no credential,
/// a limit of 0 or above 1000) is answered as audit.proto says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_answers_as_the_proto_says() {
    let server = fake_server::start().await;
    for id in 1..=60 {
        server.state.add_audit_record(record(id, "g:1", id, 1, &["w"]));
    }
    let mut client = AuditServiceClient::connect(server.grpc_url.clone()).await.unwrap();
    let call = |limit: u32, token: Option<&str>| {
        let mut request = tonic::Request::new(ListAuditRecordsRequest { limit, ..Default::default() });
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };

    let page = client.list_audit_records(call(0, Some(ADMIN_TOKEN))).await.unwrap().into_inner();
    assert_eq!(page.records.len(), 50);
    assert_eq!((page.records[0].msg_id, page.records[49].msg_id, page.next_before), (60, 11, 11));
    let page = client.list_audit_records(call(1000, Some(ADMIN_TOKEN))).await.unwrap().into_inner();
    assert_eq!((page.records.len(), page.next_before), (60, 0));

    let refused = client.list_audit_records(call(1001, Some(ADMIN_TOKEN))).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (tonic::Code::InvalidArgument, "limit must be at most 1000"));
    let refused = client.list_audit_records(call(0, None)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let (_, alice) = server.state.add_user("alice");
    let refused = client.list_audit_records(call(0, Some(&alice))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}
