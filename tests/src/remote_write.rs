//! Prometheus remote write into a real Prometheus (Debian's 2.42, started
//! here with `--web.enable-remote-write-receiver`): the stored counters are
//! sonde's totals exactly, through the agent and through the collector; a
//! window delivered again leaves every stored sample as it was; a store
//! down for a minute gets every window afterwards; a store that refuses
//! or stalls costs counted windows and bounded memory, and the agent and
//! the collector go on. Small HTTP servers of the test's own play the
//! stores Prometheus cannot play (one answering 400, one never answering).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    privileged,
    procs::{failing_opens, free_port, http_get, url_encode, wait_for, Proc},
    TestCgroup, Workload,
};

const FAILING: u64 = 3_000;

/// A Prometheus server with the remote-write receiver on, its data in `data`.
struct Store {
    port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Store {
    fn start(dir: &Path, name: &str, rules: Option<&Path>) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("store dir");
        let mut config = "global:\n  evaluation_interval: 1s\n".to_owned();
        if let Some(rules) = rules {
            config.push_str(&format!("rule_files:\n  - {}\n", rules.display()));
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let mut store = Self {
            port: free_port(),
            dir,
            proc: None,
        };
        store.resume();
        store
    }

    /// (Re)starts the server on the same port and data.
    fn resume(&mut self) {
        let proc = Proc::spawn(
            "prometheus",
            Path::new("prometheus"),
            &[
                format!(
                    "--config.file={}",
                    self.dir.join("prometheus.yml").display()
                ),
                format!("--storage.tsdb.path={}", self.dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{}", self.port),
                "--web.enable-remote-write-receiver".to_owned(),
            ],
        );
        wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            http_get(self.port, "/-/ready").is_ok_and(|(s, _)| s == 200)
        });
        self.proc = Some(proc);
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            assert_eq!(p.terminate(), 0, "Prometheus stops cleanly");
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// An instant query's result: (labels, value) per series.
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, String)> {
        let (status, body) =
            http_get(self.port, &format!("/api/v1/query?query={}", url_encode(q))).expect("query");
        assert_eq!(status, 200, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        v["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .expect("metric")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect();
                (labels, r["value"][1].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }

    /// The one value of `q`, if there is exactly one series.
    fn value(&self, q: &str) -> Option<String> {
        let r = self.query(q);
        (r.len() == 1).then(|| r[0].1.clone())
    }

    /// Every raw sample of the node's series up to `until_ms`:
    /// series → [(timestamp ms, value)].
    fn samples(&self, node: &str, until_ms: i64) -> BTreeMap<String, Vec<(i64, String)>> {
        let q = format!("{{host_name=\"{node}\"}}[1h]");
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", url_encode(&q)),
        )
        .expect("query");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let mut out = BTreeMap::new();
        for r in v["data"]["result"].as_array().expect("matrix") {
            let key = r["metric"].to_string();
            let values: Vec<(i64, String)> = r["values"]
                .as_array()
                .expect("values")
                .iter()
                .filter_map(|p| {
                    // Timestamps come as seconds with millisecond decimals.
                    let ms = (p[0].as_f64()? * 1000.0).round() as i64;
                    (ms <= until_ms).then(|| (ms, p[1].as_str().unwrap_or("").to_owned()))
                })
                .collect();
            if !values.is_empty() {
                out.insert(key, values);
            }
        }
        out
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

/// A value of sonde's own `/metrics` (agent or collector) whose line starts
/// with `prefix` (name and labels, e.g. `x_total{a="b"`), summed.
fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, text) = http_get(port, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn window_end_ms(report: &sonde_proto::v1::AgentReport) -> i64 {
    (report.window_end_unix_ns / 1_000_000) as i64
}

#[test]
fn a_store_holds_sondes_totals_exactly_and_a_resent_window_changes_nothing() {
    if crate::vm_lacks("prometheus and sonde-collector") {
        return;
    }
    if !privileged() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let direct = Store::start(dir.path(), "direct", None);
    let fleet = Store::start(dir.path(), "fleet", None);
    let node = "e2e-remote-write";
    let port = free_port();
    let outbox = dir.path().join("outbox");
    let saved = dir.path().join("outbox-copy");
    let metrics_port = free_port();
    let (direct_url, collector_url) = (direct.url(), format!("http://127.0.0.1:{port}"));
    let (outbox_arg, metrics_arg) = (
        outbox.to_str().expect("utf-8").to_owned(),
        format!("127.0.0.1:{metrics_port}"),
    );
    let args = [
        "--probes",
        "syscalls",
        "--node-name",
        node,
        "--collector",
        &collector_url,
        "--outbox-dir",
        &outbox_arg,
        "--reconnect-max",
        "1s",
        "--remote-write-url",
        &direct_url,
        "--remote-write-header",
        "X-Scope-OrgID=sonde-test",
        "--prometheus-listen",
        &metrics_arg,
    ];
    let cgroup = TestCgroup::new("remote-write");
    let path = cgroup.v2_path();
    let workload = Workload::fork(&cgroup, failing_opens(FAILING));

    // No collector yet: the agent writes to the store directly and keeps
    // every report in its disk outbox.
    let mut agent = Proc::agent(&args);
    agent.wait_windows(1, Duration::from_secs(20));
    workload.go();
    assert_eq!(workload.wait(), 0);
    let n = agent.windows().len();
    agent.wait_windows(n + 2, Duration::from_secs(20));
    let errors = format!(
        "last_over_time(system_linux_syscall_errors_total{{host_name=\"{node}\",linux_cgroup_path=\"{path}\",syscall_name=\"openat\",error_type=\"ENOENT\"}}[1h])"
    );
    let calls = format!(
        "last_over_time(system_linux_syscall_duration_seconds_count{{host_name=\"{node}\",linux_cgroup_path=\"{path}\",syscall_name=\"openat\"}}[1h])"
    );
    let inf = format!(
        "last_over_time(system_linux_syscall_duration_seconds_bucket{{host_name=\"{node}\",linux_cgroup_path=\"{path}\",syscall_name=\"openat\",le=\"+Inf\"}}[1h])"
    );
    let expected = FAILING.to_string();
    wait_for(
        "the agent's samples in the store",
        Duration::from_secs(20),
        || direct.value(&errors).as_deref() == Some(expected.as_str()),
    );
    assert_eq!(direct.value(&calls).as_deref(), Some(expected.as_str()));
    assert_eq!(direct.value(&inf).as_deref(), Some(expected.as_str()));
    // The agent's own count of the same series is the workload's.
    let own = crate::procs::agent_totals(&agent.windows(), |_| true);
    assert_eq!(
        own.get(&format!("err|{path}|openat|ENOENT")),
        Some(&FAILING)
    );
    for outcome in ["refused", "queue_full"] {
        assert_eq!(
            metric(
                metrics_port,
                "sonde_export_remote_write_samples_total",
                &[("outcome", outcome)]
            ),
            0.0
        );
    }
    assert!(
        metric(
            metrics_port,
            "sonde_export_remote_write_samples_total",
            &[("outcome", "stored")]
        ) > 0.0
    );

    // Kill the agent: its reports wait on disk. Keep a copy of them.
    agent.kill();
    let written = crate::grpc::outbox_reports(&outbox);
    assert!(written.len() >= 3, "{} reports on disk", written.len());
    std::fs::create_dir_all(&saved).expect("copy dir");
    for e in std::fs::read_dir(&outbox).expect("outbox") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), saved.join(e.file_name())).expect("copy");
    }
    let last_ms = written.iter().map(window_end_ms).max().unwrap_or(0);

    // The collector takes them from the restarted agent and writes them.
    let fleet_url = fleet.url();
    let collector_args = ["--remote-write-url", fleet_url.as_str()];
    let mut collector = Proc::collector(port, &collector_args);
    let mut agent = Proc::agent(&args);
    wait_for("the resent reports acked", Duration::from_secs(30), || {
        crate::grpc::outbox_reports(&outbox)
            .iter()
            .all(|r| r.sequence > written[written.len() - 1].sequence)
    });
    wait_for(
        "the collector's samples in the store",
        Duration::from_secs(20),
        || fleet.value(&errors).as_deref() == Some(expected.as_str()),
    );
    assert_eq!(fleet.value(&calls).as_deref(), Some(expected.as_str()));
    assert_eq!(fleet.value(&inf).as_deref(), Some(expected.as_str()));
    // Agent and collector wrote the same samples for the same windows.
    let before = fleet.samples(node, last_ms);
    let workload_series: Vec<&Vec<(i64, String)>> = before
        .iter()
        .filter(|(k, _)| {
            k.contains("system_linux_syscall_errors_total")
                && k.contains(&path)
                && k.contains("ENOENT")
        })
        .map(|(_, v)| v)
        .collect();
    assert_eq!(workload_series.len(), 1, "{:?}", before.keys());
    assert_eq!(
        workload_series[0].last().map(|(_, v)| v.as_str()),
        Some(expected.as_str())
    );
    // Every window on disk is a sample of the series every window carries.
    let every_window = before
        .iter()
        .find(|(k, _)| {
            k.contains("sonde_agent_dropped_total")
                && k.contains("remote_write")
                && k.contains("queue_full")
        })
        .map(|(_, v)| v.len());
    assert_eq!(every_window, Some(written.len()));
    assert_eq!(
        direct.samples(node, last_ms),
        before,
        "the store written by the agent and the one written by the collector"
    );
    let n = agent.windows().len();
    agent.wait_windows(n + 2, Duration::from_secs(20));

    // The same windows again: a collector that lost its memory (killed
    // after writing, before acking) gets them from an agent restarted on
    // its disk outbox, and writes them again.
    agent.kill();
    collector.kill();
    for e in std::fs::read_dir(&saved).expect("copy") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), outbox.join(e.file_name())).expect("restore");
    }
    let collector_metrics = free_port();
    let prometheus_arg = format!("127.0.0.1:{collector_metrics}");
    let collector = Proc::collector(
        port,
        &[
            "--remote-write-url",
            fleet_url.as_str(),
            "--prometheus-listen",
            &prometheus_arg,
        ],
    );
    let mut agent = Proc::agent(&args);
    let replayed: u64 = written.iter().map(|r| r.sequence).max().unwrap_or(0);
    wait_for(
        "the replayed reports acked",
        Duration::from_secs(30),
        || {
            crate::grpc::outbox_reports(&outbox)
                .iter()
                .all(|r| r.sequence > replayed)
        },
    );
    wait_for(
        "the collector's queue to empty",
        Duration::from_secs(30),
        || {
            metric(
                collector_metrics,
                "sonde_export_remote_write_queue_size_bytes",
                &[],
            ) == 0.0
                && metric(
                    collector_metrics,
                    "sonde_export_remote_write_samples_total",
                    &[("outcome", "already_stored")],
                ) > 0.0
        },
    );
    assert_eq!(
        metric(
            collector_metrics,
            "sonde_export_remote_write_samples_total",
            &[("outcome", "refused")]
        ),
        0.0
    );
    assert_eq!(
        fleet.samples(node, last_ms),
        before,
        "every stored sample as it was"
    );
    assert_eq!(fleet.value(&errors).as_deref(), Some(expected.as_str()));
    assert_eq!(agent.terminate(), 0);
    drop(collector);
    eprintln!("took {:.1}s", started.elapsed().as_secs_f64());
}
