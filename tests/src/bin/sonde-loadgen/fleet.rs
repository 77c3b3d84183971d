//! `cargo xtask bench fleet`: the scale run of two collector replicas.
//!
//! 1,000 simulated nodes send a window every 10 s (their phases spread over
//! the 10 s), each on its own gRPC stream to the replica it ranks first by
//! rendezvous hashing of its node name (as the agent does), with its own
//! outbox: a window stays there until acked and is resent, with the same
//! sequence and the same cumulative values, after a failover. Both replicas
//! remote-write to one real Prometheus. After the steady phase one replica
//! is SIGKILLed, restarted after the down phase on the same address, and
//! the nodes that had moved come back to it. Then the nodes stop sending,
//! every window is acked (so stored), and for every node the store's
//! totals are compared with the load generator's own: the number of
//! samples (one per series per window: none lost), the last cumulative
//! values of counters and histogram counts, and the sum over time of the
//! counters (a window stored with another window's value would change it).
//!
//! Flags for a shorter run: `--nodes N` (1,000), `--steady-secs S` (180),
//! `--down-secs S` (60), `--after-secs S` (90).
//!
//! Pinning: both replicas on core 0 (one runtime thread each, so their CPU
//! time from /proc is what they cost); Prometheus and this load generator
//! on core 1.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use sonde_proto::{
    histogram::to_wire,
    remote_write::window_series,
    series::StringTable,
    v1::{AgentReport, Metric, MetricKind, NodeIdentity, Point},
    PROTOCOL_VERSION,
};
use sonde_tests::procs::{http_get, url_encode};

use super::{
    numbered, pin_to,
    remote_write::{cpu_secs, free_port, prometheus, scrape, sum, with_totals, Guard},
    rss_kib, Agent, Preencoded,
};

/// Seconds per window, as the agent's default.
const WINDOW: Duration = Duration::from_secs(10);
/// Stored samples each report becomes (see the module's doc: the machine's
/// Prometheus, not the collector, bounds the rate).
const TARGET_SAMPLES: usize = 500;
/// Latency histograms per report; the counters fill up to
/// [`TARGET_SAMPLES`].
const HISTOGRAMS: usize = 20;
/// Values recorded in each histogram per window.
const VALUES_PER_HISTOGRAM: u64 = 16;
/// Each counter's increase per window.
const COUNTER_STEP: u64 = 3;
/// A connection and the stream's opening must succeed within this.
const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// How often a node away from its first-choice replica checks it again
/// (the agent's `RECHECK`).
const RECHECK: Duration = Duration::from_secs(5);
/// Every window must be acked within this once the nodes stop sending.
const DRAIN_BOUND: Duration = Duration::from_secs(300);
/// The replica that is killed and restarted.
const VICTIM: usize = 0;
const OUTCOMES: [&str; 4] = ["stored", "already_stored", "refused", "queue_full"];

/// The run's shape, from flags (defaults: the issue's run).
struct Options {
    nodes: usize,
    steady: Duration,
    down: Duration,
    after: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let num = |flag: &str, default: u64| -> Result<u64> {
            match args.iter().position(|a| a == flag) {
                Some(i) => args
                    .get(i + 1)
                    .with_context(|| format!("{flag} needs a value"))?
                    .parse()
                    .with_context(|| format!("{flag} takes a whole number")),
                None => Ok(default),
            }
        };
        Ok(Self {
            nodes: usize::try_from(num("--nodes", 1000)?)?,
            steady: Duration::from_secs(num("--steady-secs", 180)?),
            down: Duration::from_secs(num("--down-secs", 60)?),
            after: Duration::from_secs(num("--after-secs", 90)?),
        })
    }
}

/// 64-bit FNV-1a with the agent's finaliser (`agent/src/export/grpc.rs`,
/// `stable_hash`), so the simulated nodes rank replicas as agents would.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Replica indices for `node`, first choice first (highest score).
fn rank(node: &str, addresses: &[String]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..addresses.len()).collect();
    order.sort_by_cached_key(|&i| {
        (
            std::cmp::Reverse(stable_hash(&[node.as_bytes(), addresses[i].as_bytes()])),
            addresses[i].clone(),
        )
    });
    order
}

fn node_name(node: usize) -> String {
    format!("node-{node:05}")
}

