//! `im.v1.RelayService`: a gateway process's sends, on one long-lived stream
//! (production mode). The gateway authenticated each client at its
//! WebSocket handshake and names the user in each send; the stream itself
//! takes a service credential of scope `relay` only (as the push API takes
//! `push`), so a client's token cannot speak for anyone else here.
//!
//! One batch of the stream is many sends: they enter the send pipeline
//! together and share its commits, without an HTTP/2 stream, headers and a
//! token check each (the unary `SendMessage` a client calling im.v1 directly
//! still uses). Answers go back as they complete, batched too, in no
//! particular order: each carries its send's id.
//!
//! Bounds (G10): a batch holds at most [`MAX_SENDS_PER_BATCH`] sends, and a
//! stream has at most [`MAX_UNANSWERED`] sends between arrival and answer;
//! past that it reads no more, and HTTP/2 flow control holds the gateway
//! back. At shutdown a stream stops reading, answers what it took, and ends.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use im_auth::{Scope, Tokens};
use im_core::ports::Messaging;
use im_core::{DeviceId, ImError, UserId};
use im_proto::message as pb;
use im_proto::message::relay_answer::Result as Answer;
use im_proto::message::relay_service_server::{RelayService, RelayServiceServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::grpc::{device_id, require_service};
use crate::telemetry::propagation::relay_span;

/// Sends in one batch of the stream, at most.
pub const MAX_SENDS_PER_BATCH: usize = 1024;
/// Sends of one stream taken and not yet answered, at most.
pub const MAX_UNANSWERED: usize = 4096;
/// Answer batches queued for the HTTP/2 layer; answers completed meanwhile
/// gather into the next batch.
const ANSWER_QUEUE: usize = 4;

pub struct RelayGrpc {
    messaging: Arc<dyn Messaging>,
    tokens: Tokens,
    shutdown: CancellationToken,
}

impl RelayGrpc {
    /// `tokens` verify the gateway's credential and say whether a named user
    /// may act (a disabled one may not); `shutdown` ends every stream.
    pub fn server(
        messaging: Arc<dyn Messaging>,
        tokens: Tokens,
        shutdown: CancellationToken,
    ) -> RelayServiceServer<Self> {
        RelayServiceServer::new(Self { messaging, tokens, shutdown })
    }
}

#[tonic::async_trait]
impl RelayService for RelayGrpc {
    type RelayStream = ReceiverStream<Result<pb::RelayAnswers, Status>>;

    async fn relay(&self, request: Request<Streaming<pb::RelayBatch>>) -> Result<Response<Self::RelayStream>, Status> {
        require_service(&self.tokens, &request, Scope::Relay)?;
        let (answers, receiver) = mpsc::channel(ANSWER_QUEUE);
        let stream = RelayStream { messaging: self.messaging.clone(), tokens: self.tokens.clone() };
        tokio::spawn(stream.serve(request.into_inner(), answers, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// One gateway's stream.
struct RelayStream {
    messaging: Arc<dyn Messaging>,
    tokens: Tokens,
}

impl RelayStream {
    async fn serve(
        self,
        mut inbound: Streaming<pb::RelayBatch>,
        answers: mpsc::Sender<Result<pb::RelayAnswers, Status>>,
        shutdown: CancellationToken,
    ) {
        let mut in_flight = FuturesUnordered::new();
        let mut ready: Vec<pb::RelayAnswer> = Vec::new();
        let mut reading = true;
        while reading || !in_flight.is_empty() || !ready.is_empty() {
            // Biased: every answer already complete joins `ready` before the
            // batch goes out, so one commit's answers leave as one message.
            tokio::select! {
                biased;
                Some(answer) = in_flight.next() => ready.push(answer),
                // Room for a whole batch, so the bound holds after it.
                batch = inbound.next(), if reading && in_flight.len() + ready.len() + MAX_SENDS_PER_BATCH <= MAX_UNANSWERED => match batch {
                    Some(Ok(batch)) if batch.sends.len() > MAX_SENDS_PER_BATCH => {
                        let refused = format!("{} sends in one batch; at most {MAX_SENDS_PER_BATCH}", batch.sends.len());
                        let _ = answers.send(Err(Status::invalid_argument(refused))).await;
                        return;
                    }
                    Some(Ok(batch)) => in_flight.extend(batch.sends.into_iter().map(|send| self.answer(send))),
                    // The gateway's side broke: nobody is left to answer.
                    Some(Err(status)) => {
                        tracing::debug!(error = %status, "a gateway's relay stream broke");
                        return;
                    }
                    None => reading = false,
                },
                () = shutdown.cancelled(), if reading => reading = false,
                permit = answers.reserve(), if !ready.is_empty() => match permit {
                    Ok(permit) => permit.send(Ok(pb::RelayAnswers { answers: std::mem::take(&mut ready) })),
                    Err(_) => return, // the gateway is gone
                },
            }
        }
    }

    /// Sends one relayed message and says how it went.
    fn answer(&self, send: pb::RelaySend) -> impl Future<Output = pb::RelayAnswer> + use<> {
        let (messaging, checked) = (self.messaging.clone(), self.check(&send));
        let id = send.id;
        let span = relay_span(&send.traceparent);
        async move {
            let result = match checked.and_then(|(user, device)| Ok((user, device, request_of(send)?))) {
                Ok((user, device, command)) => messaging.send(user, &device, command).instrument(span).await,
                Err(e) => Err(e),
            };
            let result = match result {
                Ok(ack) => Answer::Ack(ack.into()),
                Err(e) => Answer::Error((&e).into()),
            };
            pb::RelayAnswer { id, result: Some(result) }
        }
    }

    /// The sender and device a send names, if they may send.
    fn check(&self, send: &pb::RelaySend) -> Result<(UserId, DeviceId), ImError> {
        if send.user == 0 {
            return Err(ImError::invalid("a relayed send names its user"));
        }
        let device = device_id(&send.device, "a relayed send's device")?;
        let user = UserId(send.user);
        self.tokens.admits_user(user)?;
        Ok((user, device))
    }
}

fn request_of(send: pb::RelaySend) -> Result<im_core::ports::SendCommand, ImError> {
    let request = send.request.ok_or_else(|| ImError::invalid("a relayed send carries its request"))?;
    im_proto::convert::send_command(request)
}

#[cfg(test)]
mod tests;
