//! The MySQL store against a real server: every suite of its ports, and what
//! only it promises (durability across a reconnect, typed failures when the
//! server cannot be reached, byte-exact keys, statements cut to fit the
//! server's packet limit).
//!
//! The server is MariaDB (or MySQL) at 127.0.0.1:3306 as root without a
//! password, database `im_test`; `IM_TEST_MYSQL_HOST`, `IM_TEST_MYSQL_USER`,
//! `IM_TEST_MYSQL_PASSWORD` and `IM_TEST_MYSQL_DATABASE` override them.
//! `scripts/servers.sh` starts it. Cases use fresh ids and names, so they share
//! the database, also with earlier runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use im_backends::MysqlStore;
use im_backends::conformance::fixtures::{message, private, unique, unique_name, users};
use im_config::DatabaseConfig;
use im_core::error::BackendError;
use im_core::message::AppendOutcome;
use im_core::ports::{CeilingStore, CreateUser, DataKeyStore, EpochStore, MessageStore, ReceiptStore, UserStore};
use im_core::{ClientMsgId, ConversationId, Seq, UserId};
use sqlx::Connection;

use crate::fixtures::MemoryAllocators;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The test server's settings, with a small pool: many test processes share
/// the server.
fn test_config() -> DatabaseConfig {
    DatabaseConfig {
        host: env_or("IM_TEST_MYSQL_HOST", "127.0.0.1:3306"),
        name: env_or("IM_TEST_MYSQL_DATABASE", "im_test"),
        user: env_or("IM_TEST_MYSQL_USER", "root"),
        password: env_or("IM_TEST_MYSQL_PASSWORD", "").into(),
        max_open_conns: 8,
        max_idle_conns: 1,
        conn_timeout: Duration::from_secs(10),
        ..DatabaseConfig::default()
    }
}

async fn connect_or_panic(config: &DatabaseConfig) -> MysqlStore {
    match MysqlStore::connect(config).await {
        Ok(store) => store,
        Err(e) => panic!(
            "cannot use the MySQL/MariaDB test server at {} as {} (database {}): {e}. \
             Start it with scripts/servers.sh, or point IM_TEST_MYSQL_HOST at one.",
            config.host, config.user, config.name
        ),
    }
}

/// A connection of its own to the test server, beside any store's pool.
async fn admin_connection(config: &DatabaseConfig, database: Option<&str>) -> sqlx::mysql::MySqlConnection {
    let (host, port) = config.host.rsplit_once(':').map_or((config.host.as_str(), 3306), |(host, port)| {
        (host, port.parse().expect("IM_TEST_MYSQL_HOST is host or host:port"))
    });
    let mut options = sqlx::mysql::MySqlConnectOptions::new().host(host).port(port).username(&config.user);
    if !config.password.is_empty() {
        options = options.password(config.password.expose());
    }
    if let Some(database) = database {
        options = options.database(database);
    }
    sqlx::mysql::MySqlConnection::connect_with(&options).await.expect("connect to the test server")
}

/// A store on the shared test database. Panics when the server is missing:
/// a suite never passes by skipping.
pub async fn mysql() -> (Arc<MysqlStore>, ()) {
    (Arc::new(connect_or_panic(&test_config()).await), ())
}

/// A database of its own, dropped when the guard is: retention deletes
/// store-wide, so its cases cannot share `im_test` with the other cases.
pub async fn mysql_own_database() -> (Arc<MysqlStore>, OwnDatabase) {
    own_database("retention").await
}

/// A database of its own for a data key case: the active key is store-wide.
pub async fn mysql_data_keys() -> (Arc<MysqlStore>, OwnDatabase) {
    own_database("data_keys").await
}

/// A fresh database `im_test_{purpose}_{unique}`, dropped with the guard.
async fn own_database(purpose: &str) -> (Arc<MysqlStore>, OwnDatabase) {
    // The process id too: nextest runs each case in a process of its own,
    // and two started in the same microsecond draw the same `unique()`.
    let name = format!("im_test_{purpose}_{}_{}", std::process::id(), unique());
    let config = DatabaseConfig { name, ..test_config() };
    let store = connect_or_panic(&config).await;
    (Arc::new(store), OwnDatabase(config))
}

