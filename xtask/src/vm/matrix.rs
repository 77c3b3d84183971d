//! What one guest run says (parsed from its serial console) and the matrix
//! of runs: kernel × arch × probe family, and the tests. Pure.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// The line `/init` prints once, when the tests are done.
pub const VERDICT: &str = "SONDE-VM-RESULT ";
/// One line per test that skipped in the guest: `name|reason`.
pub const SKIP: &str = "SONDE-VM-SKIP ";
/// A kernel warning from the guest's log, one per line.
pub const DMESG: &str = "SONDE-VM-DMESG ";

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The guest printed its verdict.
    Completed,
    /// The kernel panicked or reported a bug; the first such line.
    KernelBug(String),
    /// No verdict before the timeout.
    Timeout,
    /// QEMU ended without a verdict.
    NoVerdict,
}

/// One probe family's state on one kernel, as `sonde doctor --json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub probe: String,
    /// `attached`, `degraded` or `unavailable`; `failed` when doctor gave
    /// no report.
    pub state: String,
    pub hook: Option<String>,
    pub reason: Option<String>,
}

/// A test that skipped in the guest, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub test: String,
    pub reason: String,
}

/// The integration tests' results in one guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tests {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// What each failed test printed (libtest's `---- NAME stdout ----`
    /// block: its own figures and the panic), the last `FAILURE_LINES`.
    pub output: Vec<Failure>,
}

/// The end of a failed test's captured output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub test: String,
    pub lines: Vec<String>,
}

/// How much of a failed test's output the matrix keeps: the panic and the
/// figures the test printed just before it.
const FAILURE_LINES: usize = 40;

/// One kernel on one architecture.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub arch: String,
    /// The version asked for (`6.1`).
    pub kernel: String,
    /// The Debian package booted.
    pub package: String,
    /// `uname -r` in the guest, when it said.
    pub release: Option<String>,
    pub outcome: Outcome,
    /// The test binary's exit status.
    pub tests_exit: Option<i64>,
    pub probes: Vec<Probe>,
    pub tests: Tests,
    /// Kernel warnings and traces in the guest's log.
    pub kernel_warnings: Vec<String>,
    /// What doctor reported that the table of expectations does not accept
    /// (`expect::problems`).
    pub problems: Vec<String>,
    pub boot_to_poweroff_secs: f64,
}

impl Run {
    /// Whether everything in this run is as it should be: a verdict, no
    /// test failed, nothing in the kernel's log, and every family as this
    /// kernel allows (attached, or degraded by exactly the gaps that the
    /// features it lacks explain: `expect::TABLE`).
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Completed
            && self.tests.failed.is_empty()
            && self.tests_exit == Some(0)
            && !self.probes.is_empty()
            && self.problems.is_empty()
            && self.kernel_warnings.is_empty()
    }
}

/// What the console of one guest says.
#[derive(Debug, Default, PartialEq)]
pub struct Console {
    pub verdict: Option<Value>,
    pub tests: Tests,
    pub kernel_bug: Option<String>,
    pub kernel_warnings: Vec<String>,
}

