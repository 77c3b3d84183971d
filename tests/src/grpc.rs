//! Agent → collector over real processes on loopback: a collector stopped
//! for 30 s, an agent killed with SIGKILL, mTLS.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    privileged,
    procs::{
        agent_totals, collector_totals, failing_opens_forever, fleet_json, free_port, ranges, Proc,
    },
    sonde_bin, TestCgroup, Workload,
};

fn sequences(windows: &[serde_json::Value]) -> Vec<u64> {
    windows
        .iter()
        .map(|w| w["sequence"].as_u64().expect("sequence"))
        .collect()
}

/// `sequences=a-b,c-d` from a collector's exit line for `node`.
fn exit_line(collector: &Proc, node: &str) -> (Vec<(u64, u64)>, BTreeMap<String, u64>, u64) {
    let line = collector
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("at exit:") && l.contains(&format!("node={node} ")))
        .unwrap_or_else(|| panic!("no exit line for {node}"));
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let ranges = field("sequences")
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let (a, b) = r.split_once('-').expect("a-b");
            (a.parse().expect("first"), b.parse().expect("last"))
        })
        .collect();
    let totals = field("totals")
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (name, n) = t.rsplit_once(':').expect("name:count");
            (name.to_owned(), n.parse().expect("count"))
        })
        .collect();
    (
        ranges,
        totals,
        field("duplicates").parse().expect("duplicates"),
    )
}

pub(crate) fn sum_prefix(totals: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    totals
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn collector_stopped_for_30s_every_window_arrives_exactly_once() {
    if crate::vm_lacks(
        "sonde-collector (not in the guest image: the wire does not depend on the kernel)",
    ) {
        return;
    }
    if !privileged() {
        return;
    }
    let node = "e2e-restart";
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut first = Proc::collector(port, &[]);
    let cgroup = TestCgroup::new("restart");
    let workload = Workload::fork(&cgroup, failing_opens_forever(20));
    workload.go();
    let mut agent = Proc::agent(&[
        "--collector",
        &url,
        "--node-name",
        node,
        "--reconnect-max",
        "2s",
        "--drain-timeout",
        "15s",
    ]);
    agent.wait_windows(3, Duration::from_secs(20));
    // A graceful stop acks what it applied, then ends the streams.
    assert_eq!(first.terminate(), 0);
    let (before, before_totals, before_dups) = exit_line(&first, node);
    assert_eq!(
        before.len(),
        1,
        "one contiguous run before the stop: {before:?}"
    );
    assert_eq!(before_dups, 0);
    let printed_at_stop = agent.windows().len();
    std::thread::sleep(Duration::from_secs(30));
    let during_outage = agent.windows().len() - printed_at_stop;
    assert!(
        during_outage >= 28,
        "the agent kept closing windows: {during_outage}"
    );
    let second = Proc::collector(port, &[]);
    let target = agent.windows().len() + 3;
    agent.wait_windows(target, Duration::from_secs(30));
    assert_eq!(agent.terminate(), 0, "the agent drains and exits");
    agent.assert_stopped_acked();
    workload.kill();

    let windows = agent.windows();
    let seqs = sequences(&windows);
    // The agent numbers its windows without a gap.
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "agent sequence: {seqs:?}");
    }
    let (first_seq, last_seq) = (seqs[0], seqs[seqs.len() - 1]);
    let detail = fleet_json(&["--collector", &url, "--node", node]);
    let summary = &detail["summary"];
    let after = ranges(summary);
    // Exactly once across both collectors: the first took first_seq..=b,
    // the second b+1..=last, nothing twice, nothing missing.
    assert_eq!(before[0].0, first_seq);
    assert_eq!(
        after,
        vec![(before[0].1 + 1, last_seq)],
        "second collector's sequences"
    );
    assert_eq!(summary["duplicates"], 0);
    assert_eq!(summary["reports"], last_seq - before[0].1);
    // Totals: the second collector's equal the agent's own over its windows,
    // series by series; the first's equal the agent's over the rest.
    let split = before[0].1;
    let agent_after = agent_totals(&windows, |s| s > split);
    assert_eq!(collector_totals(&detail), agent_after);
    let agent_before = agent_totals(&windows, |s| s <= split);
    assert_eq!(
        before_totals.get("system.linux.syscall.duration").copied(),
        Some(sum_prefix(&agent_before, "dur|"))
    );
    assert_eq!(
        before_totals.get("system.linux.syscall.errors").copied(),
        Some(sum_prefix(&agent_before, "err|"))
    );
    // The workload ran through the outage and its failures are all there.
    let key = format!("err|{}|openat|ENOENT", cgroup.v2_path());
    assert!(
        agent_after.get(&key).copied().unwrap_or(0) > 1000,
        "{key}: {agent_after:?}"
    );
    drop(second);
}

