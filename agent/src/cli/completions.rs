//! `sonde completions SHELL` and `sonde manpage`: generated from the command
//! line's own definition, so they never drift from it.

use std::process::ExitCode;

use clap::CommandFactory as _;

use super::Cli;

#[derive(Debug, clap::Args)]
pub(super) struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub(super) fn completions(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "sonde", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn manpage() -> anyhow::Result<ExitCode> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(ExitCode::SUCCESS)
}
