//! A replicated MariaDB pair of the test's own: a primary and a replica on
//! free ports, each in a fresh data directory (`mariadb-install-db`), with
//! GTID replication, semi-synchronous (`AFTER_SYNC`) or asynchronous, and the
//! failover steps an operator takes: demote the primary, promote the replica.
//!
//! The nodes log in as [`APP_USER`], which has no `SUPER` (nor `READ ONLY
//! ADMIN`): `read_only` stops its writes, as it stops an application's in
//! production; root would write through it.
//!
//! Each server is a [`PrivateMariadb`] started with the replication options.

use std::time::{Duration, Instant};

use crate::harness::PrivateMariadb;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection as _, Row as _};

/// The user the services log in as (empty password, from any host).
pub const APP_USER: &str = "im";
/// How long the replica may take to become the primary's semi-sync client.
const STARTUP: Duration = Duration::from_secs(30);
/// How long the primary waits for the replica's ack before it falls back to
/// asynchronous replication: longer than any test, so it never falls back.
const SEMI_SYNC_TIMEOUT_MS: u64 = 600_000;
/// How long a promotion waits for the replica to apply what it received.
const APPLY_WITHIN: Duration = Duration::from_secs(20);

/// How the primary replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// `AFTER_SYNC`: a commit returns once the replica has it.
    SemiSync,
    /// A commit returns at once; the replica follows when it can.
    Async,
}

/// One `mariadbd` of a pair, with the binary log on; killed when dropped.
pub struct Server {
    pub name: &'static str,
    pub port: u16,
    server: PrivateMariadb,
}

impl Server {
    async fn start(name: &'static str, server_id: u32, replication: &[String]) -> Server {
        let mut options = vec![
            format!("--server-id={server_id}"),
            // The binary log (and so replication) is what the pair is about;
            // synced at every commit, as the store asks of a primary.
            "--log-bin".to_owned(),
            format!("--log-basename={name}"),
            "--sync-binlog=1".to_owned(),
        ];
        options.extend(replication.iter().cloned());
        let server = PrivateMariadb::start_with(options).await;
        Server { name, port: server.port, server }
    }

    pub fn addr(&self) -> String {
        self.server.addr()
    }

    /// The end of its error log.
    pub fn error_log(&self) -> String {
        self.server.error_log()
    }

    /// SIGKILL: nothing is flushed that was not already.
    pub fn kill9(&mut self) {
        self.server.kill9();
    }

    /// A connection as root, with no database.
    pub async fn admin(&self) -> MySqlConnection {
        let options = MySqlConnectOptions::new().host("127.0.0.1").port(self.port).username("root");
        MySqlConnection::connect_with(&options).await.unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name))
    }

    /// Runs administrative statements (text protocol: `CHANGE MASTER` and
    /// friends have no prepared form). Only constants and port numbers go
    /// into them.
    pub async fn run(&self, statements: &str) {
        let mut conn = self.admin().await;
        sqlx::raw_sql(statements)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{} refused {statements:?}: {e}", self.name));
    }

    /// The GTIDs of every transaction in its binary log: it changes whenever
    /// anything is written here.
    pub async fn binlog_position(&self) -> String {
        let mut conn = self.admin().await;
        let (position,): (String,) = sqlx::query_as("SELECT @@gtid_binlog_pos").fetch_one(&mut conn).await.unwrap();
        position
    }

    /// `(sender, client_msg_id)` of every message in `database`.
    pub async fn stored_messages(&self, database: &str) -> Vec<(u64, String)> {
        let mut conn = self.admin().await;
        use_database(&mut conn, database).await;
        let rows = sqlx::query("SELECT sender, client_msg_id FROM messages")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("reading the messages on {}: {e}", self.name));
        rows.iter()
            .map(|row| {
                let id: Vec<u8> = row.get(1);
                (row.get(0), String::from_utf8(id).expect("client_msg_ids of the tests are text"))
            })
            .collect()
    }
}

