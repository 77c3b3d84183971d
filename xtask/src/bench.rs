//! `cargo xtask bench`: builds release binaries, runs the benchmark drivers
//! (`sonde-bench` and `sonde-loadgen`, in the tests crate) as root, and
//! gathers what they wrote into `bench/results/<machine>-<date>.json`, the
//! file the README's Performance section quotes. A second run on the same
//! machine and day replaces the benchmarks it ran and keeps the others.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Map, Value};

use crate::{root, sh};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// getppid loop: no probes, floor, sonde, bpftrace.
    Syscalls,
    /// pipe ping-pong on one CPU: no probes, floor, sonde's scheduler probes.
    Sched,
    /// loopback connect/accept storm and bulk transfer: no probes, floor,
    /// sonde's TCP probes.
    Tcp,
    /// loopback UDP ping on one CPU: no probes, floor, sonde's interrupt
    /// probes (ns per softirq).
    Irq,
    /// In-kernel cost of a clock read and of per-CPU hash updates
    /// (BPF_PROG_TEST_RUN), and of clock_gettime in user space.
    Helpers,
    /// The whole agent on the machine as it is: steady and peak RSS, CPU.
    Agent,
    /// Simulated agents against one collector on one core.
    Collector,
    /// The collector's remote write into a real Prometheus: samples/s per
    /// collector core, bytes per sample, time per stage.
    RemoteWrite,
    /// Every benchmark above.
    All,
    /// The scale run (not part of `all`): 1,000 simulated nodes against two
    /// collector replicas writing to one real Prometheus; one replica
    /// SIGKILLed and restarted; every node's stored totals checked.
    Fleet,
}

/// The driver's benchmarks each choice runs, in order.
fn drivers(which: Which) -> &'static [&'static str] {
    match which {
        Which::Syscalls => &["syscalls"],
        Which::Sched => &["sched"],
        Which::Tcp => &["tcp-connect", "tcp-bulk"],
        Which::Irq => &["irq"],
        Which::Helpers => &["helpers"],
        Which::Agent => &["agent"],
        Which::Collector | Which::RemoteWrite | Which::Fleet => &[],
        Which::All => &[
            "syscalls",
            "sched",
            "tcp-connect",
            "tcp-bulk",
            "irq",
            "helpers",
            "agent",
        ],
    }
}

pub fn run(which: Which, ops: Option<u64>, rounds: u32, before: Option<&Path>) -> Result<()> {
    let benches = drivers(which);
    // One date for the file's name and its "date" field, even when the run
    // crosses midnight.
    let date = today_utc()?;
    let results = results_file(&date)?;
    let target = target_dir().join("release");
    let name = clap::ValueEnum::to_possible_value(&which)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_else(|| format!("{which:?}").to_lowercase());
    let mut command_line = format!("cargo xtask bench {name} --rounds {rounds}");
    if let Some(ops) = ops {
        command_line += &format!(" --ops {ops}");
    }
    if let Some(before) = before {
        // Named by file name only: results name no path of this machine.
        let name = before.file_name().map(|n| n.to_string_lossy().into_owned());
        command_line += &format!(" --before {}", name.unwrap_or_default());
    }
    if !benches.is_empty() {
        sh(
            "cargo",
            &[
                "build",
                "--release",
                "--package",
                "sonde",
                "--package",
                "sonde-tests",
                "--bins",
            ],
        )?;
    }
    for &name in benches {
        let out = target_dir().join(format!("bench/{name}.json"));
        let mut command = std::process::Command::new(target.join("sonde-bench"));
        command.args([name, "--rounds", &rounds.to_string()]);
        if let Some(ops) = ops {
            command.args(["--ops", &ops.to_string()]);
        }
        if let Some(before) = before {
            command.arg("--sonde-before").arg(before);
        }
        let status = command
            .arg("--sonde")
            .arg(target.join("sonde"))
            .arg("--out")
            .arg(&out)
            .status()
            .context("run sonde-bench")?;
        if !status.success() {
            bail!("benchmark {name} failed (it needs root)");
        }
        gather(&results, &date, name, &out, &command_line)?;
    }
    if matches!(which, Which::Collector | Which::All) {
        let out = collector(Loadgen::Collector)?;
        gather(&results, &date, "collector", &out, &command_line)?;
    }
    if matches!(which, Which::RemoteWrite | Which::All) {
        let out = collector(Loadgen::RemoteWrite)?;
        gather(&results, &date, "remote-write", &out, &command_line)?;
    }
    if matches!(which, Which::Fleet) {
        let out = collector(Loadgen::Fleet)?;
        gather(&results, &date, "fleet", &out, &command_line)?;
    }
    eprintln!("xtask: results in {}", results.display());
    Ok(())
}

