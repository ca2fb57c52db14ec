//! `cargo xtask <command>`: project automation that needs more than cargo.
//!
//! `profile` (build, run every leak scenario under the sidecar, render the
//! report) and `console` (the server under tokio-console) arrive with the
//! scenarios, recorder and report crates; until then they say so and exit
//! non-zero rather than pretend.

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  profile   run every leak scenario under the leakscope sidecar and write reports/  (not implemented yet)
  console   run the server with tokio-console attached                            (not implemented yet)
";

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        Some("profile" | "console") => {
            eprintln!(
                "cargo xtask {}: not implemented yet. It needs the leak scenarios, the \
                 leakscope recorder and the report renderer, which are still being built.",
                command.unwrap_or_default()
            );
            ExitCode::from(2)
        }
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
