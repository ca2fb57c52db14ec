//! `cargo xtask <command>`: project automation that needs more than cargo.
//!
//! `test` is the README's test command: `cargo test --workspace` cannot run
//! everything, because the dhat builds swap the global allocator and cargo
//! features are additive (a dhat build is a separate compilation with
//! jemalloc off), and the end-to-end journey needs release binaries.
//! `profile` is the README's main command; `console` runs the server for a
//! live tokio-console.

mod catalogue;
mod console;
mod cost;
mod expect;
mod guarded;
mod profile;
#[cfg(test)]
mod tidy;
mod tools;
mod versus;
mod workspace;
mod zoo;

use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "leakscope's project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every test: the workspace, the feature builds `cargo test
    /// --workspace` cannot cover, an end-to-end `profile --quick` and the
    /// leak zoo
    Test,
    /// The benchmarks, each a ratio measured side by side in one run: the
    /// reference server against nginx (when nginx and wrk are installed),
    /// the procfs sampler on a busy host (xtask/bench/sampler-busy-host.sh),
    /// check and report on a day's run directory (xtask/bench/day-long.sh),
    /// then the criterion benchmarks (arguments after `--` go to `cargo
    /// bench`)
    Bench(BenchArgs),
    /// Run every leak scenario, leaky and fixed, under the leakscope
    /// sidecar and write reports/<timestamp>/index.html
    Profile(profile::ProfileArgs),
    /// Run the server with console-subscriber on 127.0.0.1:6669 and a light
    /// mixed load, for a live tokio-console
    Console(console::ConsoleArgs),
    /// Judge every leak-zoo mode, driven every way users drive leakscope,
    /// against the zoo's published truth
    Zoo(zoo::ZooArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Run only one of them
    #[arg(long, value_enum)]
    only: Option<BenchKind>,
    #[command(flatten)]
    versus: versus::VersusArgs,
    #[command(flatten)]
    cost: cost::CostArgs,
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchKind {
    /// The reference server against nginx, with wrk
    Nginx,
    /// CPU per procfs sample with 100,000 TIME_WAIT entries on loopback,
    /// sock_diag netlink beside /proc/PID/net/tcp
    Sampler,
    /// `check` and `report` on a day's run directory (345,600 samples):
    /// wall, CPU and peak RSS
    DayLong,
    /// The criterion benchmarks (`cargo bench -p leakscope-agent`)
    Criterion,
    /// CPU per request at a fixed rate: the server without the agent, with
    /// it, with the sidecar attached, and nginx
    Cost,
}

/// Each run: what it covers, and cargo's arguments.
const TEST_RUNS: &[(&str, &[&str])] = &[
    ("format", &["fmt", "--all", "--", "--check"]),
    (
        "lints",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ),
    (
        "workspace (jemalloc, cpu, console)",
        // Every failure in one run, not only the first binary's.
        &["test", "--workspace", "--no-fail-fast"],
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

/// A step of `xtask test` that is code rather than a cargo command.
type Step = fn() -> anyhow::Result<()>;

/// Runs one step to its end; a step that cannot even start counts as failed.
fn passes(mut cmd: Command) -> bool {
    cmd.status().map(|s| s.success()).unwrap_or_else(|e| {
        eprintln!("xtask test: cannot run {:?}: {e}", cmd.get_program());
        false
    })
}

fn test() -> ExitCode {
    let mut failed = Vec::new();
    // Seconds, so first: an unused dependency fails before the long runs.
    let machete = tools::unused_dependencies();
    failed.extend(machete.failed.iter().map(String::as_str));
    for (what, args) in TEST_RUNS {
        eprintln!("xtask test: {what}: cargo {}", args.join(" "));
        let mut cmd = Command::new(workspace::cargo());
        cmd.args(*args);
        if !passes(cmd) {
            failed.push(*what);
        }
    }
    // leakscope-test: its fixture fails by design, so it is run here, 20
    // times; and the crate as most users build it, without tokio_unstable.
    let steps: [(&str, Step); 2] = [
        (
            "leakscope-test: the parallel fixture, 20 runs",
            guarded::parallel_fixture,
        ),
        (
            "leakscope-test built without tokio_unstable",
            guarded::without_tokio_unstable,
        ),
    ];
    for (what, step) in steps {
        eprintln!("xtask test: {what}");
        if let Err(e) = step() {
            eprintln!("xtask test: {what}: {e:#}");
            failed.push(what);
        }
    }
    // The tests that need an outside tool, where it is installed.
    let tool_tests = tools::run();
    failed.extend(tool_tests.failed.iter().map(String::as_str));
    // The journey end to end, on the real release binaries: a scenario's
    // verdicts wrong, a run missing or the report not standing alone fails.
    let e2e = workspace::target_dir().join("xtask-e2e-reports");
    let what = "end to end: cargo xtask profile --quick";
    eprintln!("xtask test: {what} (reports in {})", e2e.display());
    let exe = std::env::current_exe().unwrap_or_else(|_| "xtask".into());
    let mut cmd = Command::new(exe);
    cmd.args(["profile", "--quick", "--out"]).arg(&e2e);
    if !passes(cmd) {
        failed.push(what);
    }
    // leakscope on a service it was not written against: every leak-zoo
    // mode, every way, held to the zoo's truth.
    let what = "leak zoo: cargo xtask zoo";
    eprintln!("xtask test: {what}");
    let mut cmd = Command::new(std::env::current_exe().unwrap_or_else(|_| "xtask".into()));
    cmd.arg("zoo");
    if !passes(cmd) {
        failed.push(what);
    }
    for s in machete.skipped.iter().chain(&tool_tests.skipped) {
        eprintln!("xtask test: skipped (not run, not passed): {s}");
    }
    if failed.is_empty() {
        eprintln!("xtask test: every step passed");
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask test: FAILED: {}", failed.join("; "));
        ExitCode::FAILURE
    }
}

/// Runs one of xtask/bench's scripts; whether it succeeded.
fn bench_script(name: &str) -> bool {
    let script = workspace::root().join("xtask/bench").join(name);
    match Command::new(&script).status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask bench: cannot run {}: {e}", script.display());
            false
        }
    }
}

fn bench(args: &BenchArgs) -> ExitCode {
    let mut ok = true;
    let wanted = |kind| args.only.is_none_or(|only| only == kind);
    if wanted(BenchKind::Cost) {
        if let Err(e) = cost::run(&args.cost) {
            eprintln!("xtask bench: cost: {e:#}");
            ok = false;
        }
    }
    if wanted(BenchKind::Nginx) {
        if let Err(e) = versus::run(&args.versus) {
            eprintln!("xtask bench: against nginx: {e:#}");
            ok = false;
        }
    }
    for (kind, script) in [
        (BenchKind::Sampler, "sampler-busy-host.sh"),
        (BenchKind::DayLong, "day-long.sh"),
    ] {
        if wanted(kind) {
            ok &= bench_script(script);
        }
    }
    if wanted(BenchKind::Criterion) {
        // Per package, not --workspace: cargo unifies features across what
        // it builds at once, and the download server's and the zoo's tests
        // turn on the agent's `alloc-groups`, which the allocator benchmark
        // must not measure.
        ok &= match Command::new(workspace::cargo())
            .args(["bench", "-p", "leakscope-agent"])
            .args(&args.cargo_args)
            .status()
        {
            Ok(s) => s.success(),
            Err(e) => {
                eprintln!("xtask bench: cannot run cargo: {e}");
                false
            }
        };
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Test => test(),
        Cmd::Bench(args) => bench(&args),
        Cmd::Profile(args) => profile::run(args),
        Cmd::Console(args) => console::run(args),
        Cmd::Zoo(args) => zoo::run(args),
    }
}

#[cfg(test)]
mod cli_tests {
    /// clap's own consistency checks (unique argument names across
    /// flattened groups, valid defaults), which otherwise fire only when
    /// the command runs.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
