//! Bounded connections and memory (issue 15): what one client, with or
//! without a token, can hold of a node, while a normal client goes on
//! being served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use im_proto::client::{self as pb, client_frame};
use prost::Message as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Client, GroupApi, Node, ack, conversation_id, error, http_get, metric};

/// Half-open connections the attacker holds, and connections one user
/// tries to open (the issue's figures).
const HALF_OPEN: usize = 20_000;
const ONE_USERS_CONNECTIONS: usize = 5_000;

/// The most each of a normal client's steps (/ready, connect, send, sync)
/// may take meanwhile.
const SERVED_WITHIN: Duration = Duration::from_secs(1);

/// Holds `count` TCP connections to host:port from `source`, never sending
/// a byte; prints how many it holds and how many failed, then waits for
/// stdin to close. A process of its own: this one's open-file limit (20,000
/// here, not raisable without CAP_SYS_RESOURCE) could not hold them all.
const HOLDER: &str = r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, source, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
held, failed = [], 0
for _ in range(count):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.bind((source, 0))
        s.connect((host, port))
        held.append(s)
    except OSError:
        failed += 1
        s.close()
print(len(held), failed, flush=True)
sys.stdin.read()
"#;

/// A process holding `count` silent connections (see [`HOLDER`]).
struct Holder(std::process::Child);

impl Holder {
    fn start(addr: SocketAddr, source: &str, count: usize) -> Holder {
        let child = std::process::Command::new("python3")
            .args(["-c", HOLDER, &addr.ip().to_string(), &addr.port().to_string(), source, &count.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the connection holder");
        Holder(child)
    }

    /// (held, failed), once all were attempted.
    async fn opened(mut self) -> (Holder, usize, usize) {
        let stdout = self.0.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
            line
        })
        .await
        .unwrap();
        let mut numbers = line.split_whitespace().map(|n| n.parse::<usize>().expect("held failed"));
        let (held, failed) = (numbers.next().unwrap(), numbers.next().unwrap());
        (self, held, failed)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP connection to `addr` from `source` (another loopback address, so
/// the attacker has budgets of its own).
async fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// Asks for /ready, connects, sends one message and syncs it back: the
/// longest of the four steps, and each step's time for the record.
async fn served(node: &Node, token: &str, to: u64, n: usize) -> (Duration, String) {
    let mut steps = [Duration::ZERO; 4];
    let mut step = Instant::now();
    let mut lap = |i: usize| {
        steps[i] = step.elapsed();
        step = Instant::now();
    };
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), http_get(node.http_port, "/ready"))
        .await
        .expect("/ready within 10 s")
        .expect("/ready answers");
    assert_eq!(status, 200);
    lap(0);
    let mut client = tokio::time::timeout(Duration::from_secs(10), Client::connect(&node.ws_url(), token, "probe"))
        .await
        .expect("connect within 10 s")
        .expect("a normal client connects");
    lap(1);
    let seq = ack(client.send_text(to, &format!("probe-{n}"), "still served?").await).seq;
    lap(2);
    match client.sync(&conversation_id(1, to), seq - 1).await {
        pb::server_frame::Body::Sync(page) => assert_eq!(page.messages.first().map(|m| m.seq), Some(seq)),
        other => panic!("sync answered {other:?}"),
    }
    lap(3);
    let [ready, connect, send, sync] = steps;
    (steps.into_iter().max().unwrap(), format!("/ready {ready:?}, connect {connect:?}, send {send:?}, sync {sync:?}"))
}

#[tokio::test]
async fn a_normal_client_is_served_while_others_hold_20000_half_open_and_5000_connections_of_one_user() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let (_mallory, mallory_token) = node.create_user("mallory").await;
    assert_eq!(alice, 1, "conversation_id(1, bob) below assumes alice is user 1");
    let ws: SocketAddr = format!("127.0.0.1:{}", node.ws_port).parse().unwrap();

