//! `cargo xtask bench remote-write`: the collector's remote write into a
//! real Prometheus on this machine (the collector on core 0 with one
//! runtime thread; Prometheus and this load on core 1).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use sonde_proto::remote_write::{encode, window_series};
use sonde_tests::procs::http_get;

use super::{numbered, pin_to, template, Agent, Preencoded};

const NODES: usize = 16;
const REPORTS: u64 = 20;
const IN_FLIGHT: u64 = 8;

/// Kills the child on drop.
pub(super) struct Guard(pub(super) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The sum of a Prometheus text metric's samples whose labels contain
/// every `key="value"` of `labels`.
pub(super) fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|kv| rest.contains(kv)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub(super) fn scrape(port: u16) -> Result<String> {
    let (status, text) = http_get(port, "/metrics")?;
    if status != 200 {
        bail!("/metrics on {port} answered {status}");
    }
    Ok(text)
}

/// utime + stime of `pid`, seconds.
pub(super) fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// A report like the collector benchmark's, carrying the agent's
/// cumulative values (here: the window's own, which is all Prometheus sees
/// of them).
pub(super) fn with_totals(node: usize) -> sonde_proto::v1::AgentReport {
    let mut r = template(node);
    for p in r.metrics.iter_mut().flat_map(|m| m.points.iter_mut()) {
        p.total_count = p.count;
        p.total_histogram = p.histogram.clone();
    }
    r.totals_start_unix_ns = 1;
    r
}

/// A real Prometheus with its remote-write receiver, on core 1, its data in
/// `dir`: the process and its port.
pub(super) fn prometheus(dir: &Path) -> Result<(Guard, u16)> {
    std::fs::write(dir.join("prometheus.yml"), "global: {}\n")?;
    let port = free_port()?;
    let guard = Guard(
        Command::new("taskset")
            .args(["-c", "1", "prometheus"])
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus (cargo xtask setup installs it)")?,
    );
    let started = Instant::now();
    while !http_get(port, "/-/ready").is_ok_and(|(s, _)| s == 200) {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("Prometheus did not come up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((guard, port))
}

pub fn run(collector: &Path, out: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (prometheus, prometheus_port) = prometheus(dir.path())?;
    let (port, metrics_port) = (free_port()?, free_port()?);
    let collector = Guard(
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(collector)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--worker-threads", "1", "--log-level", "error"])
            .args(["--prometheus-listen", &format!("127.0.0.1:{metrics_port}")])
            .args([
                "--remote-write-url",
                &format!("http://127.0.0.1:{prometheus_port}/api/v1/write"),
                "--remote-write-queue-max-bytes",
                "4294967296",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the collector under taskset")?,
    );
    let pid = collector.0.id();
    pin_to(1);

    // What one report becomes, measured here once.
    let one = numbered(&with_totals(0), 1);
    let per_report = window_series(&one)?.len() as u64;
    let requests = encode(window_series(&one)?, 2_000)?;
    let raw: usize = requests.iter().map(|r| r.raw_bytes).sum();
    let compressed: usize = requests.iter().map(|r| r.body.len()).sum();
    let expected = per_report * NODES as u64 * REPORTS;
    eprintln!(
        "remote write: {NODES} nodes × {REPORTS} reports of {per_report} samples ({expected} samples); protobuf {:.2} bytes/sample, snappy {:.2}",
        raw as f64 / per_report as f64,
        compressed as f64 / per_report as f64
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let base_ns = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos(),
    )? - 30 * 60 * 1_000_000_000;
    let cpu_before = cpu_secs(pid)?;
    let t0 = Instant::now();
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while super::connect(port).await.is_err() {
            if Instant::now() > deadline {
                bail!("the collector did not come up");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut tasks = Vec::new();
        for node in 0..NODES {
            let mut report = Preencoded::new(&with_totals(30_000 + node));
            report.base_ns = base_ns;
            let mut agent = Agent::open_with(port, report).await?;
            tasks.push(tokio::spawn(async move {
                let mut sent = 0;
                for _ in 0..IN_FLIGHT.min(REPORTS) {
                    agent.send().await?;
                    sent += 1;
                }
                for _ in 0..REPORTS {
                    agent.ack().await?;
                    if sent < REPORTS {
                        agent.send().await?;
                        sent += 1;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let acked = t0.elapsed().as_secs_f64();
    let outcomes = ["stored", "already_stored", "refused", "queue_full"];
    let mut text;
    loop {
        text = scrape(metrics_port)?;
        let done: f64 = outcomes
            .iter()
            .map(|o| {
                sum(
                    &text,
                    "sonde_export_remote_write_samples_total",
                    &[&format!("outcome=\"{o}\"")],
                )
            })
            .sum();
        if done >= expected as f64 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("{done} of {expected} samples written after 600 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu_before;
    let samples = |o: &str| {
        sum(
            &text,
            "sonde_export_remote_write_samples_total",
            &[&format!("outcome=\"{o}\"")],
        )
    };
    let stored = samples("stored");
    let stage = |s: &str| {
        sum(
            &text,
            "sonde_export_remote_write_time_seconds_total",
            &[&format!("stage=\"{s}\"")],
        )
    };
    let sent = sum(&text, "sonde_export_remote_write_sent_bytes_total", &[]);
    let prom = scrape(prometheus_port)?;
    let handler = "handler=\"/api/v1/write\"";
    let receiver_secs = sum(
        &prom,
        "prometheus_http_request_duration_seconds_sum",
        &[handler],
    );
    let receiver_requests = sum(
        &prom,
        "prometheus_http_request_duration_seconds_count",
        &[handler],
    );
    let result = json!({
        "nodes": NODES,
        "reports": NODES as u64 * REPORTS,
        "samples_per_report": per_report,
        "samples_expected": expected,
        "samples": outcomes.iter().map(|o| (o.to_string(), json!(samples(o)))).collect::<serde_json::Map<_, _>>(),
        "seconds_to_ack_all": acked,
        "seconds_to_store_all": wall,
        "collector_cpu_seconds": cpu,
        "samples_per_second": stored / wall,
        "samples_per_collector_core_second": stored / cpu,
        "bytes_on_the_wire_per_sample": sent / stored,
        "protobuf_bytes_per_sample": raw as f64 / per_report as f64,
        "seconds": {
            "series": stage("series"),
            "encode": stage("encode"),
            "compress": stage("compress"),
            "request": stage("request"),
            "receiver": receiver_secs,
        },
        "receiver_requests": receiver_requests,
        "note": "the collector's CPU includes ingesting the reports (gRPC, validation, the fleet) as well as remote write; request time is from sending to the answer, the receiver's share of it from Prometheus's own prometheus_http_request_duration_seconds",
    });
    println!(
        "remote write: {stored} samples stored in {wall:.1} s ({:.0} samples/s; every report acked after {acked:.1} s), collector {cpu:.1} CPU s ({:.0} samples per core-second), {:.2} bytes/sample on the wire",
        stored / wall,
        stored / cpu,
        sent / stored
    );
    println!(
        "  time: series {:.2} s, protobuf {:.2} s, snappy {:.2} s, requests {:.2} s (Prometheus handling {:.2} s of {receiver_requests} requests)",
        stage("series"),
        stage("encode"),
        stage("compress"),
        stage("request"),
        receiver_secs
    );
    drop(collector);
    drop(prometheus);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&result)?)?;
    println!("results in {}", out.display());
    Ok(())
}
