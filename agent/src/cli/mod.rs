//! Command line: one file per subcommand; each only calls the library.

mod agent;
mod completions;
mod doctor;
mod events;
mod explain;
mod fleet;
mod render;
mod slo;
mod snapshot;
mod top;
mod unpin;

use std::{process::ExitCode, time::Duration};

use clap::{error::ErrorKind, Parser, Subcommand};

use anyhow::Context as _;
use sonde_common::family::Family;

use crate::{
    probes::{syscalls::SyscallHook, ProbeOptions, ProbeState, ProbeStatus, Probes},
    sampler::{Sampler, SamplerOptions},
};

/// eBPF node agent for host-level reliability signals.
#[derive(Debug, Parser)]
#[command(name = "sonde", version, about, propagate_version = true)]
pub struct Cli {
    /// Log level of the agent's own log (stderr): error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: log::LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: load the probes and report one window per interval.
    ///
    /// Each window goes to stdout (a table, or JSON lines) and to the
    /// configured sinks: a collector over gRPC, OTLP, a Prometheus endpoint,
    /// the local socket. The agent also evaluates the SLOs of `--config`,
    /// keeps to `--overhead-budget`, and with `--pin` leaves its probes
    /// counting across a restart.
    Agent(Box<agent::Args>),
    /// Watch for a while and print one window of every family.
    ///
    /// The table shows, per cgroup, syscall latency and errors, run-queue
    /// waits, reclaim stalls, CPU throttling, exits and crashes, OOM kills
    /// and TCP (connects, failures, retransmits, resets, listening ports,
    /// drops, the namespace check); the node's pressure; every lost event.
    /// `--json` prints the whole window: every series and histogram, block
    /// I/O, events and loss counters.
    Snapshot(snapshot::Args),
    /// Why a target hurts: the kernel's evidence ranked, the verdict first.
    ///
    /// For an SLO, a cgroup (and those under it), a pod or a unit, ranks
    /// the causes the windows show: CPU contention with the neighbours that
    /// held the CPU, CPU throttling, memory reclaim, OOM kills, crashes,
    /// TCP retransmits, resets, drops and failed connects, slow or failing block
    /// devices, pressure, and windows that lost data. Deterministic rules
    /// (docs/explain.md), each finding with its measured magnitude, score
    /// and evidence. Standalone on its own probes over --duration, or
    /// --attach to a running agent's recent windows.
    Explain(Box<explain::Args>),
    /// Live terminal view of the node and each cgroup, worst first.
    ///
    /// Standalone on its own probes, or attached to a running agent's local
    /// socket (`--attach`); attached to an agent that evaluates SLOs
    /// (`sonde agent --config`), each SLO's burn and budget above the table.
    Top(top::Args),
    /// Report what this machine offers sonde and the state of each probe.
    Doctor(doctor::Args),
    /// Stream the rare events as they happen: OOM kills, crashes, TCP resets
    /// and failed connects, failed block requests.
    ///
    /// Each with its process, connection or device and its owner, as lines
    /// or JSON lines; from this process's own probes, or from a running
    /// agent's local socket (`--attach`).
    Events(events::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionArgs),
    /// Print the manual page (roff).
    Manpage,
    /// Print the fleet as a collector sees it (its Query API).
    Fleet(fleet::Args),
    /// Where this node's SLOs stand; check a config; emit Prometheus rules.
    Slo(slo::Args),
    /// Stop the probes an agent left pinned (`sonde agent --pin`): remove
    /// their links and maps from bpffs.
    Unpin(unpin::Args),
}

/// How to reach a collector securely, shared by `agent` and `fleet`.
#[derive(Debug, Clone, clap::Args)]
struct TlsArgs {
    /// CA that signed the collector's certificate (PEM); needed for https://.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for collectors that require mTLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Allow plaintext (http://) to a collector that is not on loopback.
    #[arg(long)]
    insecure: bool,
}

