//! Test harness: starts the real `im-service` binary on free loopback ports
//! with its own data directory, and talks to it like a client would.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use im_proto::client::{self as pb, client_frame, server_frame};
use im_proto::message::group_service_client::GroupServiceClient;
use im_proto::user::user_service_client::UserServiceClient;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One running `im-service` process.
pub struct Node {
    pub child: Child,
    pub data_dir: PathBuf,
    pub ws_port: u16,
    pub grpc_port: u16,
    pub http_port: u16,
    extra_env: Vec<(String, String)>,
    /// Where its stderr (the log) goes; the test's own stderr if none.
    log: Option<PathBuf>,
}

/// A port nothing listens on, for a child process to bind. Taken below the
/// kernel's ephemeral range (32768-60999 by default), not with `bind(0)`:
/// that returns an ephemeral port, and the outgoing connections of the tests
/// running in parallel take ephemeral ports too — one took such a port
/// between this probe and the child's bind ("Address already in use").
/// Ports go in sequence from a random start, so one test process never gets
/// the same port twice, and test processes running side by side rarely
/// share a stretch (the probe skips ports already bound).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    const FIRST: u16 = 20_000;
    const COUNT: u64 = 12_000;
    static NEXT: LazyLock<AtomicU64> =
        LazyLock::new(|| AtomicU64::new(RandomState::new().hash_one(std::process::id()) % COUNT));
    loop {
        let candidate = FIRST + (NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) as u16;
        if StdListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
    }
}

impl Node {
    /// Starts a node on fresh ports in `data_dir` and waits until it is ready.
    pub async fn start(data_dir: &Path) -> Node {
        Self::start_with(data_dir, &[]).await
    }

    pub async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Node {
        Self::start_logging(data_dir, env, None).await
    }

    /// [`Node::start_with`], its log written to `log` (appended).
    pub async fn start_logging_to(data_dir: &Path, env: &[(&str, &str)], log: &Path) -> Node {
        Self::start_logging(data_dir, env, Some(log.to_path_buf())).await
    }

    async fn start_logging(data_dir: &Path, env: &[(&str, &str)], log: Option<PathBuf>) -> Node {
        let mut node = Node {
            child: Command::new("true").spawn().unwrap(),
            data_dir: data_dir.to_path_buf(),
            ws_port: free_port(),
            grpc_port: free_port(),
            http_port: free_port(),
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log,
        };
        node.spawn().await;
        node
    }