/// Parses a guest's serial console.
pub fn parse_console(text: &str) -> Console {
    let mut console = Console::default();
    let mut skipped = Vec::new();
    let mut failure: Option<Failure> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            console.tests.output.extend(failure.take());
            failure = Some(Failure {
                test: name.to_owned(),
                lines: Vec::new(),
            });
            continue;
        }
        if let Some(f) = failure.as_mut() {
            // libtest lists the failures' names after their blocks.
            if line == "failures:" || line.contains(VERDICT) {
                console.tests.output.extend(failure.take());
            } else {
                if !line.trim().is_empty() {
                    f.lines.push(line.to_owned());
                }
                if f.lines.len() > FAILURE_LINES {
                    f.lines.remove(0);
                }
                continue;
            }
        }
        if let Some(json) = line.find(VERDICT).map(|i| &line[i + VERDICT.len()..]) {
            console.verdict = serde_json::from_str(json.trim()).ok();
        } else if let Some(warning) = line.find(DMESG).map(|i| &line[i + DMESG.len()..]) {
            // Relayed from dmesg after the tests: a bug there is a bug.
            if console.kernel_bug.is_none() && is_kernel_bug(warning) {
                console.kernel_bug = Some(warning.trim().to_owned());
            }
            console.kernel_warnings.push(warning.trim().to_owned());
        } else if let Some(skip) = line.find(SKIP).map(|i| &line[i + SKIP.len()..]) {
            if let Some((test, reason)) = skip.split_once('|') {
                skipped.push(Skipped {
                    test: test.trim().to_owned(),
                    reason: reason.trim().to_owned(),
                });
            }
        } else if let Some(rest) = line.strip_prefix("test ") {
            if let Some(name) = rest.strip_suffix(" ... ok") {
                console.tests.passed.push(name.to_owned());
            } else if let Some(name) = rest.strip_suffix(" ... FAILED") {
                console.tests.failed.push(name.to_owned());
            }
        } else if console.kernel_bug.is_none() && is_kernel_bug(line) {
            console.kernel_bug = Some(line.trim().to_owned());
        }
    }
    console.tests.output.extend(failure);
    // A skipped test returns early, so libtest counts it as passed.
    console
        .tests
        .passed
        .retain(|t| !skipped.iter().any(|s| &s.test == t));
    console.tests.skipped = skipped;
    console
}

fn is_kernel_bug(line: &str) -> bool {
    [
        "Kernel panic",
        "BUG: ",
        "Oops: ",
        "general protection fault",
    ]
    .iter()
    .any(|needle| line.contains(needle))
}

