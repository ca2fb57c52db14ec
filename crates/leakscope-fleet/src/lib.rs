//! A fleet's history as leakscope run directories.
//!
//! Prometheus, Thanos, Mimir, Cortex and VictoriaMetrics all answer the
//! same HTTP API. This crate asks it for each instance's open fds, RSS,
//! heap, request counter, fd limit and start time over a range, cuts each
//! instance's history at its restarts, and writes every piece as a run
//! directory that `leakscope_analysis::analyze` judges exactly as it judges
//! a recording: the analysis is not rewritten for the fleet.
//!
//! Why run directories rather than series handed to the analysis: the
//! report, the gate and `check --json` all read them, so a fleet's replica
//! is judged, charted and gated by the same code as a local run.

mod api;
mod segment;

use std::path::PathBuf;

pub use api::{Client, Matrix, Series, MAX_POINTS};
pub use segment::{write_runs, InstanceRuns, SegmentRun};

/// The API's answers, as the command needs them.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("the server at {url} cannot be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("the server answered HTTP {status} with a body that is not its API's JSON ({query:?}): {body}")]
    NotApi {
        query: String,
        status: u16,
        body: String,
    },
    #[error("the server refused {query:?}: {error_type}: {error}")]
    Api {
        query: String,
        error_type: String,
        error: String,
    },
    #[error("{query:?} answered a {result_type}, not a matrix")]
    NotMatrix { query: String, result_type: String },
    #[error("no series match {query:?} between {start} and {end} (Unix seconds): check the selector and the range")]
    NoSeries { query: String, start: i64, end: i64 },
    #[error("{query:?} gave {value} for {label}={instance:?} at {at} (Unix seconds): a resource level must be a finite number ≥ 0")]
    NotFinite {
        query: String,
        label: String,
        instance: String,
        value: String,
        at: f64,
    },
    #[error("{query:?} has no series for {label}={instance:?}: its requests cannot be counted, so it cannot be judged per request (a replica that served nothing still exports its counter at 0)")]
    NoCounter {
        query: String,
        label: String,
        instance: String,
    },
    #[error("the range is empty or backwards: start {start}, end {end}, step {step} s")]
    BadRange { start: i64, end: i64, step: u64 },
    #[error("writing the run directory {dir}: {source}")]
    RunDir {
        dir: PathBuf,
        #[source]
        source: leakscope_rundir::RunDirError,
    },
}

/// PromQL selectors for what each run directory holds. Defaults fit the
/// standard process metrics (client libraries and leakscope's agent) and
/// the download server's request counter.
#[derive(Debug, Clone)]
pub struct Selectors {
    pub fds: String,
    pub rss: String,
    /// The allocator's live bytes; absent series mean no heap figures.
    pub heap: Option<String>,
    /// A request counter: its increase is the work axis.
    pub requests: String,
    /// The fd ceiling; 0 or absent means none.
    pub max_fds: String,
    /// Cuts the history at restarts.
    pub start_time: String,
    /// A memory ceiling in bytes, when a series gives one.
    pub memory_limit: Option<String>,
}

/// The standard process metrics' names.
pub const DEFAULT_FDS: &str = "process_open_fds";
pub const DEFAULT_RSS: &str = "process_resident_memory_bytes";
pub const DEFAULT_MAX_FDS: &str = "process_max_fds";
pub const DEFAULT_START_TIME: &str = "process_start_time_seconds";
/// The download server's counter, as the sidecar's `--metrics` reads it.
pub const DEFAULT_REQUESTS: &str = "http_requests_total";
/// leakscope-agent's jemalloc allocated bytes.
pub const DEFAULT_HEAP: &str = "leakscope_jemalloc_allocated_bytes";

impl Default for Selectors {
    fn default() -> Self {
        Self {
            fds: DEFAULT_FDS.into(),
            rss: DEFAULT_RSS.into(),
            heap: Some(DEFAULT_HEAP.into()),
            requests: DEFAULT_REQUESTS.into(),
            max_fds: DEFAULT_MAX_FDS.into(),
            start_time: DEFAULT_START_TIME.into(),
            memory_limit: None,
        }
    }
}

/// What to ask and over which range.
#[derive(Debug, Clone)]
pub struct Query {
    pub selectors: Selectors,
    /// The label that names an instance.
    pub by: String,
    /// Unix seconds.
    pub start: i64,
    pub end: i64,
    /// Seconds between points: the samples' interval.
    pub step: u64,
}

/// Every series the command reads, by instance.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub fds: Matrix,
    pub rss: Matrix,
    pub heap: Matrix,
    /// Per series of the counter, not aggregated: each one's resets are
    /// made monotonic before the instance's are summed.
    pub requests: Vec<Series>,
    pub max_fds: Matrix,
    pub start_time: Matrix,
    pub memory_limit: Matrix,
}

/// Asks the server for everything over the range. The resources, the
/// counter and the start time must match something; heap, fd and memory
/// limits may not.
pub fn fetch(client: &Client, q: &Query) -> Result<Data, FleetError> {
    let s = &q.selectors;
    let by = &q.by;
    let agg = |f: &str, sel: &str| format!("{f} by ({by}) ({sel})");
    let required = |m: Matrix, query: String| {
        if m.is_empty() {
            Err(FleetError::NoSeries {
                query,
                start: q.start,
                end: q.end,
            })
        } else {
            Ok(m)
        }
    };
    let grouped = |f: &str, sel: &str| -> Result<Matrix, FleetError> {
        let query = agg(f, sel);
        client.range(&query, q, by)
    };
    let fds = required(grouped("max", &s.fds)?, agg("max", &s.fds))?;
    let rss = required(grouped("max", &s.rss)?, agg("max", &s.rss))?;
    let start_time = required(grouped("max", &s.start_time)?, agg("max", &s.start_time))?;
    let requests = client.range_series(&s.requests, q)?;
    if requests.is_empty() {
        return Err(FleetError::NoSeries {
            query: s.requests.clone(),
            start: q.start,
            end: q.end,
        });
    }
    let heap = match &s.heap {
        Some(h) => grouped("max", h)?,
        None => Matrix::default(),
    };
    let memory_limit = match &s.memory_limit {
        Some(m) => grouped("min", m)?,
        None => Matrix::default(),
    };
    Ok(Data {
        fds,
        rss,
        heap,
        requests,
        max_fds: grouped("max", &s.max_fds)?,
        start_time,
        memory_limit,
    })
}
