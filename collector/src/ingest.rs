//! `sonde.v1.Ingest`: one stream per agent. Each report is checked whole,
//! applied (or recognised as a duplicate) and acked by sequence, in order;
//! with remote write, only once the stores are done with it.
//! A refused report ends that stream with a status that says why; every
//! other stream goes on.

use std::{pin::Pin, sync::atomic::Ordering, sync::Arc};

use sonde_proto::{
    remote_write::sender::Delivery,
    v1::{ingest_server::Ingest, Ack, AgentReport, ExplainAnswer, ExplainAnswerAck},
    validate,
};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    fleet::Outcome,
    now_unix_ns,
    reject::Rejection,
    state::{State, SHUTDOWN_DRAIN},
};

/// Acks queued per stream before the collector stops reading it.
const ACK_QUEUE: usize = 64;

/// The ingest service.
pub struct IngestService {
    state: Arc<State>,
}

impl IngestService {
    /// Serves `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

/// Decrements the open-stream count when a stream ends, however it ends.
struct OpenStream(Arc<State>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the reading half of a stream hands to the acking half, in order.
enum Next {
    /// Ack this report once its delivery to the stores is settled.
    Ack(Ack, Option<Delivery>),
    /// End the stream with this status.
    End(Status),
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type ReportStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

    async fn report(
        &self,
        request: Request<Streaming<AgentReport>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown peer".to_owned());
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(ACK_QUEUE);
        let (next_tx, next_rx) = tokio::sync::mpsc::channel(ACK_QUEUE);
        let state = self.state.clone();
        state.streams_open.fetch_add(1, Ordering::Relaxed);
        let stream_id = state.next_stream.fetch_add(1, Ordering::Relaxed);
        let asks_tx = tx.clone();
        tokio::spawn(acks(
            next_rx,
            tx,
            OpenStream(state.clone()),
            state.shutdown.clone(),
        ));
        let mut shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            loop {
                // Every report read before this point is acked (once its
                // stores are done with it) before the stream ends: the agent
                // knows exactly what this collector took.
                let message = tokio::select! {
                    biased;
                    _ = async { shutdown.wait_for(|&stop| stop).await.is_ok() } => {
                        let _ = next_tx.send(Next::End(Status::unavailable("collector shutting down"))).await;
                        break;
                    }
                    message = inbound.message() => message,
                };
                let report = match message {
                    Ok(Some(report)) => report,
                    Ok(None) => break,
                    Err(status) => {
                        match Rejection::from_stream_error(&status) {
                            Some(r) => {
                                state.rejections.count(&r, &peer);
                                let _ = next_tx.send(Next::End(r.into())).await;
                            }
                            None => log::debug!("stream from {peer} ended: {status}"),
                        }
                        break;
                    }
                };
                let answers = report
                    .node
                    .as_ref()
                    .map(|n| (n.node_name.clone(), report.answers_explain));
                let next = match accept(&state, report, now_unix_ns(), &peer) {
                    Ok((ack, delivery)) => {
                        if let Some((node, answers)) = answers {
                            state.asks.register(&node, stream_id, &asks_tx, answers);
                        }
                        Next::Ack(ack, delivery)
                    }
                    Err(r) => Next::End(r.into()),
                };
                let end = matches!(next, Next::End(_));
                if next_tx.send(next).await.is_err() || end {
                    break;
                }
            }
            state.asks.unregister(stream_id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn explained(
        &self,
        request: Request<ExplainAnswer>,
    ) -> Result<Response<ExplainAnswerAck>, Status> {
        let answer = request.into_inner();
        let node = answer.node.clone();
        if !self.state.asks.answer(answer) {
            log::debug!("an explain answer of {node} came after its request ended");
        }
        Ok(Response::new(ExplainAnswerAck {}))
    }
}

/// The acking half of a stream: acks each report, in order, once every
/// remote-write store is done with its window (stored, already stored, or
/// refused or dropped — counted). A collector killed before then has acked
/// nothing of it, and the agent sends it again from its outbox. At shutdown
/// the stores get [`SHUTDOWN_DRAIN`] more; what they have not settled by
/// then is not acked.
async fn acks(
    mut next: tokio::sync::mpsc::Receiver<Next>,
    tx: tokio::sync::mpsc::Sender<Result<Ack, Status>>,
    _open: OpenStream,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let deadline = async move {
        if shutdown.wait_for(|&stop| stop).await.is_ok() {
            tokio::time::sleep(SHUTDOWN_DRAIN).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(deadline);
    while let Some(item) = next.recv().await {
        let ack = match item {
            Next::Ack(ack, None) => ack,
            Next::Ack(ack, Some(delivery)) => {
                tokio::select! {
                    () = delivery.settled() => ack,
                    () = &mut deadline => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "collector shutting down before its remote-write stores took this report",
                            )))
                            .await;
                        return;
                    }
                }
            }
            Next::End(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        if tx.send(Ok(ack)).await.is_err() {
            return;
        }
    }
}

/// What the collector does with one decoded report of a stream from `peer`:
/// checks it whole, applies it to the fleet (or recognises a duplicate) and
/// counts it, and queues its samples for the remote-write stores. Returns
/// the ack to send once the returned delivery (with remote write) is
/// settled, or the refusal (counted) that ends the stream.
pub fn accept(
    state: &State,
    report: AgentReport,
    now_unix_ns: u64,
    peer: &str,
) -> Result<(Ack, Option<Delivery>), Rejection> {
    if let Err(e) = validate::report(&report) {
        let r = Rejection::from(e);
        state.rejections.count(&r, peer);
        return Err(r);
    }
    let sequence = report.sequence;
    // One line per report at debug level: what this instance applied, even
    // if it dies before it can say so otherwise.
    let witness = log::log_enabled!(log::Level::Debug).then(|| {
        let node = report.node.as_ref();
        (
            node.map(|n| n.node_name.clone()).unwrap_or_default(),
            node.map(|n| n.boot_id.clone()).unwrap_or_default(),
        )
    });
    // Encoded outside the fleet's lock. Its samples come from the report
    // alone, so any collector writing a copy writes the same, and the
    // stores keep one. A copy this collector already applied is written
    // again too: the first may still be waiting in a queue (the agent
    // resent it after its stream broke), and the ack of the copy must not
    // come before the stores have the window.
    let written = state.remote_write.as_ref().map(|rw| rw.prepare(&report));
    let duplicate = state.fleet().apply(report, now_unix_ns) == Outcome::Duplicate;
    let delivery = match (&state.remote_write, written) {
        (Some(rw), Some(prepared)) => Some(rw.queue(prepared)),
        _ => None,
    };
    if let Some((node, boot)) = witness {
        let what = if duplicate { "duplicate" } else { "applied" };
        log::debug!("report node={node} boot={boot} sequence={sequence} {what}");
    }
    let counter = if duplicate {
        &state.duplicates
    } else {
        &state.accepted
    };
    counter.fetch_add(1, Ordering::Relaxed);
    Ok((
        Ack {
            sequence,
            duplicate,
            explain: None,
        },
        delivery,
    ))
}
