//! Collector replicas: one agent, two real collectors writing to one real
//! Prometheus. The agent streams to its first choice, fails over when that
//! one is SIGKILLed and when it is SIGSTOPped (it accepts connections and
//! answers nothing), and comes back once it answers again; the store then
//! holds the workload's own count exactly and one sample per window, and
//! every fail-over is counted and logged with its duration.

use std::time::{Duration, Instant};

use crate::{
    privileged,
    procs::{failing_opens, free_port, http_get, wait_for, Proc},
    remote_write::{metric, Store},
    TestCgroup, Workload,
};

/// Failing `openat` per phase of the workload.
const PER_PHASE: u64 = 1_000;

/// The replica the agent streams to now, as its `/metrics` names it.
pub(crate) fn connected(agent_metrics: u16) -> Option<String> {
    let (status, text) = http_get(agent_metrics, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("sonde_export_collector_connected{"))?;
    let start = line.find("server_address=\"")? + "server_address=\"".len();
    let rest = line.get(start..)?;
    Some(rest.get(..rest.find('"')?)?.to_owned())
}

fn counter(agent_metrics: u16, name: &str) -> f64 {
    metric(agent_metrics, name, &[])
}

/// Runs `n` failing opens in `cgroup` and waits for them.
fn phase(cgroup: &TestCgroup, n: u64) {
    let w = Workload::fork(cgroup, failing_opens(n));
    w.go();
    assert_eq!(w.wait(), 0);
}

#[test]
fn an_agent_fails_over_between_replicas_and_the_store_has_every_window_once() {
    if crate::vm_lacks("prometheus and sonde-collector") {
        return;
    }
    if !privileged() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::start(dir.path(), "replicas", None);
    let store_url = store.url();
    let ports = [free_port(), free_port()];
    let urls = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let replica = |port: u16| Proc::collector(port, &["--remote-write-url", store_url.as_str()]);
    let mut collectors = [Some(replica(ports[0])), Some(replica(ports[1]))];
    let node = "e2e-replicas";
    let agent_metrics = free_port();
    let outbox = dir.path().join("outbox");
    let (metrics_arg, outbox_arg) = (
        format!("127.0.0.1:{agent_metrics}"),
        outbox.to_str().expect("utf-8").to_owned(),
    );
    let cgroup = TestCgroup::new("replicas");
    let path = cgroup.v2_path();
    let mut agent = Proc::agent(&[
        "--probes",
        "syscalls",
        "--node-name",
        node,
        "--collector",
        &urls[0],
        "--collector",
        &urls[1],
        "--outbox-dir",
        &outbox_arg,
        "--reconnect-max",
        "1s",
        "--prometheus-listen",
        &metrics_arg,
    ]);
    wait_for("a replica streaming", Duration::from_secs(20), || {
        connected(agent_metrics).is_some()
    });
    let first = connected(agent_metrics).expect("connected");
    let (f, other) = if first == urls[0] { (0, 1) } else { (1, 0) };
    assert_eq!(first, urls[f], "the agent names the replica it streams to");
    phase(&cgroup, PER_PHASE);
    let n = agent.windows().len();
    agent.wait_windows(n + 2, Duration::from_secs(20));

    // SIGKILL the first choice: the agent moves to the other.
    if let Some(mut c) = collectors[f].take() {
        c.kill();
    }
    phase(&cgroup, PER_PHASE);
    wait_for(
        "a fail-over after a SIGKILL",
        Duration::from_secs(30),
        || {
            counter(agent_metrics, "sonde_export_collector_failovers_total") == 1.0
                && connected(agent_metrics).as_deref() == Some(urls[other].as_str())
        },
    );
    // Back: the agent returns to its first choice.
    collectors[f] = Some(replica(ports[f]));
    wait_for(
        "the return to the first choice",
        Duration::from_secs(30),
        || {
            counter(agent_metrics, "sonde_export_collector_returns_total") == 1.0
                && connected(agent_metrics).as_deref() == Some(urls[f].as_str())
        },
    );

    // SIGSTOP it: it keeps its connections and answers nothing.
    let stopped_at = Instant::now();
    if let Some(c) = &collectors[f] {
        c.signal(libc::SIGSTOP);
    }
    phase(&cgroup, PER_PHASE);
    wait_for(
        "a fail-over from a stopped replica",
        Duration::from_secs(40),
        || {
            counter(agent_metrics, "sonde_export_collector_failovers_total") == 2.0
                && connected(agent_metrics).as_deref() == Some(urls[other].as_str())
        },
    );
    let detected = stopped_at.elapsed();
    if let Some(c) = &collectors[f] {
        c.signal(libc::SIGCONT);
    }
    wait_for("the second return", Duration::from_secs(30), || {
        counter(agent_metrics, "sonde_export_collector_returns_total") == 2.0
            && connected(agent_metrics).as_deref() == Some(urls[f].as_str())
    });
    let n = agent.windows().len();
    agent.wait_windows(n + 2, Duration::from_secs(20));
    let failover_secs = counter(
        agent_metrics,
        "sonde_export_collector_failover_time_seconds_total",
    );
    let longest = counter(
        agent_metrics,
        "sonde_export_collector_failover_time_max_seconds",
    );
    assert_eq!(agent.terminate(), 0);
    agent.assert_stopped_acked();
    let logged = agent
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("failed over from collector") && l.ends_with(" s"))
        .count();
    assert_eq!(logged, 2, "{:?}", agent.stderr_lines());

    // The store: the workload's count, and one sample per window — none
    // lost across the moves, none twice although some were written by both.
    let windows = agent.windows().len();
    store.wait_every_window(node, windows, Duration::from_secs(30));
    assert_eq!(
        store.enoent_openat(node, &path),
        Some((3 * PER_PHASE).to_string())
    );
    // Each replica answers for the agents that streamed to it, and says so.
    for url in &urls {
        let nodes = crate::procs::fleet_json(&["--collector", url]);
        assert_eq!(nodes["scope"], "this replica", "{nodes}");
        assert!(
            nodes["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["node"]["node_name"] == node)),
            "{url}: {nodes}"
        );
    }
    drop(collectors);
    eprintln!(
        "took {:.1}s; {windows} windows; fail-overs took {failover_secs:.3} s together, the longest {longest:.3} s; the stopped replica was left {:.1} s after SIGSTOP",
        started.elapsed().as_secs_f64(),
        detected.as_secs_f64()
    );
}

