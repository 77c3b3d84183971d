//! `sonde.v1.Query`: the fleet for `sonde fleet` and anyone else.

use std::{sync::atomic::Ordering, sync::Arc};

use sonde_proto::v1::{
    query_server::Query, CollectorHealth, GetNodeRequest, HealthRequest, ListNodesRequest,
    ListNodesResponse, ListSlosRequest, ListSlosResponse, NodeDetail, Rejection,
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
            match tokio::try_join!(store.slos(now), store.explanations(now)) {
                Ok((slos, explanations)) => {
                    return Ok(Response::new(ListSlosResponse {
                        slos,
                        scope: store::SCOPE.to_owned(),
                        store_error,
                        explanations,
                    }))
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