/// The probe states in a verdict's `doctor` report.
pub fn probes(verdict: &Value) -> Vec<Probe> {
    let Some(list) = verdict
        .get("doctor")
        .and_then(|d| d.get("probes"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let text = |p: &Value, key: &str| p.get(key).and_then(Value::as_str).map(str::to_owned);
    list.iter()
        .map(|p| Probe {
            probe: text(p, "probe").unwrap_or_default(),
            state: text(p, "state").unwrap_or_else(|| "failed".to_owned()),
            hook: text(p, "hook"),
            reason: text(p, "reason"),
        })
        .collect()
}

/// The families in the order doctor lists them (a column each).
fn families(runs: &[Run]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for run in runs {
        for p in &run.probes {
            if !out.contains(&p.probe) {
                out.push(p.probe.clone());
            }
        }
    }
    out
}

/// A family's cell: the kind of hook it attached with, or its state.
fn cell(probe: Option<&Probe>) -> String {
    let Some(p) = probe else {
        return "-".to_owned();
    };
    match p.state.as_str() {
        "attached" => {
            let kind = p
                .hook
                .as_deref()
                .and_then(|h| h.split(':').next())
                .unwrap_or("attached");
            match kind {
                "raw_tracepoint" => "raw_tp",
                "tracepoint" => "tp",
                other => other,
            }
            .to_owned()
        }
        "degraded" => "DEGRADED*".to_owned(),
        "unavailable" => "UNAVAIL*".to_owned(),
        other => other.to_uppercase(),
    }
}

fn outcome(run: &Run) -> String {
    match &run.outcome {
        Outcome::Completed if run.ok() => "ok".to_owned(),
        Outcome::Completed => "FAIL".to_owned(),
        Outcome::KernelBug(_) => "KERNEL BUG".to_owned(),
        Outcome::Timeout => "TIMEOUT".to_owned(),
        Outcome::NoVerdict => "NO VERDICT".to_owned(),
    }
}

/// The matrix as a text table, with the reasons and failures below it.
pub fn render(runs: &[Run]) -> String {
    let families = families(runs);
    let mut rows = vec![{
        let mut h = vec!["ARCH".to_owned(), "KERNEL".to_owned(), "RESULT".to_owned()];
        h.extend(families.iter().cloned());
        h.push("TESTS".to_owned());
        h.push("SECS".to_owned());
        h
    }];
    for run in runs {
        let mut row = vec![
            run.arch.clone(),
            run.release.clone().unwrap_or_else(|| run.kernel.clone()),
            outcome(run),
        ];
        for f in &families {
            row.push(cell(run.probes.iter().find(|p| &p.probe == f)));
        }
        row.push(format!(
            "{} passed, {} failed, {} skipped",
            run.tests.passed.len(),
            run.tests.failed.len(),
            run.tests.skipped.len()
        ));
        row.push(format!("{:.0}", run.boot_to_poweroff_secs));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for run in runs {
        let name = format!(
            "{} {}",
            run.arch,
            run.release.as_deref().unwrap_or(&run.kernel)
        );
        for p in run.probes.iter().filter(|p| p.state != "attached") {
            let _ = writeln!(
                out,
                "* {name}: {} {}: {}",
                p.probe,
                p.state,
                p.reason.as_deref().unwrap_or("no reason given")
            );
        }
        for problem in &run.problems {
            let _ = writeln!(out, "! {name}: doctor: {problem}");
        }
        for w in &run.kernel_warnings {
            let _ = writeln!(out, "! {name}: kernel log: {w}");
        }
        for t in &run.tests.failed {
            let _ = writeln!(out, "! {name}: test failed: {t}");
            for f in run.tests.output.iter().filter(|f| &f.test == t) {
                for line in &f.lines {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        match &run.outcome {
            Outcome::KernelBug(line) => {
                let _ = writeln!(out, "! {name}: {line}");
            }
            Outcome::Timeout | Outcome::NoVerdict => {
                let _ = writeln!(out, "! {name}: {}", outcome(run).to_lowercase());
            }
            Outcome::Completed => {}
        }
    }
    // The same skips repeat on every kernel: list each reason once.
    let mut reasons: Vec<(&str, &str)> = runs
        .iter()
        .flat_map(|r| &r.tests.skipped)
        .map(|s| (s.test.as_str(), s.reason.as_str()))
        .collect();
    reasons.sort();
    reasons.dedup();
    for (test, reason) in reasons {
        let _ = writeln!(out, "skipped in the guest: {test}: {reason}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    0.000000] Linux version 6.1.0-56-cloud-amd64
SONDE-VM-BOOTED 6.1.0-56-cloud-amd64 x86_64\r
running 3 tests\r
test syscalls::sleep_latency_histogram ... ok\r
test memory::oom_kill_counted_once_with_the_victim ... FAILED\r
test otlp::a_real_otlp_receiver_gets_sondes_histograms ... ok\r
\r
failures:\r
\r
---- memory::oom_kill_counted_once_with_the_victim stdout ----\r
victim rss 96 MiB\r
thread 'memory::oom_kill_counted_once_with_the_victim' panicked at tests/src/memory.rs:9:5:\r
assertion `left == right` failed\r
\r
failures:\r
    memory::oom_kill_counted_once_with_the_victim\r
SONDE-VM-SKIP otlp::a_real_otlp_receiver_gets_sondes_histograms|needs python3\r
SONDE-VM-DMESG [   12.5] WARNING: CPU: 0 PID: 1 at kernel/bpf/core.c:1 x\r
SONDE-VM-RESULT {\"release\":\"6.1.0-56-cloud-amd64\",\"tests_exit\":101,\"doctor\":{\"probes\":[{\"probe\":\"syscalls\",\"state\":\"attached\",\"hook\":\"raw_tracepoint:sys_enter\",\"reason\":null},{\"probe\":\"tcp\",\"state\":\"unavailable\",\"hook\":null,\"reason\":\"no BTF\"}]}}\r
";

    #[test]
    fn console_gives_tests_skips_and_verdict() {
        let c = parse_console(CONSOLE);
        assert_eq!(c.tests.passed, vec!["syscalls::sleep_latency_histogram"]);
        assert_eq!(
            c.tests.failed,
            vec!["memory::oom_kill_counted_once_with_the_victim"]
        );
        assert_eq!(
            c.tests.output,
            vec![Failure {
                test: "memory::oom_kill_counted_once_with_the_victim".into(),
                lines: vec![
                    "victim rss 96 MiB".into(),
                    "thread 'memory::oom_kill_counted_once_with_the_victim' panicked at tests/src/memory.rs:9:5:".into(),
                    "assertion `left == right` failed".into(),
                ],
            }]
        );
        assert_eq!(
            c.tests.skipped,
            vec![Skipped {
                test: "otlp::a_real_otlp_receiver_gets_sondes_histograms".into(),
                reason: "needs python3".into()
            }]
        );
        assert_eq!(c.kernel_bug, None);
        assert_eq!(
            c.kernel_warnings,
            vec!["[   12.5] WARNING: CPU: 0 PID: 1 at kernel/bpf/core.c:1 x"]
        );
        let v = c.verdict.expect("verdict");
        assert_eq!(v["tests_exit"], 101);
        let p = probes(&v);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].state, "unavailable");
        assert_eq!(p[1].reason.as_deref(), Some("no BTF"));
    }

    #[test]
    fn panics_and_bugs_are_caught() {
        let c = parse_console(
            "ok\n[  3.1] BUG: kernel NULL pointer dereference\n[ 3.2] Kernel panic - not syncing\n",
        );
        assert_eq!(
            c.kernel_bug.as_deref(),
            Some("[  3.1] BUG: kernel NULL pointer dereference")
        );
        assert!(c.verdict.is_none());
    }

    #[test]
    fn table_has_a_column_per_family_and_notes_below() {
        let c = parse_console(CONSOLE);
        let v = c.verdict.clone().expect("verdict");
        let run = Run {
            arch: "x86_64".into(),
            kernel: "6.1".into(),
            package: "linux-image-6.1.0-56-cloud-amd64-unsigned".into(),
            release: Some("6.1.0-56-cloud-amd64".into()),
            outcome: Outcome::Completed,
            tests_exit: v["tests_exit"].as_i64(),
            probes: probes(&v),
            tests: c.tests,
            problems: super::super::expect::problems(&v["doctor"]),
            kernel_warnings: c.kernel_warnings,
            boot_to_poweroff_secs: 41.4,
        };
        assert!(!run.ok());
        let table = render(&[run]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ARCH"), "{table}");
        assert!(lines[0].contains("syscalls") && lines[0].contains("tcp"));
        assert!(lines[1].contains("6.1.0-56-cloud-amd64"));
        assert!(lines[1].contains("FAIL"));
        assert!(lines[1].contains("raw_tp"));
        assert!(lines[1].contains("UNAVAIL*"));
        assert!(lines[1].contains("1 passed, 1 failed, 1 skipped"));
        assert!(lines[1].ends_with("41"));
        assert!(table.contains("* x86_64 6.1.0-56-cloud-amd64: tcp unavailable: no BTF"));
        assert!(table.contains("! x86_64 6.1.0-56-cloud-amd64: test failed: memory::"));
        assert!(
            table.contains("\n    victim rss 96 MiB\n    thread 'memory::oom_kill_counted_once_with_the_victim' panicked at tests/src/memory.rs:9:5:\n    assertion `left == right` failed\n"),
            "{table}"
        );
        assert!(table.contains("skipped in the guest: otlp::"));
        assert!(table.contains("kernel log: [   12.5] WARNING"));
        assert!(
            table.contains("doctor: tcp: unavailable: no BTF"),
            "{table}"
        );
    }

    #[test]
    fn a_kernel_warning_or_bug_from_dmesg_fails_the_run() {
        let c = parse_console(
            "SONDE-VM-DMESG [ 9.1] BUG: sleeping function called from invalid context\n",
        );
        assert_eq!(
            c.kernel_bug.as_deref(),
            Some("[ 9.1] BUG: sleeping function called from invalid context")
        );
        let c = parse_console("SONDE-VM-DMESG [ 9.2] WARNING: CPU: 1 PID: 7 at mm/x.c:1\n");
        let run = Run {
            arch: "x86_64".into(),
            kernel: "6.12".into(),
            package: String::new(),
            release: None,
            outcome: Outcome::Completed,
            tests_exit: Some(0),
            probes: vec![Probe {
                probe: "syscalls".into(),
                state: "attached".into(),
                hook: None,
                reason: None,
            }],
            tests: Tests::default(),
            kernel_warnings: c.kernel_warnings,
            problems: Vec::new(),
            boot_to_poweroff_secs: 1.0,
        };
        assert!(!run.ok(), "a kernel warning fails the run");
    }
}
