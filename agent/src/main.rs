//! The `sonde` binary: parses the command line and reports errors as one line.

use std::process::ExitCode;

use clap::Parser as _;
use sonde::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(&e),
    };
    if !cli.uses_network() {
        // Like any Unix filter: a closed pipe (`sonde manpage | head`) ends
        // the process quietly. Not for the commands that talk over sockets,
        // where a peer's reset must be an error, not a fatal signal.
        // SAFETY: restoring a default signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    cli::init_logging(cli.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sonde: {}", cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
