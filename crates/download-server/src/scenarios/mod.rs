//! Leak scenarios: for each leak pattern of the source documents, a *leaky*
//! handler written the way a Rust developer really gets it wrong, and the
//! *fixed* one, side by side in one module. They are the ground truth the
//! profiler's verdicts are checked against.
//!
//! One variant per process (`--variant`), so measurements never mix. Routes
//! are `/s/{scenario}/{path}`; `--list-scenarios` prints [`ALL`] as JSON for
//! tools, including the load each scenario needs to show its leak.

mod buffer_churn;
mod buffer_whole_file;
mod fd_leak;
mod session_map;
mod task_leak;
mod unbounded_channel;
mod zip_in_memory;

use std::fs::File;
use std::sync::Arc;

use http::{HeaderMap, Method, Response, StatusCode};
use serde::Serialize;

use crate::body::Body;
use crate::response::{internal_error, path_error, plain};
use crate::root::{RelPath, ServeRoot};

/// Which handler every scenario route runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Leaky,
    Fixed,
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "leaky" => Ok(Variant::Leaky),
            "fixed" => Ok(Variant::Fixed),
            other => Err(format!("variant {other:?} is not leaky or fixed")),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Leaky => "leaky",
            Variant::Fixed => "fixed",
        })
    }
}

/// The load that makes a scenario's leak visible, for the load driver.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "pattern", rename_all = "kebab-case")]
pub enum Load {
    /// Whole downloads at the given concurrency.
    Full { concurrency: u32 },
    /// Downloads the client abandons after `after_bytes`.
    Abort { concurrency: u32, after_bytes: u64 },
    /// Downloads read at `kib_per_sec` per connection.
    Slow { concurrency: u32, kib_per_sec: u32 },
}

/// How the leaky variant's cost shows, so a tool knows which measurement
/// tells leaky from fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Symptom {
    /// The resource grows with every request served and never comes back:
    /// a leak in the strict sense.
    PerRequest,
    /// Each request in flight holds about the whole file (or archive); it is
    /// released when the request ends, so memory scales with concurrency
    /// times file size rather than with time.
    PerInFlight,
    /// Each request allocates about the whole file in short-lived buffers:
    /// nothing is held, the allocator churns.
    AllocatedPerRequest,
}

/// One scenario, as `--list-scenarios` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    /// Route template; `{file}` is a file, `{dir}` a directory under the root.
    pub route: &'static str,
    /// What leaks: "heap", "fds", "tasks", "allocation-rate".
    pub resource: &'static str,
    pub symptom: Symptom,
    pub description: &'static str,
    /// Where the pattern comes from (seed file and section).
    pub source: &'static str,
    /// Size of each test file the load should use, in bytes. Files that
    /// show an in-flight cost must be larger than what loopback's socket
    /// buffers absorb (tcp_wmem's 4 MiB maximum plus the reader's receive
    /// buffer), or fixed and leaky both finish writing at once and look
    /// alike.
    pub file_size: u64,
    /// How many files a `{dir}` route's directory holds (1 for `{file}`).
    pub files: u32,
    pub load: Load,
    /// A cap on request starts per second, for a scenario whose measurement
    /// has a capacity. None has now: tasks were capped at 50/s while they
    /// were counted through console-subscriber (~1,270 new tasks a second
    /// before it drops events); the agent's task hooks count any rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<u32>,
}

pub const ALL: &[Scenario] = &[
    buffer_whole_file::SCENARIO,
    fd_leak::SCENARIO,
    task_leak::SCENARIO,
    session_map::SCENARIO,
    unbounded_channel::SCENARIO,
    zip_in_memory::SCENARIO,
    buffer_churn::SCENARIO,
];

/// Per-server state some scenarios keep (their "global" maps live as long as
/// the server, which is what makes them leak).
#[derive(Default)]
pub struct State {
    sessions: session_map::Sessions,
}

/// What a scenario handler gets.
pub struct Ctx<'a> {
    pub root: Arc<ServeRoot>,
    pub rel: RelPath,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub state: &'a State,
    pub cache_control: http::HeaderValue,
    pub zip_slots: Arc<tokio::sync::Semaphore>,
    pub zip_gauge: prometheus_client::metrics::gauge::Gauge,
}

/// Dispatches `/s/{name}/…` to the scenario's handler for `variant`.
pub async fn handle(name: &str, variant: Variant, ctx: Ctx<'_>) -> Response<Body> {
    match name {
        "buffer-whole-file" => buffer_whole_file::handle(variant, ctx).await,
        "fd-leak" => fd_leak::handle(variant, ctx).await,
        "task-leak-on-disconnect" => task_leak::handle(variant, ctx).await,
        "unbounded-session-map" => session_map::handle(variant, ctx).await,
        "unbounded-channel" => unbounded_channel::handle(variant, ctx).await,
        "zip-in-memory" => zip_in_memory::handle(variant, ctx).await,
        "buffer-churn" => buffer_churn::handle(variant, ctx).await,
        _ => plain(
            StatusCode::NOT_FOUND,
            "no such scenario (download-server --list-scenarios lists them)",
        ),
    }
}

/// Opens a regular file beneath the root on the blocking pool.
async fn open(ctx: &Ctx<'_>) -> Result<(File, u64), Response<Body>> {
    let root = Arc::clone(&ctx.root);
    let rel = ctx.rel.clone();
    match tokio::task::spawn_blocking(move || root.open_file(&rel)).await {
        Ok(Ok((file, meta))) => Ok((file, meta.len())),
        Ok(Err(e)) => Err(path_error(&e)),
        Err(join) => Err(internal_error(&join)),
    }
}

/// The server's real `/files/` handler: what the file-serving scenarios'
/// fixed variants are.
async fn real_files_route(ctx: Ctx<'_>) -> Response<Body> {
    crate::files::serve(
        ctx.root,
        ctx.rel,
        ctx.method,
        ctx.headers,
        ctx.cache_control,
    )
    .await
}

/// A 200 with a known length around `body`.
fn ok(len: Option<u64>, body: Body) -> Response<Body> {
    let mut b = Response::builder()
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::CACHE_CONTROL, "no-store");
    if let Some(len) = len {
        b = b.header(http::header::CONTENT_LENGTH, len);
    }
    b.body(body).expect("static headers are valid")
}
