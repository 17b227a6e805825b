//! [`RelayClient`]: a gateway process's sends to the IM service, on one
//! long-lived `im.v1.RelayService` stream instead of a unary call each
//! (`crate::relay` is the node's side).
//!
//! Sends queue for one task that owns the stream: it takes whatever has
//! queued into one batch (at most `MAX_SENDS_PER_BATCH`), numbers each send,
//! and hands every answer to its caller. When the stream breaks, every send
//! on it not yet answered fails with `UNAVAILABLE` (the client resends with
//! the same client_msg_id, and a send that was stored answers with its first
//! ack); the task opens a new stream after a pause that doubles up to
//! [`RETRY_MAX`], and meanwhile refuses sends at once rather than at their
//! deadline (G9).
//!
//! Bounds (G10): [`QUEUE`] sends wait for the stream, `MAX_UNANSWERED` are on
//! it; each caller waits at most its deadline.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use im_core::ports::SendCommand;
use im_core::{Ack, DeviceId, ImError, UserId};
use im_proto::message as pb;
use im_proto::message::relay_answer::Result as Answer;
use im_proto::message::relay_service_client::RelayServiceClient;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::ServiceCredential;
use crate::relay::{MAX_SENDS_PER_BATCH, MAX_UNANSWERED};
use crate::telemetry::propagation::sampled_traceparent;

/// Sends waiting for the stream, at most; a caller past it waits for room
/// within its deadline.
const QUEUE: usize = 4096;
/// Batches handed to HTTP/2 and not yet written; sends queued meanwhile
/// gather into the next batch.
const OUTBOUND_QUEUE: usize = 4;
/// The first pause before opening a new stream, doubled after each failure.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// The longest pause: how long sends may be refused after the node is back.
const RETRY_MAX: Duration = Duration::from_secs(1);

type Answered = Result<Ack, ImError>;

/// A send waiting for the stream, and where its answer goes.
struct Queued {
    send: pb::RelaySend,
    answer: oneshot::Sender<Answered>,
}

/// The gateway's end of the relay stream.
pub struct RelayClient {
    queue: mpsc::Sender<Queued>,
    deadline: Duration,
}

impl RelayClient {
    /// Starts the task that keeps a stream open on `channel` with
    /// `credential` (scope `relay`); each send waits at most `deadline`.
    /// The task ends when the client is dropped.
    pub fn start(channel: Channel, credential: ServiceCredential, deadline: Duration) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(keep_open(RelayServiceClient::new(channel), credential, queued));
        Self { queue, deadline }
    }

    /// Sends `cmd` as `user` (whom the gateway authenticated) from `device`.
    pub async fn send(&self, user: UserId, device: &DeviceId, cmd: SendCommand) -> Answered {
        let send = pb::RelaySend {
            id: 0, // numbered by the stream's task
            user: user.0,
            device: device.0.clone(),
            request: Some(im_proto::convert::send_request(cmd)),
            // The gateway's `gateway.frame` span: the node's spans join it.
            traceparent: sampled_traceparent(),
        };
        let (answer, answered) = oneshot::channel();
        let relayed = async {
            self.queue
                .send(Queued { send, answer })
                .await
                .map_err(|_| ImError::unavailable("the relay has stopped"))?;
            answered.await.unwrap_or_else(|_| Err(ImError::unavailable("the relay stream to the IM service ended")))
        };
        tokio::time::timeout(self.deadline, relayed).await.unwrap_or_else(|_| {
            Err(ImError::unavailable(format!("no answer from the IM service within {:?}", self.deadline)))
        })
    }
}

/// Why a stream ended.
enum Ended {
    /// The client was dropped: nothing more will be sent.
    ClientGone,
    /// The stream broke or the node closed it (shutting down).
    Broke(String),
}

