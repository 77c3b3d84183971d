//! `cargo xtask bench`: builds release binaries and runs the benchmark
//! driver (`sonde-bench`, in the tests crate) as root.

use anyhow::{bail, Result};

use crate::{root, sh};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Which {
    /// getppid loop: no probes, floor, sonde, bpftrace.
    Syscalls,
    /// Simulated agents against one collector on one core.
    Collector,
}

pub fn run(which: Which, calls: u64, rounds: u32) -> Result<()> {
    if let Which::Collector = which {
        return collector();
    }
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
    let target = root().join("target/release");
    let out = root().join("target/bench/syscalls.json");
    match which {
        Which::Collector => {}
        Which::Syscalls => {
            let status = std::process::Command::new(target.join("sonde-bench"))
                .args([
                    "syscalls",
                    "--calls",
                    &calls.to_string(),
                    "--rounds",
                    &rounds.to_string(),
                ])
                .arg("--sonde")
                .arg(target.join("sonde"))
                .arg("--out")
                .arg(&out)
                .status()?;
            if !status.success() {
                bail!("benchmark failed (it needs root)");
            }
        }
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