    /// The command line a node is started with: a clean environment, so the
    /// developer's own variables (DB_HOST...) cannot leak into the test.
    pub fn command(data_dir: &Path, ports: (u16, u16, u16), extra: &[(String, String)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_im-service"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("IM_DATA_DIR", data_dir)
            .env("SERVER_WS_PORT", ports.0.to_string())
            .env("SERVER_GRPC_PORT", ports.1.to_string())
            .env("SERVER_HTTP_PORT", ports.2.to_string())
            // Tests run in parallel: no node may take the fixed 9090.
            .env("METRICS_PORT", free_port().to_string())
            .env("LOG_LEVEL", "warn")
            .env("LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }

    async fn spawn(&mut self) {
        let mut command =
            Self::command(&self.data_dir, (self.ws_port, self.grpc_port, self.http_port), &self.extra_env);
        if let Some(log) = &self.log {
            command.stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).expect("the log file"));
        }
        self.child = command.spawn().expect("starting im-service");
        let deadline = Instant::now() + Duration::from_secs(20);
        let ca = self.tls_ca();
        loop {
            if let Ok((200, _)) = http_get_with(self.http_port, "/ready", ca.as_deref()).await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("im-service exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "im-service not ready within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The CA its probes are checked against, when it serves TLS (started
    /// with `TLS_CA_FILE`).
    pub fn tls_ca(&self) -> Option<PathBuf> {
        self.extra_env.iter().find(|(key, _)| key == "TLS_CA_FILE").map(|(_, ca)| PathBuf::from(ca))
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the process again on the same ports and data directory, once
    /// it has stopped ([`Node::kill9`], or its own exit): a second process
    /// on the directory would exit at once, and the first one would answer
    /// for it.
    pub async fn restart(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        assert!(!running, "restart of a node that still runs: stop it first (kill9)");
        self.spawn().await;
    }

    /// The seqs that have an offline entry for `user` in `conversation`,
    /// from the node's SQLite file (read-only, beside the running node).
    pub async fn offline_seqs(&self, user: u64, conversation: &str) -> std::collections::BTreeSet<u64> {
        let sql = "SELECT seq FROM offline_entries WHERE user_id = ? AND conversation = ?";
        self.seqs_in_store(sql, i64::try_from(user).unwrap(), conversation).await
    }

    /// The seqs stored in `conversation` from `sender`, from the node's
    /// SQLite file: all of them, where sync would stop at a gap it has not
    /// yet waited out.
    pub async fn stored_seqs(&self, sender: u64, conversation: &str) -> std::collections::BTreeSet<u64> {
        let sql = "SELECT seq FROM messages WHERE sender = ? AND conversation = ?";
        self.seqs_in_store(sql, i64::try_from(sender).unwrap(), conversation).await
    }

    async fn seqs_in_store(&self, sql: &str, user: i64, conversation: &str) -> std::collections::BTreeSet<u64> {
        use sqlx::{ConnectOptions, Connection};
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(self.data_dir.join("im.db")).read_only(true);
        let mut connection = options.connect().await.expect("open the node's store read-only");
        let seqs: Vec<i64> = sqlx::query_scalar(sql)
            .bind(user)
            .bind(conversation)
            .fetch_all(&mut connection)
            .await
            .expect("read the node's store");
        connection.close().await.ok();
        seqs.into_iter().map(|seq| u64::try_from(seq).unwrap()).collect()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.ws_port)
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token")).expect("admin.token written at start").trim().into()
    }

    /// Creates a user through the admin gRPC API; returns (id, token).
    pub async fn create_user(&self, name: &str) -> (u64, String) {
        self.user_admin().await.create_user(name).await
    }

    pub async fn connect(&self, token: &str, device: &str) -> Client {
        Client::connect(&self.ws_url(), token, device).await.expect("websocket connect")
    }

    /// The admin side of the built-in user directory.
    pub async fn user_admin(&self) -> UserAdmin {
        UserAdmin::connect(&format!("127.0.0.1:{}", self.grpc_port), &self.admin_token()).await
    }
}

/// Admin calls of `im.user.v1.UserService` (the built-in directory, or `im-user`).
pub struct UserAdmin {
    client: UserServiceClient<tonic::transport::Channel>,
    token: String,
}

impl UserAdmin {
    pub async fn connect(addr: &str, admin_token: &str) -> UserAdmin {
        let client = UserServiceClient::connect(format!("http://{addr}")).await.expect("user service connect");
        UserAdmin { client, token: admin_token.to_owned() }
    }

    /// Creates `name`; returns (id, token).
    pub async fn create_user(&mut self, name: &str) -> (u64, String) {
        let request = self.request(im_proto::user::CreateUserRequest { name: name.into(), ..Default::default() });
        let response = self.client.create_user(request).await.expect("create user").into_inner();
        (response.user.expect("the created user").id, response.token)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {}", self.token).parse().unwrap());
        request
    }

    pub async fn disable(&mut self, user: u64) -> im_proto::user::User {
        let request = self.request(im_proto::user::UserStatusRequest { user_id: user });
        self.client.disable_user(request).await.expect("disable user").into_inner()
    }

    pub async fn enable(&mut self, user: u64) -> im_proto::user::User {
        let request = self.request(im_proto::user::UserStatusRequest { user_id: user });
        self.client.enable_user(request).await.expect("enable user").into_inner()
    }

    pub async fn revoke_tokens(&mut self, user: u64) -> im_proto::user::User {
        let request = self.request(im_proto::user::UserStatusRequest { user_id: user });
        self.client.revoke_tokens(request).await.expect("revoke tokens").into_inner()
    }

    pub async fn set_password(&mut self, user: u64, password: &str) -> im_proto::user::User {
        let request = self.request(im_proto::user::SetPasswordRequest { user_id: user, password: password.into() });
        self.client.set_password(request).await.expect("set password").into_inner()
    }

    pub async fn issue_token(&mut self, user: u64) -> Result<String, tonic::Status> {
        let request = self.request(im_proto::user::IssueTokenRequest { user_id: user, ttl_seconds: 0 });
        Ok(self.client.issue_token(request).await?.into_inner().token)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.1 GET: (status, body).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(port, path, None).await
}

/// [`http_get`], over TLS trusting the CA file `ca` when there is one (a
/// process started with `TLS_CERT_FILE`).
pub async fn http_get_with(port: u16, path: &str, ca: Option<&Path>) -> std::io::Result<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut raw = String::new();
    match ca {
        None => {
            let mut stream = tcp;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_string(&mut raw).await?;
        }
        Some(ca) => {
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("a server name");
            let mut stream = tls_connector(ca, &[b"http/1.1"]).connect(name, tcp).await?;
            stream.write_all(request.as_bytes()).await?;
            // A server may close without close_notify after the answer.
            if let Err(error) = stream.read_to_string(&mut raw).await
                && error.kind() != std::io::ErrorKind::UnexpectedEof
            {
                return Err(error);
            }
        }
    }
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// A bare HTTP/1.1 POST of a JSON body: (status, body).
pub async fn http_post_json(port: u16, path: &str, json: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{json}",
        json.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// A TLS client trusting the CA certificates of the PEM file `ca`, offering
/// `alpn`.
pub fn tls_connector(ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots.add(certificate.expect("a CA certificate")).expect("a usable CA");
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The value of the `/metrics` line that starts with `line_start` (a name
/// and its labels); panics when there is none.
pub async fn metric(port: u16, line_start: &str) -> f64 {
    metric_with(port, line_start, None).await
}

/// [`metric`], over TLS trusting `ca` when there is one.
pub async fn metric_with(port: u16, line_start: &str, ca: Option<&Path>) -> f64 {
    let (_, text) = http_get_with(port, "/metrics", ca).await.expect("/metrics answers");
    text.lines()
        .find_map(|line| line.strip_prefix(line_start).map(|value| value.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<server_frame::Body>>>>;

/// A WebSocket client: requests matched to responses by req_id; pushes and
/// receipts arrive on `events`.
pub struct Client {
    out: mpsc::UnboundedSender<WsMessage>,
    /// Fires when the server closes the connection.
    closed: Option<oneshot::Receiver<()>>,
    pending: Pending,
    next_req: u64,
    pub events: mpsc::UnboundedReceiver<server_frame::Body>,
}

/// The HTTP status of a refused handshake.
pub async fn handshake_status(url: &str, token: Option<&str>) -> u16 {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

impl Client {
    pub async fn connect(
        url: &str,
        token: &str,
        device: &str,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("{url}?device={device}").into_client_request()?;
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let routes = pending.clone();
        let (closed_tx, closed) = oneshot::channel();
        tokio::spawn(async move {
            let _closed = closed_tx;
            while let Some(Ok(msg)) = stream.next().await {
                let WsMessage::Binary(data) = msg else { continue };
                let frame = pb::ServerFrame::decode(data).expect("server frames decode");
                let Some(body) = frame.body else { continue };
                let waiter = (frame.req_id != 0).then(|| routes.lock().unwrap().remove(&frame.req_id)).flatten();
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(body);
                    }
                    None => {
                        let _ = events_tx.send(body);
                    }
                }
            }
        });
        Ok(Client { out, closed: Some(closed), pending, next_req: 0, events })
    }

    /// Sends a request and waits for the frame that answers it.
    pub async fn request(&mut self, body: client_frame::Body) -> server_frame::Body {
        self.next_req += 1;
        let req_id = self.next_req;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(req_id, tx);
        let frame = pb::ClientFrame { req_id, body: Some(body) };
        self.out.send(WsMessage::Binary(frame.encode_to_vec().into())).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx).await.expect("response within 10 s").expect("connection open")
    }

    /// Whether the server ends the connection within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let closed = self.closed.take().expect("asked once");
        tokio::time::timeout(within, closed).await.is_ok()
    }

    /// Sends raw bytes as one binary frame.
    pub fn send_raw(&self, data: Vec<u8>) {
        self.out.send(WsMessage::Binary(data.into())).unwrap();
    }

    pub async fn send_text(&mut self, to: u64, client_msg_id: &str, text: &str) -> server_frame::Body {
        self.request(client_frame::Body::Send(text_request(
            client_msg_id,
            text,
            pb::SendRequest { to_user: to, ..Default::default() },
        )))
        .await
    }

    pub async fn send_group_text(&mut self, group: u64, client_msg_id: &str, text: &str) -> server_frame::Body {
        self.request(client_frame::Body::Send(text_request(
            client_msg_id,
            text,
            pb::SendRequest { to_group: group, ..Default::default() },
        )))
        .await
    }

    pub async fn mark_read(&mut self, conversation: &str, seq: u64) -> server_frame::Body {
        self.request(client_frame::Body::MarkRead(pb::MarkReadRequest { conversation_id: conversation.into(), seq }))
            .await
    }

    pub async fn sync(&mut self, conversation: &str, after: u64) -> server_frame::Body {
        self.request(client_frame::Body::Sync(pb::SyncRequest {
            conversation_id: conversation.into(),
            after_seq: after,
            limit: 0,
        }))
        .await
    }

    /// The user's conversation list.
    pub async fn conversations(&mut self) -> Vec<pb::ConversationSummary> {
        match self.request(client_frame::Body::ListConversations(pb::ListConversationsRequest {})).await {
            server_frame::Body::Conversations(list) => list.conversations,
            other => panic!("list_conversations answered {other:?}"),
        }
    }

    /// Every message of a conversation after `after`, following pages.
    pub async fn sync_all(&mut self, conversation: &str, mut after: u64) -> Vec<pb::Message> {
        let mut all = Vec::new();
        loop {
            match self.sync(conversation, after).await {
                server_frame::Body::Sync(page) => {
                    if let Some(last) = page.messages.last() {
                        after = last.seq;
                    }
                    all.extend(page.messages);
                    if !page.has_more {
                        return all;
                    }
                }
                other => panic!("sync answered {other:?}"),
            }
        }
    }

    /// The next push or receipt, within `within`.
    pub async fn next_event(&mut self, within: Duration) -> Option<server_frame::Body> {
        tokio::time::timeout(within, self.events.recv()).await.ok().flatten()
    }
}

fn text_request(client_msg_id: &str, text: &str, to: pb::SendRequest) -> pb::SendRequest {
    pb::SendRequest {
        client_msg_id: client_msg_id.into(),
        body: text.as_bytes().to_vec().into(),
        content_type: "text/plain".into(),
        ..to
    }
}

/// `im.v1.GroupService` as one user calls it.
pub struct GroupApi {
    client: GroupServiceClient<tonic::transport::Channel>,
    token: String,
}

impl GroupApi {
    pub async fn connect(grpc_port: u16, token: &str) -> GroupApi {
        let client = GroupServiceClient::connect(format!("http://127.0.0.1:{grpc_port}")).await.expect("grpc connect");
        GroupApi { client, token: token.to_owned() }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {}", self.token).parse().unwrap());
        request
    }

    /// Creates a group; returns its id.
    pub async fn create(&mut self, name: &str, members: &[u64], history_visible: bool) -> u64 {
        let request = self.request(im_proto::message::CreateGroupRequest {
            name: name.into(),
            members: members.to_vec(),
            history_visible,
        });
        let roster = self.client.create_group(request).await.expect("create group").into_inner();
        roster.group.expect("a roster names its group").id
    }

    pub async fn add(&mut self, group: u64, users: &[u64]) -> Result<im_proto::user::MembershipChange, tonic::Status> {
        let request = self.request(im_proto::message::AddMembersRequest { group, users: users.to_vec() });
        self.client.add_members(request).await.map(tonic::Response::into_inner)
    }

    pub async fn remove(&mut self, group: u64, user: u64) -> Result<im_proto::user::MembershipChange, tonic::Status> {
        let request = self.request(im_proto::message::RemoveMemberRequest { group, user });
        self.client.remove_member(request).await.map(tonic::Response::into_inner)
    }

    pub async fn leave(&mut self, group: u64) -> Result<im_proto::user::MembershipChange, tonic::Status> {
        let request = self.request(im_proto::message::LeaveGroupRequest { group });
        self.client.leave_group(request).await.map(tonic::Response::into_inner)
    }

    pub async fn set_role(
        &mut self,
        group: u64,
        user: u64,
        role: im_proto::user::Role,
    ) -> Result<im_proto::user::MembershipChange, tonic::Status> {
        let request = self.request(im_proto::message::SetRoleRequest { group, user, role: role as i32 });
        self.client.set_role(request).await.map(tonic::Response::into_inner)
    }

    pub async fn members(&mut self, group: u64) -> Result<im_proto::user::Roster, tonic::Status> {
        let request = self.request(im_proto::message::ListMembersRequest { group });
        self.client.list_members(request).await.map(tonic::Response::into_inner)
    }

    pub async fn read_status(&mut self, group: u64, seq: u64) -> Result<im_proto::message::ReadStatus, tonic::Status> {
        let request = self.request(im_proto::message::ReadStatusRequest { group, seq });
        self.client.get_read_status(request).await.map(tonic::Response::into_inner)
    }
}

pub fn group_conversation(group: u64) -> String {
    format!("g:{group}")
}

pub fn ack(body: server_frame::Body) -> pb::SendAck {
    match body {
        server_frame::Body::Ack(ack) => ack,
        other => panic!("expected an ack, got {other:?}"),
    }
}

pub fn error(body: server_frame::Body) -> pb::Error {
    match body {
        server_frame::Body::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub fn conversation_id(a: u64, b: u64) -> String {
    format!("p:{}:{}", a.min(b), a.max(b))
}
