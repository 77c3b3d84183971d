//! Collector benchmark, run by `cargo xtask bench collector`: simulated
//! agents (500 series per report) against a real `sonde-collector` pinned to
//! one core, this load generator pinned to another.
//!
//! 1. memory: 1,000 nodes, each on its own connection, send 3 reports; the
//!    collector's RSS grows by what 1,000 nodes cost it;
//! 2. throughput: 64 nodes send as fast as acks come back (32 in flight
//!    each) for 10 s: reports ingested per second;
//! 3. latency: 200 nodes send 2,000 reports/s in all, evenly paced, for
//!    10 s: ack latency (send → ack) percentiles.
//!
//! With `--remote-write` (`cargo xtask bench remote-write`) it measures the
//! collector's remote write instead: a real Prometheus with its receiver on
//! the other core, 16 nodes send 20 reports each (with the agent's
//! cumulative values, about 7,300 samples per report), and the collector
//! writes them all: samples per second per collector core, bytes per sample
//! on the wire, and the time per stage (series, protobuf, snappy, request
//! to answer, of which the store's own handling).
//!
//! With `--fleet` (`cargo xtask bench fleet`) it runs the scale run of two
//! collector replicas, one killed and restarted, under 1,000 simulated
//! nodes: see `sonde-loadgen/fleet.rs`.

use std::{
    collections::VecDeque,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use sonde_proto::{
    histogram::to_wire,
    series::StringTable,
    v1::{AgentReport, Metric, MetricKind, NodeIdentity, Point},
    PROTOCOL_VERSION,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const SERIES: usize = 500;
const MEMORY_NODES: usize = 1000;
const MEMORY_REPORTS: u64 = 3;
const THROUGHPUT_NODES: usize = 64;
const THROUGHPUT_IN_FLIGHT: usize = 32;
const LATENCY_NODES: usize = 200;
const LATENCY_RATE: u64 = 2000;
const PHASE: Duration = Duration::from_secs(10);

#[path = "sonde-loadgen/remote_write.rs"]
mod remote_write;

#[path = "sonde-loadgen/fleet.rs"]
mod fleet;

fn main() {
    if let Err(e) = run() {
        eprintln!("sonde-loadgen: {e:#}");
        std::process::exit(1);
    }
}

fn arg(args: &[String], flag: &str) -> Result<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .with_context(|| format!("missing {flag}"))
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it;
    // sched_setaffinity reads it for the calling thread (inherited by the
    // threads spawned after).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let collector = PathBuf::from(arg(&args, "--collector")?);
    let out = PathBuf::from(arg(&args, "--out")?);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cores < 2 {
        bail!("needs two cores: one for the collector, one for the load");
    }
    raise_nofile();
    if args.iter().any(|a| a == "--remote-write") {
        return remote_write::run(&collector, &out);
    }
    if args.iter().any(|a| a == "--fleet") {
        return fleet::run(&collector, &out, &args);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&collector)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--worker-threads",
            "1",
        ])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the collector under taskset")?;
    pin_to(1);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(bench(port, child.id()));
    let _ = child.kill();
    let _ = child.wait();
    let report = result?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("results in {}", out.display());
    Ok(())
}

/// A report of `SERIES` series for `node`: 50 cgroups × 8 syscalls of
/// latency histograms (about a dozen buckets each) and 100 error counters.
fn template(node: usize) -> AgentReport {
    let syscalls = [
        "read",
        "write",
        "openat",
        "close",
        "futex",
        "epoll_wait",
        "recvfrom",
        "sendto",
    ];
    let mut strings = StringTable::new();
    let mut durations = Vec::new();
    let mut errors = Vec::new();
    for c in 0..50 {
        // A Kubernetes pod's cgroup, as long as real ones.
        let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{c:08x}_6f1c_4a8e_9d2b_3c1f5e7a.slice/cri-containerd-{c:016x}.scope");
        for (i, s) in syscalls.iter().enumerate() {
            let mut h = sonde_slo::Histogram::new();
            // Sixteen neighbouring buckets, as a syscall's latency spreads
            // over two octaves.
            for k in 0..16u64 {
                h.record_binary_ns(((1000 + 250 * i as u64) * (100 + 9 * k)) / 100);
            }
            durations.push(Point {
                label_refs: strings.labels(&[("linux.cgroup.path", &path), ("syscall.name", s)]),
                count: 0,
                histogram: Some(to_wire(&h)),
                value: 0.0,
                ..Default::default()
            });
            if i < 2 {
                errors.push(Point {
                    label_refs: strings.labels(&[
                        ("linux.cgroup.path", &path),
                        ("syscall.name", s),
                        ("error.type", "EAGAIN"),
                    ]),
                    count: 3,
                    histogram: None,
                    value: 0.0,
                    ..Default::default()
                });
            }
        }
    }
    assert_eq!(durations.len() + errors.len(), SERIES);
    AgentReport {
        protocol_version: PROTOCOL_VERSION,
        node: Some(NodeIdentity {
            node_name: format!("node-{node:05}"),
            machine_id: format!("{node:032x}"),
            boot_id: format!("boot-{node}"),
            kernel: "6.18.0".into(),
            arch: "x86_64".into(),
            agent_version: "bench".into(),
        }),
        sequence: 0,
        window_start_unix_ns: 0,
        window_end_unix_ns: 0,
        complete: true,
        metrics: vec![
            Metric {
                name: "system.linux.syscall.duration".into(),
                unit: "s".into(),
                description: String::new(),
                kind: MetricKind::Histogram as i32,
                points: durations,
            },
            Metric {
                name: "system.linux.syscall.errors".into(),
                unit: "{error}".into(),
                description: String::new(),
                kind: MetricKind::Counter as i32,
                points: errors,
            },
        ],
        losses: vec![],
        events: vec![],
        probes: vec![],
        strings: strings.into_strings(),
        ..Default::default()
    }
}