/// Where cargo puts its builds: `CARGO_TARGET_DIR` (relative to the
/// workspace root when relative), else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// `bench/results/<arch>-linux-<kernel release>-<YYYY-MM-DD>.json`.
fn results_file(date: &str) -> Result<PathBuf> {
    let machine = format!("{}-linux-{}", std::env::consts::ARCH, kernel_release()?);
    Ok(root()
        .join("bench/results")
        .join(format!("{machine}-{date}.json")))
}

fn kernel_release() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("read the kernel release")?
        .trim()
        .to_owned())
}

/// Today's date in UTC as YYYY-MM-DD.
fn today_utc() -> Result<String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400)?);
    Ok(format!("{y:04}-{m:02}-{d:02}"))
}

/// (year, month, day) of a count of days since 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What describes this machine without naming it: architecture, kernel,
/// CPU model and count.
fn machine() -> Result<Value> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    Ok(json!({
        "arch": std::env::consts::ARCH,
        "kernel_release": kernel_release()?,
        "cpu_model": model,
        "cpus": std::thread::available_parallelism().map(usize::from).ok(),
    }))
}

/// Puts one benchmark's JSON (`out`) into the results file under `name`.
fn gather(results: &Path, date: &str, name: &str, out: &Path, command_line: &str) -> Result<()> {
    let text = std::fs::read_to_string(out).with_context(|| format!("read {}", out.display()))?;
    let result: Value = serde_json::from_str(&text)?;
    let mut all: Value = match std::fs::read_to_string(results) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", results.display()))?,
        Err(_) => json!({}),
    };
    let top = all
        .as_object_mut()
        .context("the results file is not a JSON object")?;
    top.insert("machine".to_owned(), machine()?);
    top.insert("date".to_owned(), Value::String(date.to_owned()));
    let benchmarks = top
        .entry("benchmarks")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .context("benchmarks is not a JSON object")?;
    benchmarks.insert(
        name.to_owned(),
        json!({ "command": command_line, "output": result }),
    );
    if let Some(dir) = results.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(results, serde_json::to_string_pretty(&all)? + "\n")?;
    Ok(())
}

/// What `sonde-loadgen` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loadgen {
    /// The collector's ingest: reports/s on one core, ack latency, memory
    /// per 1,000 nodes.
    Collector,
    /// Its remote write into a real Prometheus.
    RemoteWrite,
    /// Two replicas, 1,000 nodes, one replica killed and restarted.
    Fleet,
}

impl Loadgen {
    /// The results' name, and the driver's flag.
    fn name_and_flag(self) -> (&'static str, Option<&'static str>) {
        match self {
            Loadgen::Collector => ("collector", None),
            Loadgen::RemoteWrite => ("remote-write", Some("--remote-write")),
            Loadgen::Fleet => ("fleet", Some("--fleet")),
        }
    }
}

/// Runs `sonde-loadgen` against release `sonde-collector`s. Returns the
/// JSON it wrote.
fn collector(which: Loadgen) -> Result<PathBuf> {
    sh(
        "cargo",
        &[
            "build",
            "--release",
            "--package",
            "sonde-collector",
            "--package",
            "sonde-tests",
            "--bin",
            "sonde-loadgen",
            "--bin",
            "sonde-collector",
        ],
    )?;
    let target = target_dir().join("release");
    let (name, flag) = which.name_and_flag();
    let out = target_dir().join(format!("bench/{name}.json"));
    let mut command = std::process::Command::new(target.join("sonde-loadgen"));
    command
        .arg("--collector")
        .arg(target.join("sonde-collector"))
        .arg("--out")
        .arg(&out);
    if let Some(flag) = flag {
        command.arg(flag);
    }
    let status = command.status().context("run sonde-loadgen")?;
    if !status.success() {
        bail!("{name} benchmark failed");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
    }
}
