//! `sonde unpin`: stop the probes an agent left pinned under bpffs.

use std::{path::PathBuf, process::ExitCode};

use crate::probes::pin;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The pin directory the agent used (`sonde agent --pin DIR`).
    #[arg(default_value = pin::DEFAULT_DIR)]
    dir: PathBuf,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.dir.exists() {
        eprintln!("sonde: nothing pinned under {}", args.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let (maps, links) = pin::unpin(&args.dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot remove the pins under {}: {e}; run as root",
            args.dir.display()
        )
    })?;
    eprintln!(
        "sonde: removed {links} links (their programs stopped) and {maps} maps under {}",
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