    // Without a token: sockets opened from 127.0.0.2 that never send a byte,
    // half to the WebSocket port, half to the HTTP port.
    let http_port: SocketAddr = format!("127.0.0.1:{}", node.http_port).parse().unwrap();
    let half_open = tokio::spawn(async move {
        let holders =
            [Holder::start(ws, "127.0.0.2", HALF_OPEN / 2), Holder::start(http_port, "127.0.0.2", HALF_OPEN / 2)];
        let opened = futures::future::join_all(holders.map(Holder::opened)).await;
        let (held, failed) = opened.iter().fold((0, 0), |(h, f), (_, held, failed)| (h + held, f + failed));
        (opened.into_iter().map(|(holder, ..)| holder).collect::<Vec<_>>(), held, failed)
    });
    // With a token: one user's upgrades from 127.0.0.3, each kept open.
    let one_user = tokio::spawn({
        let (url, token) = (node.ws_url(), mallory_token.clone());
        async move {
            let mut open = Vec::new();
            let mut refused_429 = 0;
            for batch in 0..ONE_USERS_CONNECTIONS / 50 {
                let attempts = (0..50).map(|i| {
                    let (url, token) = (url.clone(), token.clone());
                    async move {
                        let mut request = format!("{url}?device=d{batch}-{i}").into_client_request().unwrap();
                        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
                        let tcp = connect_from("127.0.0.3", url_addr(&url)).await.expect("tcp connect");
                        tokio_tungstenite::client_async(request, tcp).await
                    }
                });
                for result in futures::future::join_all(attempts).await {
                    match result {
                        Ok((ws, _)) => open.push(ws),
                        Err(tokio_tungstenite::tungstenite::Error::Http(response))
                            if response.status().as_u16() == 429 =>
                        {
                            refused_429 += 1
                        }
                        Err(other) => panic!("one user's connection failed otherwise: {other}"),
                    }
                }
            }
            (open, refused_429)
        }
    });

    // Meanwhile a normal client connects, sends and syncs, again and again.
    let (mut slowest, mut slowest_steps) = (Duration::ZERO, String::new());
    let mut probes = 0;
    while !(half_open.is_finished() && one_user.is_finished()) || probes < 5 {
        let (took, steps) = served(&node, &alice_token, bob, probes).await;
        if took > slowest {
            (slowest, slowest_steps) = (took, steps);
        }
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (holders, held, failed) = half_open.await.unwrap();
    let (open, refused_429) = one_user.await.unwrap();
    eprintln!(
        "half-open: {held} held, {failed} failed to connect; one user: {} open, {refused_429} refused with 429; \
         normal client: {probes} probes, slowest step {slowest:?} ({slowest_steps})",
        open.len(),
    );
    assert_eq!(held + failed, HALF_OPEN);
    assert!(slowest < SERVED_WITHIN, "a normal client's step took {slowest:?} while the node was under attack");
    // Most extra upgrades get 429 before the upgrade; one that raced past
    // that check is upgraded and then closed at once with 4002 (the
    // client saw its 101): the server's count is the exact one, below.
    assert_eq!(open.len() + refused_429, ONE_USERS_CONNECTIONS);
    assert!(open.len() >= 64, "LIMIT_CONNECTIONS_PER_USER's default is 64, only {} connected", open.len());

    let http = node.http_port;
    // Closed at accept: past the pending budget, or past the rate of new
    // connections from one address.
    let refused = metric(http, "im_connections_refused_pending_per_ip_total ").await
        + metric(http, "im_rate_limited_total{limit=\"connections\"} ").await;
    assert!(refused >= (HALF_OPEN - 64) as f64 * 0.9, "refused only {refused} of {HALF_OPEN} half-open connections");
    assert_eq!(
        metric(http, "im_gateway_connections_refused_per_user_total ").await,
        (ONE_USERS_CONNECTIONS - 64) as f64,
        "the user holds exactly LIMIT_CONNECTIONS_PER_USER (64) connections"
    );
    // Connected: the user's 64, and the last probe (each probe, device
    // "probe", replaced the one before).
    assert_eq!(metric(http, "im_connected_clients ").await, 65.0);
    // The node holds the one user's 64 and the few half-open it let in,
    // not the thousands the clients hold.
    let open_now = metric(http, "im_connections_open ").await;
    assert!(open_now < 200.0, "the node holds {open_now} connections");
    drop((holders, open));
}

/// The host:port of a `ws://` URL.
fn url_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://").split('/').next().unwrap().parse().unwrap()
}

