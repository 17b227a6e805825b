//! Users and groups over the client protocol (issue 18: the browser speaks
//! only the WebSocket): `users` finds names and ids, and the group requests
//! create, change and read groups with the same rules as
//! `im.v1.GroupService`, in embedded mode (the node's own groups) and in
//! production (the gateway process calls the node as the connection's user,
//! and im-user for names).

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::ClusterBuilder;
use crate::json_framing::{Socket, json_client, next_json};
use crate::support::Node;

/// A browser-like connection: JSON frames, numbered requests.
struct Browser {
    socket: Socket,
    next_req: u64,
    /// Pushes and receipts that arrived while waiting for an answer.
    events: Vec<Value>,
}

impl Browser {
    async fn connect(url: &str, token: &str) -> Self {
        Self { socket: json_client(url, token).await, next_req: 1, events: Vec::new() }
    }

    /// Sends `body` (one request, by its field name) and returns the answer
    /// under its reqId.
    async fn ask(&mut self, body: Value) -> Value {
        let req_id = self.next_req.to_string();
        self.next_req += 1;
        let mut frame = body;
        frame["reqId"] = json!(req_id);
        self.socket.send(Message::text(frame.to_string())).await.unwrap();
        loop {
            let answer = next_json(&mut self.socket).await;
            if answer["reqId"] == req_id {
                return answer;
            }
            self.events.push(answer);
        }
    }

    /// The next push (or one that already arrived).
    async fn next_push(&mut self) -> Value {
        if let Some(at) = self.events.iter().position(|e| e.get("push").is_some()) {
            return self.events.remove(at)["push"].clone();
        }
        loop {
            let event = next_json(&mut self.socket).await;
            if let Some(push) = event.get("push") {
                return push.clone();
            }
        }
    }
}

fn id(value: u64) -> Value {
    json!(value.to_string())
}

/// The scenario, wherever the gateway is: names, a group of three made,
/// listed, written to, read, refused to a plain member, and left.
async fn users_and_groups_work_over_the_websocket(url: &str, alice: (u64, &str), bob: (u64, &str), carol: (u64, &str)) {
    let mut a = Browser::connect(url, alice.1).await;
    let mut b = Browser::connect(url, bob.1).await;
    let mut c = Browser::connect(url, carol.1).await;

    // Names for ids and ids for names; unknown ones are left out.
    let found = a.ask(json!({"users": {"ids": [id(alice.0), "99999"], "names": ["bob", "carol", "nobody"]}})).await;
    let mut users: Vec<(String, String)> = found["users"]["users"]
        .as_array()
        .unwrap_or_else(|| panic!("{found}"))
        .iter()
        .map(|u| (u["id"].as_str().unwrap().to_owned(), u["name"].as_str().unwrap().to_owned()))
        .collect();
    users.sort();
    let mut expected = vec![
        (alice.0.to_string(), "alice".to_owned()),
        (bob.0.to_string(), "bob".to_owned()),
        (carol.0.to_string(), "carol".to_owned()),
    ];
    expected.sort();
    assert_eq!(users, expected);

    // alice makes a group with bob, then adds carol.
    let made = a.ask(json!({"createGroup": {"name": "trip", "members": [id(bob.0)]}})).await;
    let group = &made["group"];
    assert_eq!(group["group"]["name"], "trip", "{made}");
    assert_eq!(group["group"]["owner"], id(alice.0));
    let group_id = group["group"]["groupId"].as_str().expect("a group id").to_owned();
    let roles: Vec<(&str, &str)> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert!(
        roles.contains(&(&alice.0.to_string(), "OWNER")) && roles.contains(&(&bob.0.to_string(), "MEMBER")),
        "{made}"
    );
    let added = a.ask(json!({"addMembers": {"groupId": group_id, "users": [id(carol.0)]}})).await;
    assert_eq!(added["groupChanged"]["groupId"], group_id, "{added}");
    assert_eq!(added["groupChanged"]["version"], "2");
    let members = b.ask(json!({"listMembers": {"groupId": group_id}})).await;
    assert_eq!(members["group"]["members"].as_array().map(Vec::len), Some(3), "{members}");
    let listed = c.ask(json!({"listGroups": {}})).await;
    let carols = listed["groups"]["groups"].as_array().unwrap_or_else(|| panic!("{listed}"));
    assert!(carols.iter().any(|g| g["group"]["groupId"] == group_id && g["role"] == "MEMBER"), "{listed}");

    // A plain member may not remove anyone: the same refusal as over gRPC.
    let refused = b.ask(json!({"removeMember": {"groupId": group_id, "user": id(carol.0)}})).await;
    assert_eq!(refused["error"]["code"], "PERMISSION_DENIED", "{refused}");

    // A message to the group reaches bob; once bob read it, alice learns so.
    let sent = a.ask(json!({"send": {"toGroup": group_id, "clientMsgId": "g-1", "body": "aGkgYWxs"}})).await;
    let seq = sent["ack"]["seq"].as_str().unwrap_or_else(|| panic!("{sent}")).to_owned();
    let pushed = b.next_push().await;
    assert_eq!(pushed["conversationId"], format!("g:{group_id}"));
    let read = b.ask(json!({"markRead": {"conversationId": format!("g:{group_id}"), "seq": seq}})).await;
    assert_eq!(read["markRead"]["readSeq"], seq, "{read}");
    let status = a.ask(json!({"readStatus": {"groupId": group_id, "seq": seq}})).await;
    let readers = status["readStatus"]["readers"].as_array().unwrap_or_else(|| panic!("{status}"));
    assert!(readers.contains(&id(bob.0)), "{status}");
    assert_eq!(status["readStatus"]["detailed"], true);

    // carol leaves; the group is then as unknown to her as one that never was.
    let left = c.ask(json!({"leaveGroup": {"groupId": group_id}})).await;
    assert_eq!(left["groupChanged"]["version"], "3", "{left}");
    let gone = c.ask(json!({"listMembers": {"groupId": group_id}})).await;
    let never = c.ask(json!({"listMembers": {"groupId": "999999"}})).await;
    assert_eq!(gone["error"]["code"], "NOT_FOUND", "{gone}");
    let message = |answer: &Value, group: &str| answer["error"]["message"].as_str().unwrap().replace(group, "N");
    assert_eq!(message(&gone, &group_id), message(&never, "999999"), "{gone} {never}");

    // A request with no group is refused before anything is asked.
    let bad = a.ask(json!({"leaveGroup": {}})).await;
    assert_eq!(bad["error"]["code"], "INVALID_ARGUMENT", "{bad}");
}

#[tokio::test]
async fn embedded_users_and_groups_over_the_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let (carol, carol_token) = node.create_user("carol").await;
    users_and_groups_work_over_the_websocket(
        &node.ws_url(),
        (alice, &alice_token),
        (bob, &bob_token),
        (carol, &carol_token),
    )
    .await;
}

#[tokio::test]
async fn production_users_and_groups_over_the_websocket() {
    let cluster = ClusterBuilder::new().start().await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    let carol = cluster.create_user("carol").await;
    users_and_groups_work_over_the_websocket(
        cluster.ws_url(0),
        (alice.id, &alice.token),
        (bob.id, &bob.token),
        (carol.id, &carol.token),
    )
    .await;
}
