//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` (their own
//! workspace, nightly, AddressSanitizer, debug assertions) and runs each for
//! a number of seconds on its checked-in seeds plus the corpus it grew in
//! earlier runs; reports executions per target and every crash with the
//! input that reproduces it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{root, step};

/// Every target, with the decoders it covers.
pub const TARGETS: [(&str, &str); 8] = [
    ("ring_record", "ring-buffer event records"),
    (
        "sock_diag",
        "sock_diag answers: a namespace's listening sockets",
    ),
    (
        "collector_report",
        "AgentReport bytes → decode → validate → fleet and fleet SLOs",
    ),
    (
        "slo_config",
        "sonde.toml, OpenSLO YAML, the agent's slo-state.json",
    ),
    (
        "proc_text",
        "/proc, cgroupfs and tracefs text, cgroup paths, pod log dirs",
    ),
    ("btf", "the kernel's BTF"),
    (
        "outbox_record",
        "the disk outbox: file names, next_sequence, report bytes",
    ),
    (
        "local_frame",
        "sonde-local/1 frames into `top`'s board and event records",
    ),
];

/// The build triple cargo-fuzz builds for (it always passes `--target`).
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What one run of one target came to.
struct Outcome {
    target: &'static str,
    executions: Option<u64>,
    corpus: usize,
    crash: Option<String>,
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// Builds the targets once: `cargo +nightly fuzz build`, with
/// `AYA_BUILD_SKIP=1` so the agent's build script embeds no kernel programs
/// (the targets need only its parsers; the nested BPF build would otherwise
/// run again in the fuzz build's own target directory).
pub fn build() -> Result<()> {
    let started = Instant::now();
    let status = Command::new("cargo")
        .args(["+nightly", "fuzz", "build"])
        .env("AYA_BUILD_SKIP", "1")
        .current_dir(fuzz_dir())
        .status()
        .context("cannot run cargo fuzz (run `cargo xtask setup`)")?;
    if !status.success() {
        bail!("`cargo +nightly fuzz build` failed ({status})");
    }
    eprintln!(
        "xtask fuzz: built {} targets in {:.0} s",
        TARGETS.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds, then runs `targets` (all when empty) for `seconds` each; fails
/// when any target crashed.
pub fn run(seconds: u64, targets: &[String]) -> Result<()> {
    let chosen: Vec<&'static str> = if targets.is_empty() {
        TARGETS.iter().map(|(t, _)| *t).collect()
    } else {
        targets
            .iter()
            .map(|t| {
                TARGETS
                    .iter()
                    .map(|(name, _)| *name)
                    .find(|name| name == t)
                    .with_context(|| {
                        format!(
                            "no fuzz target '{t}'; there are: {}",
                            TARGETS.map(|(n, _)| n).join(", ")
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    build()?;
    let mut outcomes = Vec::new();
    for target in chosen {
        step(&format!("fuzz {target} for {seconds} s"));
        outcomes.push(run_one(target, seconds)?);
    }
    eprintln!("xtask fuzz: {seconds} s per target");
    eprintln!(
        "{:<18} {:>14} {:>8}  result",
        "TARGET", "EXECUTIONS", "CORPUS"
    );
    for o in &outcomes {
        let executions = o
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let result = o.crash.as_deref().unwrap_or("ok");
        eprintln!(
            "{:<18} {:>14} {:>8}  {result}",
            o.target, executions, o.corpus
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crash.is_some())
        .map(|o| o.target)
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (reproduce: `fuzz/target/{TRIPLE}/release/<target> <input>`)",
            crashed.join(", ")
        );
    }
    Ok(())
}

fn run_one(target: &'static str, seconds: u64) -> Result<Outcome> {
    let dir = fuzz_dir();
    // New inputs go to the first directory: the corpus grows outside git;
    // the seeds stay as checked in.
    let corpus = dir.join("corpus").join(target);
    let seeds = dir.join("seeds").join(target);
    let artifacts = dir.join("artifacts").join(target);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let binary = dir.join("target").join(TRIPLE).join("release").join(target);
    let output = Command::new(&binary)
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // One slow input (a second) is a finding too.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .current_dir(&dir)
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let log_path = artifacts.join("last-run.log");
    std::fs::write(&log_path, log.as_bytes())
        .with_context(|| format!("writing {}", log_path.display()))?;
    let executions = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    let crash = if output.status.success() {
        None
    } else {
        let input = log
            .lines()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .map(relative)
            .unwrap_or_else(|| "no input written".to_owned());
        let what = log
            .lines()
            .find(|l| l.contains("panicked at") || l.contains("ERROR: "))
            .unwrap_or("")
            .trim();
        eprintln!("{}", tail(&log, 30));
        Some(format!(
            "CRASH ({}): {input}; {what}; log: {}",
            output.status,
            relative(&log_path.to_string_lossy())
        ))
    };
    Ok(Outcome {
        target,
        executions,
        corpus: count_files(&corpus),
        crash,
    })
}

/// A path under the workspace, as the workspace sees it.
fn relative(path: &str) -> String {
    let root = root();
    Path::new(path)
        .strip_prefix(&root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_owned())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
