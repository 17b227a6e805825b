//! `im-service migrate`: brings the configured store's schema up to date and
//! exits 0 without binding anything (the test holds the node's ports, so a
//! process that bound one would fail); a store it cannot reach is exit 1
//! with the reason, a bad argument exit 2.

use std::process::{Output, Stdio};
use std::time::Duration;

use sqlx::Connection;

use crate::harness::{SHARED_MARIADB, require_server, unique};
use crate::support::Node;

/// Runs `im-service migrate` on `data` with `extra`, holding the ports it
/// would serve on.
fn migrate(data: &std::path::Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let held: Vec<std::net::TcpListener> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let ports: Vec<u16> = held.iter().map(|l| l.local_addr().unwrap().port()).collect();
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut command = Node::command(data, (ports[0], ports[1], ports[2]), &extra);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = command.output().unwrap();
    drop(held);
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn migrate_creates_the_sqlite_schema_and_exits_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = migrate(&data, &["migrate"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", data.join("im.db").display()))
        .await
        .expect("migrate created im.db");
    let (applied,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut db).await.unwrap();
    let (tables,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('messages', 'groups')")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((applied, tables), (shipped_migrations("sqlite"), 2));
    db.close().await.unwrap();
    // Nothing but the store: no token secret, no admin credential.
    assert!(!data.join("jwt.secret").exists() && !data.join("admin.token").exists());
    // Again: nothing to do, still 0; then a node serves on it.
    assert_eq!(migrate(&data, &["migrate"], &[]).status.code(), Some(0));
    let node = Node::start(&data).await;
    node.create_user("alice").await;
}

#[tokio::test]
async fn migrate_creates_and_migrates_a_mysql_database() {
    require_server("MariaDB", SHARED_MARIADB).await;
    let dir = tempfile::tempdir().unwrap();
    let name = unique("im_migrate");
    let mysql = [("DB_HOST", SHARED_MARIADB), ("DB_USER", "root"), ("DB_PASSWORD", ""), ("DB_NAME", name.as_str())];
    let output = migrate(&dir.path().join("data"), &["migrate"], &mysql);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let url = format!("mysql://root@{SHARED_MARIADB}/{name}");
    let mut db = sqlx::MySqlConnection::connect(&url).await.expect("migrate created the database");
    let (applied,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut db).await.unwrap();
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name IN ('messages', 'groups')",
    )
    .bind(&name)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((applied, tables), (shipped_migrations("mysql"), 2));
    // Again: nothing to do.
    assert_eq!(migrate(&dir.path().join("data"), &["migrate"], &mysql).status.code(), Some(0));
    sqlx::raw_sql(&format!("DROP DATABASE `{name}`")).execute(&mut db).await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn migrate_reports_an_unreachable_store_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let nothing_listens = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let output = migrate(&data, &["migrate"], &[("DB_HOST", &nothing_listens), ("DB_CONN_TIMEOUT", "2s")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(15));
    let text = stderr(&output);
    assert!(
        text.contains("im-service migrate") && text.contains("DB_HOST") && text.contains(&nothing_listens),
        "{text}"
    );

    let output = migrate(&data, &["migrate", "--bogus"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--bogus"));
    let output = migrate(&data, &["migrat"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unknown command"));
    // A bad configuration is refused before anything is touched.
    let output = migrate(&data, &["migrate"], &[("DB_CONN_TIMEOUT", "soon")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("DB_CONN_TIMEOUT"));
    assert!(!data.exists());
}

/// How many migrations the binary embeds for `dialect`: the files of
/// `crates/im-backends/migrations/{dialect}`.
fn shipped_migrations(dialect: &str) -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../im-backends/migrations").join(dialect);
    let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.filter(|entry| entry.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|ext| ext == "sql"))).count()
        as i64
}