/// The node's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[tokio::test]
async fn a_client_that_asks_for_pages_and_never_reads_is_bounded_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("LIMIT_IDLE_TIMEOUT", "4s"), ("LIMIT_WS_PING_INTERVAL", "2s")]).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    // 120 messages of 9 KB: a sync page of about 1 MiB.
    let mut sender = node.connect(&bob_token, "phone").await;
    let body = "x".repeat(9 * 1024);
    for i in 0..120 {
        ack(sender.send_text(alice, &format!("big-{i}"), &body).await);
    }
    let before = rss_bytes(node.child.id());

    // 250 syncs of the whole conversation, on a socket never read.
    let mut request = format!("{}?device=greedy", node.ws_url()).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {alice_token}").parse().unwrap());
    let (mut greedy, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for req_id in 1..=250u64 {
        let sync = pb::ClientFrame {
            req_id,
            body: Some(client_frame::Body::Sync(pb::SyncRequest {
                conversation_id: conversation_id(alice, bob),
                after_seq: 0,
                limit: 500,
            })),
        };
        greedy.send(WsMessage::Binary(sync.encode_to_vec().into())).await.unwrap();
    }

    let mut peak = before;
    let started = Instant::now();
    let stalled = loop {
        peak = peak.max(rss_bytes(node.child.id()));
        if metric(node.http_port, "im_gateway_connections_stalled_total ").await >= 1.0 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the greedy connection was never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The client's socket shows the end once its buffered frames are read.
    let ended =
        tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = greedy.next().await {} }).await;
    assert!(ended.is_ok(), "the greedy connection stayed open");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(node.child.id());
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB; closed {stalled:?} after the requests",
        mib(before),
        mib(peak),
        mib(after)
    );
    // Unbounded, this was 1.3 GB; the budget is 8 MiB of replies (plus the
    // socket buffers and one page being built per request running).
    assert!(peak < before + 64 * 1024 * 1024, "RSS grew from {:.1} to {:.1} MiB", mib(before), mib(peak));
    assert!(after < before + 32 * 1024 * 1024, "RSS stayed at {:.1} MiB after the close", mib(after));

    // The node still serves.
    let mut phone = node.connect(&alice_token, "phone").await;
    assert!(ack(phone.send_text(bob, "after", "still here").await).seq > 0);
}

#[tokio::test]
async fn a_user_over_the_send_rate_is_refused_with_a_wait_and_the_resend_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("LIMIT_USER_MESSAGES_PER_SECOND", "5")]).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let mut phone = node.connect(&alice_token, "phone").await;
    // The burst: twice the rate.
    for i in 0..10 {
        ack(phone.send_text(bob, &format!("burst-{i}"), "hi").await);
    }
    let refused = error(phone.send_text(bob, "over", "one too many").await);
    assert_eq!(refused.code, pb::ErrorCode::ResourceExhausted as i32, "{refused:?}");
    assert_eq!(refused.reason, "rate_limited");
    assert!(refused.retry_after_ms > 0 && refused.retry_after_ms <= 200, "{refused:?}");
    // Nothing was stored; after the wait the same client_msg_id goes through.
    tokio::time::sleep(Duration::from_millis(u64::from(refused.retry_after_ms))).await;
    let stored = ack(phone.send_text(bob, "over", "one too many").await);
    assert_eq!(stored.seq, 11, "the refused send used no seq");
    assert_eq!(metric(node.http_port, "im_rate_limited_total{limit=\"messages\"} ").await, 1.0);
    // Another user is not held back by alice's limit.
    let (_, carol_token) = node.create_user("carol").await;
    let mut carol = node.connect(&carol_token, "phone").await;
    ack(carol.send_text(alice, "c-1", "hello").await);
}

#[tokio::test]
async fn group_changes_over_the_rate_are_refused_over_grpc_with_a_retry_hint() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("LIMIT_USER_GROUP_CHANGES_PER_MINUTE", "2")]).await;
    let (_, alice_token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let mut groups = GroupApi::connect(node.grpc_port, &alice_token).await;
    // The burst is twice the rate: a creation and three changes.
    let group = groups.create("first", &[bob], false).await;
    groups.remove(group, bob).await.unwrap();
    groups.add(group, &[bob]).await.unwrap();
    groups.remove(group, bob).await.unwrap();
    let status = groups.add(group, &[bob]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        groups.members(group).await.unwrap().members.iter().all(|m| m.user != bob),
        "the refused add changed the group"
    );
    // The rich details (RetryInfo, ErrorInfo), as a gRPC client reads them.
    let refused = im_proto::convert::from_status(&status);
    let wait = refused.retry_after.expect("a RetryInfo detail");
    assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(30), "{wait:?}");
    assert_eq!(refused.reason.map(|reason| reason.as_str()), Some("rate_limited"));
}
