//! `sonde fleet`: the fleet as a collector sees it, from its Query API.

use std::{fmt::Write as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use sonde_proto::{
    histogram, names,
    v1::{
        GetNodeRequest, HealthRequest, ListNodesRequest, ListSlosRequest, MetricKind, NodeDetail,
        NodeExplanation, NodeSummary,
    },
};

use super::{render, TlsArgs};
use crate::export::{grpc::query_client, now_unix_ns, wire::finding_from_wire};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The collector (http://host:port or https://host:port). `explain`
    /// of a cgroup, pod or unit (or of an SLO with --windows) asks every
    /// replica: each address of the name, and of each --collector given.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:7411",
        global = true,
        action = clap::ArgAction::Append
    )]
    collector: Vec<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// One node in detail: its series since the collector first saw it.
    #[arg(long, conflicts_with = "health")]
    node: Option<String>,
    /// The collector's own health: streams, reports, refusals by reason.
    #[arg(long)]
    health: bool,
    /// Print the Query API's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Rows in the node detail table.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[command(subcommand)]
    view: Option<View>,
}

#[derive(Debug, clap::Subcommand)]
enum View {
    /// The fleet's SLOs, as the collector evaluates them over every
    /// matching node (sum of good over sum of total); beside each alert,
    /// the top finding of the nodes whose alert of that SLO fires.
    Slo,
    /// Why an SLO's alerts fire across the fleet: each node's explanation
    /// (`sonde explain --slo` over its recent windows, carried by its
    /// reports while its alert fires), the highest-scoring first. A cgroup,
    /// pod or unit: the collector asks the agents streaming to it, and each
    /// node that has it explains it over its recent windows.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["slo", "cgroup", "pod", "unit"])))]
struct ExplainArgs {
    /// The SLO, by name.
    #[arg(long, value_name = "NAME")]
    slo: Option<String>,
    /// A cgroup v2 path and every cgroup under it, on the nodes that have it.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,
    /// A Kubernetes pod, as NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME", value_parser = crate::explain::parse_pod)]
    pod: Option<(String, String)>,
    /// A systemd unit or slice.
    #[arg(long, value_name = "NAME")]
    unit: Option<String>,
    /// Each node's last N windows (default: all it keeps, 10). With --slo,
    /// the nodes streaming here are asked, rather than the alerts'
    /// explanations (over their last 10) read.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    windows: Option<u32>,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(View::Explain(target)) = &args.view {
        if target.slo.is_none() || target.windows.is_some() {
            return asked(&args, target).await;
        }
    }
    let [url] = args.collector.as_slice() else {
        anyhow::bail!(
            "{} --collector given: only `sonde fleet explain` of a cgroup, pod or unit (or an SLO with --windows) asks several; give one",
            args.collector.len()
        );
    };
    let config = args.tls.collector(url, Duration::from_secs(1));
    let mut client = query_client(&config).await?;
    if let Some(View::Explain(target)) = &args.view {
        let Some(slo) = &target.slo else {
            anyhow::bail!("give exactly one of --slo, --cgroup, --pod, --unit");
        };
        let slos = list_slos(&mut client).await?;
        let ours: Vec<&NodeExplanation> = slos
            .explanations
            .iter()
            .filter(|e| e.explanation.as_ref().is_some_and(|x| x.slo == *slo))
            .collect();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&ours)?);
        } else {
            print!("{}", scope_line(&slos.scope, &slos.store_error));
            print!("{}", fleet_explanation(slo, &ours));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(View::Slo) = args.view {
        let slos = list_slos(&mut client).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&slos)?);
        } else {
            print!("{}", scope_line(&slos.scope, &slos.store_error));
            print!("{}", slo_table(&slos.slos, &slos.explanations));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.health {
        let health = client
            .health(HealthRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
            .context("asking the collector")?
            .into_inner();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&health)?);
        } else {
            println!(
                "streams open {}  reports accepted {}  duplicates dropped {}  nodes {}",
                health.streams_open, health.reports_accepted, health.duplicates, health.nodes
            );
            for r in &health.rejections {
                println!("refused {:<18} {}", r.reason, r.count);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match &args.node {
        Some(name) => {
            let detail = client
                .get_node(GetNodeRequest {
                    node_name: name.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))
                .context("asking the collector")?
                .into_inner();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print!("{}", node_table(&detail, args.top));
            }
        }
        None => {
            let nodes = client
                .list_nodes(ListNodesRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))
                .context("asking the collector")?
                .into_inner();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                print!("{}", scope_line(&nodes.scope, &nodes.store_error));
                print!(
                    "{}",
                    fleet_table(&nodes.nodes, nodes.scope == names::SCOPE_STORE)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The answer's scope, said first when the collector gives one (a
/// collector older than replicas gives none); and why a collector with a
/// store answered for itself only.
fn scope_line(scope: &str, store_error: &str) -> String {
    let mut out = match scope {
        "" => String::new(),
        names::SCOPE_STORE => {
            format!("scope: {scope} (every node that wrote its windows there)\n")
        }
        _ => format!("scope: {scope} (the agents streaming to this collector)\n"),
    };
    if !store_error.is_empty() {
        let _ = writeln!(out, "not the whole fleet: {store_error}");
    }
    out
}

/// The fleet's SLOs and the nodes' explanations of their firing alerts.
async fn list_slos(
    client: &mut sonde_proto::v1::query_client::QueryClient<tonic::transport::Channel>,
) -> anyhow::Result<sonde_proto::v1::ListSlosResponse> {
    Ok(client
        .list_slos(ListSlosRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .context("asking the collector")?
        .into_inner())
}

/// How long a replica gets to answer `explain` (it waits 5 s for its agents).
const ASK_BOUND: Duration = Duration::from_secs(15);

/// A cgroup, pod or unit explained by the nodes streaming to the collector
/// that have it. None has it: one line saying where to ask, exit 1.
async fn asked(args: &Args, target: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let (kind, name) = match (&target.slo, &target.cgroup, &target.pod, &target.unit) {
        (Some(slo), _, _, _) => ("slo", slo.clone()),
        (_, Some(path), _, _) => ("cgroup", path.clone()),
        (_, _, Some((ns, pod)), _) => ("pod", format!("{ns}/{pod}")),
        (_, _, _, Some(unit)) => ("unit", unit.clone()),
        _ => anyhow::bail!("give exactly one of --slo, --cgroup, --pod, --unit"),
    };
    let request = sonde_proto::v1::FleetExplainRequest {
        target_kind: kind.to_owned(),
        target: name.clone(),
        windows: target.windows.unwrap_or(0),
    };
    // Every replica: each address of each collector name (once), asked at
    // once.
    let mut replicas = Vec::new();
    let mut unreachable = Vec::new();
    let mut addresses = std::collections::BTreeSet::new();
    for url in &args.collector {
        let config = args.tls.collector(url, Duration::from_secs(1));
        match config.replicas().await {
            Ok(found) => replicas.extend(found.into_iter().filter(|r| addresses.insert(r.address))),
            Err(e) => unreachable.push(format!("{url}: {e}")),
        }
    }
    let mut asking = tokio::task::JoinSet::new();
    for replica in replicas {
        let request = request.clone();
        asking.spawn(async move {
            let name = replica.name();
            let answer = async {
                let mut client = replica.query().await?;
                match tokio::time::timeout(ASK_BOUND, client.explain(request)).await {
                    Ok(Ok(a)) => Ok(a.into_inner()),
                    Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Err(
                        "this collector predates `sonde fleet explain` of a cgroup, pod or unit: upgrade it"
                            .to_owned(),
                    ),
                    Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                    Err(_) => Err(format!("no answer within {ASK_BOUND:?}")),
                }
            };
            (name, answer.await)
        });
    }
    let mut answer = sonde_proto::v1::FleetExplainResponse::default();
    let mut reached = Vec::new();
    while let Some(joined) = asking.join_next().await {
        match joined {
            Ok((replica, Ok(a))) => {
                reached.push(replica);
                answer.asked += a.asked;
                answer.unanswered.extend(a.unanswered);
                answer.answers.extend(a.answers);
            }
            Ok((replica, Err(e))) => unreachable.push(format!("{replica}: {e}")),
            Err(e) => unreachable.push(e.to_string()),
        }
    }
    if reached.is_empty() {
        anyhow::bail!(
            "no collector answered ({}); check --collector",
            unreachable.join("; ")
        );
    }
    reached.sort();
    unreachable.sort();
    // Each node once (one that moved between replicas may answer twice, an
    // explanation winning over an error), the highest top score first.
    let top = |a: &sonde_proto::v1::ExplainAnswer| -> (bool, f64) {
        let score = serde_json::from_str::<serde_json::Value>(&a.explanation_json)
            .ok()
            .and_then(|e| {
                e.pointer("/findings/0/score")
                    .and_then(serde_json::Value::as_f64)
            })
            .unwrap_or(0.0);
        (a.error.is_empty(), score)
    };
    answer.answers.sort_by(|a, b| {
        let (x, y) = (top(a), top(b));
        y.0.cmp(&x.0)
            .then(y.1.total_cmp(&x.1))
            .then_with(|| a.node.cmp(&b.node))
    });
    let mut seen = std::collections::BTreeSet::new();
    answer.answers.retain(|a| seen.insert(a.node.clone()));
    answer.unanswered.sort();
    answer.unanswered.dedup();
    answer.unanswered.retain(|n| !seen.contains(n));
    answer.scope = format!("{} replica(s): {}", reached.len(), reached.join(", "));
    let mut nodes = Vec::new();
    let mut failed = Vec::new();
    for a in &answer.answers {
        if a.error.is_empty() {
            let e: crate::model::explain::Explanation =
                serde_json::from_str(&a.explanation_json)
                    .with_context(|| format!("reading node {}'s explanation", a.node))?;
            nodes.push((a.node.as_str(), e));
        } else {
            failed.push((a.node.as_str(), a.error.as_str()));
        }
    }
    if json {
        let out = serde_json::json!({
            "replicas": reached,
            "unreachable": unreachable,
            "asked": answer.asked,
            "unanswered": answer.unanswered,
            "nodes": nodes.iter().map(|(node, e)| serde_json::json!({"node": node, "explanation": e})).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(node, error)| serde_json::json!({"node": node, "error": error})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    let Some((first, e)) = nodes.first() else {
        let mut why = format!(
            "no node streaming to {} has {kind} {name} in its recent windows ({} agent(s) asked",
            answer.scope, answer.asked
        );
        for u in &unreachable {
            let _ = write!(why, "; unreachable {u}");
        }
        if !answer.unanswered.is_empty() {
            let _ = write!(why, "; no answer from {}", answer.unanswered.join(", "));
        }
        for (node, error) in &failed {
            let _ = write!(why, "; {node}: {error}");
        }
        why.push_str(
            "): give every replica (--collector, once each), or run `sonde explain` on the node",
        );
        anyhow::bail!(why);
    };
    if !json {
        let mut out = format!("asked: {} (the agents streaming to them)\n", answer.scope);
        for u in &unreachable {
            let _ = writeln!(out, "unreachable: {u}");
        }
        let _ = writeln!(
            out,
            "verdict: {} (node {first}; {} node(s) have it)",
            e.verdict,
            nodes.len()
        );
        for (node, e) in &nodes {
            let _ = writeln!(out, "{node}:");
            for line in crate::explain::render(e).lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        for (node, error) in &failed {
            let _ = writeln!(out, "{node}: could not explain: {error}");
        }
        if !answer.unanswered.is_empty() {
            let _ = writeln!(out, "no answer from: {}", answer.unanswered.join(", "));
        }
        print!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Each node's explanation of `slo`, the highest top score first (the
/// collector's order), the fleet's verdict first.
fn fleet_explanation(slo: &str, ours: &[&NodeExplanation]) -> String {
    let mut out = String::new();
    let Some(first) = ours.first().and_then(|e| e.explanation.as_ref()) else {
        let _ = writeln!(
            out,
            "verdict: no node explains {slo}: no agent's alert for it fires (explanations come with firing alerts)"
        );
        return out;
    };
    let _ = writeln!(
        out,
        "verdict: {} (node {}; {} node(s) firing)",
        first.verdict,
        ours.first().map_or("", |e| e.node.as_str()),
        ours.len()
    );
    for e in ours {
        let Some(x) = &e.explanation else { continue };
        let _ = writeln!(
            out,
            "{} ({}, {} windows): {}",
            e.node, x.severity, x.windows, x.verdict
        );
        for (i, f) in x.findings.iter().enumerate() {
            let line = crate::explain::finding_line(i + 1, &finding_from_wire(f));
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn slo_table(slos: &[sonde_proto::v1::FleetSlo], explanations: &[NodeExplanation]) -> String {
    let mut out = String::new();
    if slos.is_empty() {
        out.push_str("no fleet SLOs: start the collector with --config\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:<20} {:>8} {:>5} {:>9} {:>14} {:>8}  {:<34} {:<7} {:<10} NODES",
        "SLO", "SIGNAL", "TARGET", "DAYS", "SLI", "GOOD/TOTAL", "BUDGET", "BURN", "ALERT", "DATA"
    );
    for s in slos {
        let sli = if s.total == 0 {
            "-".to_owned()
        } else {
            format!("{:.3}%", 100.0 * s.good as f64 / s.total as f64)
        };
        let burn = s
            .burn_rates
            .iter()
            .map(|b| format!("{}:{:.2}", b.window, b.rate))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "{:<24} {:<20} {:>7}% {:>5} {:>9} {:>14} {:>7.1}%  {:<34} {:<7} {:<10} {}",
            s.name,
            s.signal,
            s.objective_percent,
            s.window_days,
            sli,
            format!("{}/{}", s.good, s.total),
            s.budget_remaining * 100.0,
            burn,
            s.severity,
            if s.complete { "complete" } else { "incomplete" },
            s.nodes.len()
        );
        // A firing alert carries its top finding: the highest-scoring node
        // explanation of the SLO of its name.
        let top = explanations
            .iter()
            .find(|e| e.explanation.as_ref().is_some_and(|x| x.slo == s.name));
        if let (true, Some(e), Some(x)) = (
            s.severity != "ok",
            top,
            top.and_then(|e| e.explanation.as_ref()),
        ) {
            let _ = writeln!(out, "  why ({}): {}", e.node, x.verdict);
        }
    }
    out
}

fn total(totals: &[sonde_proto::v1::MetricTotal], name: &str) -> u64 {
    totals
        .iter()
        .filter(|t| t.name == name)
        .map(|t| t.count)
        .sum()
}

/// The nodes, one row each. From the store, the reports and duplicates a
/// collector counted are not known (`-`), and a node's age is its last
/// window's end.
fn fleet_table(nodes: &[NodeSummary], from_store: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>10} {:>8} {:>6} {:>10} {:>7} {:>8} {:>7}  KERNEL",
        "NODE", "HEALTH", "LAST SEQ", "REPORTS", "DUPS", "CALLS/s", "ERR%", "LOST", "AGE"
    );
    let now = now_unix_ns();
    for n in nodes {
        let id = n.node.clone().unwrap_or_default();
        let (rate, err) = match &n.latest {
            Some(l) => {
                let secs = l.window_end_unix_ns.saturating_sub(l.window_start_unix_ns) as f64 / 1e9;
                let calls = total(&l.totals, names::SYSCALL_DURATION);
                let errors = total(&l.totals, names::SYSCALL_ERRORS);
                (
                    if secs > 0.0 { calls as f64 / secs } else { 0.0 },
                    if calls > 0 {
                        errors as f64 * 100.0 / calls as f64
                    } else {
                        0.0
                    },
                )
            }
            None => (0.0, 0.0),
        };
        let lost: u64 = n.losses.iter().map(|l| l.count).sum();
        let age = now.saturating_sub(n.last_received_unix_ns) as f64 / 1e9;
        let (reports, duplicates) = if from_store {
            ("-".to_owned(), "-".to_owned())
        } else {
            (n.reports.to_string(), n.duplicates.to_string())
        };
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:>10} {:>8} {:>6} {:>10.1} {:>6.2}% {:>8} {:>6.0}s  {}",
            id.node_name,
            n.health,
            n.latest.as_ref().map(|l| l.sequence).unwrap_or(0),
            reports,
            duplicates,
            rate,
            err,
            lost,
            age,
            id.kernel
        );
    }
    out
}

fn node_table(d: &NodeDetail, top: usize) -> String {
    let mut out = String::new();
    if let Some(s) = &d.summary {
        out.push_str(&fleet_table(
            std::slice::from_ref(s),
            d.scope == names::SCOPE_STORE,
        ));
        for p in &s.probes {
            let _ = writeln!(
                out,
                "  probe {} {} {}{}",
                p.probe, p.state, p.hook, p.reason
            );
        }
    }
    if d.scope == names::SCOPE_STORE {
        let _ = writeln!(
            out,
            "\n{} streams to another replica: its summary from the store; its series are in the store",
            d.summary
                .as_ref()
                .and_then(|s| s.node.as_ref())
                .map_or("the node", |n| n.node_name.as_str())
        );
        return out;
    }
    let _ = writeln!(out, "\nsince the collector first saw this node:");
    let _ = writeln!(
        out,
        "{:<44} {:<18} {:>12} {:>10} {:>8} {:>8}",
        "CGROUP", "SYSCALL", "CALLS", "ERRORS", "P50", "P99"
    );
    let mut errors: std::collections::HashMap<(String, String), u64> = Default::default();
    let label = |p: &sonde_proto::v1::LabeledPoint, k: &str| {
        p.labels
            .iter()
            .find(|l| l.key == k)
            .map(|l| l.value.clone())
            .unwrap_or_default()
    };
    for m in d.totals.iter().filter(|m| m.name == names::SYSCALL_ERRORS) {
        for p in &m.points {
            *errors
                .entry((
                    label(p, names::ATTR_CGROUP_PATH),
                    label(p, names::ATTR_SYSCALL_NAME),
                ))
                .or_default() += p.count;
        }
    }
    let mut rows = Vec::new();
    for m in d
        .totals
        .iter()
        .filter(|m| m.name == names::SYSCALL_DURATION && m.kind == MetricKind::Histogram as i32)
    {
        for p in &m.points {
            let Some(h) = p
                .histogram
                .as_ref()
                .and_then(|h| histogram::from_wire(h).ok())
            else {
                continue;
            };
            let key = (
                label(p, names::ATTR_CGROUP_PATH),
                label(p, names::ATTR_SYSCALL_NAME),
            );
            let errs = errors.get(&key).copied().unwrap_or(0);
            rows.push((h.count(), key, errs, h.quantile(0.5), h.quantile(0.99)));
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (calls, (cgroup, syscall), errs, p50, p99) in rows.into_iter().take(top) {
        let _ = writeln!(
            out,
            "{:<44} {:<18} {:>12} {:>10} {:>8} {:>8}",
            cgroup,
            syscall,
            calls,
            errs,
            render::secs(p50),
            render::secs(p99)
        );
    }
    out
}
