//! `sonde events`: a live stream of the rare events (OOM kills, crashes) with
//! their process and owner, as human lines or JSON lines; from this
//! process's own probes, or with `--attach` from a running agent's local
//! socket (same filters, same output).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use super::{parse_duration, render, ProbeArgs};
use crate::{
    attribution::Owner,
    local::{client::LocalClient, Frame, DEFAULT_SOCKET},
    model::EventRecord,
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Only events of these kinds (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = crate::model::EVENT_KINDS)]
    kind: Vec<String>,
    /// Only events whose cgroup path contains this text.
    #[arg(long, value_name = "TEXT")]
    cgroup: Option<String>,
    /// Only events of the pod whose name, namespace/name or UID contains this text.
    #[arg(long, value_name = "TEXT")]
    pod: Option<String>,
    /// One JSON object per event and line.
    #[arg(long)]
    json: bool,
    /// Stop after this long (default: until interrupted).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Read the events of a running agent from its local socket instead of
    /// loading probes (the agent runs with `--socket`).
    #[arg(long)]
    attach: bool,
    /// The agent's socket, with --attach.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, requires = "attach")]
    socket: PathBuf,
    #[command(flatten)]
    probes: ProbeArgs,
}

impl Args {
    fn wants(&self, e: &EventRecord) -> bool {
        if !self.kind.is_empty() && !self.kind.iter().any(|k| k == e.kind) {
            return false;
        }
        if let Some(text) = &self.cgroup {
            if !e
                .cgroup
                .cgroup_path
                .as_deref()
                .is_some_and(|p| p.contains(text.as_str()))
            {
                return false;
            }
        }
        if let Some(text) = &self.pod {
            let Owner::Pod {
                pod_uid,
                namespace,
                name,
                ..
            } = &e.cgroup.owner
            else {
                return false;
            };
            let full = format!(
                "{}/{}",
                namespace.as_deref().unwrap_or(""),
                name.as_deref().unwrap_or("")
            );
            if !(pod_uid.contains(text.as_str()) || full.contains(text.as_str())) {
                return false;
            }
        }
        true
    }
}

/// How often the ring buffer is drained.
const POLL: Duration = Duration::from_millis(250);

fn print(args: &Args, event: &EventRecord) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(event)?);
    } else {
        println!("{}", render::event_line(event));
    }
    Ok(())
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.attach {
        return attached(args).await;
    }
    let mut sampler = args.probes.start()?;
    eprintln!(
        "sonde: streaming events; {}",
        render::statuses_line(sampler.probes().statuses())
    );
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut ticks = tokio::time::interval(POLL);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
        let snapshot = sampler.tick().context("reading the probes' maps")?;
        for event in snapshot.events.iter().filter(|e| args.wants(e)) {
            print(&args, event)?;
        }
        for loss in snapshot
            .losses
            .iter()
            .filter(|l| l.count > 0 && l.probe == "events")
        {
            eprintln!(
                "sonde: {} events lost ({} in {})",
                loss.count, loss.reason, loss.stage
            );
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--attach`: the agent's events, through its socket.
async fn attached(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = LocalClient::connect(&args.socket).await?;
    eprintln!(
        "sonde: streaming events from the agent at {} (sonde {})",
        args.socket.display(),
        client.hello.version
    );
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let stop = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    loop {
        let frame = tokio::select! {
            frame = client.next() => frame?,
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            () = &mut stop => break,
        };
        match frame {
            Some(Frame::Event { event }) => {
                let event: EventRecord =
                    serde_json::from_value(event).context("reading an event from the agent")?;
                if args.wants(&event) {
                    print(&args, &event)?;
                }
            }
            Some(_) => {}
            None => anyhow::bail!(
                "the agent at {} closed the connection (it stopped)",
                args.socket.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