#[test]
fn agent_killed_with_a_disk_outbox_loses_nothing_it_wrote() {
    if crate::vm_lacks(
        "sonde-collector (not in the guest image: the wire does not depend on the kernel)",
    ) {
        return;
    }
    if !privileged() {
        return;
    }
    let node = "e2e-sigkill";
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("outbox dir");
    let outbox = dir.path().join("outbox");
    let outbox_arg = outbox.to_str().expect("utf-8 path").to_owned();
    let args = [
        "--collector",
        &url,
        "--node-name",
        node,
        "--outbox-dir",
        &outbox_arg,
        "--reconnect-max",
        "1s",
        "--drain-timeout",
        "15s",
    ];
    // No collector yet: every window stays in the outbox.
    let mut killed = Proc::agent(&args);
    killed.wait_windows(3, Duration::from_secs(20));
    killed.kill();
    let printed = sequences(&killed.windows());
    // What was written is what is on disk: decode it.
    let written = outbox_reports(&outbox);
    let written_seqs: Vec<u64> = written.iter().map(|r| r.sequence).collect();
    assert!(written.len() >= 3, "{written_seqs:?}");
    for seq in &printed {
        assert!(
            written_seqs.contains(seq),
            "printed {seq} was written first: {written_seqs:?}"
        );
    }

    let mut restarted = Proc::agent(&args);
    restarted.wait_windows(1, Duration::from_secs(20));
    let collector = Proc::collector(port, &[]);
    restarted.wait_windows(3, Duration::from_secs(20));
    assert_eq!(restarted.terminate(), 0);
    restarted.assert_stopped_acked();
    let later = restarted.windows();
    let after = sequences(&later);
    let last_written = written_seqs[written_seqs.len() - 1];
    assert!(
        after[0] > last_written && after[0] <= last_written + 2,
        "numbering goes on from the disk: {last_written} then {}",
        after[0]
    );

    // Exactly the reports on disk and the restarted agent's, once each.
    let detail = fleet_json(&["--collector", &url, "--node", node]);
    let summary = &detail["summary"];
    let mut expected: Vec<u64> = written_seqs.iter().chain(&after).copied().collect();
    expected.sort_unstable();
    let received: Vec<u64> = ranges(summary)
        .into_iter()
        .flat_map(|(a, b)| a..=b)
        .collect();
    assert_eq!(received, expected);
    assert_eq!(summary["reports"], expected.len());
    assert_eq!(summary["duplicates"], 0);
    let mut totals = report_totals(&written);
    for (k, v) in agent_totals(&later, |_| true) {
        *totals.entry(k).or_default() += v;
    }
    assert_eq!(collector_totals(&detail), totals);
    let left = std::fs::read_dir(&outbox)
        .expect("outbox")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".report"))
        })
        .count();
    assert_eq!(left, 0, "acked reports leave the disk");
    drop(collector);
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_owned()
    }
}

