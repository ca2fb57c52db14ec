//! `leak-zoo`: a service that leaks on purpose (`serve`) and a loopback
//! load client to drive it (`client`). See the library docs for the modes
//! and their ground truth.

mod client;
mod server;
mod wire;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A tokio + hyper service with one deliberate leak (or bounded
/// look-alike) per mode, to test leak detectors against known answers.
#[derive(Debug, Parser)]
#[command(name = "leak-zoo", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP; every `GET /` runs the mode's action.
    Serve(server::ServeArgs),
    /// Drive a loopback URL with bounded HTTP/1.1 load; prints a JSON summary.
    Client(client::ClientArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => match server::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("leak-zoo: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Client(args) => match client::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(client::UsageError(e)) => {
                eprintln!("leak-zoo client: {e}");
                ExitCode::from(2)
            }
        },
    }
}
