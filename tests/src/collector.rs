//! The collector refuses bad input with a status that says why, counts it,
//! and keeps serving everyone else. No privileges needed.

use std::time::Duration;

use sonde_proto::{
    histogram::to_wire,
    series::StringTable,
    v1::{
        ingest_client::IngestClient, query_client::QueryClient, Ack, AgentReport, HealthRequest,
        Metric, MetricKind, NodeIdentity, Point,
    },
    PROTOCOL_VERSION,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Code, Status};

use crate::procs::{free_port, Proc};

fn report(seq: u64, points: usize) -> AgentReport {
    let mut h = sonde_slo::Histogram::new();
    h.record_binary_ns(1000);
    let mut strings = StringTable::new();
    let points = (0..points)
        .map(|i| Point {
            label_refs: strings.labels(&[("syscall.name", &format!("s{i}"))]),
            count: 0,
            histogram: Some(to_wire(&h)),
            value: 0.0,
            ..Default::default()
        })
        .collect();
    AgentReport {
        protocol_version: PROTOCOL_VERSION,
        node: Some(NodeIdentity {
            node_name: "bad-input-good-node".into(),
            boot_id: "boot".into(),
            ..Default::default()
        }),
        sequence: seq,
        window_start_unix_ns: 1,
        window_end_unix_ns: 2,
        complete: true,
        metrics: vec![Metric {
            name: "system.linux.syscall.duration".into(),
            unit: "s".into(),
            description: String::new(),
            kind: MetricKind::Histogram as i32,
            points,
        }],
        losses: vec![],
        events: vec![],
        probes: vec![],
        strings: strings.into_strings(),
        totals_start_unix_ns: 0,
        explanations: vec![],
        answers_explain: false,
    }
}

/// A message that is not a report: field 2 (the node) as a number.
#[derive(Clone, PartialEq, prost::Message)]
struct Bogus {
    #[prost(uint64, tag = "2")]
    node: u64,
}

/// Sends `messages` on a fresh stream and returns the status it ends with.
async fn refusal(channel: Channel, reports: Vec<AgentReport>) -> Status {
    let mut client = IngestClient::new(channel);
    match client.report(tokio_stream::iter(reports)).await {
        Err(status) => status,
        Ok(response) => match response.into_inner().message().await {
            Ok(Some(ack)) => panic!("unexpected ack {ack:?}"),
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => status,
        },
    }
}

async fn bogus_refusal(channel: Channel) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/sonde.v1.Ingest/Report");
    let codec = tonic_prost::ProstCodec::<Bogus, Ack>::default();
    let request = tonic::Request::new(tokio_stream::iter(vec![Bogus { node: 7 }]));
    match grpc.streaming(request, path, codec).await {
        Err(status) => status,
        Ok(response) => match response.into_inner().message().await {
            Err(status) => status,
            other => panic!("bogus message accepted: {other:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_reason_counted_and_others_keep_going() {
    if crate::vm_lacks(
        "sonde-collector (not in the guest image: the wire does not depend on the kernel)",
    ) {
        return;
    }
    let port = free_port();
    let _collector = Proc::collector(port, &["--max-report-bytes", "4096"]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    // A good agent keeps its stream open through everything below.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut good = IngestClient::new(channel.clone())
        .report(ReceiverStream::new(rx))
        .await
        .expect("good stream")
        .into_inner();
    tx.send(report(1, 1)).await.expect("send");
    let ack = good.message().await.expect("ack").expect("ack");
    assert_eq!((ack.sequence, ack.duplicate), (1, false));

    let mut wrong_version = report(2, 1);
    wrong_version.protocol_version = 99;
    let s = refusal(channel.clone(), vec![wrong_version]).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(
        s.message()
            .contains("protocol version 99; this collector speaks version 1"),
        "{s:?}"
    );

    let s = refusal(channel.clone(), vec![report(3, 200)]).await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("report too large"), "{s:?}");
    assert!(s.message().contains("4096"), "names the limit: {s:?}");

    let s = bogus_refusal(channel.clone()).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().starts_with("malformed report"), "{s:?}");

    let mut anonymous = report(4, 1);
    anonymous.node = None;
    let s = refusal(channel.clone(), vec![anonymous]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("node identity"), "{s:?}");

    let mut dangling = report(5, 1);
    dangling.strings.clear();
    let s = refusal(channel.clone(), vec![dangling]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("strings the report does not have"),
        "{s:?}"
    );

    // The good stream was never disturbed; a copy is acked as a duplicate.
    tx.send(report(2, 1)).await.expect("send");
    tx.send(report(1, 1)).await.expect("send");
    let ack = good.message().await.expect("ack").expect("ack");
    assert_eq!((ack.sequence, ack.duplicate), (2, false));
    let ack = good.message().await.expect("ack").expect("ack");
    assert_eq!((ack.sequence, ack.duplicate), (1, true));

    let health = QueryClient::new(channel)
        .health(HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    let count = |reason: &str| {
        health
            .rejections
            .iter()
            .find(|r| r.reason == reason)
            .map(|r| r.count)
    };
    assert_eq!(count("protocol_version"), Some(1));
    assert_eq!(count("oversized"), Some(1));
    assert_eq!(count("malformed"), Some(1));
    assert_eq!(count("invalid"), Some(2));
    assert_eq!((health.reports_accepted, health.duplicates), (2, 1));
    assert_eq!(health.streams_open, 1);
    drop(tx);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
