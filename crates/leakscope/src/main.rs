//! `leakscope`: the sidecar profiler's command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Library diagnostics; the user-facing lines are printed directly.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEAKSCOPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // `check`, `report` and `fleet` read files or a query API and need no
    // runtime: they run before one is built.
    let command = match cli.command {
        Command::Check(args) => return cli::check::run(args),
        Command::Report(args) => return cli::report::run(args),
        Command::Fleet(args) => return cli::fleet::run(args),
        other => other,
    };
    // Two workers: the load driver's requests never delay a sample.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::tell!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match command {
            Command::Record(args) => cli::record::run(args, cli.quiet).await,
            Command::Run(args) => cli::run::run(args, cli.quiet).await,
            Command::Load(args) => cli::load::run(args).await,
            Command::Check(_) | Command::Report(_) | Command::Fleet(_) => {
                unreachable!("handled before the runtime")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::tell!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
