//! Prometheus: the agent's and the collector's endpoints pass `promtool
//! check metrics`, and a real Prometheus server scraping both answers PromQL
//! with sonde's numbers.

use std::{process::Command, time::Duration};

use crate::{
    privileged,
    procs::{failing_opens, free_port, http_get, url_encode, wait_for, Proc},
    TestCgroup, Workload,
};

const FAILING: u64 = 250;

#[test]
fn promtool_passes_and_a_real_prometheus_reads_the_numbers() {
    if crate::vm_lacks("prometheus and promtool") {
        return;
    }
    if !privileged() {
        return;
    }
    let metrics_port = free_port();
    let (collector_port, fleet_port) = (free_port(), free_port());
    let _collector = Proc::collector(
        collector_port,
        &["--prometheus-listen", &format!("127.0.0.1:{fleet_port}")],
    );
    let node = "e2e-prom";
    let cgroup = TestCgroup::new("prom");
    let path = cgroup.v2_path();
    let workload = Workload::fork(&cgroup, failing_opens(FAILING));
    let mut agent = Proc::agent(&[
        "--prometheus-listen",
        &format!("127.0.0.1:{metrics_port}"),
        "--collector",
        &format!("http://127.0.0.1:{collector_port}"),
        "--node-name",
        node,
    ]);
    agent.wait_windows(1, Duration::from_secs(20));
    workload.go();
    assert_eq!(workload.wait(), 0);
    let n = agent.windows().len();
    agent.wait_windows(n + 2, Duration::from_secs(20));

    let (status, text) = http_get(metrics_port, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    let line = format!(
        "system_linux_syscall_errors_total{{linux_cgroup_path=\"{path}\",syscall_name=\"openat\",error_type=\"ENOENT\"}} {FAILING}"
    );
    assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    let count = format!(
        "system_linux_syscall_duration_seconds_count{{linux_cgroup_path=\"{path}\",syscall_name=\"openat\"}} {FAILING}"
    );
    assert!(text.lines().any(|l| l == count), "{count}");

    let dir = tempfile::tempdir().expect("dir");
    promtool(dir.path(), &text);

    // The collector's fleet endpoint: the same series, labelled by node.
    let fleet_line = format!(
        "system_linux_syscall_errors_total{{host_name=\"{node}\",linux_cgroup_path=\"{path}\",syscall_name=\"openat\",error_type=\"ENOENT\"}} {FAILING}"
    );
    let mut fleet_text = String::new();
    wait_for(
        "the collector to have the windows",
        Duration::from_secs(10),
        || {
            fleet_text = http_get(fleet_port, "/metrics")
                .map(|(_, t)| t)
                .unwrap_or_default();
            fleet_text.lines().any(|l| l == fleet_line)
        },
    );
    promtool(dir.path(), &fleet_text);

    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sonde\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n  - job_name: fleet\n    static_configs:\n      - targets: ['127.0.0.1:{fleet_port}']\n"
        ),
    )
    .expect("write config");
    let data = dir.path().join("data");
    let prometheus = Proc::spawn(
        "prometheus",
        std::path::Path::new("prometheus"),
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    );
    let query = |q: &str| -> Option<String> {
        let (status, body) =
            http_get(prom_port, &format!("/api/v1/query?query={}", url_encode(q))).ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_owned)
    };
    let errors = format!(
        "sum(system_linux_syscall_errors_total{{job=\"sonde\",linux_cgroup_path=\"{path}\",syscall_name=\"openat\",error_type=\"ENOENT\"}})"
    );
    let calls = format!(
        "sum(system_linux_syscall_duration_seconds_count{{job=\"sonde\",linux_cgroup_path=\"{path}\",syscall_name=\"openat\"}})"
    );
    let expected = FAILING.to_string();
    wait_for(
        "Prometheus to scrape sonde",
        Duration::from_secs(60),
        || query(&errors).as_deref() == Some(expected.as_str()),
    );
    assert_eq!(query(&calls).as_deref(), Some(expected.as_str()));
    // Classic buckets at the scale-3 edges: the +Inf bucket holds them all.
    let inf = format!(
        "sum(system_linux_syscall_duration_seconds_bucket{{job=\"sonde\",linux_cgroup_path=\"{path}\",syscall_name=\"openat\",le=\"+Inf\"}})"
    );
    assert_eq!(query(&inf).as_deref(), Some(expected.as_str()));
    let fleet = format!(
        "sum(system_linux_syscall_errors_total{{job=\"fleet\",host_name=\"{node}\",linux_cgroup_path=\"{path}\",error_type=\"ENOENT\"}})"
    );
    wait_for(
        "Prometheus to scrape the collector",
        Duration::from_secs(30),
        || query(&fleet).as_deref() == Some(expected.as_str()),
    );
    assert_eq!(agent.terminate(), 0);
    drop(prometheus);
}

/// `promtool check metrics` passes on `text`, without a remark.
fn promtool(dir: &std::path::Path, text: &str) {
    let exposition = dir.join("metrics.txt");
    std::fs::write(&exposition, text).expect("write");
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", exposition.display()))
        .output()
        .expect("run promtool");
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
