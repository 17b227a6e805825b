//! The channel every etcd client of this module talks through: requests go
//! to one member of `etcd.endpoints` (the current one) until a request to it
//! fails at the transport (the member is down: connection refused or reset),
//! takes longer than the request timeout without an answer (the member
//! hangs), or is refused for want of a leader (the member is cut off from
//! the quorum), and from then on to the next member, in turn.
//!
//! Why not etcd-client's own balancer (tonic's power-of-two-choices over all
//! endpoints): tonic reports a connection it cannot re-establish as ready
//! (it reconnects lazily, on the next request), so that balancer keeps a
//! dead member in its rotation and about one request in two — lease
//! keep-alives and watches included — fails for as long as the member is
//! down. Measured with one member of three killed: a user who connected
//! right after was registered 5.6 s later.
//!
//! A request that failed is not sent again here (its body may be a stream
//! already consumed): the caller's retry reaches the next member.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use etcd_client::{BalancedChannelBuilder, Channel};
use http::Uri;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::transport::channel::Change;
use tonic::transport::{Channel as Connection, Endpoint};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};
use tracing::warn;

/// Builds the [`Failover`] channel for `Client::connect_with_balanced_channel`.
pub(super) struct FailoverChannel {
    /// A request without an answer for this long counts as a failure of its
    /// member (the callers' own request timeout).
    pub timeout: Duration,
}

impl BalancedChannelBuilder for FailoverChannel {
    type Error = etcd_client::Error;

    fn balanced_channel(self, buffer: usize) -> Result<(Channel, mpsc::Sender<Change<Uri, Endpoint>>), Self::Error> {
        let (updates, changes) = mpsc::channel(buffer);
        let members =
            Members { changes: Mutex::new(changes), list: Mutex::new(Vec::new()), current: AtomicUsize::new(0) };
        let service = Failover { members: Arc::new(members), timeout: self.timeout };
        Ok((Channel::Custom(BoxCloneSyncService::new(service)), updates))
    }
}

/// The members, and which one requests go to.
struct Members {
    /// Members added or removed by the client (all of them at connect).
    changes: Mutex<mpsc::Receiver<Change<Uri, Endpoint>>>,
    list: Mutex<Vec<(Uri, Connection)>>,
    /// Index into `list` of the member requests go to.
    current: AtomicUsize,
}

impl Members {
    /// The member requests go to now: its index and connection.
    fn current(&self) -> Option<(usize, Connection)> {
        let mut list = self.list.lock();
        // The client sends every endpoint before it returns from connect, so
        // they are all queued by the first request.
        let mut changes = self.changes.lock();
        while let Ok(change) = changes.try_recv() {
            match change {
                Change::Insert(uri, endpoint) => {
                    list.retain(|(known, _)| *known != uri);
                    list.push((uri, endpoint.connect_lazy()));
                }
                Change::Remove(uri) => list.retain(|(known, _)| *known != uri),
            }
        }
        if list.is_empty() {
            return None;
        }
        let index = self.current.load(Ordering::Relaxed) % list.len();
        Some((index, list[index].1.clone()))
    }

    /// A request to member `index` failed: the next member takes over,
    /// unless another request moved on already.
    fn failed(&self, index: usize) {
        let list = self.list.lock();
        if list.is_empty() {
            return;
        }
        let next = (index + 1) % list.len();
        if self.current.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() && next != index {
            warn!(failed = %list[index].0, next = %list[next].0, "etcd member unreachable, using the next one");
        }
    }
}

#[derive(Clone)]
struct Failover {
    members: Arc<Members>,
    timeout: Duration,
}

type Answer = Result<http::Response<Body>, BoxError>;

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    /// Always ready: each request waits for its member's connection.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (members, timeout) = (self.members.clone(), self.timeout);
        Box::pin(async move {
            let (index, connection) = members.current().ok_or("no etcd endpoint")?;
            let mut attempt = Attempt { members, index, started: Instant::now(), timeout, settled: false };
            // Until the response headers: a stream's later failure is the
            // caller's to see, and its next request comes here again.
            let answer = match tokio::time::timeout(timeout, connection.oneshot(request)).await {
                Ok(answer) => answer.map_err(BoxError::from),
                Err(_) => Err("the etcd member did not answer within the request timeout".into()),
            };
            attempt.settle(answer.as_ref().is_ok_and(|response| !no_leader(response)));
            answer
        })
    }
}

