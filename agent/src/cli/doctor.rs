//! `sonde doctor`: what this machine offers sonde, and each probe's state.

use std::{path::Path, process::ExitCode};

use serde::Serialize;
use sonde_common::family::Family;

use super::ProbeArgs;
use crate::{
    host::{kernel::VMLINUX_BTF, mounts::Mounts, Capabilities, KernelInfo},
    probes::{pin, KernelFeatures, LoadError, ProbeState, ProbeStatus, Probes},
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    probes: ProbeArgs,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: KernelInfo,
    tracefs: Option<String>,
    cgroup2: Option<String>,
    capabilities: String,
    missing_capabilities: Vec<&'static str>,
    /// Capabilities some signals need, missing, with what for.
    missing_recommended: Vec<(&'static str, &'static str)>,
    probes: Vec<ProbeStatus>,
    /// What the kernel offers that decides whether each family counts whole
    /// (from its BTF): feature → present. A degraded family's `gaps` follow
    /// from the features missing here.
    kernel_features: KernelFeatures,
    /// What an agent run with `--pin` left under the default pin directory:
    /// (maps, links); links are programs still running.
    pinned: Option<(usize, usize)>,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let kernel = KernelInfo::current();
    let mounts = Mounts::current().unwrap_or_default();
    let caps = Capabilities::current().ok();
    let missing = caps
        .map(Capabilities::missing_for_tracing)
        .unwrap_or_default();
    let missing_recommended = caps
        .map(|c| c.missing_recommended(memlock_charged(&kernel.release)))
        .unwrap_or_default();
    let mut kernel_features = KernelFeatures::new();
    let probes = match Probes::load(args.probes.options()) {
        Ok(p) => {
            kernel_features.clone_from(p.kernel_features());
            p.statuses().to_vec()
        }
        Err(e) => {
            let reason = match e {
                LoadError::NoPrivilege { .. } => format!("no privilege: {e}"),
                other => super::one_line(&other.into()),
            };
            Family::ALL
                .iter()
                .map(|family| ProbeStatus {
                    probe: family.name(),
                    state: ProbeState::Unavailable,
                    hook: None,
                    reason: Some(reason.clone()),
                    gaps: Vec::new(),
                })
                .collect()
        }
    };
    let mut probes = probes;
    probes.push(crate::sampler::host_status(&mounts));
    let report = Report {
        kernel,
        tracefs: mounts
            .tracefs_ready()
            .then(|| mounts.tracefs.as_ref().map(|p| p.display().to_string()))
            .flatten(),
        cgroup2: mounts.cgroup2.as_ref().map(|p| p.display().to_string()),
        capabilities: caps.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        missing_capabilities: missing,
        missing_recommended,
        probes,
        kernel_features,
        pinned: Path::new(pin::DEFAULT_DIR)
            .exists()
            .then(|| pin::census(Path::new(pin::DEFAULT_DIR))),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let healthy = report
        .probes
        .iter()
        .all(|p| p.state == ProbeState::Attached);
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(r: &Report) {
    println!("kernel        {} ({})", r.kernel.release, r.kernel.arch);
    println!(
        "btf           {}",
        if r.kernel.btf {
            format!("yes ({VMLINUX_BTF})")
        } else {
            "no: struct offsets unavailable; BTF-based probes degrade".to_owned()
        }
    );
    println!(
        "tracefs       {}",
        r.tracefs.as_deref().map_or_else(
            || "not mounted: classic tracepoints need `mount -t tracefs tracefs /sys/kernel/tracing`".to_owned(),
            |p| format!("mounted at {p}")
        )
    );
    println!(
        "cgroup v2     {}",
        r.cgroup2.as_deref().map_or_else(
            || "not mounted: cgroups cannot be named".to_owned(),
            |p| format!("mounted at {p}")
        )
    );
    if let Some((maps, links)) = r.pinned {
        println!(
            "pinned        {maps} maps, {links} running programs under {} (an agent with --pin; `sonde unpin` stops them)",
            pin::DEFAULT_DIR
        );
    }
    println!("capabilities  {}", r.capabilities);
    if !r.missing_capabilities.is_empty() {
        println!(
            "              missing {}: run as root or grant them",
            r.missing_capabilities.join(", ")
        );
    }
    for (name, why) in &r.missing_recommended {
        println!("              missing {name}: needed for {why}");
    }
    println!("probes");
    for p in &r.probes {
        let state = match p.state {
            ProbeState::Attached => "attached",
            ProbeState::Degraded => "degraded",
            ProbeState::Unavailable => "unavailable",
        };
        let detail = p.hook.as_deref().or(p.reason.as_deref()).unwrap_or("");
        println!("  {:<12}{:<13}{}", p.probe, state, detail);
        if let (Some(_), Some(reason)) = (&p.hook, &p.reason) {
            println!("  {:<12}{:<13}{}", "", "", reason);
        }
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; it matters only
/// while the limit is finite.
fn memlock_charged(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit pointer.
    let unlimited = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0
        && limit.rlim_cur == libc::RLIM_INFINITY;
    (major, minor) < (5, 11) && !unlimited
}

#[cfg(test)]
mod tests {
    #[test]
    fn memlock_matters_before_5_11_only() {
        assert!(!super::memlock_charged("6.18.44-fc"));
        assert!(!super::memlock_charged("5.11.0"));
    }
}