fn numbered(template: &AgentReport, seq: u64) -> AgentReport {
    let mut r = template.clone();
    r.sequence = seq;
    r.window_start_unix_ns = seq * 10_000_000_000;
    r.window_end_unix_ns = (seq + 1) * 10_000_000_000;
    r
}

/// A report encoded once; only its sequence and window change per send
/// (protobuf lets a field follow the rest). Keeps the load generator's own
/// cost to a memcpy, so that the collector is what is measured.
#[derive(Debug, Default, Clone)]
struct Preencoded {
    rest: prost::bytes::Bytes,
    sequence: u64,
    /// Windows start here (Unix ns); 0 puts them near the epoch.
    base_ns: u64,
}

impl Preencoded {
    fn new(template: &AgentReport) -> Self {
        let mut rest = template.clone();
        rest.sequence = 0;
        rest.window_start_unix_ns = 0;
        rest.window_end_unix_ns = 0;
        Self {
            rest: prost::Message::encode_to_vec(&rest).into(),
            sequence: 0,
            base_ns: 0,
        }
    }

    fn fields(&self) -> [(u32, u64); 3] {
        [
            (3, self.sequence),
            (4, self.base_ns + self.sequence * 10_000_000_000),
            (5, self.base_ns + (self.sequence + 1) * 10_000_000_000),
        ]
    }
}

impl prost::Message for Preencoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.rest);
        for (tag, v) in self.fields() {
            prost::encoding::uint64::encode(tag, &v, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.rest.len()
            + self
                .fields()
                .iter()
                .map(|(tag, v)| prost::encoding::uint64::encoded_len(*tag, v))
                .sum::<usize>()
    }

    fn clear(&mut self) {
        self.sequence = 0;
    }
}

async fn connect(port: u16) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?)
}

/// One simulated agent on its own connection.
struct Agent {
    tx: tokio::sync::mpsc::Sender<Preencoded>,
    acks: tonic::Streaming<sonde_proto::v1::Ack>,
    template: Preencoded,
    next: u64,
}

impl Agent {
    async fn open(port: u16, node: usize) -> Result<Self> {
        Self::open_with(port, Preencoded::new(&template(node))).await
    }

    async fn open_with(port: u16, template: Preencoded) -> Result<Self> {
        let channel = connect(port).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/sonde.v1.Ingest/Report");
        let codec = tonic_prost::ProstCodec::<Preencoded, sonde_proto::v1::Ack>::default();
        let acks = grpc
            .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec)
            .await?
            .into_inner();
        Ok(Self {
            tx,
            acks,
            template,
            next: 1,
        })
    }

    async fn send(&mut self) -> Result<()> {
        let mut r = self.template.clone();
        r.sequence = self.next;
        self.next += 1;
        self.tx.send(r).await.context("stream closed")
    }

    async fn ack(&mut self) -> Result<()> {
        match self.acks.message().await? {
            Some(_) => Ok(()),
            None => bail!("stream ended"),
        }
    }
}