/// Two CAs: `ca` signs the collector's certificate and the good client's;
/// `rogue` signs another client's.
fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let dir = tempfile::tempdir().expect("pki dir");
    let write = |name: &str, text: String| {
        std::fs::write(dir.path().join(name), text).expect("write pem");
    };
    let ca = |cn: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
    };
    let good_ca = ca("sonde test CA");
    let rogue_ca = ca("rogue CA");
    write("ca.pem", good_ca.pem());
    let leaf = |names: Vec<String>,
                usage: ExtendedKeyUsagePurpose,
                issuer: &CertifiedIssuer<'_, KeyPair>,
                base: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, base);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, issuer).expect("sign");
        write(&format!("{base}.pem"), cert.pem());
        write(&format!("{base}.key"), key.serialize_pem());
    };
    leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        &good_ca,
        "server",
    );
    leaf(
        vec!["agent".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        &good_ca,
        "good",
    );
    leaf(
        vec!["agent".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        &rogue_ca,
        "rogue",
    );
    Pki { dir }
}

fn fleet_stderr(args: &[String]) -> (i32, String) {
    let out = std::process::Command::new(sonde_bin())
        .arg("fleet")
        .args(args)
        .output()
        .expect("run sonde fleet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mtls_refuses_other_cas_and_no_cert_and_accepts_the_right_one() {
    if crate::vm_lacks(
        "sonde-collector (not in the guest image: the wire does not depend on the kernel)",
    ) {
        return;
    }
    if !privileged() {
        return;
    }
    let pki = pki();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let _collector = Proc::collector(
        port,
        &[
            "--tls-cert",
            &pki.path("server.pem"),
            "--tls-key",
            &pki.path("server.key"),
            "--tls-client-ca",
            &pki.path("ca.pem"),
        ],
    );
    let client = |who: Option<&str>| -> Vec<String> {
        let mut v = vec![
            "--collector".to_owned(),
            url.clone(),
            "--tls-ca".to_owned(),
            pki.path("ca.pem"),
        ];
        if let Some(who) = who {
            v.extend([
                "--tls-cert".to_owned(),
                pki.path(&format!("{who}.pem")),
                "--tls-key".to_owned(),
                pki.path(&format!("{who}.key")),
            ]);
        }
        v
    };
    let (code, err) = fleet_stderr(&client(Some("rogue")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("client certificate refused"), "{err}");
    assert!(err.contains("UnknownIssuer"), "says why: {err}");
    let (code, err) = fleet_stderr(&client(None));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no client certificate"), "{err}");
    // The report stream itself refuses the other CA's agent, with the reason.
    let refusal = rogue_report_stream(port, &pki);
    assert_eq!(refusal.code(), tonic::Code::Unauthenticated, "{refusal:?}");
    assert!(
        refusal.message().contains("client certificate refused")
            && refusal.message().contains("UnknownIssuer"),
        "{refusal:?}"
    );
    // Plaintext to a TLS collector does not get through either.
    let (code, _) = fleet_stderr(&["--collector".to_owned(), format!("http://127.0.0.1:{port}")]);
    assert_eq!(code, 1);

    // The right certificate: an agent streams, and the fleet shows it.
    let good = client(Some("good"));
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let mut agent_args = good.clone();
    agent_args.extend(["--node-name", "e2e-mtls", "--drain-timeout", "10s"]);
    let mut agent = Proc::agent(&agent_args);
    agent.wait_windows(2, Duration::from_secs(20));
    assert_eq!(agent.terminate(), 0);
    let sent = agent.windows().len() as u64;
    let mut fleet_args = good.clone();
    fleet_args.extend(["--node", "e2e-mtls"]);
    let detail = fleet_json(&fleet_args);
    assert_eq!(detail["summary"]["reports"], sent);
    let mut health_args = good.clone();
    health_args.push("--health");
    let health = fleet_json(&health_args);
    let refused = |reason: &str| {
        health["rejections"]
            .as_array()
            .expect("rejections")
            .iter()
            .find(|r| r["reason"] == reason)
            .map(|r| r["count"].as_u64().expect("count"))
    };
    assert_eq!(refused("bad_client_cert"), Some(2));
    assert_eq!(refused("no_client_cert"), Some(1));
    assert_eq!(refused("tls_handshake"), Some(1), "the plaintext attempt");
}

/// Opens a report stream with the rogue CA's certificate; returns the status
/// the collector answers with.
fn rogue_report_stream(port: u16, pki: &Pki) -> tonic::Status {
    use sonde_proto::v1::{ingest_client::IngestClient, AgentReport};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |name: &str| std::fs::read(pki.path(name)).expect("read pem");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(read("rogue.pem"), read("rogue.key")))
            .domain_name("127.0.0.1");
        let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("the handshake itself succeeds");
        let reports = tokio_stream::iter(vec![AgentReport::default()]);
        match IngestClient::new(channel).report(reports).await {
            Err(status) => status,
            Ok(response) => match response.into_inner().message().await {
                Err(status) => status,
                other => panic!("the rogue agent was served: {other:?}"),
            },
        }
    })
}

/// The reports an agent left in its outbox directory, by sequence. A
/// running agent removes a report once it is acked: one listed and gone
/// before it was read is skipped.
pub(crate) fn outbox_reports(dir: &std::path::Path) -> Vec<sonde_proto::v1::AgentReport> {
    let mut reports: Vec<sonde_proto::v1::AgentReport> = std::fs::read_dir(dir)
        .expect("outbox")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            if !path.to_string_lossy().ends_with(".report") {
                return None;
            }
            let bytes = match std::fs::read(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                read => read.expect("read report"),
            };
            Some(prost::Message::decode(bytes.as_slice()).expect("a report"))
        })
        .collect();
    reports.sort_by_key(|r| r.sequence);
    reports
}