/// One node's window `seq`: [`HISTOGRAMS`] latency histograms and
/// `counters` error counters, each point's cumulative total `seq` times the
/// window's own (so every window's stored values differ, and a window lost
/// or stored under another's timestamp shows in the sums).
fn report(node: usize, seq: u64, counters: usize) -> AgentReport {
    let syscalls = ["read", "write", "openat", "futex"];
    let errors = ["EAGAIN", "EINTR", "ENOENT", "EPIPE", "ECONNRESET"];
    let cgroup = |c: usize| {
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{c:08x}_6f1c_4a8e_9d2b_3c1f5e7a.slice/cri-containerd-{c:016x}.scope")
    };
    let mut strings = StringTable::new();
    let mut durations = Vec::new();
    for i in 0..HISTOGRAMS {
        let (path, s) = (cgroup(i / syscalls.len()), syscalls[i % syscalls.len()]);
        let mut h = sonde_slo::Histogram::new();
        for k in 0..VALUES_PER_HISTOGRAM {
            h.record_binary_ns(((1000 + 250 * i as u64) * (100 + 9 * k)) / 100);
        }
        let mut total = sonde_slo::Histogram::new();
        for _ in 0..seq {
            total.merge(&h);
        }
        durations.push(Point {
            label_refs: strings.labels(&[("linux.cgroup.path", &path), ("syscall.name", s)]),
            histogram: Some(to_wire(&h)),
            total_histogram: Some(to_wire(&total)),
            ..Default::default()
        });
    }
    let mut failures = Vec::new();
    for i in 0..counters {
        let per_cgroup = syscalls.len() * errors.len();
        let path = cgroup(i / per_cgroup);
        let (s, e) = (
            syscalls[(i % per_cgroup) / errors.len()],
            errors[i % errors.len()],
        );
        failures.push(Point {
            label_refs: strings.labels(&[
                ("linux.cgroup.path", &path),
                ("syscall.name", s),
                ("error.type", e),
            ]),
            count: COUNTER_STEP,
            total_count: COUNTER_STEP * seq,
            ..Default::default()
        });
    }
    AgentReport {
        protocol_version: PROTOCOL_VERSION,
        node: Some(NodeIdentity {
            node_name: node_name(node),
            machine_id: format!("{node:032x}"),
            boot_id: format!("boot-{node}"),
            kernel: "6.18.0".into(),
            arch: "x86_64".into(),
            agent_version: "bench".into(),
        }),
        complete: true,
        totals_start_unix_ns: 1,
        metrics: vec![
            Metric {
                name: "system.linux.syscall.duration".into(),
                unit: "s".into(),
                kind: MetricKind::Histogram as i32,
                points: durations,
                ..Default::default()
            },
            Metric {
                name: "system.linux.syscall.errors".into(),
                unit: "{error}".into(),
                kind: MetricKind::Counter as i32,
                points: failures,
                ..Default::default()
            },
        ],
        strings: strings.into_strings(),
        ..Default::default()
    }
}

/// What a report becomes in the store: samples per report, the counters'
/// and the histograms' `_count` metric names.
struct Shape {
    counters: usize,
    samples: usize,
    counter_name: String,
    count_name: String,
}

impl Shape {
    fn measure() -> Result<Self> {
        let name = |s: &sonde_proto::remote_write::prompb::TimeSeries| {
            s.labels
                .iter()
                .find(|l| l.name == "__name__")
                .map(|l| l.value.clone())
        };
        let histograms = window_series(&report(0, 1, 0))?;
        let count_name = histograms
            .iter()
            .filter_map(name)
            .find(|n| n.ends_with("_count"))
            .context("no histogram _count series")?;
        let counters = TARGET_SAMPLES
            .checked_sub(histograms.len())
            .context("the histograms alone exceed the samples per report")?;
        let all = window_series(&report(0, 1, counters))?;
        let counter_name = all
            .iter()
            .filter_map(name)
            .find(|n| n.ends_with("_total"))
            .context("no counter series")?;
        Ok(Self {
            counters,
            samples: all.len(),
            counter_name,
            count_name,
        })
    }
}

