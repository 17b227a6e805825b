//! Signing in with a password (issue 18): `POST /login` on the gateway's
//! HTTP side, in embedded mode (the built-in directory) and in production
//! (the gateway calls im-user's `Login`). The token it returns opens a
//! WebSocket and sends; a wrong password and an unknown name get the same
//! typed 401; the password reaches no log, even at debug level.

use serde_json::Value;

use crate::harness::ClusterBuilder;
use crate::support::{Client, Node, ack, http_post_json};

const PASSWORD: &str = "correct horse battery";

/// `POST /login` on `port`: the status and the JSON answer.
async fn login(port: u16, name: &str, password: &str) -> (u16, Value) {
    let body = serde_json::json!({ "name": name, "password": password }).to_string();
    let (status, answer) = http_post_json(port, "/login", &body).await.expect("POST /login");
    (status, serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}")))
}

/// The right password gets a token for `user`; a wrong one, and a name
/// nobody has, the same 401.
async fn signs_in_only_with_the_password(port: u16, name: &str, user: u64) -> String {
    let (status, body) = login(port, name, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["user_id"].as_u64(), body["name"].as_str()), (Some(user), Some(name)));
    for (who, password) in [(name, "wrong horse battery"), ("nobody", PASSWORD)] {
        let (status, refused) = login(port, who, password).await;
        assert_eq!(status, 401, "{who}: {refused}");
        assert_eq!(
            (refused["code"].as_str(), refused["reason"].as_str()),
            (Some("UNAUTHENTICATED"), Some("invalid_credentials"))
        );
        assert!(refused.get("token").is_none());
    }
    body["token"].as_str().expect("a token").to_owned()
}

#[tokio::test]
async fn embedded_a_password_signs_in_on_the_gateway_and_its_token_sends() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let node = Node::start_logging_to(&dir.path().join("data"), &[("LOG_LEVEL", "debug")], &log).await;
    let (alice, _) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    node.user_admin().await.set_password(alice, PASSWORD).await;

    let token = signs_in_only_with_the_password(node.ws_port, "alice", alice).await;
    let mut browser = Client::connect(&node.ws_url(), &token, "browser").await.expect("connect with the token");
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    ack(browser.send_text(bob, "c-1", "signed in").await);
    assert!(bob_phone.next_event(std::time::Duration::from_secs(5)).await.is_some(), "bob got the message");

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("signed in with a password"), "the sign-in is logged (at debug level)");
    assert!(!logged.contains(PASSWORD), "the password is in the log");
}

#[tokio::test]
async fn production_the_gateway_signs_in_through_the_user_service() {
    let cluster = ClusterBuilder::new().env_all("LOG_LEVEL", "debug").start().await;
    let alice = cluster.create_user("alice").await;
    let bob = cluster.create_user("bob").await;
    cluster.user_admin().await.set_password(alice.id, PASSWORD).await;

    let token = signs_in_only_with_the_password(cluster.ws_port(0), "alice", alice.id).await;
    let mut browser = Client::connect(cluster.ws_url(0), &token, "browser").await.expect("connect with the token");
    let mut bob_phone = Client::connect(cluster.ws_url(0), &bob.token, "phone").await.expect("connect");
    ack(browser.send_text(bob.id, "c-1", "signed in").await);
    assert!(bob_phone.next_event(std::time::Duration::from_secs(5)).await.is_some(), "bob got the message");

    for process in cluster.processes() {
        assert!(!process.log_text().contains(PASSWORD), "the password is in {}'s log", process.name);
    }
}
