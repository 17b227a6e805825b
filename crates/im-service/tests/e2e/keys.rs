//! Key management of encryption at rest (issue 13): `im.keys.v1.KeyService`
//! (`imctl keys status|rotate|rewrap`) on a real embedded node with the local
//! master key: rows per data key, rotation on demand (old and new bodies
//! still sync in clear), rewrap (everything still readable after a restart,
//! the keys read again from the store), the admin credential only, and
//! `FAILED_PRECONDITION` with encryption off; and with a real KMS (moto,
//! `scripts/servers.sh`), rewrap after `KMS_KEY_ID` changed: the data keys
//! move to the new KMS key, readable with the old one disabled.

use std::time::Duration;

use im_proto::keys::key_service_client::KeyServiceClient;
use im_proto::keys::{DataKey, RewrapRequest, RewrapResponse, RotateRequest, StatusRequest, StatusResponse};
use sqlx::{ConnectOptions, Connection};
use tonic::transport::Channel;

use crate::support::{Node, ack, conversation_id};

async fn keys_client(node: &Node) -> KeyServiceClient<Channel> {
    KeyServiceClient::connect(format!("http://127.0.0.1:{}", node.grpc_port)).await.expect("grpc connect")
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    request(message, Some(token))
}

/// `message` with `authorization: Bearer <token>`, or with no credential.
fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn status(node: &Node) -> StatusResponse {
    keys_client(node).await.status(bearer(StatusRequest {}, &node.admin_token())).await.expect("status").into_inner()
}

async fn rewrap(node: &Node, force: bool) -> RewrapResponse {
    keys_client(node)
        .await
        .rewrap(bearer(RewrapRequest { force }, &node.admin_token()))
        .await
        .expect("rewrap")
        .into_inner()
}

/// (id, active, rows) of each key.
fn summary(keys: &[DataKey]) -> Vec<(u64, bool, u64)> {
    keys.iter().map(|k| (k.id, k.active, k.rows)).collect()
}

/// (id, wrapped) of every row of `data_keys`, read beside the node.
async fn wrapped_keys(node: &Node) -> Vec<(i64, Vec<u8>)> {
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(node.data_dir.join("im.db"))
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("open the node's SQLite file");
    let keys = sqlx::query_as("SELECT id, wrapped FROM data_keys ORDER BY id").fetch_all(&mut db).await.unwrap();
    db.close().await.ok();
    keys
}

