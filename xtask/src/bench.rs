//! `cargo xtask bench`: builds release binaries and runs the benchmark
//! drivers (`sonde-bench` and `sonde-loadgen`, in the tests crate) as root.

use anyhow::{bail, Result};

use crate::{root, sh};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// getppid loop: no probes, floor, sonde, bpftrace.
    Syscalls,
    /// pipe ping-pong on one CPU: no probes, floor, sonde's scheduler probes.
    Sched,
    /// Simulated agents against one collector on one core.
    Collector,
    /// loopback connect/accept storm and bulk transfer: no probes, floor,
    /// sonde's TCP probes.
    Tcp,
    /// Every benchmark above.
    All,
}

pub fn run(which: Which, ops: Option<u64>, rounds: u32) -> Result<()> {
    let probes: &[(&str, u64)] = match which {
        Which::Syscalls => &[("syscalls", 2_000_000)],
        Which::Sched => &[("sched", 200_000)],
        Which::Tcp => &[("tcp-connect", 20_000), ("tcp-bulk", 2048)],
        Which::Collector => &[],
        Which::All => &[
            ("syscalls", 2_000_000),
            ("sched", 200_000),
            ("tcp-connect", 20_000),
            ("tcp-bulk", 2048),
        ],
    };
    if !probes.is_empty() {
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
    let target = root().join("target/release");
    for &(name, default_ops) in probes {
        let out = root().join(format!("target/bench/{name}.json"));
        let status = std::process::Command::new(target.join("sonde-bench"))
            .args([
                name,
                "--ops",
                &ops.unwrap_or(default_ops).to_string(),
                "--rounds",
                &rounds.to_string(),
            ])
            .arg("--sonde")
            .arg(target.join("sonde"))
            .arg("--out")
            .arg(&out)
            .status()?;
        if !status.success() {
            bail!("benchmark {name} failed (it needs root)");
        }
    }
    if matches!(which, Which::Collector | Which::All) {
        collector()?;
    }
    Ok(())
}

/// The collector's ingest: reports/s on one core, ack latency, memory per
/// 1,000 nodes (`sonde-loadgen`).
fn collector() -> Result<()> {
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
    let target = root().join("target/release");
    let status = std::process::Command::new(target.join("sonde-loadgen"))
        .arg("--collector")
        .arg(target.join("sonde-collector"))
        .arg("--out")
        .arg(root().join("target/bench/collector.json"))
        .status()?;
    if !status.success() {
        bail!("collector benchmark failed");
    }
    Ok(())
}
