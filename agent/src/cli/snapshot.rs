//! `sonde snapshot`: watch for a while, print every family's window (as
//! tables, or the whole snapshot as JSON).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;

use super::{parse_duration, render, ProbeArgs};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// How long to watch, e.g. 5s, 500ms, 1m.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Print the whole snapshot as JSON (every series, its histogram and the
    /// loss counters) instead of a table.
    #[arg(long)]
    json: bool,
    /// Rows per cgroup in the table (the JSON holds every series).
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[command(flatten)]
    probes: ProbeArgs,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut sampler = args.probes.start()?;
    eprintln!(
        "sonde: watching for {}",
        humantime::format_duration(args.duration)
    );
    tokio::select! {
        () = tokio::time::sleep(args.duration) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let snapshot = sampler.tick().context("reading the probes' maps")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!(
            "{}",
            render::TextWindows::default().render(&snapshot, args.top)
        );
    }
    Ok(ExitCode::SUCCESS)
}
