//! Leak scenarios: for each leak pattern of the source documents, a *leaky*
//! handler written the way a Rust developer really gets it wrong, and the
//! *fixed* one, side by side in one module. They are the ground truth the
//! profiler's verdicts are checked against.
//!
//! One variant per process (`--variant`), so measurements never mix. Routes
//! are `/s/{scenario}/{path}`; `--list-scenarios` prints [`ALL`] as JSON for
//! tools, including the load each scenario needs to show its leak. xtask
//! reads the same table, so a scenario is said once.

mod buffer_churn;
mod buffer_whole_file;
mod fd_leak;
mod session_map;
mod task_leak;
mod unbounded_channel;
mod zip_in_memory;

use std::fs::File;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, Response};
pub use leakscope_loadspec::Pattern;
use serde::Serialize;
/// How many sessions the fixed session map keeps (its moka cache's capacity).
pub use session_map::CAPACITY as SESSION_CAPACITY;

use crate::body::Body;
use crate::response::{internal_error, path_error};
use crate::root::{RelPath, ServeRoot};

/// Which handler every scenario route runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Leaky,
    Fixed,
}

impl Variant {
    pub const fn as_str(self) -> &'static str {
        match self {
            Variant::Leaky => "leaky",
            Variant::Fixed => "fixed",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a scenario's route takes after `/s/{name}/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// A regular file beneath the root.
    File,
    /// A directory beneath the root (the root itself included).
    Directory,
}

impl Input {
    /// The route template's placeholder.
    pub const fn placeholder(self) -> &'static str {
        match self {
            Input::File => "{file}",
            Input::Directory => "{dir}",
        }
    }
}

/// What leaks, in the words a tool maps onto its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resource {
    Heap,
    Fds,
    Tasks,
    /// Bytes allocated per request: churn, not retention.
    AllocationRate,
}

impl Resource {
    pub const fn as_str(self) -> &'static str {
        match self {
            Resource::Heap => "heap",
            Resource::Fds => "fds",
            Resource::Tasks => "tasks",
            Resource::AllocationRate => "allocation-rate",
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The source articles (Go/Gin download services that leak), by subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Article {
    SlowEndpoint,
    GinOutage,
    CloudDrive,
    MillionDownloads,
    StreamingZip,
}

impl Article {
    pub const fn subject(self) -> &'static str {
        match self {
            Article::SlowEndpoint => "a download endpoint that slows the whole system",
            Article::GinOutage => "a Gin service that falls over in production",
            Article::CloudDrive => "a Go cloud-drive service leaking memory",
            Article::MillionDownloads => "a million-download file service",
            Article::StreamingZip => "streaming ZIP downloads",
        }
    }
}

impl Serialize for Article {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.subject())
    }
}

/// The load that makes a scenario's leak visible, in the load driver's own
/// vocabulary so the two cannot drift apart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    pub concurrency: u32,
    /// The driver's one-word spelling (`abort:64KiB`, `slow:512KiB/s`).
    #[serde(serialize_with = "display")]
    pub pattern: Pattern,
}

fn display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
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

/// A scenario's handler: the process's variant and the request.
pub type Handler = for<'a> fn(Variant, Ctx<'a>) -> BoxFuture<'a, Response<Body>>;

/// One scenario: its route, what it leaks, the load that shows it, and the
/// handler that serves it. [`ALL`] is the one table routing, the catalogue
/// (`--list-scenarios`) and xtask read.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    pub input: Input,
    pub resource: Resource,
    pub symptom: Symptom,
    pub description: &'static str,
    /// The articles whose pattern this is.
    pub source: &'static [Article],
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
    #[serde(skip)]
    pub handler: Handler,
}

impl Scenario {
    /// The route template, `/s/{name}/{file}` or `/s/{name}/{dir}`.
    pub fn route(&self) -> String {
        format!("/s/{}/{}", self.name, self.input.placeholder())
    }

    /// The scenario named `name`, if any.
    pub fn named(name: &str) -> Option<&'static Scenario> {
        ALL.iter().find(|s| s.name == name)
    }
}

/// A scenario as `--list-scenarios` prints it: the table's row and its route.
#[derive(Serialize)]
pub struct Listed {
    #[serde(flatten)]
    scenario: &'static Scenario,
    route: String,
}

/// Every scenario, as `--list-scenarios` prints them.
pub fn listing() -> Vec<Listed> {
    ALL.iter()
        .map(|scenario| Listed {
            scenario,
            route: scenario.route(),
        })
        .collect()
}

/// Each scenario's row by name, for code that picks one (xtask's console
/// mix, its quick profile) without spelling its name again.
pub use buffer_churn::SCENARIO as BUFFER_CHURN;
pub use buffer_whole_file::SCENARIO as BUFFER_WHOLE_FILE;
pub use fd_leak::SCENARIO as FD_LEAK;
pub use session_map::SCENARIO as UNBOUNDED_SESSION_MAP;
pub use task_leak::SCENARIO as TASK_LEAK_ON_DISCONNECT;
pub use unbounded_channel::SCENARIO as UNBOUNDED_CHANNEL;
pub use zip_in_memory::SCENARIO as ZIP_IN_MEMORY;

/// The scenarios. Adding one is a module with its `SCENARIO` and a row here.
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
    /// The connection's sendfile queue, for the real `/files/` handler.
    pub sendfile: Option<crate::sendfile::Pending>,
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
        ctx.sendfile,
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