/// What the run shares with every node.
struct Shared {
    ports: Vec<u16>,
    addresses: Vec<String>,
    t0: Instant,
    /// Window `seq` ends at `base_ns + (seq + 1) × 10 s` (Unix ns).
    base_ns: u64,
    nodes: usize,
    counters: usize,
    stop: AtomicBool,
}

/// One move away from a replica that stopped answering.
#[derive(Debug, Clone)]
struct Failover {
    from: usize,
    /// From the first failed send or ack to the first ack on `to` (or, when
    /// nothing waited to be resent, to the stream's opening there).
    secs: f64,
    resent: usize,
}

#[derive(Debug, Default)]
struct NodeResult {
    node: usize,
    /// Windows 1..=windows were produced.
    windows: u64,
    acks_by_replica: Vec<u64>,
    failovers: Vec<Failover>,
    /// Returns to the first-choice replica after a failover.
    returns: u64,
}

async fn open(port: u16) -> Result<Agent> {
    tokio::time::timeout(CONNECT_BOUND, Agent::open_with(port, Preencoded::default()))
        .await
        .context("connect timed out")?
}

/// One simulated node: windows into its outbox at its phase every 10 s,
/// streamed to its first-choice replica; on a failed send, a failed or
/// ended stream, it moves down its ranking and resends the outbox; away
/// from its first choice, it checks that one every [`RECHECK`] and moves
/// back (resending what is unacked) once it answers.
async fn node_task(node: usize, shared: Arc<Shared>) -> Result<NodeResult> {
    let name = node_name(node);
    let ranking = rank(&name, &shared.addresses);
    let phase = WINDOW.mul_f64(node as f64 / shared.nodes as f64);
    let due = |seq: u64| shared.t0 + phase + WINDOW * u32::try_from(seq - 1).unwrap_or(u32::MAX);
    let make = |seq: u64| {
        let mut p = Preencoded::new(&report(node, seq, shared.counters));
        p.sequence = seq;
        p.base_ns = shared.base_ns;
        p
    };
    let mut result = NodeResult {
        node,
        acks_by_replica: vec![0; shared.ports.len()],
        ..Default::default()
    };
    let mut outbox: BTreeMap<u64, Preencoded> = BTreeMap::new();
    let mut next = 1u64;
    let mut stopped = false;
    // (when, which replica) of the first failure not yet recovered from.
    let mut failed: Option<(Instant, usize)> = None;
    'connect: loop {
        // Connect down the ranking.
        let mut connected = None;
        for &r in &ranking {
            if let Ok(agent) = open(shared.ports[r]).await {
                connected = Some((r, agent));
                break;
            }
        }
        let Some((mut current, mut agent)) = connected else {
            // Every replica down: the outbox holds; windows keep coming.
            tokio::time::sleep(Duration::from_secs(1)).await;
            while !stopped && Instant::now() >= due(next) {
                if shared.stop.load(Ordering::Relaxed) {
                    stopped = true;
                } else {
                    outbox.insert(next, make(next));
                    next += 1;
                }
            }
            continue 'connect;
        };
        // Waiting for the first ack on the new replica: (failed at, from,
        // resent).
        let mut pending: Option<(Instant, usize, usize)> = None;
        if let Some((at, from)) = failed.take() {
            if from == current {
                // Reconnected to the same replica: no move.
            } else if outbox.is_empty() {
                result.failovers.push(Failover {
                    from,
                    secs: at.elapsed().as_secs_f64(),
                    resent: 0,
                });
            } else {
                pending = Some((at, from, outbox.len()));
            }
        }
        let mut resend: Vec<Preencoded> = outbox.values().cloned().collect();
        let mut recheck = Instant::now() + RECHECK;
        loop {
            for p in resend.drain(..) {
                if agent.tx.send(p).await.is_err() {
                    failed.get_or_insert((Instant::now(), current));
                    continue 'connect;
                }
            }
            if stopped && outbox.is_empty() {
                break 'connect;
            }
            let away = current != ranking[0];
            tokio::select! {
                _ = tokio::time::sleep_until(due(next).into()), if !stopped => {
                    if shared.stop.load(Ordering::Relaxed) {
                        stopped = true;
                        continue;
                    }
                    let p = make(next);
                    outbox.insert(next, p.clone());
                    next += 1;
                    resend.push(p);
                }
                ack = agent.acks.message() => match ack {
                    Ok(Some(ack)) => {
                        if outbox.remove(&ack.sequence).is_some() {
                            result.acks_by_replica[current] += 1;
                        }
                        if let Some((at, from, resent)) = pending.take() {
                            result.failovers.push(Failover {
                                from,
                                secs: at.elapsed().as_secs_f64(),
                                resent,
                            });
                        }
                    }
                    Ok(None) | Err(_) => {
                        failed.get_or_insert((Instant::now(), current));
                        continue 'connect;
                    }
                },
                _ = tokio::time::sleep_until(recheck.into()), if away => {
                    recheck = Instant::now() + RECHECK;
                    if let Ok(back) = open(shared.ports[ranking[0]]).await {
                        // Moving back: what the other replica has not acked
                        // goes to this one (it may then be written twice;
                        // the store keeps one).
                        agent = back;
                        current = ranking[0];
                        result.returns += 1;
                        pending = None;
                        resend = outbox.values().cloned().collect();
                    }
                }
            }
        }
    }
    result.windows = next - 1;
    Ok(result)
}

