//! `sonde events`: a live stream of the rare events (OOM kills, crashes, TCP
//! resets and failed connects, failed block requests) with their process,
//! connection or device and owner, as human lines or JSON lines; from this
//! process's own probes, or with `--attach` from a running agent's local
//! socket (same filters, same output).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use serde::Deserialize;
use tokio::signal::unix::{signal, SignalKind};

use super::{parse_duration, render, ProbeArgs};
use crate::{
    attribution::{CgroupRef, Owner},
    local::{client::LocalClient, Frame, DEFAULT_SOCKET},
    model::EventRecord,
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Only events of these kinds (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = crate::model::ALL_EVENT_KINDS)]
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

/// A TCP event as the agent serializes it (`tcp.events[]` of a window),
/// read back for printing and filtering.
#[derive(Debug, Deserialize)]
struct TcpEvent {
    kind: String,
    time_unix_ns: u64,
    source: String,
    source_port: u16,
    destination: String,
    destination_port: u16,
    failure: Option<String>,
    error: Option<String>,
    reset_reason: Option<String>,
    /// Absent for a reset to a packet that matched no socket.
    #[serde(flatten)]
    cgroup: Option<CgroupRef>,
}

impl TcpEvent {
    fn line(&self) -> String {
        let time = std::time::UNIX_EPOCH + Duration::from_nanos(self.time_unix_ns);
        let detail = render::tcp_detail(
            self.failure.as_deref(),
            self.error.as_deref(),
            self.reset_reason.as_deref(),
        );
        format!(
            "{} tcp {} {}:{} → {}:{}{detail} in {}",
            humantime::format_rfc3339_millis(time),
            self.kind,
            self.source,
            self.source_port,
            self.destination,
            self.destination_port,
            self.cgroup
                .as_ref()
                .and_then(|c| c.cgroup_path.as_deref())
                .unwrap_or("no socket")
        )
    }
}

/// A failed block request as the agent serializes it (`io_errors[]`).
#[derive(Debug, Deserialize)]
struct IoError {
    time_unix_ns: u64,
    device: String,
    op: String,
    error: String,
    sector: u64,
}

impl IoError {
    fn line(&self) -> String {
        let time = std::time::UNIX_EPOCH + Duration::from_nanos(self.time_unix_ns);
        format!(
            "{} io_error {} {} at sector {} failed with {}",
            humantime::format_rfc3339_millis(time),
            self.device,
            self.op,
            self.sector,
            self.error
        )
    }
}

impl Args {
    /// Prints the failed block requests (a window's `io_errors`, as JSON)
    /// that pass the filters: they belong to a device, not a cgroup, so a
    /// cgroup or pod filter leaves them out.
    fn print_io_errors(&self, events: &serde_json::Value) -> anyhow::Result<()> {
        let Some(events) = events.as_array() else {
            return Ok(());
        };
        if !self.wants_kind("io_error") || self.cgroup.is_some() || self.pod.is_some() {
            return Ok(());
        }
        for value in events {
            let e: IoError = serde_json::from_value(value.clone())
                .context("reading an I/O error from the window")?;
            if self.json {
                println!("{value}");
            } else {
                println!("{}", e.line());
            }
        }
        Ok(())
    }

    fn wants(&self, e: &EventRecord) -> bool {
        self.wants_kind(e.kind) && self.wants_cgroup(Some(&e.cgroup))
    }

    fn wants_kind(&self, kind: &str) -> bool {
        self.kind.is_empty() || self.kind.iter().any(|k| k == kind)
    }

    /// Prints the TCP events (a window's `tcp.events`, as JSON) that pass
    /// the filters.
    fn print_tcp(&self, events: &serde_json::Value) -> anyhow::Result<()> {
        let Some(events) = events.as_array() else {
            return Ok(());
        };
        for value in events {
            let e: TcpEvent = serde_json::from_value(value.clone())
                .context("reading a TCP event from the window")?;
            if !self.wants_kind(&e.kind) || !self.wants_cgroup(e.cgroup.as_ref()) {
                continue;
            }
            if self.json {
                println!("{value}");
            } else {
                println!("{}", e.line());
            }
        }
        Ok(())
    }

    fn wants_cgroup(&self, cgroup: Option<&CgroupRef>) -> bool {
        if (self.cgroup.is_some() || self.pod.is_some()) && cgroup.is_none() {
            return false;
        }
        let Some(cgroup) = cgroup else {
            return true;
        };
        if let Some(text) = &self.cgroup {
            if !cgroup
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
            } = &cgroup.owner
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
        for event in snapshot.process.events.iter().filter(|e| args.wants(e)) {
            print(&args, event)?;
        }
        args.print_tcp(&serde_json::to_value(&snapshot.tcp.window.events)?)?;
        args.print_io_errors(&serde_json::to_value(&snapshot.block.io_errors)?)?;
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
    // The windows from before we connected: their events are not news.
    let mut backlog = client.hello.backlog;
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
            Some(Frame::Window { window, .. }) if backlog == 0 => {
                let field = |path| window.pointer(path).unwrap_or(&serde_json::Value::Null);
                args.print_tcp(field("/tcp/events"))?;
                args.print_io_errors(field("/io_errors"))?;
            }
            Some(Frame::Window { .. }) => backlog -= 1,
            Some(_) => {}
            None => anyhow::bail!(
                "the agent at {} closed the connection (it stopped)",
                args.socket.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
