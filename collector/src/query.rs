//! `sonde.v1.Query`: the fleet for `sonde fleet` and anyone else.

use std::{sync::atomic::Ordering, sync::Arc};

use sonde_proto::v1::{
    query_server::Query, CollectorHealth, ExplainAnswer, ExplainRequest, FleetExplainRequest,
    FleetExplainResponse, GetNodeRequest, HealthRequest, ListNodesRequest, ListNodesResponse,
    ListSlosRequest, ListSlosResponse, NodeDetail, Rejection,
};
use tonic::{Request, Response, Status};

use crate::{now_unix_ns, state::State, store};

/// A store that gave no view: logged, and said in the answer, which then
/// covers this replica only.
fn unanswered(e: &store::StoreError) -> String {
    log::warn!("fleet view from this replica only: {e}");
    e.to_string()
}

/// What a collector's fleet views cover without a store (or when its store
/// does not answer): the agents streaming to it. With replicas, each
/// answers for its own agents.
pub const SCOPE: &str = sonde_proto::names::SCOPE_REPLICA;

/// The query service.
pub struct QueryService {
    state: Arc<State>,
}

impl QueryService {
    /// Serves `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_nodes(
        &self,
        _: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let mut store_error = String::new();
        if let Some(store) = &self.state.store {
            match store.nodes(now_unix_ns()).await {
                Ok(nodes) => {
                    return Ok(Response::new(ListNodesResponse {
                        nodes,
                        scope: store::SCOPE.to_owned(),
                        store_error,
                    }))
                }
                Err(e) => store_error = unanswered(&e),
            }
        }
        let nodes = self.state.fleet().list(now_unix_ns());
        Ok(Response::new(ListNodesResponse {
            nodes,
            scope: SCOPE.to_owned(),
            store_error,
        }))
    }

    async fn get_node(
        &self,
        request: Request<GetNodeRequest>,
    ) -> Result<Response<NodeDetail>, Status> {
        let name = request.into_inner().node_name;
        let held = self.state.fleet().node(&name, now_unix_ns());
        if let Some(detail) = held {
            return Ok(Response::new(NodeDetail {
                scope: SCOPE.to_owned(),
                ..detail
            }));
        }
        let Some(store) = &self.state.store else {
            return Err(Status::not_found(format!(
                "no report from a node named '{name}'"
            )));
        };
        match store.node(&name, now_unix_ns()).await {
            Ok(Some(summary)) => Ok(Response::new(NodeDetail {
                summary: Some(summary),
                scope: store::SCOPE.to_owned(),
                ..Default::default()
            })),
            Ok(None) => Err(Status::not_found(format!(
                "no report from a node named '{name}' at this replica, and no window of it in the store at {} within the lookback",
                store.url()
            ))),
            Err(e) => Err(Status::unavailable(format!(
                "no report from a node named '{name}' at this replica, and {e}"
            ))),
        }
    }

    async fn list_slos(
        &self,
        _: Request<ListSlosRequest>,
    ) -> Result<Response<ListSlosResponse>, Status> {
        let mut store_error = String::new();
        if let Some(store) = &self.state.store {
            let now = now_unix_ns();
            let (slos, stored) = tokio::join!(store.slos(now), store.explanations(now));
            match slos {
                Ok(slos) => {
                    // Explanations from the store, and from memory those of
                    // nodes the store has none of (not written there, or a
                    // store that did not answer this query).
                    let mut explanations = match stored {
                        Ok(e) => e,
                        Err(e) => {
                            store_error = unanswered(&e);
                            Vec::new()
                        }
                    };
                    let known: std::collections::BTreeSet<String> =
                        explanations.iter().map(|e| e.node.clone()).collect();
                    explanations.extend(
                        self.state
                            .fleet()
                            .explanations()
                            .into_iter()
                            .filter(|e| !known.contains(&e.node)),
                    );
                    crate::fleet::rank(&mut explanations);
                    return Ok(Response::new(ListSlosResponse {
                        slos,
                        scope: store::SCOPE.to_owned(),
                        store_error,
                        explanations,
                    }));
                }
                Err(e) => store_error = unanswered(&e),
            }
        }
        let mut fleet = self.state.fleet();
        Ok(Response::new(ListSlosResponse {
            slos: fleet.slos(),
            scope: SCOPE.to_owned(),
            store_error,
            explanations: fleet.explanations(),
        }))
    }

    async fn explain(
        &self,
        request: Request<FleetExplainRequest>,
    ) -> Result<Response<FleetExplainResponse>, Status> {
        let r = request.into_inner();
        if !["slo", "cgroup", "pod", "unit"].contains(&r.target_kind.as_str())
            || r.target.is_empty()
        {
            return Err(Status::invalid_argument(format!(
                "explain takes a target kind (slo, cgroup, pod or unit) and its name, got {:?} {:?}",
                r.target_kind, r.target
            )));
        }
        let asked = self
            .state
            .asks
            .ask(
                ExplainRequest {
                    id: 0,
                    target_kind: r.target_kind,
                    target: r.target,
                    windows: r.windows,
                },
                crate::asks::ANSWER_TIMEOUT,
            )
            .await;
        Ok(Response::new(FleetExplainResponse {
            answers: holding(asked.answers),
            asked: u32::try_from(asked.asked).unwrap_or(u32::MAX),
            unanswered: asked.unanswered,
            scope: SCOPE.to_owned(),
        }))
    }

    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<CollectorHealth>, Status> {
        let s = &self.state;
        Ok(Response::new(CollectorHealth {
            streams_open: s.streams_open.load(Ordering::Relaxed),
            reports_accepted: s.accepted.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            nodes: s.fleet().len() as u64,
            rejections: s
                .rejections
                .snapshot()
                .into_iter()
                .map(|(reason, count)| Rejection {
                    reason: reason.to_owned(),
                    count,
                })
                .collect(),
        }))
    }
}

