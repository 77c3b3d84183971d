//! `sonde agent`: the long-running job. Loads the probes and closes one
//! window per interval; each window goes to stdout (a table, or one JSON
//! object per line with `--json`).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use super::{parse_duration, render, ProbeArgs};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Length of a window, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// One JSON object per window and line, instead of a table.
    #[arg(long)]
    json: bool,
    /// Rows per cgroup in the table.
    #[arg(long, default_value_t = 3)]
    top: usize,
    #[command(flatten)]
    probes: ProbeArgs,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut sampler = args.probes.start()?;
    eprintln!(
        "sonde: agent ready; {}",
        render::statuses_line(sampler.probes().statuses())
    );
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut ticks = tokio::time::interval(args.interval);
    ticks.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
        let snapshot = sampler.tick().context("reading the probes' maps")?;
        if args.json {
            println!("{}", serde_json::to_string(&snapshot)?);
        } else {
            print!("{}", render::snapshot(&snapshot, args.top));
        }
    }
    eprintln!("sonde: agent stopped");
    Ok(ExitCode::SUCCESS)
}
