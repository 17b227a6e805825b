//! Tracing in production mode: every process exports to a collector run by
//! the test ([`crate::otlp`]); one message is one trace, from the sender's
//! gateway through the node (and `im-user`, and Kafka) to the recipient's
//! gateway.

use std::collections::HashSet;
use std::time::Duration;

use im_proto::client::server_frame;

use crate::harness::ClusterBuilder;
use crate::otlp::{Collector, ReceivedSpan};
use crate::support::{Client, GroupApi, ack};

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
        "im.SendMessage",
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
        ("im.SendMessage", "im-service"),
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
