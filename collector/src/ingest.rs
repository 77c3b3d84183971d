//! `sonde.v1.Ingest`: one stream per agent. Each report is checked whole,
//! applied (or recognised as a duplicate) and acked by sequence, in order.
//! A refused report ends that stream with a status that says why; every
//! other stream goes on.

use std::{pin::Pin, sync::atomic::Ordering, sync::Arc};

use sonde_proto::{
    v1::{ingest_server::Ingest, Ack, AgentReport},
    validate,
};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};

use crate::{fleet::Outcome, now_unix_ns, reject::Rejection, state::State};

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
        let state = self.state.clone();
        state.streams_open.fetch_add(1, Ordering::Relaxed);
        let open = OpenStream(state.clone());
        let mut shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            let _open = open;
            loop {
                // Every report applied before this point has its ack queued:
                // a shutdown ends the stream after them, so the agent knows
                // exactly what this collector took.
                let message = tokio::select! {
                    biased;
                    _ = async { shutdown.wait_for(|&stop| stop).await.is_ok() } => {
                        let _ = tx.send(Err(Status::unavailable("collector shutting down"))).await;
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
                                let _ = tx.send(Err(r.into())).await;
                            }
                            None => log::debug!("stream from {peer} ended: {status}"),
                        }
                        break;
                    }
                };
                let ack = match accept(&state, report, now_unix_ns(), &peer) {
                    Ok(ack) => ack,
                    Err(r) => {
                        let _ = tx.send(Err(r.into())).await;
                        break;
                    }
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What the collector does with one decoded report of a stream from `peer`:
/// checks it whole, applies it to the fleet (or recognises a duplicate) and
/// counts it. Returns the ack to send, or the refusal (counted) that ends
/// the stream.
pub fn accept(
    state: &State,
    report: AgentReport,
    now_unix_ns: u64,
    peer: &str,
) -> Result<Ack, Rejection> {
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
    // Encoded outside the fleet's lock; queued (before the ack) only when
    // the report is new to this collector. Its samples come from the
    // report alone, so another collector writing a copy writes the same.
    let written = state.remote_write.as_ref().map(|rw| rw.prepare(&report));
    let duplicate = state.fleet().apply(report, now_unix_ns) == Outcome::Duplicate;
    if let (Some(rw), Some(prepared), false) = (&state.remote_write, written, duplicate) {
        rw.queue(prepared);
    }
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
    Ok(Ack {
        sequence,
        duplicate,
    })
}
