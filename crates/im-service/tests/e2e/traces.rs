//! Tracing in production mode: every process exports to a collector run by
//! the test ([`crate::otlp`]); one message is one trace, from the sender's
//! gateway through the node (and `im-user`, and Kafka) to the recipient's
//! gateway.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use im_proto::client::server_frame;

use crate::harness::ClusterBuilder;
use crate::otlp::{Collector, ReceivedSpan};
use crate::support::{Client, GroupApi, Node, ack, http_get};

const WAIT: Duration = Duration::from_secs(10);
/// Spans reach the collector a batch interval (1 s) after they end.
const EXPORTED: Duration = Duration::from_secs(20);

/// Waits for the push of `msg_id` on `client`.
async fn pushed(client: &mut Client, msg_id: u64) {
    loop {
        match client.next_event(WAIT).await {
            Some(server_frame::Body::Push(m)) if m.msg_id == msg_id => return,
            Some(_) => {}
            None => panic!("no push of message {msg_id} within {WAIT:?}"),
        }
    }
}

fn span<'a>(trace: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    trace.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} span"))
}

/// One root, and every other span's parent in the trace: the processes'
/// spans form one tree, not pieces that merely share an id.
fn assert_one_tree(trace: &[ReceivedSpan], root: &str) {
    let ids: HashSet<&[u8]> = trace.iter().map(|s| s.span_id.as_slice()).collect();
    let roots: Vec<&str> = trace.iter().filter(|s| s.parent_span_id.is_empty()).map(|s| s.name.as_str()).collect();
    assert_eq!(roots, [root], "one root");
    for s in trace.iter().filter(|s| !s.parent_span_id.is_empty()) {
        assert!(
            ids.contains(s.parent_span_id.as_slice()),
            "the parent of {} ({}) is not in the trace",
            s.name,
            s.service
        );
    }
}

