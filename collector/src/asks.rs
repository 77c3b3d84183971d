//! Explain requests to the agents streaming to this collector (`sonde fleet
//! explain --cgroup/--pod/--unit`): the data is on the nodes, so the
//! question goes to them. Each stream whose agent answers such requests
//! registers its ack sender here; a request goes down every one as an Ack
//! that acks nothing, and the answers come back through `Ingest.Explained`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    time::Duration,
};

use sonde_proto::v1::{Ack, ExplainAnswer, ExplainRequest};
use tokio::sync::mpsc::{self, Sender};
use tonic::Status;

/// Where a stream's acks go.
pub type AckSender = Sender<Result<Ack, Status>>;

/// How long the agents get to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The streams that take explain requests, and the requests waiting.
#[derive(Default)]
pub struct Asks {
    /// By node name: the stream's id and ack sender (a node's newest stream).
    streams: Mutex<HashMap<String, (u64, AckSender)>>,
    /// By request id: where its answers go.
    pending: Mutex<HashMap<u64, Sender<ExplainAnswer>>>,
    next_id: AtomicU64,
}

/// What the agents answered.
#[derive(Debug, Default)]
pub struct Asked {
    /// Every answer, in arrival order.
    pub answers: Vec<ExplainAnswer>,
    /// Agents the request went to.
    pub asked: usize,
    /// Those that did not answer in time (or whose stream was full).
    pub unanswered: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a request's entry when its asking ends.
struct Pending<'a>(&'a Asks, u64);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        lock(&self.0.pending).remove(&self.1);
    }
}

impl Asks {
    /// `node` streams on stream `stream`; `answers` whether its agent says
    /// (in the report just accepted) that it answers explain requests.
    pub fn register(&self, node: &str, stream: u64, acks: &AckSender, answers: bool) {
        let mut streams = lock(&self.streams);
        if !answers {
            if streams.get(node).is_some_and(|(id, _)| *id == stream) {
                streams.remove(node);
            }
            return;
        }
        if streams.get(node).is_none_or(|(id, _)| *id != stream) {
            streams.insert(node.to_owned(), (stream, acks.clone()));
        }
    }

    /// Requests waiting for answers.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Stream `stream` ended.
    pub fn unregister(&self, stream: u64) {
        lock(&self.streams).retain(|_, (id, _)| *id != stream);
    }

    /// Hands an agent's answer to its request; false when nobody waits for
    /// it any more (it came too late).
    pub fn answer(&self, answer: ExplainAnswer) -> bool {
        let waiting = lock(&self.pending).get(&answer.id).cloned();
        waiting.is_some_and(|tx| tx.try_send(answer).is_ok())
    }

    /// Asks every registered agent `request` (its id is set here) and
    /// collects their answers for at most `timeout`.
    pub async fn ask(&self, mut request: ExplainRequest, timeout: Duration) -> Asked {
        request.id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let streams: Vec<(String, AckSender)> = lock(&self.streams)
            .iter()
            .map(|(node, (_, tx))| (node.clone(), tx.clone()))
            .collect();
        let (tx, mut rx) = mpsc::channel(streams.len().max(1));
        lock(&self.pending).insert(request.id, tx);
        // Gone however this ends, a caller that went away included.
        let _pending = Pending(self, request.id);
        let mut out = Asked {
            asked: streams.len(),
            ..Asked::default()
        };
        let mut waiting = BTreeSet::new();
        for (node, acks) in streams {
            let ack = Ack {
                sequence: 0,
                duplicate: false,
                explain: Some(request.clone()),
            };
            if acks.try_send(Ok(ack)).is_ok() {
                waiting.insert(node);
            } else {
                out.unanswered.push(node);
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            tokio::select! {
                answer = rx.recv() => match answer {
                    Some(a) => {
                        if waiting.remove(&a.node) {
                            out.answers.push(a);
                        }
                    }
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        out.unanswered.extend(waiting);
        out.unanswered.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_stream_is_asked_once_and_late_or_silent_agents_are_named() {
        let asks = std::sync::Arc::new(Asks::default());
        let (a_tx, mut a_rx) = mpsc::channel(4);
        let (b_tx, _b_rx) = mpsc::channel(4);
        asks.register("a", 1, &a_tx, true);
        asks.register("b", 2, &b_tx, true);
        // A stream that ended is not asked, nor one whose agent stopped
        // saying it answers.
        let (c_tx, _c_rx) = mpsc::channel(4);
        asks.register("c", 3, &c_tx, true);
        asks.unregister(3);
        let (d_tx, _d_rx) = mpsc::channel(4);
        asks.register("d", 4, &d_tx, true);
        asks.register("d", 4, &d_tx, false);
        let answering = asks.clone();
        let agent = tokio::spawn(async move {
            let Some(Ok(ack)) = a_rx.recv().await else {
                return (0, false);
            };
            let request = ack.explain.unwrap_or_default();
            let taken = answering.answer(ExplainAnswer {
                id: request.id,
                node: "a".into(),
                explanation_json: request.target.clone(),
                ..ExplainAnswer::default()
            });
            (ack.sequence, taken)
        });
        let asked = asks
            .ask(
                ExplainRequest {
                    target_kind: "cgroup".into(),
                    target: "/x".into(),
                    ..ExplainRequest::default()
                },
                Duration::from_millis(300),
            )
            .await;
        assert_eq!(agent.await.unwrap(), (0, true));
        assert_eq!(asked.asked, 2);
        assert_eq!(asked.answers.len(), 1);
        assert_eq!(asked.answers[0].explanation_json, "/x");
        assert_eq!(asked.unanswered, ["b"]);
        // Too late: nobody waits.
        assert!(!asks.answer(ExplainAnswer {
            id: 1,
            node: "b".into(),
            ..ExplainAnswer::default()
        }));
        assert_eq!(asks.waiting(), 0);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_leaves_nothing_waiting() {
        let asks = std::sync::Arc::new(Asks::default());
        let (tx, _rx) = mpsc::channel(4);
        asks.register("a", 1, &tx, true);
        let asking = asks.clone();
        let task = tokio::spawn(async move {
            asking
                .ask(ExplainRequest::default(), Duration::from_secs(60))
                .await
        });
        while asks.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
        assert!(task.await.is_err());
        assert_eq!(asks.waiting(), 0);
    }
}
