//! One process per data directory (issue 15): a second `im-service` started
//! on a directory a running one holds exits 2 naming the holder's pid, and
//! the first goes on serving; files and directory are the owner's only.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Node, ack, free_port};

#[tokio::test]
async fn a_second_process_on_a_held_data_dir_exits_2_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that existed open to others: made the owner's only.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = Node::start(dir.path()).await;
    let holder = node.child.id();

    let second = Node::command(dir.path(), (free_port(), free_port(), free_port()), &[])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a second im-service");
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || second.wait_with_output()).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "the second process did not stop at once");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "exit status {}: {stderr}", output.status);
    assert!(stderr.contains(&format!("in use by process {holder}")), "{stderr}");

    // The first is untouched: it still sends.
    let (alice, token) = node.create_user("alice").await;
    let (bob, _) = node.create_user("bob").await;
    let mut phone = node.connect(&token, "phone").await;
    assert!(ack(phone.send_text(bob, "after", "still here").await).seq > 0, "alice {alice}");

    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700, "the data directory");
    for file in ["im.db", "im.db-wal", "lock", "jwt.secret", "admin.token"] {
        let path = dir.path().join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        } else {
            assert!(file != "im.db" && file != "lock", "{file} missing");
        }
    }
}

/// A disk without room for the store's writes (here: a minimum no disk
/// meets) makes `/ready` fail and say why, though reads still answer.
#[tokio::test]
async fn a_disk_without_room_makes_the_node_unready_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let env = [("DATA_DIR_MIN_FREE_BYTES".to_owned(), u64::MAX.to_string())];
    let mut node = Node::command(dir.path(), ports, &env).spawn().expect("starting im-service");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Ok((status, body)) = crate::support::http_get(ports.2, "/ready").await
            && body.contains("DATA_DIR_MIN_FREE_BYTES")
        {
            assert_eq!(status, 503, "{body}");
            break body;
        }
        assert!(Instant::now() < deadline, "/ready never named the disk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["dependencies"]["sqlite"]["status"], "down", "{body}");
    node.kill().unwrap();
    node.wait().unwrap();
}
