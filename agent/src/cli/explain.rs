//! `sonde explain`: why a target hurts, ranked from the kernel's evidence.
//! Standalone it loads its own probes for `--duration` and explains the
//! windows it saw; with `--attach` it reads a running agent's recent windows
//! from its local socket (no probes loaded). The rules are in `explain/`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;

use super::{parse_duration, ProbeArgs};
use crate::{
    explain::{self, Target, Window},
    local::{client::LocalClient, Frame, DEFAULT_SOCKET},
    slo::Slos,
};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["slo", "cgroup", "pod", "unit"])))]
pub(super) struct Args {
    /// Explain an SLO of the agent (or of --config when standalone).
    #[arg(long, value_name = "NAME")]
    slo: Option<String>,
    /// Explain a cgroup v2 path and every cgroup under it, e.g. /system.slice/nginx.service.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,
    /// Explain a Kubernetes pod, as NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME", value_parser = parse_pod)]
    pod: Option<(String, String)>,
    /// Explain a systemd unit or slice, e.g. nginx.service.
    #[arg(long, value_name = "NAME")]
    unit: Option<String>,
    /// Use only the last N windows (the one before them, when there is one,
    /// is the baseline of the cumulative counters).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    windows: Option<u64>,
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
    /// Read a running agent's recent windows from its local socket instead
    /// of loading probes.
    #[arg(long)]
    attach: bool,
    /// The agent's socket, with --attach.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, requires = "attach")]
    socket: PathBuf,
    /// How long to watch on its own probes.
    #[arg(long, default_value = "10s", value_parser = parse_duration, conflicts_with = "attach")]
    duration: Duration,
    /// Length of a window on its own probes.
    #[arg(long, default_value = "1s", value_parser = parse_duration, conflicts_with = "attach")]
    interval: Duration,
    /// SLO config to evaluate on its own probes (for --slo), as `sonde agent --config`.
    #[arg(long, value_name = "FILE", conflicts_with = "attach")]
    config: Option<PathBuf>,
    #[command(flatten)]
    probes: ProbeArgs,
}

fn parse_pod(text: &str) -> Result<(String, String), String> {
    explain::parse_pod(text)
}

impl Args {
    fn target(&self) -> anyhow::Result<Target> {
        Ok(match (&self.slo, &self.cgroup, &self.pod, &self.unit) {
            (Some(n), None, None, None) => Target::Slo(n.clone()),
            (None, Some(p), None, None) => Target::Cgroup(p.clone()),
            (None, None, Some((ns, n)), None) => Target::Pod {
                namespace: ns.clone(),
                name: n.clone(),
            },
            (None, None, None, Some(u)) => Target::Unit(u.clone()),
            _ => anyhow::bail!("give exactly one of --slo, --cgroup, --pod, --unit"),
        })
    }
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = args.target()?;
    let windows = if args.attach {
        attached(&args.socket).await?
    } else {
        own(&args).await?
    };
    let last = args
        .windows
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let explanation = explain::explain(&target, &windows, last)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", explain::render(&explanation));
    }
    Ok(ExitCode::SUCCESS)
}

/// The agent's recent windows (its backlog); when it has none yet, the
/// next one it closes.
async fn attached(socket: &std::path::Path) -> anyhow::Result<Vec<Window>> {
    let mut client = LocalClient::connect(socket).await?;
    let mut backlog = client.hello.backlog;
    let mut windows = Vec::new();
    loop {
        match client.next().await? {
            None => break,
            Some(Frame::Window { window, .. }) => {
                windows.push(Window::from_json(window).context("reading a window from the agent")?);
                backlog = backlog.saturating_sub(1);
                if backlog == 0 {
                    break;
                }
            }
            Some(_) => continue,
        }
    }
    Ok(windows)
}

/// Windows of this process's own probes over `--duration`.
async fn own(args: &Args) -> anyhow::Result<Vec<Window>> {
    let mut slos = match &args.config {
        Some(path) => {
            let specs = super::slo::read_config(path)?;
            Some(Slos::new(specs, None).context("starting the SLOs of --config")?)
        }
        None => None,
    };
    let mut sampler = args.probes.start()?;
    eprintln!(
        "sonde: watching for {} in {} windows",
        humantime::format_duration(args.duration),
        humantime::format_duration(args.interval)
    );
    let count = (args.duration.as_secs_f64() / args.interval.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let mut ticks = tokio::time::interval(args.interval);
    ticks.tick().await; // the first tick is immediate
    let mut windows = Vec::with_capacity(count);
    for _ in 0..count {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let mut snapshot = sampler.tick().context("reading the probes' maps")?;
        if let Some(slos) = slos.as_mut() {
            snapshot.slos = slos.window(&snapshot).context("evaluating the SLOs")?;
        }
        windows.push(Window::from_snapshot(&snapshot)?);
    }
    Ok(windows)
}