/// Whether `response` is a member's "no leader" refusal: it is cut off from
/// its cluster's quorum (another member may not be), and refuses what needs
/// a leader, and everything from a client that requires one. gRPC sends
/// such an early error in the headers ("trailers only").
fn no_leader(response: &http::Response<Body>) -> bool {
    let headers = response.headers();
    let unavailable = headers.get("grpc-status").is_some_and(|status| status == "14");
    unavailable
        && headers.get("grpc-message").is_some_and(|message| {
            message.to_str().is_ok_and(|message| message.contains("no leader") || message.contains("no%20leader"))
        })
}

/// One request to one member; a request abandoned by its caller after
/// (nearly) the timeout counts as a failure too: callers bound their
/// requests with the same timeout, so theirs often runs out first.
struct Attempt {
    members: Arc<Members>,
    index: usize,
    started: Instant,
    timeout: Duration,
    settled: bool,
}

impl Attempt {
    fn settle(&mut self, answered: bool) {
        self.settled = true;
        if !answered {
            self.members.failed(self.index);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled && self.started.elapsed() >= self.timeout.mul_f64(0.9) {
            self.members.failed(self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members `a`, `b`, `c` as the client announces them.
    fn members() -> Members {
        let (updates, changes) = mpsc::channel(8);
        for name in ["a", "b", "c"] {
            let uri: Uri = format!("http://{name}:2379").parse().unwrap();
            updates.try_send(Change::Insert(uri.clone(), Endpoint::from(uri))).unwrap();
        }
        Members { changes: Mutex::new(changes), list: Mutex::new(Vec::new()), current: AtomicUsize::new(0) }
    }

    fn current(members: &Members) -> usize {
        members.current().expect("members").0
    }

    #[tokio::test]
    async fn requests_stay_on_a_member_until_it_fails_then_go_round() {
        let members = members();
        assert_eq!(current(&members), 0);
        assert_eq!(current(&members), 0, "sticky while it answers");
        members.failed(0);
        assert_eq!(current(&members), 1);
        // A second request that was on member 0 fails late: 1 stays.
        members.failed(0);
        assert_eq!(current(&members), 1);
        members.failed(1);
        members.failed(2);
        assert_eq!(current(&members), 0, "after the last, the first again");
    }

    #[tokio::test]
    async fn a_member_removed_is_no_longer_used() {
        let members = members();
        assert_eq!(current(&members), 0);
        let (updates, changes) = mpsc::channel(1);
        *members.changes.lock() = changes;
        updates.try_send(Change::Remove("http://a:2379".parse().unwrap())).unwrap();
        let (_, connection) = members.current().unwrap();
        drop(connection);
        assert_eq!(
            members.list.lock().iter().map(|(uri, _)| uri.host().unwrap().to_owned()).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn a_no_leader_refusal_is_told_from_other_answers() {
        fn response(headers: &[(&'static str, &str)]) -> http::Response<Body> {
            let mut response = http::Response::new(Body::empty());
            for &(name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        let no_leader_answer = [("grpc-status", "14"), ("grpc-message", "etcdserver: no leader")];
        assert!(no_leader(&response(&no_leader_answer)));
        assert!(!no_leader(&response(&[])), "an answer whose status comes in the trailers");
        assert!(!no_leader(&response(&[("grpc-status", "14"), ("grpc-message", "etcdserver: request timed out")])));
        assert!(!no_leader(&response(&[("grpc-status", "5"), ("grpc-message", "etcdserver: no leader")])));
    }

    #[tokio::test]
    async fn a_timeout_abandoned_by_the_caller_counts_as_a_failure() {
        let members = Arc::new(members());
        assert_eq!(current(&members), 0);
        let timeout = Duration::from_millis(100);
        let late =
            Attempt { members: members.clone(), index: 0, started: Instant::now() - timeout, timeout, settled: false };
        drop(late);
        assert_eq!(current(&members), 1);
        let early = Attempt { members: members.clone(), index: 1, started: Instant::now(), timeout, settled: false };
        drop(early);
        assert_eq!(current(&members), 1, "a request dropped early is no verdict on its member");
    }
}