impl TlsArgs {
    fn collector(&self, url: &str, backoff_max: Duration) -> crate::export::grpc::CollectorConfig {
        crate::export::grpc::CollectorConfig {
            resolve_interval: crate::export::grpc::RERESOLVE,
            url: url.to_owned(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            insecure: self.insecure,
            backoff_max,
        }
    }
}

/// Probe options shared by the subcommands that load probes.
#[derive(Debug, Clone, clap::Args)]
struct ProbeArgs {
    /// Kernel hook of the syscall probes: auto tries raw tracepoints, then
    /// classic tracepoints.
    #[arg(long, value_enum, default_value = "auto")]
    syscall_hook: SyscallHook,
    /// Kernel hook of the scheduler probes: auto tries BTF tracepoints, then
    /// raw tracepoints.
    #[arg(long, value_enum, default_value = "auto")]
    sched_hook: crate::probes::sched::SchedHook,
    /// Bound of the kernel's syscall latency map, in (cgroup, syscall,
    /// bucket) keys; what does not fit is counted as lost.
    #[arg(long, value_name = "KEYS", default_value_t = sonde_common::syscalls::HIST_MAX_ENTRIES,
          value_parser = clap::value_parser!(u32).range(1..))]
    syscall_hist_entries: u32,
    /// Bound of the kernel's syscall failure map, in (cgroup, syscall, errno) keys.
    #[arg(long, value_name = "KEYS", default_value_t = sonde_common::syscalls::ERR_MAX_ENTRIES,
          value_parser = clap::value_parser!(u32).range(1..))]
    syscall_error_entries: u32,
    /// The kubelet's pod log directory, `<namespace>_<name>_<uid>` per pod:
    /// where pod namespaces and names come from.
    #[arg(long, value_name = "DIR", default_value = crate::attribution::KUBELET_PODS_DIR)]
    kubelet_pods_dir: std::path::PathBuf,
    /// Probe families to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_parser = family_parser())]
    probes: Vec<Family>,
}

impl ProbeArgs {
    /// Loads the probes, refuses to go on when none attached, and opens the
    /// first window.
    fn start(&self) -> anyhow::Result<Sampler> {
        self.start_with(&[])
    }

    /// As [`ProbeArgs::start`], handing the kernel the exact SLO latency
    /// thresholds (bucket key, ns).
    fn start_with(&self, thresholds: &[(usize, u64)]) -> anyhow::Result<Sampler> {
        let probes = self.load(thresholds, None)?;
        self.sampler(probes, None)
    }

    /// Loads the probes (pinned under a directory, adopting what the last
    /// agent's manifest names) and refuses to go on when none attached.
    fn load(
        &self,
        thresholds: &[(usize, u64)],
        pin: Option<(std::path::PathBuf, Option<crate::probes::pin::Manifest>)>,
    ) -> anyhow::Result<Probes> {
        let probes = Probes::load(ProbeOptions {
            latency_thresholds_ns: thresholds.to_vec(),
            pin,
            ..self.options()
        })?;
        if !probes.any_attached() {
            return Err(crate::pipeline::AgentError::NoProbe {
                statuses: probes.statuses().to_vec(),
            }
            .into());
        }
        for status in probes.statuses() {
            warn_unavailable(status);
        }
        Ok(probes)
    }

    /// Opens the first window (where `resume` says, after a restart).
    fn sampler(
        &self,
        probes: Probes,
        resume: Option<crate::sampler::Resume>,
    ) -> anyhow::Result<Sampler> {
        let options = SamplerOptions {
            kubelet_pods_dir: self.kubelet_pods_dir.clone(),
            resume,
        };
        Sampler::start_with(probes, options).context("reading the probes' maps")
    }

    fn options(&self) -> ProbeOptions {
        ProbeOptions {
            syscall_hook: self.syscall_hook,
            sched_hook: self.sched_hook,
            syscall_hist_max_entries: Some(self.syscall_hist_entries),
            syscall_errors_max_entries: Some(self.syscall_error_entries),
            disabled: Family::ALL
                .into_iter()
                .filter(|f| !self.probes.is_empty() && !self.probes.contains(f))
                .collect(),
            latency_thresholds_ns: Vec::new(),
            pin: None,
        }
    }
}