/// The answers of the nodes whose windows hold the target (an explanation
/// naming at least one of its cgroups, or an SLO's explanation) or that
/// could not explain, the highest top score first, then by node. An answer
/// with neither explanation nor error is a node without the target.
fn holding(answers: Vec<ExplainAnswer>) -> Vec<ExplainAnswer> {
    let parsed = |a: &ExplainAnswer| -> Option<serde_json::Value> {
        serde_json::from_str(&a.explanation_json).ok()
    };
    let mut kept: Vec<(f64, ExplainAnswer)> = answers
        .into_iter()
        .filter_map(|a| {
            if !a.error.is_empty() {
                return Some((f64::NEG_INFINITY, a));
            }
            let e = parsed(&a)?;
            let holds = e.pointer("/target/slo").is_some_and(|s| !s.is_null())
                || e.pointer("/target/cgroups")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|c| !c.is_empty());
            let top = e
                .pointer("/findings/0/score")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            holds.then_some((top, a))
        })
        .collect();
    kept.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.node.cmp(&b.1.node)));
    kept.into_iter().map(|(_, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(node: &str, json: &str, error: &str) -> ExplainAnswer {
        ExplainAnswer {
            id: 1,
            node: node.into(),
            explanation_json: json.into(),
            error: error.into(),
        }
    }

    #[test]
    fn only_nodes_holding_the_target_are_kept_highest_score_first() {
        let held = |score: f64| {
            format!(r#"{{"target":{{"cgroups":["/a"]}},"findings":[{{"score":{score}}}]}}"#)
        };
        let kept = holding(vec![
            answer("low", &held(1.5), ""),
            answer("absent", r#"{"target":{"cgroups":[]},"findings":[]}"#, ""),
            answer("down", "", "no window to explain"),
            answer("high", &held(2.9), ""),
            answer("garbled", "{", ""),
            answer("no-such-slo", "", ""),
            answer(
                "slo",
                r#"{"target":{"cgroups":[],"slo":{"good":1}},"findings":[]}"#,
                "",
            ),
        ]);
        let nodes: Vec<&str> = kept.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(nodes, ["high", "low", "slo", "down"]);
    }
}
