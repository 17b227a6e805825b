//! `imctl keys status|rotate|rewrap|reencrypt`, the binary, against a
//! stand-in `im.keys.v1.KeyService` of this file: the table and the JSON
//! lines, the rotated key, the rewrap counts (failures on stderr, exit 1),
//! the re-encryption walk (windows chained, paced by `--rate`, an
//! unavailable node waited out, undecryptable rows named, exit 1), the admin
//! credential and its hint, and the server's FAILED_PRECONDITION as is.

use std::process::Output;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use im_proto::keys::key_service_server::{KeyService, KeyServiceServer};
use im_proto::keys::{
    DataKey, ReencryptRequest, ReencryptResponse, RewrapRequest, RewrapResponse, RotateRequest, RotateResponse,
    StatusRequest, StatusResponse,
};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

const ADMIN_TOKEN: &str = "keys-admin";
const DAY: i64 = 86_400_000;
const NOW: i64 = 1_000 * DAY;

struct FakeKeys {
    /// Answer every call as a node without encryption at rest.
    off: AtomicBool,
    /// Answer the next Reencrypt with UNAVAILABLE (then serve again).
    unavailable_once: AtomicBool,
    /// Every Reencrypt call: (after, limit, when).
    walk: Mutex<Vec<(u64, u32, Instant)>>,
}

/// The fake store's walk: rows to re-encrypt at positions 1..=ROWS_TO_DO
/// (Status's 1500 old-key rows and 7 clear ones), and one that cannot be
/// decrypted.
const ROWS_TO_DO: u64 = 1507;
const UNDECRYPTABLE: u64 = 700;

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

    async fn reencrypt(&self, request: Request<ReencryptRequest>) -> Result<Response<ReencryptResponse>, Status> {
        self.check(&request)?;
        let ReencryptRequest { after, limit } = *request.get_ref();
        self.walk.lock().unwrap().push((after, limit, Instant::now()));
        if self.unavailable_once.swap(false, Ordering::Relaxed) {
            return Err(Status::unavailable("the key service is unavailable, retry later"));
        }
        let window: Vec<u64> = (after + 1..=ROWS_TO_DO).take(limit as usize).collect();
        let failures: Vec<String> = window
            .iter()
            .filter(|&&row| row == UNDECRYPTABLE)
            .map(|row| format!("message {row} (seq 1 of p:1:2) cannot be decrypted: its stored body does not match"))
            .collect();
        Ok(Response::new(ReencryptResponse {
            active_key_id: 2,
            examined: window.len() as u64,
            resealed: window.len() as u64 - failures.len() as u64,
            changed_meanwhile: 0,
            failures,
            next: window.last().copied().unwrap_or(after),
            done: window.len() < limit as usize,
        }))
    }
}

/// Serves the fake on a free port; returns its URL and the switch.
async fn start() -> (String, Arc<FakeKeys>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(FakeKeys {
        off: AtomicBool::new(false),
        unavailable_once: AtomicBool::new(false),
        walk: Mutex::new(Vec::new()),
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencrypt_walks_window_after_window_at_the_rate_and_names_what_it_could_not_decrypt() {
    let (url, fake) = start().await;
    let args = ["--admin-token", ADMIN_TOKEN, "keys", "reencrypt", "--batch", "100", "--rate", "1000", "--json"];
    let out = imctl(&url, &args).await;
    // One row could not be decrypted: the counts, the row named, exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failure = "message 700 (seq 1 of p:1:2) cannot be decrypted: its stored body does not match";
    assert_eq!(
        json_lines(&out),
        [json!({"key": 2, "examined": 1507, "resealed": 1506, "changed_meanwhile": 0, "failed": 1,
                "failures": [failure], "last_position": 1507})]
    );
    let err = stderr(&out);
    assert!(err.starts_with("re-encrypting about 1507 row(s)\n"), "the rows to do, from Status: {err}");
    assert!(err.contains(&format!("{failure}\n")), "{err}");
    assert!(err.ends_with("error: 1 row(s) could not be decrypted and were left as they are (named above)\n"), "{err}");

    // Each window starts where the previous one ended, `--batch` rows each.
    let walk = fake.walk.lock().unwrap().clone();
    let afters: Vec<u64> = walk.iter().map(|(after, _, _)| *after).collect();
    assert_eq!(afters, (0..=15).map(|i| i * 100).collect::<Vec<u64>>());
    assert!(walk.iter().all(|(_, limit, _)| *limit == 100));
    // At most 1000 rows a second: the 16th window (after 1500 rows) comes
    // 1.5 s after the first.
    let took = walk.last().unwrap().2 - walk[0].2;
    assert!(took >= Duration::from_millis(1450), "paced: the last window came {took:?} after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencrypt_waits_out_an_unavailable_node_and_resumes_after_a_position() {
    let (url, fake) = start().await;
    fake.unavailable_once.store(true, Ordering::Relaxed);
    // From position 800 on (past the undecryptable row), big windows.
    let args = ["--admin-token", ADMIN_TOKEN, "keys", "reencrypt", "--batch", "1000", "--after", "800"];
    let out = imctl(&url, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "under data key 2: 707 row(s) re-encrypted, 0 changed meanwhile (left), 0 could not be decrypted; \
         walked to position 1507\n"
    );
    assert!(
        stderr(&out).contains("UNAVAILABLE: the key service is unavailable, retry later; retrying in 2s\n"),
        "{}",
        stderr(&out)
    );
    // The refused window was asked again, from the same place.
    let afters: Vec<u64> = fake.walk.lock().unwrap().iter().map(|(after, _, _)| *after).collect();
    assert_eq!(afters, [800, 800]);

    // Off: the server's FAILED_PRECONDITION as is, exit 1.
    fake.off.store(true, Ordering::Relaxed);
    let out = imctl(&url, &["--admin-token", ADMIN_TOKEN, "keys", "reencrypt"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: FAILED_PRECONDITION: encryption at rest is off (ENCRYPTION_ENABLED)\n");
}
