//! `sonde.v1.Query`: the fleet for `sonde fleet` and anyone else.

use std::{sync::atomic::Ordering, sync::Arc};

use sonde_proto::v1::{
    query_server::Query, CollectorHealth, GetNodeRequest, HealthRequest, ListNodesRequest,
    ListNodesResponse, ListSlosRequest, ListSlosResponse, NodeDetail, Rejection,
};
use tonic::{Request, Response, Status};

use crate::{now_unix_ns, state::State};

/// What a collector's fleet views cover: the agents streaming to it. With
/// replicas, each answers for its own agents.
pub const SCOPE: &str = "this replica";

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
        let nodes = self.state.fleet().list(now_unix_ns());
        Ok(Response::new(ListNodesResponse {
            nodes,
            scope: SCOPE.to_owned(),
        }))
    }

    async fn get_node(
        &self,
        request: Request<GetNodeRequest>,
    ) -> Result<Response<NodeDetail>, Status> {
        let name = request.into_inner().node_name;
        self.state
            .fleet()
            .node(&name, now_unix_ns())
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no report from a node named '{name}'")))
    }

    async fn list_slos(
        &self,
        _: Request<ListSlosRequest>,
    ) -> Result<Response<ListSlosResponse>, Status> {
        Ok(Response::new(ListSlosResponse {
            slos: self.state.fleet().slos(),
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
