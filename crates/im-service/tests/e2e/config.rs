//! Bad configuration fails at start-up, naming every bad key; nothing is
//! bound or written.

use std::process::Stdio;

use crate::support::Node;

#[test]
fn bad_values_are_all_reported_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra =
        vec![("MAX_MESSAGE_SIZE".to_string(), "lots".to_string()), ("LOG_FORMAT".to_string(), "xml".to_string())];
    let output = Node::command(&data, (1, 2, 3), &extra).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MAX_MESSAGE_SIZE"), "{stderr}");
    assert!(stderr.contains("LOG_FORMAT"), "{stderr}");
    assert!(!data.exists(), "nothing is created before the configuration is valid");
}

#[test]
fn unknown_keys_in_the_file_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "server:\n  grpc_port: 9094\n  grcp_port: 1\n").unwrap();
    let extra = vec![("IM_CONFIG".to_string(), file.display().to_string())];
    let output = Node::command(&dir.path().join("data"), (1, 2, 3), &extra).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.grcp_port"), "{stderr}");
}