#[tokio::test]
async fn one_message_is_one_trace_across_gateways_node_user_service_and_kafka() {
    let collector = Collector::start().await;
    let cluster = ClusterBuilder::new()
        .env_all("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env_all("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .start()
        .await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let carol = cluster.create_user("carol").await;
    let mut alice_phone = cluster.client(0, &alice, "phone").await;
    let mut bob_phone = cluster.client(1, &bob, "phone").await;

    // Private, to a device on the other gateway. Bob is new to node 1: his
    // id is checked with im-user, inside the message's trace.
    let private = ack(alice_phone.send_text(bob.id, "p1", "the secret body").await);
    pushed(&mut bob_phone, private.msg_id).await;
    let names = [
        "gateway.frame",
        "im.Relay",
        "user.GetUser",
        "im.send",
        "im.dedup",
        "im.seq",
        "im.commit",
        "im.push",
        "gateway.Push",
    ];
    let trace = collector.trace_of(private.msg_id, &names, EXPORTED).await;
    assert_one_tree(&trace, "gateway.frame");
    for (name, service) in [
        ("gateway.frame", "im-gateway"),
        ("im.Relay", "im-service"),
        ("user.GetUser", "im-user"),
        ("im.commit", "im-service"),
        ("gateway.Push", "im-gateway"),
    ] {
        assert_eq!(span(&trace, name).service, service, "{name} is made by {service}");
    }
    let send = span(&trace, "im.send");
    assert_eq!(send.attributes.get("seq"), Some(&private.seq.to_string()));
    assert_eq!(send.attributes.get("conversation"), Some(&private.conversation_id));
    // The gateways' pushes hang under the node's im.push.
    let pushes: HashSet<&[u8]> = trace.iter().filter(|s| s.name == "im.push").map(|s| s.span_id.as_slice()).collect();
    for push in trace.iter().filter(|s| s.name == "gateway.Push") {
        assert!(pushes.contains(push.parent_span_id.as_slice()), "gateway.Push is a child of im.push");
    }

    // Offline (carol has no device): through offline_msg on Kafka to the
    // offline worker, in the same trace.
    let offline = ack(alice_phone.send_text(carol.id, "o1", "for later").await);
    let trace = collector.trace_of(offline.msg_id, &["gateway.frame", "im.send", "offline.record"], EXPORTED).await;
    assert_one_tree(&trace, "gateway.frame");
    assert_eq!(span(&trace, "offline.record").attributes.get("msg_id"), Some(&offline.msg_id.to_string()));

    // A group message: through group_msg on Kafka to the fan-out and the
    // gateways' FanOut.
    let group =
        GroupApi::connect(cluster.node_grpc_port(0), &alice.token).await.create("traced", &[bob.id], false).await;
    let grouped = ack(alice_phone.send_group_text(group, "g1", "hello group").await);
    pushed(&mut bob_phone, grouped.msg_id).await;
    let trace = collector
        .trace_of(grouped.msg_id, &["gateway.frame", "im.send", "fanout.deliver", "gateway.FanOut"], EXPORTED)
        .await;
    assert_one_tree(&trace, "gateway.frame");

    // Nothing a span carries is a body or a credential.
    for s in collector.spans() {
        for (key, value) in &s.attributes {
            for secret in ["the secret body", "for later", "hello group", "Bearer", &alice.token, &bob.token] {
                assert!(!value.contains(secret), "{} {key}={value:?} carries {secret:?}", s.name);
            }
        }
    }
}

/// The dropped-span count of `reason` on a node's `/metrics`.
async fn spans_dropped(node: &Node, reason: &str) -> u64 {
    let (_, text) = http_get(node.http_port, "/metrics").await.unwrap();
    let prefix = format!("im_trace_spans_dropped_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
}

/// A collector that takes the connection and never answers (the worst
/// case: a refused connection fails at once). Sends are acknowledged as
/// fast as ever, the spans are counted as dropped, and SIGTERM still ends
/// the process promptly.
#[tokio::test]
async fn a_collector_that_never_answers_costs_counted_spans_not_sends() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            connections.push(tcp);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_TRACES_SAMPLER", "always_on")];
    let mut node = Node::start_with(dir.path(), &env).await;
    let (_, alice_token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let mut alice = node.connect(&alice_token, "phone").await;

    // An export call waits up to its 5 s timeout: a send that waited for
    // one would take that long.
    let started = Instant::now();
    for i in 0..200 {
        ack(alice.send_text(bob, &format!("m{i}"), "hello").await);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "200 sends took {took:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    while spans_dropped(&node, "export_failed").await == 0 {
        assert!(Instant::now() < deadline, "no export failure counted within 20 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let pid = node.child.id().to_string();
    let stopping = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        // The servers' stop, then at most 2 s for the spans still queued.
        assert!(stopping.elapsed() < Duration::from_secs(8), "no exit within 8 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    held.abort();
}

/// The spans the collector holds once no more arrive (exports come in
/// batches a second apart).
async fn settled_spans(collector: &Collector) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + EXPORTED;
    let mut seen = collector.spans().len();
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = collector.spans().len();
        if now != seen {
            (seen, stable_since) = (now, Instant::now());
        } else if stable_since.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    collector.spans()
}

#[tokio::test]
async fn the_gateway_samples_each_message_once_and_the_node_starts_no_trace_of_its_own() {
    const SENDS: usize = 300;
    let collector = Collector::start().await;
    let cluster = ClusterBuilder::new()
        .env_all("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env_all("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env_all("OTEL_TRACES_SAMPLER_ARG", "0.5")
        .start()
        .await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let mut alice_phone = cluster.client(0, &alice, "phone").await;
    for n in 0..SENDS {
        ack(alice_phone.send_text(bob.id, &format!("m{n}"), "sampled or not").await);
    }
    let spans = settled_spans(&collector).await;

    // Unsampled sends carry a not-sampled context: no process starts a
    // trace of its own for them, so every root is a gateway's.
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    for root in &roots {
        assert_eq!((root.name.as_str(), root.service.as_str()), ("gateway.frame", "im-gateway"), "a root");
    }
    // Half the sends are traced: the ratio is applied once (twice would
    // trace a quarter). 300 sends at 0.5: 150 ± 4.6 standard deviations.
    let traced = spans.iter().filter(|s| s.name == "im.send").count();
    assert_eq!(traced, roots.len(), "each traced send has its gateway root");
    assert!((110..=190).contains(&traced), "{traced} of {SENDS} sends traced at a ratio of 0.5");
}