/// Drops its database on drop (on a thread of its own: the test's runtime
/// may be shutting down).
pub struct OwnDatabase(DatabaseConfig);

impl OwnDatabase {
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let config = self.0.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async {
                let mut conn = admin_connection(&config, None).await;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS `{}`", config.name))
                    .execute(&mut conn)
                    .await
                    .expect("drop the test database");
            })
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop test database {}", self.0.name);
        }
    }
}

mod mysql_message_retention {
    im_backends::message_retention_suite!(super::mysql_own_database);
}

/// A small interval, so the suite crosses many ceilings.
const TEST_INTERVAL: u64 = 7;

pub async fn allocators_over_mysql() -> (Arc<MemoryAllocators>, ()) {
    let (store, ()) = mysql().await;
    (Arc::new(MemoryAllocators::new(store, TEST_INTERVAL)), ())
}

mod mysql_message_store {
    im_backends::message_store_suite!(super::mysql);
}

mod mysql_receipt_store {
    im_backends::receipt_store_suite!(super::mysql);
}

mod mysql_ceiling_store {
    im_backends::ceiling_store_suite!(super::mysql);
}

mod mysql_epoch_store {
    im_backends::epoch_store_suite!(super::mysql);
}

mod mysql_user_store {
    im_backends::user_store_suite!(super::mysql);
}

mod mysql_offline_store {
    im_backends::offline_store_suite!(super::mysql);
}

mod mysql_group_store {
    im_backends::group_store_suite!(super::mysql);
}

mod mysql_data_key_store {
    im_backends::data_key_store_suite!(super::mysql_data_keys);
}

mod mysql_reseal_store {
    im_backends::reseal_store_suite!(super::mysql);
}

mod memory_seq_allocator_over_mysql {
    im_backends::seq_allocator_suite!(super::allocators_over_mysql);
}

/// Everything acknowledged is in the database: a store connected again after
/// the first was dropped (not closed) finds it, and the migration is not run
/// twice.
#[tokio::test]
async fn everything_acknowledged_survives_a_reconnect() {
    let config = test_config();
    let [a, b] = users();
    let ab = private(a, b);
    let batch: Vec<_> = (1..=100).map(|seq| message(ab, a, seq, &unique_name("k"), 1000 + seq as i64)).collect();
    let (alice_name, bob_name) = (unique_name("alice"), unique_name("bob"));
    let scope = unique_name("scope");

    let store = connect_or_panic(&config).await;
    assert_eq!(store.append(&batch).await.unwrap(), vec![AppendOutcome::Stored; 100]);
    store.mark_read(b, ab, Seq(40)).await.unwrap();
    store.raise_ceiling(ab, Seq(128)).await.unwrap();
    assert_eq!(store.bump_epoch(&scope, 4).await.unwrap(), 5);
    let CreateUser::Created(alice) = store.create_user(&alice_name).await.unwrap() else { panic!("the name is fresh") };
    drop(store);

    let store = connect_or_panic(&config).await;
    let page = store.fetch(ab, Seq::ZERO, 500).await.unwrap();
    assert_eq!(page.messages, batch);
    assert_eq!(store.read_position(b, ab).await.unwrap(), Seq(40));
    assert_eq!(store.load_ceiling(ab).await.unwrap(), Seq(128));
    assert_eq!(store.current_epoch(&scope).await.unwrap(), 5);
    assert_eq!(store.user_by_name(&alice_name).await.unwrap(), Some(alice.clone()));
    // The unique keys are still there: a resend after the reconnect is
    // caught, and a taken name stays taken.
    assert_eq!(store.append(&batch[..1]).await.unwrap(), vec![AppendOutcome::Duplicate(batch[0].ack())]);
    assert_eq!(store.create_user(&alice_name).await.unwrap(), CreateUser::NameTaken);
    let CreateUser::Created(bob) = store.create_user(&bob_name).await.unwrap() else { panic!("the name is fresh") };
    assert!(bob.id > alice.id);
    store.close().await;
}