/// A collector listening on `address` (not only loopback's first address:
/// two replicas can share a port on 127.0.0.1 and 127.0.0.2).
fn collector_on(address: &str) -> Proc {
    let p = Proc::spawn(
        "collector",
        &crate::collector_bin(),
        &["--listen".to_owned(), address.to_owned()],
    );
    p.wait_stderr("listening on", Duration::from_secs(10));
    p
}

#[test]
fn a_name_with_several_addresses_is_several_replicas_and_a_new_first_choice_takes_over() {
    if crate::vm_lacks("sonde-collector") {
        return;
    }
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let hosts = dir.path().join("hosts");
    let name = "replicas.sonde.test";
    let port = free_port();
    let addresses = ["127.0.0.1", "127.0.0.2"].map(|a| format!("{a}:{port}"));
    let both = format!("127.0.0.1 {name}\n127.0.0.2 {name}\n");
    std::fs::write(&hosts, &both).expect("hosts");
    let mut collectors = addresses.clone().map(|a| Some(collector_on(&a)));
    let url = format!("http://{name}:{port}");
    let node = "e2e-replicas-by-name";
    let start_agent = |metrics: u16| {
        let metrics_arg = format!("127.0.0.1:{metrics}");
        Proc::agent_at(
            &[
                "--probes",
                "syscalls",
                "--node-name",
                node,
                "--collector",
                &url,
                "--collector-resolve-interval",
                "2s",
                // A name, not a loopback address: plaintext needs the flag.
                "--insecure",
                "--reconnect-max",
                "1s",
                "--prometheus-listen",
                &metrics_arg,
            ],
            &crate::procs::Place {
                netns: None,
                env: Vec::new(),
                hosts: Some(&hosts),
            },
        )
    };
    // Which address this node ranks first, as the agent says.
    let metrics = free_port();
    let agent = start_agent(metrics);
    wait_for("a replica streaming", Duration::from_secs(20), || {
        connected(metrics).is_some()
    });
    let named = connected(metrics).expect("connected");
    let first = addresses
        .iter()
        .position(|a| named == format!("{url} ({a})"))
        .unwrap_or_else(|| panic!("{named} names neither of {addresses:?}"));
    let other = 1 - first;
    drop(agent);

    // The name resolves to the other address only: the agent streams there.
    std::fs::write(&hosts, format!("127.0.0.{} {name}\n", other + 1)).expect("hosts");
    let metrics = free_port();
    let mut agent = start_agent(metrics);
    let on = |i: usize| {
        let want = format!("{url} ({})", addresses[i]);
        move || connected(metrics).as_deref() == Some(want.as_str())
    };
    wait_for("the only address", Duration::from_secs(20), on(other));
    // Both again: the first choice takes the stream at the next resolve.
    std::fs::write(&hosts, &both).expect("hosts");
    wait_for(
        "the move to the first choice",
        Duration::from_secs(20),
        on(first),
    );
    assert_eq!(
        counter(metrics, "sonde_export_collector_returns_total"),
        1.0
    );
    assert_eq!(
        counter(metrics, "sonde_export_collector_failovers_total"),
        0.0
    );
    // Killed, it leaves the stream to the other address of the same name.
    if let Some(mut c) = collectors[first].take() {
        c.kill();
    }
    wait_for(
        "a fail-over within the name",
        Duration::from_secs(20),
        || on(other)() && counter(metrics, "sonde_export_collector_failovers_total") == 1.0,
    );
    assert_eq!(agent.terminate(), 0);
    agent.assert_stopped_acked();
    assert!(
        agent
            .stderr_lines()
            .iter()
            .any(|l| l.contains("ranks first now (the replicas changed)")),
        "{:?}",
        agent.stderr_lines()
    );
}