/// A collector replica on core 0, writing to Prometheus on `store_port`.
fn start_replica(
    collector: &Path,
    port: u16,
    metrics_port: u16,
    store_port: u16,
    log: &Path,
) -> Result<Guard> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    Ok(Guard(
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(collector)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--worker-threads", "1", "--log-level", "warn"])
            .args(["--prometheus-listen", &format!("127.0.0.1:{metrics_port}")])
            .args([
                "--remote-write-url",
                &format!("http://127.0.0.1:{store_port}/api/v1/write"),
                "--remote-write-queue-max-bytes",
                "1073741824",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a collector replica under taskset")?,
    ))
}

/// What one replica process (one incarnation) did. CPU and RSS are read
/// before its `/metrics` is scraped: rendering the fleet's series there
/// costs CPU and memory that remote write does not need, so a replica is
/// scraped only when it is about to be killed and at the end.
#[derive(Debug, Default, Clone)]
struct Incarnation {
    cpu_secs: f64,
    rss_kib: u64,
    samples: BTreeMap<&'static str, f64>,
}

fn observe(pid: u32, metrics_port: u16) -> Result<Incarnation> {
    let (cpu_secs, rss_kib) = (cpu_secs(pid)?, rss_kib(pid)?);
    let text = scrape(metrics_port)?;
    Ok(Incarnation {
        cpu_secs,
        rss_kib,
        samples: OUTCOMES
            .iter()
            .map(|&o| {
                (
                    o,
                    sum(
                        &text,
                        "sonde_export_remote_write_samples_total",
                        &[&format!("outcome=\"{o}\"")],
                    ),
                )
            })
            .collect(),
    })
}

async fn wait_up(port: u16) -> Result<()> {
    let started = Instant::now();
    while super::connect(port).await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("replica on {port} did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// An instant query's single value (the test's own parsing of the API's
/// JSON), at `at` (Unix seconds).
/// The raw samples a range selector `q` holds at `at`, all series (a
/// count of them, taken here: `count_over_time` drops the metric names, so
/// it cannot count a node's series that differ by name only).
fn count_samples(port: u16, q: &str, at: f64) -> Result<f64> {
    let (status, body) = http_get(
        port,
        &format!("/api/v1/query?query={}&time={at:.3}", url_encode(q)),
    )
    .with_context(|| format!("query {q}"))?;
    if status != 200 {
        bail!("{q}: {status} {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("query answer JSON")?;
    let result = v["data"]["result"]
        .as_array()
        .with_context(|| format!("{q}: no result in {body}"))?;
    Ok(result
        .iter()
        .map(|r| r["values"].as_array().map_or(0, Vec::len))
        .sum::<usize>() as f64)
}

fn query_value(port: u16, q: &str, at: f64) -> Result<f64> {
    let (status, body) = http_get(
        port,
        &format!("/api/v1/query?query={}&time={at:.3}", url_encode(q)),
    )
    .with_context(|| format!("query {q}"))?;
    if status != 200 {
        bail!("{q}: {status} {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("query answer JSON")?;
    let result = v["data"]["result"]
        .as_array()
        .with_context(|| format!("{q}: no result in {body}"))?;
    match result.as_slice() {
        [] => Ok(0.0),
        [one] => one["value"][1]
            .as_str()
            .with_context(|| format!("{q}: no value"))?
            .parse()
            .with_context(|| format!("{q}: value")),
        more => bail!("{q}: {} series, expected one", more.len()),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(mut secs: Vec<f64>) -> serde_json::Value {
    secs.sort_by(f64::total_cmp);
    json!({
        "count": secs.len(),
        "p50_secs": percentile(&secs, 0.5),
        "p99_secs": percentile(&secs, 0.99),
        "max_secs": percentile(&secs, 1.0),
    })
}

fn unix_secs() -> Result<f64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64())
}

pub fn run(collector: &Path, out: &Path, args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let shape = Shape::measure()?;
    let dir = tempfile::tempdir()?;
    let (prometheus_guard, store) = prometheus(dir.path())?;
    let prometheus_cpu =
        || -> Result<f64> { Ok(sum(&scrape(store)?, "process_cpu_seconds_total", &[])) };
    let prometheus_cpu_before = prometheus_cpu()?;
    let own_cpu_before = cpu_secs(std::process::id())?;
    // The collector benchmark's report (500 series), as remote write
    // stores it: what the issue's 500 series per node would cost the store.
    let issue_report_samples = window_series(&numbered(&with_totals(0), 1))?.len();
    let ports = [free_port()?, free_port()?];
    let metrics_ports = [free_port()?, free_port()?];
    let logs = [
        dir.path().join("replica-0.log"),
        dir.path().join("replica-1.log"),
    ];
    let mut replicas = Vec::new();
    for r in 0..2 {
        replicas.push(Some(start_replica(
            collector,
            ports[r],
            metrics_ports[r],
            store,
            &logs[r],
        )?));
    }
    pin_to(1);
    println!(
        "fleet: {} nodes, a window every {} s each (phases spread over it), {} stored samples per report ({HISTOGRAMS} latency histograms of {VALUES_PER_HISTOGRAM} values, {} error counters), {:.0} samples/s in all; two replicas on core 0, Prometheus and the load on core 1",
        options.nodes,
        WINDOW.as_secs(),
        shape.samples,
        shape.counters,
        options.nodes as f64 * shape.samples as f64 / WINDOW.as_secs_f64()
    );
    println!(
        "  (the collector benchmark's report of 500 series would become {issue_report_samples} samples)"
    );
    println!(
        "  timeline: {} s steady, SIGKILL replica {VICTIM}, {} s down, restarted, {} s more, stop sending, wait for every ack",
        options.steady.as_secs(),
        options.down.as_secs(),
        options.after.as_secs()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let pid = |g: &Option<Guard>| g.as_ref().map(|g| g.0.id()).context("replica not running");
    let started_unix = unix_secs()?;
    let outcome = runtime.block_on(async {
        for &p in &ports {
            wait_up(p).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle: Vec<u64> = replicas
            .iter()
            .map(|g| rss_kib(pid(g)?))
            .collect::<Result<_>>()?;
        let base_ns = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos(),
        )? - 2 * WINDOW.as_nanos() as u64;
        let shared = Arc::new(Shared {
            ports: ports.to_vec(),
            addresses: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            t0: Instant::now(),
            base_ns,
            nodes: options.nodes,
            counters: shape.counters,
            stop: AtomicBool::new(false),
        });
        let tasks: Vec<_> = (0..options.nodes)
            .map(|n| tokio::spawn(node_task(n, shared.clone())))
            .collect();
        tokio::time::sleep(options.steady).await;
        let survivor = 1 - VICTIM;
        let survivor_steady_kib = rss_kib(pid(&replicas[survivor])?)?;
        let victim_before_kill = observe(pid(&replicas[VICTIM])?, metrics_ports[VICTIM])?;
        let killed_at = Instant::now();
        replicas[VICTIM] = None; // Guard's drop: SIGKILL and reap.
        println!(
            "  replica {VICTIM} SIGKILLed at {:.0} s",
            shared.t0.elapsed().as_secs_f64()
        );
        tokio::time::sleep(options.down).await;
        let alone_kib = rss_kib(pid(&replicas[survivor])?)?;
        replicas[VICTIM] = Some(start_replica(
            collector,
            ports[VICTIM],
            metrics_ports[VICTIM],
            store,
            &logs[VICTIM],
        )?);
        wait_up(ports[VICTIM]).await?;
        println!(
            "  replica {VICTIM} restarted after {:.0} s down",
            killed_at.elapsed().as_secs_f64()
        );
        tokio::time::sleep(options.after).await;
        shared.stop.store(true, Ordering::Relaxed);
        let stop_sending = Instant::now();
        println!(
            "  stopped sending at {:.0} s; waiting for every ack",
            shared.t0.elapsed().as_secs_f64()
        );
        let mut results = Vec::new();
        let deadline = tokio::time::Instant::now() + DRAIN_BOUND;
        for t in tasks {
            let r = tokio::time::timeout_at(deadline, t)
                .await
                .context("not every window was acked within the bound")???;
            results.push(r);
        }
        let drained = stop_sending.elapsed().as_secs_f64();
        let end: Vec<Incarnation> = replicas
            .iter()
            .zip(metrics_ports)
            .map(|(g, m)| observe(pid(g)?, m))
            .collect::<Result<_>>()?;
        let wall = shared.t0.elapsed().as_secs_f64();
        anyhow::Ok((
            results,
            idle,
            [victim_before_kill.rss_kib, survivor_steady_kib],
            victim_before_kill,
            alone_kib,
            end,
            drained,
            wall,
            base_ns,
        ))
    })?;
    let (results, idle, steady_kib, victim_before_kill, alone_kib, end, drained, wall, base_ns) =
        outcome;
    let ended_unix = unix_secs()?;

    // Per replica: the victim's two incarnations add up.
    let victim_incarnations = [&victim_before_kill, &end[VICTIM]];
    let cpu = [
        victim_incarnations.iter().map(|i| i.cpu_secs).sum::<f64>(),
        end[1 - VICTIM].cpu_secs,
    ];
    let samples_of = |r: usize, o: &str| -> f64 {
        if r == VICTIM {
            victim_incarnations
                .iter()
                .map(|i| i.samples.get(o).copied().unwrap_or(0.0))
                .sum()
        } else {
            end[r].samples.get(o).copied().unwrap_or(0.0)
        }
    };
    let reports: Vec<u64> = (0..2)
        .map(|r| results.iter().map(|n| n.acks_by_replica[r]).sum())
        .collect();
    let windows: u64 = results.iter().map(|n| n.windows).sum();

    // Failovers of the nodes that were on the victim.
    let moves: Vec<&Failover> = results
        .iter()
        .flat_map(|n| n.failovers.iter())
        .filter(|f| f.from == VICTIM)
        .collect();
    let moved_nodes = results
        .iter()
        .filter(|n| n.failovers.iter().any(|f| f.from == VICTIM))
        .count();
    let came_back = results
        .iter()
        .filter(|n| n.failovers.iter().any(|f| f.from == VICTIM) && n.returns > 0)
        .count();
    let other_failovers = results
        .iter()
        .flat_map(|n| n.failovers.iter())
        .filter(|f| f.from != VICTIM)
        .count();
    let all_moves = summary(moves.iter().map(|f| f.secs).collect());
    let resent_moves = summary(
        moves
            .iter()
            .filter(|f| f.resent > 0)
            .map(|f| f.secs)
            .collect(),
    );
    let windows_resent: usize = moves.iter().map(|f| f.resent).sum();

    // The store against the load generator's own totals, node by node.
    eprintln!("checking the store for each of {} nodes", results.len());
    let at = unix_secs()?;
    let range = format!("{}s", (at - base_ns as f64 / 1e9).ceil() as u64 + 60);
    let mut mismatches = Vec::new();
    for n in &results {
        let host = format!("host_name=\"{}\"", node_name(n.node));
        let w = n.windows;
        let all = format!("{{{host}}}[{range}]");
        let samples = count_samples(store, &all, at)?;
        let want = (w * shape.samples as u64) as f64;
        if samples != want {
            mismatches.push(json!({"node": node_name(n.node), "query": all, "stored": samples, "expected": want}));
        }
        let expect = [
            (
                format!(
                    "sum(last_over_time({}{{{host}}}[{range}]))",
                    shape.counter_name
                ),
                (shape.counters as u64 * COUNTER_STEP * w) as f64,
            ),
            (
                format!(
                    "sum(last_over_time({}{{{host}}}[{range}]))",
                    shape.count_name
                ),
                (HISTOGRAMS as u64 * VALUES_PER_HISTOGRAM * w) as f64,
            ),
            (
                format!(
                    "sum(sum_over_time({}{{{host}}}[{range}]))",
                    shape.counter_name
                ),
                (shape.counters as u64 * COUNTER_STEP * w * (w + 1) / 2) as f64,
            ),
        ];
        for (q, want) in expect {
            let got = query_value(store, &q, at)?;
            if got != want {
                mismatches.push(
                    json!({"node": node_name(n.node), "query": q, "stored": got, "expected": want}),
                );
            }
        }
    }
    let prom_text = scrape(store)?;
    let appended = sum(
        &prom_text,
        "prometheus_tsdb_head_samples_appended_total",
        &[],
    );
    let prometheus_cpu_secs =
        sum(&prom_text, "process_cpu_seconds_total", &[]) - prometheus_cpu_before;
    let own_cpu_secs = cpu_secs(std::process::id())? - own_cpu_before;
    drop(replicas);
    drop(prometheus_guard);

    let secs_run = ended_unix - started_unix;
    let per_replica: Vec<serde_json::Value> = (0..2)
        .map(|r| {
            let written = samples_of(r, "stored") + samples_of(r, "already_stored");
            let acked_samples = (reports[r] * shape.samples as u64) as f64;
            json!({
                "replica": r,
                "killed_and_restarted": r == VICTIM,
                "cpu_secs": cpu[r],
                "reports_acked": reports[r],
                "reports_per_core_second": reports[r] as f64 / cpu[r],
                "samples_of_acked_reports": acked_samples,
                "samples_per_core_second": acked_samples / cpu[r],
                "samples_written_per_its_metrics": written,
                "samples": OUTCOMES.iter().map(|&o| (o.to_owned(), json!(samples_of(r, o)))).collect::<serde_json::Map<_, _>>(),
                "rss_kib": {"idle": idle[r], "steady": steady_kib[r], "end": end[r].rss_kib},
            })
        })
        .collect();
    let total_cpu = cpu[0] + cpu[1];
    let total_reports = (reports[0] + reports[1]) as f64;
    let total_samples = total_reports * shape.samples as f64;
    let refused: f64 = (0..2)
        .map(|r| samples_of(r, "refused") + samples_of(r, "queue_full"))
        .sum();
    let already: f64 = (0..2).map(|r| samples_of(r, "already_stored")).sum();
    let survivor = 1 - VICTIM;
    let rss_per_1000 =
        (alone_kib.saturating_sub(idle[survivor])) as f64 / 1024.0 * 1000.0 / results.len() as f64;
    let result = json!({
        "nodes": results.len(),
        "window_secs": WINDOW.as_secs(),
        "samples_per_report": shape.samples,
        "report": {"histograms": HISTOGRAMS, "counters": shape.counters, "note": "each node's report becomes this many stored samples (measured with window_series), so that 1,000 nodes stay within what this machine's Prometheus stores per second; the collector benchmark's report of 500 series would become collector_bench_report_samples"},
        "collector_bench_report_samples": issue_report_samples,
        "offered_samples_per_sec": results.len() as f64 * shape.samples as f64 / WINDOW.as_secs_f64(),
        "timeline_secs": {"steady": options.steady.as_secs(), "down": options.down.as_secs(), "after_restart": options.after.as_secs(), "drain": drained, "wall": wall},
        "pinning": "both replicas on core 0 (one runtime thread each); Prometheus and the load generator on core 1",
        "windows_sent": windows,
        "windows_acked": total_reports,
        "failover": {
            "killed_replica": VICTIM,
            "nodes_moved": moved_nodes,
            "nodes_moved_and_came_back": came_back,
            "all_moves": all_moves,
            "moves_with_windows_to_resend": resent_moves,
            "windows_resent": windows_resent,
            "other_failovers": other_failovers,
            "definition": "from the first failed send or ack on the killed replica to the first ack on the other one; when nothing waited to be resent, to the stream's opening on the other one (as the agent counts it)",
        },
        "replicas": per_replica,
        "reports_per_core_second": total_reports / total_cpu,
        "samples_per_core_second": total_samples / total_cpu,
        "rates_note": "per core-second of the replicas' own CPU (utime + stime from /proc, read before any /metrics scrape); samples are those of the reports each replica acked (every acked report's samples were written by it); its own /metrics counters are kept beside them (the killed incarnation's were read just before the kill, so they miss its last moment; a node moving back leaves some windows written by both)",
        "replica_rss_mib_per_1000_nodes": rss_per_1000,
        "survivor_with_all_nodes": {"rss_kib": alone_kib, "idle_rss_kib": idle[survivor]},
        "store": {
            "samples_refused_or_dropped": refused,
            "samples_already_stored": already,
            "prometheus_samples_appended": appended,
            "prometheus_samples_appended_per_sec": appended / secs_run,
            "prometheus_cpu_secs": prometheus_cpu_secs,
            "prometheus_samples_per_core_second": appended / prometheus_cpu_secs,
        },
        "load_generator_cpu_secs": own_cpu_secs,
        "check": {"nodes": results.len(), "queries_per_node": 4, "mismatches": mismatches.len(), "first_mismatches": mismatches.iter().take(10).collect::<Vec<_>>()},
    });
    println!(
        "  {windows} windows sent, {total_reports} acked ({:.1} reports/s over {wall:.0} s, {:.0} samples/s offered in steady state); every node done {drained:.1} s after the stop (a node sees it at its next window)",
        total_reports / wall,
        results.len() as f64 * shape.samples as f64 / WINDOW.as_secs_f64()
    );
    println!(
        "  failover: {moved_nodes} nodes moved off replica {VICTIM} ({} resent {windows_resent} windows), {came_back} came back; time p50 {:.3} s, p99 {:.3} s, max {:.3} s (with windows to resend: p50 {:.3} s, p99 {:.3} s, max {:.3} s)",
        resent_moves["count"],
        all_moves["p50_secs"].as_f64().unwrap_or(0.0),
        all_moves["p99_secs"].as_f64().unwrap_or(0.0),
        all_moves["max_secs"].as_f64().unwrap_or(0.0),
        resent_moves["p50_secs"].as_f64().unwrap_or(0.0),
        resent_moves["p99_secs"].as_f64().unwrap_or(0.0),
        resent_moves["max_secs"].as_f64().unwrap_or(0.0),
    );
    for r in 0..2 {
        println!(
            "  replica {r}: {:.2} CPU s, {} reports acked ({:.0} reports/core-s, {:.0} samples/core-s), RSS idle {} KiB, steady {} KiB, end {} KiB",
            cpu[r],
            reports[r],
            reports[r] as f64 / cpu[r],
            (reports[r] * shape.samples as u64) as f64 / cpu[r],
            idle[r],
            steady_kib[r],
            end[r].rss_kib
        );
    }
    println!(
        "  both replicas: {:.0} reports/core-s, {:.0} samples/core-s; replica RSS {rss_per_1000:.1} MiB per 1,000 nodes (replica {survivor} alone with all {} nodes: {} KiB, idle {} KiB)",
        total_reports / total_cpu,
        total_samples / total_cpu,
        results.len(),
        alone_kib,
        idle[survivor]
    );
    println!(
        "  store: {refused} samples refused or dropped, {already} already stored (duplicates after a move); Prometheus appended {appended} samples ({:.0}/s over the run) in {prometheus_cpu_secs:.1} CPU s ({:.0} samples per core-second); the load generator used {own_cpu_secs:.1} CPU s",
        appended / secs_run,
        appended / prometheus_cpu_secs
    );
    println!(
        "  check: {} nodes × 4 queries against the load generator's totals: {} mismatches",
        results.len(),
        mismatches.len()
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&result)?)?;
    println!("results in {}", out.display());
    if !mismatches.is_empty() {
        for m in mismatches.iter().take(10) {
            eprintln!("  mismatch: {m}");
        }
        bail!(
            "{} of the store's totals differ from the load generator's",
            mismatches.len()
        );
    }
    if refused > 0.0 {
        bail!("the store refused or the queue dropped {refused} samples");
    }
    if moved_nodes == 0 {
        bail!("no node failed over: the kill did not happen as planned");
    }
    Ok(())
}