/// `conn` with `database` as its default database. The name is one the
/// cluster made up (letters, digits, '_'), checked here before it is quoted.
async fn use_database(conn: &mut MySqlConnection, database: &str) {
    assert!(database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{database:?}");
    sqlx::raw_sql(&format!("USE `{database}`")).execute(conn).await.unwrap();
}

/// A primary and a replica replicating from it.
pub struct MariadbPair {
    pub primary: Server,
    pub replica: Server,
}

impl MariadbPair {
    /// Starts both servers and the replica's replication, then creates
    /// [`APP_USER`] on the primary; returns once the replica has it.
    pub async fn start(replication: Replication) -> MariadbPair {
        let semi_sync = replication == Replication::SemiSync;
        let on = |yes: bool| if yes { "ON" } else { "OFF" };
        let primary_args = vec![
            format!("--rpl-semi-sync-master-enabled={}", on(semi_sync)),
            "--rpl-semi-sync-master-wait-point=AFTER_SYNC".to_owned(),
            format!("--rpl-semi-sync-master-timeout={SEMI_SYNC_TIMEOUT_MS}"),
        ];
        let replica_args = vec![
            format!("--rpl-semi-sync-slave-enabled={}", on(semi_sync)),
            // Only replication writes here until it is promoted.
            "--read-only=ON".to_owned(),
        ];
        let (primary, replica) =
            tokio::join!(Server::start("primary", 1, &primary_args), Server::start("replica", 2, &replica_args));
        replica
            .run(&format!(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
                 MASTER_USE_GTID=slave_pos; START SLAVE",
                primary.port
            ))
            .await;
        let pair = MariadbPair { primary, replica };
        // Before the first write: a semi-sync primary without its client
        // would hold that commit for the whole timeout.
        if semi_sync {
            pair.wait_semi_sync_client().await;
        }
        pair.primary
            .run(&format!(
                "CREATE USER '{APP_USER}'@'%'; \
                 GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, REFERENCES, \
                       CREATE TEMPORARY TABLES, LOCK TABLES ON *.* TO '{APP_USER}'@'%'"
            ))
            .await;
        let written = pair.primary.binlog_position().await;
        pair.wait_applied(&written).await;
        pair
    }

    /// Until the primary counts the replica as its semi-sync client.
    async fn wait_semi_sync_client(&self) {
        let mut primary = self.primary.admin().await;
        let deadline = Instant::now() + STARTUP;
        loop {
            let (_, clients): (String, String) =
                sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")
                    .fetch_one(&mut primary)
                    .await
                    .unwrap();
            if clients == "1" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica never became a semi-sync client of the primary:\n{}",
                self.replica.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Until the replica has applied the transactions up to `position`
    /// (GTIDs).
    async fn wait_applied(&self, position: &str) {
        let mut replica = self.replica.admin().await;
        let (waited,): (i64,) = sqlx::query_as("SELECT MASTER_GTID_WAIT(?, ?)")
            .bind(position)
            .bind(APPLY_WITHIN.as_secs())
            .fetch_one(&mut replica)
            .await
            .unwrap();
        assert_eq!(waited, 0, "the replica did not apply up to {position}:\n{}", self.replica.error_log());
    }

    /// Stops the replica from receiving anything more (`STOP SLAVE
    /// IO_THREAD`): from now on it falls behind.
    pub async fn cut_replication(&self) {
        self.replica.run("STOP SLAVE IO_THREAD").await;
    }

    /// The demotion step of a planned failover: the primary stays up but
    /// takes no more writes from the application.
    pub async fn demote_primary(&self) {
        self.primary.run("SET GLOBAL read_only = ON").await;
    }

    /// Promotes the replica as an operator does: stops receiving, waits
    /// until every transaction it received is applied (its relay log holds
    /// what semi-sync acknowledged), forgets its primary, and takes writes.
    pub async fn promote_replica(&self) {
        self.replica.run("STOP SLAVE IO_THREAD").await;
        let received: String = {
            let mut replica = self.replica.admin().await;
            let row = sqlx::query("SHOW SLAVE STATUS").fetch_one(&mut replica).await.unwrap();
            row.try_get("Gtid_IO_Pos").unwrap()
        };
        self.wait_applied(&received).await;
        self.replica.run("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF").await;
    }
}
