//! The command line. Everything is checked before a target is started or a
//! run directory created, so a typo costs nothing.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use leakscope_load::{Concurrency, Pattern};

#[derive(Parser)]
#[command(
    name = "leakscope",
    version,
    about = "Record heap, task and fd snapshots of a process over time, and drive load at it",
    after_help = "Run directories are read by `leakscope report` and `leakscope check` (see docs/verdicts.md)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// No progress display; warnings and the final summary only.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Attach to a running process and record it.
    Record(RecordArgs),
    /// Start a command, wait until it is ready, record it (optionally under
    /// load), then stop it.
    Run(RunArgs),
    /// Drive load only, without recording, and print what it did: for
    /// side-by-side comparisons and as a leak-shaped load generator.
    Load(LoadOnlyArgs),
    /// Judge one run directory against per-request limits: exit 1 when a
    /// LEAK breaks one, 2 when the run cannot be read. A CI gate.
    Check(super::check::CheckArgs),
    /// Render run directories as HTML: one page per scenario (its variants
    /// on the same axes) and an index of verdicts.
    Report(super::report::ReportArgs),
    /// Judge every instance a Prometheus-compatible server holds the
    /// history of, per request and per restart: exit 1 when one leaks, 2
    /// when the server or its series cannot be used. A deploy gate.
    Fleet(super::fleet::FleetArgs),
}

#[derive(Args)]
pub struct LoadOnlyArgs {
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args)]
pub struct RecordArgs {
    /// The process to record.
    #[arg(long)]
    pub pid: i32,
    #[command(flatten)]
    pub rec: RecordingArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub rec: RecordingArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Ready when the target prints a line (stdout or stderr) starting with
    /// this; the address on it becomes {addr} in URLs.
    #[arg(long, value_name = "TEXT", conflicts_with = "ready_port")]
    pub ready_line: Option<String>,
    /// Ready when this address accepts TCP connections.
    #[arg(long, value_name = "HOST:PORT")]
    pub ready_port: Option<std::net::SocketAddr>,
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub ready_timeout: Duration,
    /// After SIGTERM, how long the target gets before SIGKILL.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub stop_timeout: Duration,
    /// The target and its arguments. URLs may use {addr} (the address on
    /// the ready line) and {addr:PREFIX} (on the first line starting with
    /// PREFIX), for targets that listen on port 0.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct RecordingArgs {
    /// Where to write the run directory (must not exist or be empty).
    #[arg(long, short)]
    pub out: PathBuf,
    /// leakscope-agent's address, for heap stats and heap profiles.
    #[arg(long, value_name = "URL")]
    pub agent: Option<String>,
    /// The target's console-subscriber gRPC address, for live tasks.
    #[arg(long, value_name = "URL")]
    pub console: Option<String>,
    /// The target's Prometheus endpoint, for requests served.
    #[arg(long, value_name = "URL")]
    pub metrics: Option<String>,
    /// The request counter to sum at --metrics.
    #[arg(long, default_value = crate_metrics_counter(), value_name = "NAME")]
    pub metrics_counter: String,
    /// Time between samples.
    #[arg(long, default_value = "250ms", value_parser = interval)]
    pub interval: Duration,
    /// Stop recording after this long (default: when the load has ended and
    /// settled, or when the target ends, or on Ctrl-C).
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// A heap profile at the start, every this often, and at the end. The
    /// period stretches to a 360th of the time recorded so far, so a day
    /// holds ~1,500 profiles rather than 8,640.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub heap_profile_every: Duration,
    /// At the end, ask the agent for a task dump (where each live task is
    /// parked) into tasks-dump.json. Off by default: on a multi-thread
    /// runtime tokio's dump can wedge the target for good (docs/agent.md says
    /// when), and the agent refuses it unless started with
    /// LEAKSCOPE_TASK_DUMPS=on.
    #[arg(long)]
    pub task_dump: bool,
    /// How long one source may take to answer.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub source_timeout: Duration,
    /// KEY=VALUE stored in meta.json; reports pair runs by `scenario` and
    /// `variant`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// How long the target's console-subscriber keeps finished tasks, when
    /// leakscope-agent cannot say: with the console on, memory growth it
    /// could hold is judged INCONCLUSIVE unless it stayed past this.
    /// Default: the target's TOKIO_CONSOLE_RETENTION or
    /// LEAKSCOPE_CONSOLE_RETENTION, if set.
    #[arg(long, value_name = "D", value_parser = duration)]
    pub console_retention: Option<Duration>,
}

fn crate_metrics_counter() -> &'static str {
    leakscope::sources::metrics::DEFAULT_COUNTER
}

#[derive(Args)]
pub struct LoadArgs {
    /// Drive load at --url: full, abort:SIZE, slow:SIZE/s, range:A-B or zip.
    #[arg(long, value_name = "PATTERN")]
    pub load: Option<Pattern>,
    /// Where the load goes (repeat for several, used in turn).
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Requests at once: N, or FROM..TO to ramp over the load's duration.
    #[arg(long, default_value = "8")]
    pub concurrency: Concurrency,
    /// Stop the load after this many requests.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Start at most this many requests per second (all workers together).
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,
    /// Stop the load after this long (default: --duration, else 30s).
    #[arg(long, value_parser = duration)]
    pub load_duration: Option<Duration>,
    /// One request that takes longer fails.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub request_timeout: Duration,
    /// After the load ends, keep recording this long to see what is
    /// released and what stays.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub settle: Duration,
}

/// The longest any duration flag takes: a year. Longer is a typo or a
/// probe, and `Instant + d` panics past the clock's range (about 2^63 s).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX_DURATION {
        return Err("at most a year (365d)".into());
    }
    Ok(d)
}

fn interval(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("the interval must be at least 10ms".into());
    }
    Ok(d)
}

fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}