impl Cli {
    /// Whether the command talks to peers over sockets (collector, exporters).
    pub fn uses_network(&self) -> bool {
        matches!(self.command, Command::Agent(_) | Command::Fleet(_))
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Agent(args) => agent::run(*args).await,
        Command::Snapshot(args) => snapshot::run(args).await,
        Command::Explain(args) => explain::run(*args).await,
        Command::Unpin(args) => unpin::run(args),
        Command::Top(args) => top::run(args).await,
        Command::Doctor(args) => doctor::run(args),
        Command::Events(args) => events::run(args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Manpage => completions::manpage(),
        Command::Fleet(args) => fleet::run(args).await,
        Command::Slo(args) => slo::run(args),
    }
}

/// Prints a command-line error as one line with the fix; help and version
/// go to stdout as usual.
pub fn usage_error(e: &clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("invalid command line")
        .trim_start_matches("error: ");
    eprintln!("sonde: {first}; see `sonde --help` or `sonde <command> --help`");
    ExitCode::from(2)
}

/// An error and its causes as one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Sets up the agent's own log on stderr.
pub fn init_logging(level: log::LevelFilter) {
    // aya's own loader chatter (relocations, BTF) stays out of `debug`;
    // `trace` shows it.
    let aya = if level >= log::LevelFilter::Trace {
        level
    } else {
        level.min(log::LevelFilter::Info)
    };
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module("aya_obj", aya)
        .filter_module("aya::", aya)
        .format_target(true)
        .parse_env("SONDE_LOG")
        .init();
}

/// Warns on stderr of a family that did not attach, with the reason.
fn warn_unavailable(status: &ProbeStatus) {
    if let (ProbeState::Unavailable, Some(reason)) = (status.state, &status.reason) {
        eprintln!("sonde: warning: {} unavailable: {reason}", status.probe);
    }
}

/// Parses a family name. Clap checks the name against the families'
/// first, so that `--help` lists them and a wrong one is refused with the
/// valid names; `from_name` then takes the checked name to its family.
fn family_parser() -> impl clap::builder::TypedValueParser<Value = Family> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Family::ALL.map(Family::name)).try_map(
        |name: String| {
            Family::from_name(&name).ok_or_else(|| {
                let valid: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "'{name}' is not a probe family; the families are {}",
                    valid.join(", ")
                )
            })
        },
    )
}

/// Parses a human duration (`5s`, `500ms`, `1m`), refusing zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|_| format!("'{text}' is not a duration; write it like 5s, 500ms or 1m"))?;
    if d.is_zero() {
        return Err("a zero duration measures nothing; give at least 1ms".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sonde").chain(args.iter().copied()))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("five")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn command_line_errors_are_one_line() {
        let e = parse(&["snapshot", "--bogus"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        let e = parse(&["snapshot", "--duration", "soon"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        let first = e.to_string();
        let first = first.lines().next().unwrap();
        assert!(first.contains("'soon' is not a duration"), "{first}");
        assert!(parse(&["snapshot", "--duration", "2s", "--json"]).is_ok());
        assert!(parse(&["doctor", "--syscall-hook", "tracepoint"]).is_ok());
        assert!(parse(&["doctor", "--syscall-hook", "kprobe"]).is_err());
        assert!(parse(&["completions", "bash"]).is_ok());
        assert!(parse(&["completions", "tcsh"]).is_err());
        assert!(parse(&["top", "--attach", "--once"]).is_ok());
        assert!(
            parse(&["top", "--socket", "/x"]).is_err(),
            "--socket needs --attach"
        );
        assert!(parse(&["top", "--attach", "--interval", "2s"]).is_err());
        assert!(parse(&["events", "--attach", "--socket", "/x", "--kind", "crash"]).is_ok());
        assert!(parse(&["agent", "--socket"]).is_ok());
    }

    #[test]
    fn probes_are_family_names() {
        let command = || {
            clap::Command::new("sonde").arg(
                clap::Arg::new("probes")
                    .long("probes")
                    .value_delimiter(',')
                    .value_parser(family_parser()),
            )
        };
        let m = command()
            .try_get_matches_from(["sonde", "--probes", "syscalls,tcp"])
            .unwrap();
        let got: Vec<Family> = m.get_many("probes").unwrap().copied().collect();
        assert_eq!(got, [Family::Syscalls, Family::Tcp]);
        let e = command()
            .try_get_matches_from(["sonde", "--probes", "syscall"])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        let text = e.to_string();
        assert!(
            text.contains("[possible values: syscalls, sched, block, memory, process, tcp, irq]"),
            "{text}"
        );
        assert!(parse(&["snapshot", "--probes", "memory,process"]).is_ok());
        assert!(parse(&["snapshot", "--probes", "host"]).is_err());
    }
}