async fn bench(port: u16, pid: u32) -> Result<serde_json::Value> {
    // Wait for the collector.
    let start = Instant::now();
    while connect(port).await.is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the collector did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_kib = rss_kib(pid)?;
    let encoded = prost::Message::encoded_len(&numbered(&template(0), 1));

    // 1. memory per 1,000 nodes.
    eprintln!("memory: {MEMORY_NODES} nodes × {MEMORY_REPORTS} reports of {SERIES} series ({encoded} bytes each)");
    let mut agents = Vec::new();
    for node in 0..MEMORY_NODES {
        agents.push(Agent::open(port, node).await?);
    }
    for _ in 0..MEMORY_REPORTS {
        for a in agents.iter_mut() {
            a.send().await?;
        }
        for a in agents.iter_mut() {
            a.ack().await?;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded_kib = rss_kib(pid)?;
    drop(agents);
    let memory_mib = (loaded_kib.saturating_sub(idle_kib)) as f64 / 1024.0;
    eprintln!("  collector RSS {idle_kib} KiB idle → {loaded_kib} KiB: {memory_mib:.1} MiB per 1,000 nodes");

    // 2. throughput, closed loop.
    eprintln!(
        "throughput: {THROUGHPUT_NODES} nodes, {THROUGHPUT_IN_FLIGHT} in flight each, {PHASE:?}"
    );
    let acked = Arc::new(AtomicU64::new(0));
    let mut opened = Vec::new();
    for node in 0..THROUGHPUT_NODES {
        opened.push(Agent::open(port, 10_000 + node).await?);
    }
    let deadline = Instant::now() + PHASE;
    let mut tasks = Vec::new();
    for mut a in opened {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..THROUGHPUT_IN_FLIGHT {
                a.send().await?;
            }
            while Instant::now() < deadline {
                a.ack().await?;
                acked.fetch_add(1, Ordering::Relaxed);
                a.send().await?;
            }
            anyhow::Ok(())
        }));
    }
    let t0 = Instant::now();
    let before = acked.load(Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let reports_per_sec = (acked.load(Ordering::Relaxed) - before) as f64 / elapsed;
    eprintln!(
        "  {reports_per_sec:.0} reports/s ({:.0} series/s)",
        reports_per_sec * SERIES as f64
    );

    // 3. ack latency at 2,000 reports/s.
    eprintln!("latency: {LATENCY_NODES} nodes, {LATENCY_RATE} reports/s in all, {PHASE:?}");
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let per_node_interval = Duration::from_secs_f64(LATENCY_NODES as f64 / LATENCY_RATE as f64);
    let mut opened = Vec::new();
    for node in 0..LATENCY_NODES {
        opened.push(Agent::open(port, 20_000 + node).await?);
    }
    let deadline = Instant::now() + PHASE;
    let mut tasks = Vec::new();
    for (node, mut a) in opened.into_iter().enumerate() {
        let latencies = latencies.clone();
        // Spread the nodes' send times evenly over one interval.
        let phase = per_node_interval.mul_f64(node as f64 / LATENCY_NODES as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(phase).await;
            let mut ticks = tokio::time::interval(per_node_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent: VecDeque<Instant> = VecDeque::new();
            let mut mine = Vec::new();
            loop {
                tokio::select! {
                    _ = ticks.tick(), if Instant::now() < deadline => {
                        sent.push_back(Instant::now());
                        a.send().await?;
                    }
                    ack = a.ack(), if !sent.is_empty() => {
                        ack?;
                        if let Some(t) = sent.pop_front() {
                            mine.push(t.elapsed());
                        }
                    }
                    else => break,
                }
                if Instant::now() >= deadline && sent.is_empty() {
                    break;
                }
            }
            latencies
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .extend(mine);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut lat = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    lat.sort_unstable();
    let pct = |q: f64| -> f64 {
        let i = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e3
    };
    let achieved = lat.len() as f64 / PHASE.as_secs_f64();
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    eprintln!(
        "  {} acks ({achieved:.0}/s): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        lat.len()
    );
    let collector_cpu = cpu_secs(pid).unwrap_or(0.0);
    Ok(json!({
        "series_per_report": SERIES,
        "report_bytes": encoded,
        "memory": {"nodes": MEMORY_NODES, "reports_each": MEMORY_REPORTS, "idle_rss_kib": idle_kib, "loaded_rss_kib": loaded_kib, "mib_per_1000_nodes": memory_mib},
        "throughput": {"nodes": THROUGHPUT_NODES, "in_flight_each": THROUGHPUT_IN_FLIGHT, "seconds": elapsed, "reports_per_sec": reports_per_sec},
        "latency": {"nodes": LATENCY_NODES, "target_reports_per_sec": LATENCY_RATE, "achieved_reports_per_sec": achieved, "acks": lat.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max},
        "collector_cpu_secs_total": collector_cpu,
    }))
}

/// The collector's user + system CPU time so far.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, s)| s).context("stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).context("utime")?.parse::<f64>()?
        + fields.get(12).context("stime")?.parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}