#[tokio::test]
async fn status_rotate_and_rewrap_on_an_embedded_node_with_the_local_master_key() {
    let dir = tempfile::tempdir().unwrap();
    // A node killed leaves a gap in the seqs it had reserved; sync waits it
    // out for SYNC_GAP_GRACE.
    let mut node = Node::start_with(dir.path(), &[("ENCRYPTION_ENABLED", "true"), ("SYNC_GAP_GRACE", "1s")]).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut alice_phone = node.connect(&alice_token, "phone").await;
    let pair = conversation_id(alice, bob);
    let mut bodies = Vec::new();
    for i in 0..3 {
        let body = format!("before-rotation-{i}");
        ack(alice_phone.send_text(bob, &format!("b{i}"), &body).await);
        bodies.push(body);
    }

    // One key, active, sealing the three rows; none in clear.
    let first = status(&node).await;
    assert_eq!(first.keys.len(), 1, "{first:?}");
    let key1 = first.keys[0].id;
    assert_eq!(summary(&first.keys), [(key1, true, 3)]);
    assert_eq!((first.clear_rows, first.orphan_rows, first.keys[0].retired_ms), (0, 0, 0));
    assert!(first.master_key_id.starts_with("local:"), "{first:?}");
    assert_eq!(first.keys[0].master_key_id, first.master_key_id);
    assert!(first.now_ms >= first.keys[0].created_ms);

    // A user is refused; so is a call without a credential.
    let mut client = keys_client(&node).await;
    for (what, token) in [("a user's token", Some(alice_token.as_str())), ("no credential", None)] {
        let want = if token.is_some() { tonic::Code::PermissionDenied } else { tonic::Code::Unauthenticated };
        assert_eq!(client.status(request(StatusRequest {}, token)).await.unwrap_err().code(), want, "status, {what}");
        assert_eq!(client.rotate(request(RotateRequest {}, token)).await.unwrap_err().code(), want, "rotate, {what}");
        let rewrap = client.rewrap(request(RewrapRequest { force: true }, token)).await.unwrap_err();
        assert_eq!(rewrap.code(), want, "rewrap, {what}");
    }
    assert_eq!(status(&node).await.keys.len(), 1, "a refused rotate made a key");

    // Rotate: a second key active now, the first retired.
    let rotated = client.rotate(bearer(RotateRequest {}, &node.admin_token())).await.expect("rotate").into_inner();
    let active = rotated.active.expect("the new active key");
    let key2 = active.id;
    assert!(key2 > key1, "{active:?}");
    assert_eq!((rotated.previous_id, active.active, active.rows, active.retired_ms), (Some(key1), true, 0, 0));
    let after_rotation = status(&node).await;
    assert_eq!(summary(&after_rotation.keys), [(key1, false, 3), (key2, true, 0)]);
    assert_eq!(after_rotation.keys[0].retired_ms, active.created_ms, "retired when the new key became active");

    // New messages are sealed with the new key.
    for i in 0..2 {
        let body = format!("after-rotation-{i}");
        ack(alice_phone.send_text(bob, &format!("a{i}"), &body).await);
        bodies.push(body);
    }
    assert_eq!(summary(&status(&node).await.keys), [(key1, false, 3), (key2, true, 2)]);

    // Old and new bodies sync in clear, for both.
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let synced = |messages: Vec<im_proto::client::Message>| {
        messages.iter().map(|m| String::from_utf8(m.body.to_vec()).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(synced(bob_phone.sync_all(&pair, 0).await), bodies, "bob's sync after the rotation");
    assert_eq!(synced(alice_phone.sync_all(&pair, 0).await), bodies, "alice's sync after the rotation");

    // Rewrap: every key is already wrapped by this master key; with force,
    // each is wrapped again (new stored forms, same keys).
    let report = rewrap(&node, false).await;
    assert_eq!((report.rewrapped, report.already_current, report.failed), (0, 2, 0), "{report:?}");
    assert_eq!(report.master_key_id, first.master_key_id);
    let before = wrapped_keys(&node).await;
    let report = rewrap(&node, true).await;
    assert_eq!((report.rewrapped, report.already_current, report.failed), (2, 0, 0), "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    let after = wrapped_keys(&node).await;
    assert_eq!(before.iter().map(|k| k.0).collect::<Vec<_>>(), [key1 as i64, key2 as i64]);
    assert_eq!(after.iter().map(|k| k.0).collect::<Vec<_>>(), [key1 as i64, key2 as i64]);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old.1, new.1, "data key {} was not re-wrapped", old.0);
    }
    assert_eq!(synced(bob_phone.sync_all(&pair, 0).await), bodies, "bob's sync after the rewrap");

    // After a restart the keys are unwrapped again from their new forms.
    drop((alice_phone, bob_phone));
    node.kill9();
    node.restart().await;
    let mut bob_laptop = node.connect(&bob_token, "laptop").await;
    assert_eq!(synced(bob_laptop.sync_all(&pair, 0).await), bodies, "bob's sync after the restart");
    let restarted = status(&node).await;
    assert_eq!(summary(&restarted.keys), [(key1, false, 3), (key2, true, 2)], "{restarted:?}");
    // And the node seals with the rotated key still.
    let mut alice_laptop = node.connect(&alice_token, "laptop").await;
    ack(alice_laptop.send_text(bob, "after-restart", "after-restart").await);
    assert_eq!(summary(&status(&node).await.keys), [(key1, false, 3), (key2, true, 3)]);
}

#[tokio::test]
async fn with_encryption_off_every_call_is_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let (_, alice_token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let mut phone = node.connect(&alice_token, "phone").await;
    ack(phone.send_text(bob, "c1", "clear").await);
    let admin = node.admin_token();
    let mut client = keys_client(&node).await;
    let errors = [
        client.status(bearer(StatusRequest {}, &admin)).await.unwrap_err(),
        client.rotate(bearer(RotateRequest {}, &admin)).await.unwrap_err(),
        client.rewrap(bearer(RewrapRequest { force: true }, &admin)).await.unwrap_err(),
    ];
    for error in errors {
        assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
        assert!(error.message().contains("ENCRYPTION_ENABLED"), "{error:?}");
    }
    // The credential is still checked first.
    let denied = client.status(bearer(StatusRequest {}, &alice_token)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
}

/// The master key changes (a new `KMS_KEY_ID`; moto from `scripts/servers.sh`
/// speaks the KMS API): the data keys wrapped by the old one are re-wrapped
/// under the new one (KMS `ReEncrypt`), and everything stays readable with
/// the old KMS key disabled.
#[tokio::test]
async fn rewrap_moves_the_data_keys_to_a_new_kms_key() {
    use crate::encryption::{KMS, create_kms_key, kms_call, kms_env};
    let (old_key, new_key) = (create_kms_key().await, create_kms_key().await);
    let endpoint = format!("http://{KMS}");
    let env = |key: &str| -> Vec<(String, String)> {
        let mut env = kms_env(&endpoint, key);
        env.push(("SYNC_GAP_GRACE".into(), "1s".into()));
        env
    };
    let start = |env: Vec<(String, String)>, dir: std::path::PathBuf| async move {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Node::start_with(&dir, &pairs).await
    };
    let dir = tempfile::tempdir().unwrap();

    let mut node = start(env(&old_key), dir.path().to_path_buf()).await;
    let (alice, alice_token) = node.create_user("alice").await;
    let (bob, bob_token) = node.create_user("bob").await;
    let mut phone = node.connect(&alice_token, "phone").await;
    ack(phone.send_text(bob, "m1", "under-the-old-kms-key").await);
    let first = status(&node).await;
    assert_eq!(first.master_key_id, old_key);
    assert_eq!(summary(&first.keys), [(first.keys[0].id, true, 1)]);
    drop(phone);
    node.kill9();

    // The node on the new KMS key still opens the data key (Decrypt finds the
    // old KMS key from the blob), and shows it wrapped by the old one.
    let mut node = start(env(&new_key), dir.path().to_path_buf()).await;
    let moved = status(&node).await;
    assert_eq!(moved.master_key_id, new_key);
    assert_eq!(moved.keys.iter().map(|k| k.master_key_id.as_str()).collect::<Vec<_>>(), [old_key.as_str()]);
    // A second key, made under the new KMS key.
    let rotated = keys_client(&node)
        .await
        .rotate(bearer(RotateRequest {}, &node.admin_token()))
        .await
        .expect("rotate")
        .into_inner()
        .active
        .unwrap();
    assert_eq!(rotated.master_key_id, new_key);
    let mut phone = node.connect(&alice_token, "phone").await;
    ack(phone.send_text(bob, "m2", "under-the-new-kms-key").await);

    let report = rewrap(&node, false).await;
    assert_eq!((report.rewrapped, report.already_current, report.failed), (1, 1, 0), "{report:?}");
    let after = status(&node).await;
    assert!(after.keys.iter().all(|k| k.master_key_id == new_key), "{after:?}");
    let report = rewrap(&node, false).await;
    assert_eq!((report.rewrapped, report.already_current, report.failed), (0, 2, 0), "{report:?}");

    // The old KMS key disabled, a fresh start (nothing in cache): both
    // bodies still sync.
    let (code, body) = kms_call(KMS, "DisableKey", &format!(r#"{{"KeyId":"{old_key}"}}"#)).await;
    assert_eq!(code, 200, "DisableKey: {body}");
    drop(phone);
    node.kill9();
    node.restart().await;
    // Past the grace of the seq gap the first node's kill left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut bob_phone = node.connect(&bob_token, "phone").await;
    let bodies: Vec<String> = bob_phone
        .sync_all(&conversation_id(alice, bob), 0)
        .await
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect();
    assert_eq!(bodies, ["under-the-old-kms-key", "under-the-new-kms-key"]);
}