/// Two agents, each streaming to its own replica; both replicas read the
/// store they write to. Either answers `sonde fleet` and `sonde fleet slo`
/// for both nodes, with the workloads' own counts and the burn over each
/// alert window that the agents' windows give; with the store stopped, a
/// replica answers for its own agent and says why.
#[test]
fn any_replica_answers_for_the_whole_fleet_from_the_store() {
    if crate::vm_lacks("prometheus and sonde-collector") {
        return;
    }
    if !privileged() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let cgroup = TestCgroup::new("store-views");
    // Alert windows of 1 min and 30 s, so that the spans differ within
    // the test's two minutes.
    let config = crate::remote_write::short_windows_slo(dir.path(), "e2e-views", &cgroup);
    let config = config.to_str().expect("utf-8").to_owned();
    let mut store = Store::start(dir.path(), "views", None);
    let (write_url, query_url) = (store.url(), store.query_url());
    let ports = [free_port(), free_port()];
    let urls = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let _replicas = ports.map(|port| {
        Proc::collector(
            port,
            &[
                "--config",
                &config,
                "--remote-write-url",
                &write_url,
                "--store-url",
                &query_url,
            ],
        )
    });
    let nodes = ["e2e-views-a", "e2e-views-b"];
    let agent = |i: usize| {
        Proc::agent(&[
            "--probes",
            "syscalls",
            "--node-name",
            nodes[i],
            "--config",
            &config,
            "--collector",
            &urls[i],
        ])
    };
    // Every run of an agent: (node index, process).
    let mut runs: Vec<(usize, Proc)> = vec![(0, agent(0)), (1, agent(1))];
    for (_, a) in &runs {
        a.wait_windows(2, Duration::from_secs(20));
    }
    // 5,000 opens of which 100 fail; then the second node's agent restarts
    // (its counters begin again: the spans that hold the restart are
    // counted from its raw samples); 35 s later, 1,000 opens that all fail:
    // the 30 s span then holds the second phase only, the 1 min span both.
    let steady = Workload::fork(&cgroup, crate::slo::two_percent_failing_opens(100));
    steady.go();
    assert_eq!(steady.wait(), 0);
    let wait_more = |a: &Proc| {
        let n = a.windows().len();
        a.wait_windows(n + 3, Duration::from_secs(20));
    };
    wait_more(&runs[1].1);
    assert_eq!(runs[1].1.terminate(), 0);
    runs.push((1, agent(1)));
    std::thread::sleep(Duration::from_secs(35));
    phase(&cgroup, 1_000);
    for (_, a) in &runs[..] {
        if a.pid() != 0 {
            wait_more(a);
        }
    }
    for (_, a) in &mut runs {
        if a.pid() != 0 {
            assert_eq!(a.terminate(), 0);
        }
        a.assert_stopped_acked();
    }
    // Each node saw every open of the workload (they share the machine),
    // the second one across two runs.
    let (good, total) = (2 * (5_000 - 100), 2 * (5_000 + 1_000));

    // The agents' own windows: the ground truth of every span.
    let windows: Vec<crate::remote_write::SloWindow> = runs
        .iter()
        .flat_map(|(_, a)| crate::remote_write::slo_windows(&a.windows()))
        .collect();
    let at = windows.iter().map(|w| w.end_ms).max().expect("windows");
    let burn = |secs: i64| -> f64 {
        let (bad, all) = windows
            .iter()
            .filter(|w| w.end_ms > at - secs * 1000 && w.end_ms <= at)
            .fold((0, 0), |(b, t), w| (b + w.total - w.good, t + w.total));
        (bad as f64 / all as f64) / 0.01
    };
    for (i, node) in nodes.iter().enumerate() {
        let produced: usize = runs
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, a)| a.windows().len())
            .sum();
        store.wait_every_window(node, produced, Duration::from_secs(30));
    }
    // Whole when every window of every run saw all the SLO's data (the SLO
    // window spans them all).
    let lossy: Vec<(&str, u64)> = runs
        .iter()
        .flat_map(|(i, a)| a.windows().into_iter().map(move |w| (nodes[*i], w)))
        .filter(|(_, w)| w["slos"][0]["complete"] != true)
        .map(|(node, w)| (node, w["sequence"].as_u64().unwrap_or(0)))
        .collect();
    let whole = lossy.is_empty();
    // The last run of each node.
    let latest = |i: usize| -> &Proc {
        runs.iter()
            .rev()
            .find(|(n, _)| *n == i)
            .map(|(_, a)| a)
            .expect("a run")
    };

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    for url in &urls {
        let fleet = crate::procs::fleet_json(&["--collector", url, "slo"]);
        assert_eq!(
            fleet["scope"], "the fleet, from the store",
            "{url}: {fleet}"
        );
        let slo = &fleet["slos"][0];
        assert_eq!(slo["total"].as_u64(), Some(total), "{url}: {fleet}");
        assert_eq!(slo["good"].as_u64(), Some(good), "{url}: {fleet}");
        assert_eq!(slo["nodes"], serde_json::json!(nodes), "{url}: {fleet}");
        assert_eq!(slo["complete"], whole, "{url}: {fleet}");
        let rates = slo["burnRates"]
            .as_array()
            .or(slo["burn_rates"].as_array())
            .expect("burn rates");
        for (window, secs) in [("30s", 30), ("1m", 60)] {
            let rate = rates
                .iter()
                .find(|r| r["window"] == window)
                .and_then(|r| r["rate"].as_f64())
                .unwrap_or_else(|| panic!("no {window} burn in {fleet}"));
            assert!(
                (rate - burn(secs)).abs() <= 1e-9 * burn(secs).max(1.0),
                "{url} {window}: store {rate}, agents' windows {}",
                burn(secs)
            );
        }
        assert!(burn(30) > burn(60), "the spans differ");

        let listed = crate::procs::fleet_json(&["--collector", url]);
        assert_eq!(listed["scope"], "the fleet, from the store", "{listed}");
        for (i, node) in nodes.iter().enumerate() {
            let agent = latest(i);
            let row = listed["nodes"]
                .as_array()
                .and_then(|n| n.iter().find(|n| n["node"]["node_name"] == *node))
                .unwrap_or_else(|| panic!("{url}: no {node} in {listed}"));
            let last = agent.windows().last().cloned().expect("windows");
            assert_eq!(row["latest"]["sequence"], last["sequence"], "{row}");
            assert_eq!(
                row["latest"]["window_end_unix_ns"]
                    .as_u64()
                    .map(|ns| ns / 1_000_000),
                last["window_end_unix_ns"].as_u64().map(|ns| ns / 1_000_000),
                "{row}"
            );
            assert_eq!(row["node"]["kernel"], kernel.trim(), "{row}");
        }
    }
    // A node that streams to the other replica: its summary, from the store.
    let detail = crate::procs::fleet_json(&["--collector", &urls[0], "--node", nodes[1]]);
    assert_eq!(detail["scope"], "the fleet, from the store", "{detail}");
    assert_eq!(
        detail["summary"]["latest"]["sequence"],
        latest(1).windows().last().expect("windows")["sequence"],
        "{detail}"
    );
    let text = std::process::Command::new(crate::sonde_bin())
        .args(["fleet", "--collector", &urls[0]])
        .output()
        .expect("sonde fleet");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.starts_with("scope: the fleet, from the store"),
        "{text}"
    );

    // The store stopped: each replica answers for its own agent, and says
    // why it does not answer for the fleet.
    store.stop();
    let fleet = crate::procs::fleet_json(&["--collector", &urls[0], "slo"]);
    assert_eq!(fleet["scope"], "this replica", "{fleet}");
    assert!(
        fleet["store_error"]
            .as_str()
            .or(fleet["storeError"].as_str())
            .is_some_and(|e| e.contains(&query_url)),
        "{fleet}"
    );
    assert_eq!(
        fleet["slos"][0]["total"].as_u64(),
        Some(total / 2),
        "{fleet}"
    );
    let listed = crate::procs::fleet_json(&["--collector", &urls[0]]);
    assert_eq!(listed["scope"], "this replica", "{listed}");
    let names: Vec<&str> = listed["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["node"]["node_name"].as_str())
        .collect();
    assert_eq!(names, [nodes[0]], "{listed}");
    let out = std::process::Command::new(crate::sonde_bin())
        .args(["fleet", "--collector", &urls[0], "--node", nodes[1]])
        .output()
        .expect("sonde fleet --node");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("did not answer") && err.lines().count() == 1,
        "{err}"
    );
    eprintln!(
        "took {:.1}s; windows that lost SLO data {lossy:?}; burn over 30 s {:.3}, over 1 min {:.3}",
        started.elapsed().as_secs_f64(),
        burn(30),
        burn(60)
    );
}
