//! `imctl keys status|rotate|rewrap`, the binary, against a stand-in
//! `im.keys.v1.KeyService` of this file: the table and the JSON lines, the
//! rotated key, the rewrap counts (failures on stderr, exit 1), the admin
//! credential and its hint, and the server's FAILED_PRECONDITION as is.

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use im_proto::keys::key_service_server::{KeyService, KeyServiceServer};
use im_proto::keys::{
    DataKey, RewrapRequest, RewrapResponse, RotateRequest, RotateResponse, StatusRequest, StatusResponse,
};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

const ADMIN_TOKEN: &str = "keys-admin";
const DAY: i64 = 86_400_000;
const NOW: i64 = 1_000 * DAY;

struct FakeKeys {
    /// Answer every call as a node without encryption at rest.
    off: AtomicBool,
}

impl FakeKeys {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match request.metadata().get("authorization").and_then(|v| v.to_str().ok()) {
            Some(v) if v == format!("Bearer {ADMIN_TOKEN}") => {}
            Some(_) => return Err(Status::permission_denied("this call needs the admin credential")),
            None => return Err(Status::unauthenticated("missing credential")),
        }
        if self.off.load(Ordering::Relaxed) {
            return Err(Status::failed_precondition("encryption at rest is off (ENCRYPTION_ENABLED)"));
        }
        Ok(())
    }
}

fn key(id: u64, master: &str, created_ms: i64, retired_ms: i64, rows: u64) -> DataKey {
    DataKey { id, master_key_id: master.into(), created_ms, retired_ms, active: retired_ms == 0, rows }
}

#[tonic::async_trait]
impl KeyService for FakeKeys {
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(StatusResponse {
            keys: vec![
                key(1, "arn:old", NOW - 120 * DAY, NOW - 30 * DAY, 1500),
                key(2, "arn:new", NOW - 30 * DAY, 0, 42),
            ],
            clear_rows: 7,
            master_key_id: "arn:new".into(),
            now_ms: NOW,
            orphan_rows: 0,
        }))
    }

    async fn rotate(&self, request: Request<RotateRequest>) -> Result<Response<RotateResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(RotateResponse { active: Some(key(3, "arn:new", NOW, 0, 0)), previous_id: Some(2) }))
    }

    async fn rewrap(&self, request: Request<RewrapRequest>) -> Result<Response<RewrapResponse>, Status> {
        self.check(&request)?;
        // With --force the fake "fails" one key, to show how failures look.
        let force = request.get_ref().force;
        Ok(Response::new(RewrapResponse {
            rewrapped: 1,
            already_current: if force { 0 } else { 1 },
            failed: u64::from(force),
            failures: if force { vec!["data key 2: KMS unavailable: timed out".into()] } else { vec![] },
            master_key_id: "arn:new".into(),
        }))
    }
}

/// Serves the fake on a free port; returns its URL and the switch.
async fn start() -> (String, Arc<FakeKeys>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(FakeKeys { off: AtomicBool::new(false) });
    let service = KeyServiceServer::from_arc(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (url, fake)
}

/// Runs the imctl binary with `args` against `url`, in a clean environment.
async fn imctl(url: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_imctl"));
    command
        .args(["--im-service-url", url, "--timeout", "5", "--data-dir", "/nonexistent"])
        .args(args)
        .env_remove("IM_ADMIN_TOKEN")
        .env_remove("IM_DATA_DIR")
        .env_remove("IM_SERVICE_URL")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(20), command.output()).await.expect("imctl hung").unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rotate_and_rewrap_print_text_or_json() {
    let (url, _fake) = start().await;
    let admin = ["--admin-token", ADMIN_TOKEN];

    let out = imctl(&url, &[&admin[..], &["keys", "status"]].concat()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ID  ACTIVE  AGE   MASTER KEY  ROWS\n\
         1   no      120d  arn:old     1500\n\
         2   yes     30d   arn:new     42\n\
         7 row(s) in clear\n\
         some keys are wrapped by another master key than this node's (arn:new): imctl keys rewrap\n"
    );
    let out = imctl(&url, &[&admin[..], &["keys", "status", "--json"]].concat()).await;
    assert_eq!(
        json_lines(&out),
        [
            json!({"id": 1, "active": false, "created_ms": NOW - 120 * DAY, "retired_ms": NOW - 30 * DAY,
                   "age_secs": 120 * 86_400, "master_key_id": "arn:old", "rows": 1500}),
            json!({"id": 2, "active": true, "created_ms": NOW - 30 * DAY, "retired_ms": null,
                   "age_secs": 30 * 86_400, "master_key_id": "arn:new", "rows": 42}),
            json!({"clear_rows": 7, "orphan_rows": 0, "master_key_id": "arn:new"}),
        ]
    );

    let out = imctl(&url, &[&admin[..], &["keys", "rotate"]].concat()).await;
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "data key 3 is active now (master key arn:new); data key 2 retired (still readable)\n")
    );
    let out = imctl(&url, &[&admin[..], &["keys", "rotate", "--json"]].concat()).await;
    assert_eq!(json_lines(&out), [json!({"id": 3, "previous_id": 2, "master_key_id": "arn:new", "created_ms": NOW})]);

    let out = imctl(&url, &[&admin[..], &["keys", "rewrap"]].concat()).await;
    assert_eq!(
        (out.status.code(), stdout(&out).as_str(), stderr(&out).as_str()),
        (Some(0), "under master key arn:new: 1 data key(s) re-wrapped, 1 already current, 0 failed\n", "")
    );
    // A key that failed: the counts on stdout, the failure on stderr, exit 1.
    let out = imctl(&url, &[&admin[..], &["keys", "rewrap", "--force", "--json"]].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        json_lines(&out),
        [json!({"rewrapped": 1, "already_current": 0, "failed": 1,
                "failures": ["data key 2: KMS unavailable: timed out"], "master_key_id": "arn:new"})]
    );
    assert_eq!(
        stderr(&out),
        "data key 2: KMS unavailable: timed out\n\
         error: 1 data key(s) could not be re-wrapped; run `imctl keys rewrap` again\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_the_servers_status_with_exit_1() {
    let (url, fake) = start().await;
    let out = imctl(&url, &["--admin-token", "a-user-token", "keys", "status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "hint: the admin token came from --admin-token\n\
         error: PERMISSION_DENIED: this call needs the admin credential\n"
    );
    assert_eq!(stdout(&out), "");

    fake.off.store(true, Ordering::Relaxed);
    for command in ["status", "rotate", "rewrap"] {
        let out = imctl(&url, &["--admin-token", ADMIN_TOKEN, "keys", command]).await;
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert_eq!(
            stderr(&out),
            "error: FAILED_PRECONDITION: encryption at rest is off (ENCRYPTION_ENABLED)\n",
            "{command}"
        );
    }

    // No credential anywhere: said before connecting.
    let out = imctl(&url, &["keys", "status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: no admin token"), "{}", stderr(&out));
}
