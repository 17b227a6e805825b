//! [`NodeClaim`]: a node's number held in etcd while the node runs, so two
//! nodes started with the same `NODE_ID` (which is part of every message id)
//! cannot both run: the second fails at start-up naming the key.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use im_config::EtcdConfig;
use im_core::error::BackendError;
use im_core::ports::BackendResult;
use tokio::task::JoinHandle;

use super::error::{map_etcd, timed_out};

/// `{prefix}/nodes/{node_id}`, put with a lease this process keeps alive.
pub struct NodeClaim {
    client: Client,
    lease: i64,
    key: String,
    keep_alive: JoinHandle<()>,
}

impl NodeClaim {
    /// Claims `node_id` under `prefix` with a lease of `ttl` (whole seconds,
    /// at least 1). A claim held by a live process is an error that names the
    /// key; one left by a process that died is waited for until its lease
    /// expires (at most `ttl`).
    pub async fn acquire(
        config: &EtcdConfig,
        prefix: &str,
        node_id: u16,
        ttl: Duration,
        timeout: Duration,
    ) -> BackendResult<Self> {
        let key = format!("{prefix}/nodes/{node_id}");
        let options = super::connect::base_options(config)?.with_connect_timeout(timeout).with_timeout(timeout);
        let mut client = super::connect::connect(config, options, timeout).await?;
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        // Put only if the key does not exist (create_revision 0). A claim
        // left by a node that was killed is still there until its lease runs
        // out, so a restarted node waits up to one TTL for it; a claim that
        // outlives that wait belongs to a live node. Each attempt has a lease
        // of its own: one granted before a wait as long as the TTL would
        // expire before the put that finally succeeds ("requested lease not
        // found").
        let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(1);
        let lease =
            loop {
                let lease = tokio::time::timeout(timeout, client.lease_grant(ttl_secs, None))
                    .await
                    .map_err(|_| timed_out("lease grant"))?
                    .map_err(map_etcd)?
                    .id();
                let claim = Txn::new().when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)]).and_then([
                    TxnOp::put(key.as_str(), std::process::id().to_string(), Some(PutOptions::new().with_lease(lease))),
                ]);
                let claimed = tokio::time::timeout(timeout, client.txn(claim))
                    .await
                    .map_err(|_| timed_out("node claim"))?
                    .map_err(map_etcd)?
                    .succeeded();
                if claimed {
                    break lease;
                }
                let _ = client.lease_revoke(lease).await;
                if tokio::time::Instant::now() >= deadline {
                    return Err(BackendError::other(format!(
                        "NODE_ID {node_id} is held by another running node (etcd key {key}); give every node its own \
                     NODE_ID"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
        let keep_alive = tokio::spawn(keep_alive(client.clone(), lease, ttl, timeout, key.clone()));
        Ok(Self { client, lease, key, keep_alive })
    }

    /// Gives the number back at once (graceful shutdown); otherwise it is
    /// free one lease TTL after the process stopped.
    pub async fn release(mut self) {
        self.keep_alive.abort();
        if let Err(error) = self.client.lease_revoke(self.lease).await {
            tracing::warn!(%error, key = %self.key, "could not release the node claim; it expires with its lease");
        }
    }
}

impl Drop for NodeClaim {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

/// Refreshes the lease three times per TTL. A lease that is lost (etcd away
/// for longer than the TTL) is reported, not re-taken: another node may have
/// claimed the number meanwhile, and only a restart can check. A stream that
/// ends, fails or goes unanswered for `timeout` (its member stopped, died or
/// hangs) is opened again, through the next member.
async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, timeout: Duration, key: String) {
    let period = (ttl / 3).max(Duration::from_millis(300));
    loop {
        match client.lease_keep_alive(lease).await {
            Ok((mut keeper, mut responses)) => loop {
                tokio::time::sleep(period).await;
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(timeout, responses.message()).await {
                    Ok(Ok(Some(response))) if response.ttl() > 0 => {}
                    Ok(Ok(Some(_))) => {
                        tracing::error!(%key, "the node claim's lease expired; restart this node to claim its NODE_ID again");
                        return;
                    }
                    Ok(Ok(None) | Err(_)) | Err(_) => break,
                }
            },
            Err(error) => tracing::warn!(%error, %key, "node claim keep-alive failed; retrying"),
        }
        tokio::time::sleep(period).await;
    }
}