async fn keep_open(
    mut client: RelayServiceClient<Channel>,
    credential: ServiceCredential,
    mut queue: mpsc::Receiver<Queued>,
) {
    let mut retry = RETRY_MIN;
    let mut reported = false;
    loop {
        let (outbound, batches) = mpsc::channel(OUTBOUND_QUEUE);
        let why = match client.relay(credential.request(ReceiverStream::new(batches))).await {
            Ok(response) => {
                if reported {
                    tracing::info!("the relay stream to the IM service is open again");
                }
                retry = RETRY_MIN;
                reported = false;
                match OpenStream::default().run(outbound, response.into_inner(), &mut queue).await {
                    Ended::ClientGone => return,
                    Ended::Broke(why) => why,
                }
            }
            Err(status) => format!("could not open it: {}", status.message()),
        };
        // One warning per outage, not one per attempt.
        if reported {
            tracing::debug!(reason = %why, "the relay stream to the IM service is still down");
        } else {
            tracing::warn!(reason = %why, retry_in = ?retry, "the relay stream to the IM service is down; sends are refused until it reopens");
            reported = true;
        }
        if !refuse_until(&mut queue, Instant::now() + retry, &why).await {
            return;
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Answers every send queued before `until` with `UNAVAILABLE`; false when
/// the client is gone.
async fn refuse_until(queue: &mut mpsc::Receiver<Queued>, until: Instant, why: &str) -> bool {
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            queued = queue.recv() => match queued {
                Some(queued) => {
                    let _ = queued.answer.send(Err(down(why)));
                }
                None => return false,
            },
        }
    }
}

fn down(why: &str) -> ImError {
    ImError::unavailable(format!(
        "the relay stream to the IM service is down ({why}); resend with the same client_msg_id"
    ))
}

/// The sends of an open stream not yet answered.
#[derive(Default)]
struct OpenStream {
    unanswered: HashMap<u64, oneshot::Sender<Answered>>,
    /// Sends numbered and waiting for room on the outbound side.
    batch: Vec<pb::RelaySend>,
    next_id: u64,
}

impl OpenStream {
    /// Relays until the stream ends; then fails every send not answered.
    async fn run(
        mut self,
        outbound: mpsc::Sender<pb::RelayBatch>,
        mut inbound: Streaming<pb::RelayAnswers>,
        queue: &mut mpsc::Receiver<Queued>,
    ) -> Ended {
        let ended = self.relay(&outbound, &mut inbound, queue).await;
        let why = match &ended {
            Ended::Broke(why) => why.as_str(),
            Ended::ClientGone => "the relay has stopped",
        };
        for (_, answer) in self.unanswered.drain() {
            let _ = answer.send(Err(down(why)));
        }
        ended
    }

    async fn relay(
        &mut self,
        outbound: &mpsc::Sender<pb::RelayBatch>,
        inbound: &mut Streaming<pb::RelayAnswers>,
        queue: &mut mpsc::Receiver<Queued>,
    ) -> Ended {
        loop {
            // Never waits on one direction alone: answers are read while a
            // batch waits for room, so neither side can stall the other.
            tokio::select! {
                biased;
                answers = inbound.next() => match answers {
                    Some(Ok(answers)) => self.deliver(answers),
                    Some(Err(status)) => return Ended::Broke(status.message().to_owned()),
                    None => return Ended::Broke("the IM service closed it".to_owned()),
                },
                permit = outbound.reserve(), if !self.batch.is_empty() => match permit {
                    Ok(permit) => permit.send(pb::RelayBatch { sends: std::mem::take(&mut self.batch) }),
                    Err(_) => return Ended::Broke("the transport closed it".to_owned()),
                },
                queued = queue.recv(), if self.has_room() => match queued {
                    Some(queued) => {
                        self.take(queued);
                        while self.has_room() && let Ok(queued) = queue.try_recv() {
                            self.take(queued);
                        }
                    }
                    None => return Ended::ClientGone,
                },
            }
        }
    }

    fn has_room(&self) -> bool {
        self.unanswered.len() < MAX_UNANSWERED && self.batch.len() < MAX_SENDS_PER_BATCH
    }

    /// Numbers a queued send into the next batch, unless its caller has
    /// given up waiting.
    fn take(&mut self, Queued { mut send, answer }: Queued) {
        if answer.is_closed() {
            return;
        }
        self.next_id += 1;
        send.id = self.next_id;
        self.unanswered.insert(send.id, answer);
        self.batch.push(send);
    }

    fn deliver(&mut self, answers: pb::RelayAnswers) {
        for answer in answers.answers {
            let Some(caller) = self.unanswered.remove(&answer.id) else { continue };
            let result = match answer.result {
                Some(Answer::Ack(ack)) => Ack::try_from(ack),
                Some(Answer::Error(error)) => Err(ImError::from(error)),
                None => Err(ImError::internal("the IM service answered a relayed send with nothing")),
            };
            let _ = caller.send(result);
        }
    }
}
