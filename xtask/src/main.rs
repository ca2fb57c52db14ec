//! `cargo xtask <command>`: project automation that needs more than cargo.
//!
//! `test` is the README's test command: `cargo test --workspace` cannot run
//! everything, because the dhat builds swap the global allocator and cargo
//! features are additive (a dhat build is a separate compilation with
//! jemalloc off). `profile` (build, run every leak scenario under the
//! sidecar, render the report) and `console` (the server under tokio-console)
//! arrive with the recorder and report crates; until then they say
//! so and exit non-zero rather than pretend.

use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test      every test: the workspace, then the feature builds cargo test --workspace cannot cover
  bench     the criterion benchmarks (ratios measured side by side in one run)
  profile   run every leak scenario under the leakscope sidecar and write reports/  (not implemented yet)
  console   run the server with tokio-console attached                            (not implemented yet)
";

/// Each run: what it covers, and cargo's arguments.
const TEST_RUNS: &[(&str, &[&str])] = &[
    (
        "workspace (jemalloc, cpu, console)",
        &["test", "--workspace"],
    ),
    (
        "leakscope-agent, dhat build",
        &[
            "test",
            "-p",
            "leakscope-agent",
            "--no-default-features",
            "--features",
            "dhat-heap",
            "--test",
            "dhat_file",
        ],
    ),
    (
        "download-server, dhat build",
        &[
            "test",
            "-p",
            "download-server",
            "--no-default-features",
            "--features",
            "dhat-heap",
            "--test",
            "dhat_build",
        ],
    ),
    (
        "leakscope-agent, no features (system allocator: every endpoint says what is off)",
        &[
            "test",
            "-p",
            "leakscope-agent",
            "--no-default-features",
            "--test",
            "endpoints",
        ],
    ),
];

fn test() -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut failed = Vec::new();
    for (what, args) in TEST_RUNS {
        eprintln!("xtask test: {what}: cargo {}", args.join(" "));
        let ok = Command::new(&cargo)
            .args(*args)
            .status()
            .map(|s| s.success())
            .unwrap_or_else(|e| {
                eprintln!("xtask test: cannot run cargo: {e}");
                false
            });
        if !ok {
            failed.push(*what);
        }
    }
    if failed.is_empty() {
        eprintln!("xtask test: all {} runs passed", TEST_RUNS.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask test: FAILED: {}", failed.join("; "));
        ExitCode::FAILURE
    }
}

fn bench() -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    match Command::new(cargo)
        .args(["bench", "--workspace"])
        .args(std::env::args().skip(2))
        .status()
    {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask bench: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        Some("test") => test(),
        Some("bench") => bench(),
        Some("profile" | "console") => {
            eprintln!(
                "cargo xtask {}: not implemented yet. It needs the leakscope recorder \
                 and the report renderer, which are still being built (the leak \
                 scenarios exist: download-server --list-scenarios).",
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