/// The keys of [`agent_totals`] from wire reports.
pub(crate) fn report_totals(reports: &[sonde_proto::v1::AgentReport]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in reports {
        let text = |i: u32| r.strings[i as usize].as_str();
        for m in &r.metrics {
            for p in &m.points {
                let label = |k: &str| {
                    p.label_refs
                        .chunks_exact(2)
                        .find(|kv| text(kv[0]) == k)
                        .map(|kv| text(kv[1]))
                        .unwrap_or("")
                };
                let (path, name) = (label("linux.cgroup.path"), label("syscall.name"));
                match m.name.as_str() {
                    "system.linux.syscall.duration" => {
                        let n = p
                            .histogram
                            .as_ref()
                            .map(sonde_proto::histogram::count)
                            .unwrap_or(0);
                        *out.entry(format!("dur|{path}|{name}")).or_default() += n;
                    }
                    "system.linux.syscall.errors" => {
                        let errno = label("error.type");
                        *out.entry(format!("err|{path}|{name}|{errno}")).or_default() += p.count;
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[test]
fn series_beyond_the_cap_fold_into_an_overflow_series_and_every_count_arrives() {
    if crate::vm_lacks(
        "sonde-collector (not in the guest image: the wire does not depend on the kernel)",
    ) {
        return;
    }
    if !privileged() {
        return;
    }
    const CGROUPS: u64 = 12;
    const CAP: usize = 5;
    let node = "e2e-cardinality";
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _collector = Proc::collector(port, &[]);
    let cgroups: Vec<TestCgroup> = (0..CGROUPS)
        .map(|i| TestCgroup::new(&format!("card{i}")))
        .collect();
    let mut agent = Proc::agent(&[
        "--collector",
        &url,
        "--node-name",
        node,
        "--probes",
        "syscalls",
        "--max-series-per-metric",
        &CAP.to_string(),
    ]);
    // Twelve cgroups, each with its own number of failing openat.
    for (i, cgroup) in cgroups.iter().enumerate() {
        let w = Workload::fork(cgroup, crate::procs::failing_opens(10 * (i as u64 + 1)));
        w.go();
        assert_eq!(w.wait(), 0);
    }
    let n = agent.windows().len();
    agent.wait_windows(n + 2, Duration::from_secs(20));
    assert_eq!(agent.terminate(), 0, "the agent drains and exits");
    let windows = agent.windows();
    let detail = fleet_json(&["--collector", &url, "--node", node]);
    // Produced = delivered: every failure the agent counted is in the
    // collector's totals, under its own labels or in the overflow series.
    let produced = sum_prefix(&agent_totals(&windows, |_| true), "err|");
    let delivered = sum_prefix(&collector_totals(&detail), "err|");
    assert_eq!(delivered, produced);
    // Of them, each of our cgroups' failures, exactly: the other failures
    // are the rest of the machine's.
    let totals = agent_totals(&windows, |_| true);
    for (i, cgroup) in cgroups.iter().enumerate() {
        let key = format!("err|{}|openat|ENOENT", cgroup.v2_path());
        assert_eq!(totals.get(&key), Some(&(10 * (i as u64 + 1))), "{key}");
    }
    let ours: u64 = (1..=CGROUPS).map(|i| 10 * i).sum();
    assert!(produced >= ours);
    // The latest window carried no more than the cap, overflow included.
    let latest = detail["latest"].as_array().expect("latest");
    let errors = latest
        .iter()
        .find(|m| m["name"] == "system.linux.syscall.errors")
        .expect("errors in the latest window");
    assert!(errors["points"].as_array().expect("points").len() <= CAP);
    let totals = detail["totals"].as_array().expect("totals");
    let overflow_points = totals
        .iter()
        .find(|m| m["name"] == "system.linux.syscall.errors")
        .expect("errors")["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter(|p| {
            p["labels"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["key"] == "otel.metric.overflow"))
        })
        .count();
    assert_eq!(overflow_points, 1, "one overflow series");
    let folded = totals
        .iter()
        .find(|m| m["name"] == "sonde.agent.series.overflow")
        .expect("the overflow counter");
    let folded: u64 = folded["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["count"].as_u64().unwrap_or(0))
        .sum();
    // At least the seven lightest of our twelve (and other cgroups' series).
    assert!(folded >= CGROUPS - (CAP as u64 - 1), "{folded}");
    // Exactly: per window, every failure series beyond the cap's CAP - 1
    // kept ones, as the agent's own (uncapped) windows count them.
    let expected: u64 = windows
        .iter()
        .map(|w| {
            let series = w["syscalls"]
                .as_array()
                .expect("syscalls")
                .iter()
                .flat_map(|cg| cg["syscalls"].as_array().expect("series"))
                .map(|s| s["errnos"].as_object().expect("errnos").len())
                .sum::<usize>();
            series.saturating_sub(CAP - 1) as u64 * u64::from(series > CAP)
        })
        .sum();
    let folded_errors = totals
        .iter()
        .find(|m| m["name"] == "sonde.agent.series.overflow")
        .expect("the overflow counter")["points"]
        .as_array()
        .expect("points")
        .iter()
        .find(|p| {
            p["labels"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|l| l["key"] == "metric" && l["value"] == "system.linux.syscall.errors")
            })
        })
        .and_then(|p| p["count"].as_u64())
        .expect("the failures' overflow count");
    assert_eq!(folded_errors, expected);
    assert!(expected >= CGROUPS - (CAP as u64 - 1));
}