/// A host that refuses connections fails `connect` as unavailable (callers
/// answer UNAVAILABLE), and within `conn_timeout`.
#[tokio::test]
async fn a_host_that_refuses_connections_is_unavailable_quickly() {
    let config =
        DatabaseConfig { host: "127.0.0.1:1".to_owned(), conn_timeout: Duration::from_millis(500), ..test_config() };
    let started = Instant::now();
    let error = MysqlStore::connect(&config).await.expect_err("nothing listens on port 1");
    assert!(matches!(error, BackendError::Unavailable(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// A server that accepts connections but never answers (a hung host, a
/// black-holed route) is unavailable once `conn_timeout` has passed.
#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_after_conn_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config =
        DatabaseConfig { host: address.to_string(), conn_timeout: Duration::from_millis(300), ..test_config() };
    let started = Instant::now();
    let error = MysqlStore::connect(&config).await.expect_err("the server never greets");
    assert!(matches!(error, BackendError::Unavailable(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    silent.abort();
}

/// `connect` creates the database it is given when it does not exist.
#[tokio::test]
async fn a_missing_database_is_created() {
    let name = format!("im_test_new_{}_{}", std::process::id(), unique());
    let config = DatabaseConfig { name: name.clone(), ..test_config() };
    let store = connect_or_panic(&config).await;
    let [a, b] = users();
    let stored = message(private(a, b), a, 1, &unique_name("k"), 1);
    store.append(std::slice::from_ref(&stored)).await.unwrap();
    assert_eq!(store.fetch(private(a, b), Seq::ZERO, 10).await.unwrap().messages, vec![stored]);
    store.close().await;

    let mut conn = admin_connection(&config, None).await;
    sqlx::query(&format!("DROP DATABASE `{name}`")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// A user that may only read and write rows ('…'@'%'), created and dropped
/// by the test.
struct DmlUser {
    admin: DatabaseConfig,
    name: String,
}

impl DmlUser {
    const PASSWORD: &str = "dml-only-test";

    /// A user with SELECT, INSERT, UPDATE and DELETE on `databases` only.
    async fn create(admin: &DatabaseConfig, databases: &[&str]) -> DmlUser {
        Self::with_grants(admin, databases, "SELECT, INSERT, UPDATE, DELETE").await
    }

    /// A user with `grants` on `databases` only.
    async fn with_grants(admin: &DatabaseConfig, databases: &[&str], grants: &str) -> DmlUser {
        let name = format!("im_dml_{}", unique());
        let mut conn = admin_connection(admin, None).await;
        sqlx::raw_sql(&format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{}'", Self::PASSWORD))
            .execute(&mut conn)
            .await
            .expect("the test server's user may create users");
        for database in databases {
            sqlx::raw_sql(&format!("GRANT {grants} ON `{database}`.* TO '{name}'@'%'"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
        DmlUser { admin: admin.clone(), name }
    }

    fn config(&self, database: &str) -> DatabaseConfig {
        DatabaseConfig {
            user: self.name.clone(),
            password: Self::PASSWORD.into(),
            name: database.to_owned(),
            ..self.admin.clone()
        }
    }

    async fn drop_user(self) {
        let mut conn = admin_connection(&self.admin, None).await;
        sqlx::raw_sql(&format!("DROP USER '{}'@'%'", self.name)).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
}

/// The store's probe (`/ready`) writes: a server that answers reads but
/// refuses writes (here a user with SELECT only; in production a demoted,
/// read-only primary) fails it, where `SELECT 1` passed.
#[tokio::test]
async fn the_probe_fails_on_a_server_that_answers_but_refuses_writes() {
    let (migrated, database) = mysql_own_database().await;
    migrated.ping().await.expect("a writable store passes its probe");
    migrated.close().await;
    let reader = DmlUser::with_grants(&test_config(), &[database.name()], "SELECT").await;
    let store = connect_or_panic(&reader.config(database.name())).await;
    let [a, b] = users();
    store.fetch(private(a, b), Seq::ZERO, 10).await.expect("reads still answer");
    let refused = store.ping().await.expect_err("a store that cannot write passed its probe");
    assert!(refused.to_string().contains("UPDATE command denied"), "{refused}");
    store.close().await;
    reader.drop_user().await;
}

/// Migrated beforehand (`MysqlStore::migrate`, as `im-service migrate` does
/// with a user allowed DDL), a database serves every port to a user with
/// SELECT, INSERT, UPDATE and DELETE only: `connect` sees every migration
/// applied and sends no DDL. An unmigrated one refuses that user, saying so.
#[tokio::test]
async fn a_migrated_database_runs_with_a_user_without_ddl_rights() {
    let (migrated, _drop_migrated) = mysql_own_database().await;
    migrated.close().await;
    let migrated_name = _drop_migrated.name().to_owned();
    // Migrating again is a no-op, also through `migrate`.
    MysqlStore::migrate(&DatabaseConfig { name: migrated_name.clone(), ..test_config() }).await.unwrap();
    let empty_name = format!("im_test_empty_{}_{}", std::process::id(), unique());
    let mut conn = admin_connection(&test_config(), None).await;
    sqlx::raw_sql(&format!("CREATE DATABASE `{empty_name}`")).execute(&mut conn).await.unwrap();
    let _drop_empty = OwnDatabase(DatabaseConfig { name: empty_name.clone(), ..test_config() });
    let user = DmlUser::create(&test_config(), &[&migrated_name, &empty_name]).await;

    let store = connect_or_panic(&user.config(&migrated_name)).await;
    let [a, b] = users();
    let ab = private(a, b);
    let batch = [message(ab, a, 1, &unique_name("k"), 1_000), message(ab, b, 2, &unique_name("k"), 2_000)];
    assert_eq!(store.append(&batch).await.unwrap(), vec![AppendOutcome::Stored; 2]);
    store.mark_read(b, ab, Seq(1)).await.unwrap();
    store.raise_ceiling(ab, Seq(10)).await.unwrap();
    assert!(matches!(store.create_user(&unique_name("u")).await.unwrap(), CreateUser::Created(_)));
    // Retention deletes with the same rights.
    assert_eq!(store.expire_messages(5_000, 0, 10).await.unwrap().deleted, 1);
    assert_eq!(store.fetch(ab, Seq::ZERO, 10).await.unwrap().messages, batch[1..]);
    // Data keys: the activation's locking read and its swap, and a rewrap.
    let key = store.activate_data_key(None, b"wrapped", "arn:old", 1_000).await.unwrap();
    assert!(store.rewrap_data_key(key.id, b"wrapped", b"rewrapped", "arn:new").await.unwrap());
    store.close().await;

    let refused = MysqlStore::connect(&user.config(&empty_name)).await.expect_err("no right to create tables");
    assert!(refused.to_string().contains("denied"), "{refused}");
    assert!(matches!(MysqlStore::migrate(&user.config(&empty_name)).await, Err(e) if e.to_string().contains("denied")));
    user.drop_user().await;
}

/// Keys compare byte by byte, as in SQLite: client_msg_ids or names that
/// differ only in case or in a trailing space are different keys (a
/// case-insensitive or space-padding collation would take one for the other
/// and drop a new message as a resend).
#[tokio::test]
async fn keys_are_exact_bytes() {
    let (store, ()) = mysql().await;
    let [a, b] = users();
    let ab = private(a, b);
    let key = unique_name("k");
    let batch = [
        message(ab, a, 1, &key, 1),
        message(ab, a, 2, &format!("{key} "), 2),
        message(ab, a, 3, &key.to_uppercase(), 3),
    ];
    assert_eq!(store.append(&batch).await.unwrap(), vec![AppendOutcome::Stored; 3]);
    for stored in &batch {
        assert_eq!(store.find_by_client_msg_id(a, &stored.client_msg_id).await.unwrap(), Some(stored.ack()));
    }
    let missing = ClientMsgId::parse(&format!("{key}  ")).unwrap();
    assert_eq!(store.find_by_client_msg_id(a, &missing).await.unwrap(), None);

    let name = unique_name("carol");
    for variant in [name.clone(), format!("{name} "), name.to_uppercase()] {
        assert!(matches!(store.create_user(&variant).await.unwrap(), CreateUser::Created(_)), "{variant:?}");
        assert_eq!(store.user_by_name(&variant).await.unwrap().unwrap().name, variant);
    }
}

/// A batch larger than one multi-row statement is still one all-or-nothing
/// transaction: a seq clash in its last chunk leaves nothing of its first.
#[tokio::test]
async fn a_batch_spanning_many_statements_is_all_or_nothing() {
    let (store, ()) = mysql().await;
    let [a, b] = users();
    let ab = private(a, b);
    let mut batch: Vec<_> = (1..=1300).map(|seq| message(ab, a, seq, &unique_name("k"), seq as i64)).collect();
    batch.push(message(ab, b, 1300, &unique_name("k"), 1301));
    assert!(matches!(store.append(&batch).await, Err(BackendError::Other(_))));
    assert_eq!(store.max_seq(ab).await.unwrap(), Seq::ZERO);
    assert!(store.conversations_of(a).await.unwrap().is_empty());

    batch.pop();
    let outcomes = store.append(&batch).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == AppendOutcome::Stored));
    let page = store.fetch(ab, Seq::ZERO, 2000).await.unwrap();
    assert_eq!(page.messages.len(), 1300);
    assert_eq!(page.messages, batch);
}

/// A resend deep inside a large batch (past the first multi-row statement)
/// is found, and the messages around it are stored once.
#[tokio::test]
async fn a_resend_in_a_later_statement_of_a_batch_gets_the_first_ack() {
    let (store, ()) = mysql().await;
    let [a, b] = users();
    let ab = private(a, b);
    let earlier = message(ab, b, 1, &unique_name("k"), 1);
    store.append(std::slice::from_ref(&earlier)).await.unwrap();

    let mut batch: Vec<_> = (2..=700).map(|seq| message(ab, a, seq, &unique_name("k"), seq as i64)).collect();
    let mut resend = message(ab, b, 701, earlier.client_msg_id.as_str(), 701);
    resend.body = "resent".into();
    batch.insert(600, resend);
    let outcomes = store.append(&batch).await.unwrap();
    for (i, outcome) in outcomes.iter().enumerate() {
        let expected = if i == 600 { AppendOutcome::Duplicate(earlier.ack()) } else { AppendOutcome::Stored };
        assert_eq!(*outcome, expected, "message {i}");
    }
    let page = store.fetch(ab, Seq::ZERO, 1000).await.unwrap();
    assert_eq!(page.messages.len(), 700);
    assert_eq!(page.messages[0], earlier);
    assert_eq!(store.max_seq(ab).await.unwrap(), Seq(700));
}

/// A batch of large bodies is more bytes than the server takes in one packet
/// (`max_allowed_packet`, 16 MiB by default on MariaDB): it is cut into
/// statements that fit, and still committed as one.
#[tokio::test]
async fn a_batch_larger_than_a_packet_is_stored_whole() {
    let (store, ()) = mysql().await;
    let [a, b] = users();
    let ab = private(a, b);
    let body = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    let batch: Vec<_> = (1..=24)
        .map(|seq| {
            let mut m = message(ab, a, seq, &unique_name("k"), seq as i64);
            m.body = body.clone();
            m
        })
        .collect();
    assert_eq!(store.append(&batch).await.unwrap(), vec![AppendOutcome::Stored; 24]);
    let page = store.fetch(ab, Seq::ZERO, 100).await.unwrap();
    assert_eq!(page.messages, batch);
}

/// A write that cannot finish (here: stuck behind a row lock another session
/// holds) is unavailable once `write_timeout` has passed, and the store works
/// again once the lock is gone.
#[tokio::test]
async fn a_write_past_its_timeout_is_unavailable_and_the_store_recovers() {
    let config = DatabaseConfig { write_timeout: Duration::from_millis(300), ..test_config() };
    let store = connect_or_panic(&config).await;
    let [a, b] = users();
    let ab = private(a, b);
    store.mark_read(a, ab, Seq(1)).await.unwrap();

    let mut other = admin_connection(&config, Some(&config.name)).await;
    let mut lock = other.begin().await.unwrap();
    sqlx::query("SELECT read_seq FROM receipts WHERE user_id = ? AND conversation = ? FOR UPDATE")
        .bind(a.0)
        .bind(ab.to_string())
        .execute(&mut *lock)
        .await
        .unwrap();

    let started = Instant::now();
    let error = store.mark_read(a, ab, Seq(5)).await.expect_err("the row is locked");
    assert!(matches!(error, BackendError::Unavailable(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    lock.rollback().await.unwrap();
    other.close().await.unwrap();
    // The timed-out upsert may still have run on the server once the lock
    // went; either way the position is one of the two, and new calls work.
    assert_eq!(store.mark_read(a, ab, Seq(9)).await.unwrap(), Seq(9));
    assert_eq!(store.read_position(a, ab).await.unwrap(), Seq(9));
    store.close().await;
}

/// A store on a database of its own whose pool holds one connection, used
/// once (a read position of `user` in `conversation` at seq 1) and then
/// ended from the server's side, as a server restart would end it.
struct KilledConnection {
    store: MysqlStore,
    _database: OwnDatabase,
    user: UserId,
    conversation: ConversationId,
}

impl KilledConnection {
    async fn new(purpose: &str) -> Self {
        let name = format!("im_test_{purpose}_{}_{}", std::process::id(), unique());
        let config = DatabaseConfig { name, max_open_conns: 1, max_idle_conns: 1, ..test_config() };
        let store = connect_or_panic(&config).await;
        let database = OwnDatabase(config.clone());
        let [user, peer] = users();
        let conversation = private(user, peer);
        store.mark_read(user, conversation, Seq(1)).await.unwrap();
        let mut admin = admin_connection(&config, None).await;
        let id = pool_connection_id(&mut admin, &config.name).await;
        // KILL has no prepared form; `id` is a number the server gave.
        sqlx::raw_sql(&format!("KILL CONNECTION {id}")).execute(&mut admin).await.unwrap();
        Self { store, _database: database, user, conversation }
    }

    async fn mark_read(&self, seq: u64) -> Result<Seq, BackendError> {
        self.store.mark_read(self.user, self.conversation, Seq(seq)).await
    }
}

/// The id of the one connection open on `database`. The connection that
/// created the database may linger in the process list for a moment after
/// it closed.
async fn pool_connection_id(admin: &mut sqlx::mysql::MySqlConnection, database: &str) -> i64 {
    for _ in 0..100 {
        let ids: Vec<(i64,)> = sqlx::query_as("SELECT id FROM information_schema.processlist WHERE db = ?")
            .bind(database)
            .fetch_all(&mut *admin)
            .await
            .unwrap();
        if let [(id,)] = ids[..] {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the pool of database {database} did not settle on one connection");
}

/// A pooled connection that broke while idle for a while (a server restart,
/// a failover) is found by the ping before use and replaced: the call
/// succeeds.
#[tokio::test]
async fn a_connection_broken_while_idle_is_replaced_before_a_call_meets_it() {
    let killed = KilledConnection::new("idle_ping").await;
    // Longer than the store pings after (1 s idle).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(killed.mark_read(2).await.unwrap(), Seq(2));
    killed.store.close().await;
}

/// A connection that broke moments after its last call is not pinged again
/// before the next (that ping would double the round trips of every call):
/// at most that one call fails, as unavailable, and the connection is
/// replaced.
#[tokio::test]
async fn a_connection_broken_moments_ago_fails_at_most_one_call() {
    let killed = KilledConnection::new("recent_break").await;
    match killed.mark_read(2).await {
        Ok(seq) => assert_eq!(seq, Seq(2)),
        Err(error) => assert!(matches!(error, BackendError::Unavailable(_)), "{error:?}"),
    }
    assert_eq!(killed.mark_read(3).await.unwrap(), Seq(3));
    assert_eq!(killed.store.read_position(killed.user, killed.conversation).await.unwrap(), Seq(3));
    killed.store.close().await;
}
