//! One line of `samples.jsonl`: everything the sources saw in one tick.
//!
//! A source that was not asked for, or failed this tick, leaves its section
//! `null`; the failure goes into `errors`, so a gap in a chart has a reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Tick number from 0.
    pub seq: u64,
    /// Milliseconds since the recording started (monotonic clock), when
    /// this tick's reads started (all at once).
    pub t_ms: u64,
    /// When each section's figures were read, as `[from, to]` on `t_ms`'s
    /// clock: the read started at `from` and answered at `to`, so what it
    /// reported was true at some moment between. A read that an earlier tick
    /// started and this one used starts before `t_ms`. Keyed by section
    /// (`proc`, `tasks`, `heap`, `load`); empty in runs written before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub taken_ms: BTreeMap<String, [u64; 2]>,
    #[serde(default)]
    pub proc: Option<ProcSample>,
    /// Live tasks, from the agent's task hooks or the console (runs before
    /// the agent could count called this section `console`).
    #[serde(default, alias = "console")]
    pub tasks: Option<TaskSample>,
    #[serde(default)]
    pub heap: Option<HeapSample>,
    #[serde(default)]
    pub load: Option<LoadSample>,
    /// Heap profile written at this tick, relative to the run directory.
    #[serde(default)]
    pub heap_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<SourceError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceError {
    pub source: String,
    pub message: String,
}

/// From /proc/PID: works on any process, no instrumentation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub threads: u64,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    /// read- and write-family syscalls so far (`syscr + syscw` in
    /// /proc/PID/io; sockets included): every request served costs at least
    /// one of each, while timers and idle housekeeping cost none, so it
    /// tells when a target attached by pid was serving. `None` when
    /// /proc/PID/io is unreadable, and in runs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_syscalls: Option<u64>,
    pub fds: u64,
    /// file, socket, pipe, anon_inode, other.
    pub fds_by_kind: BTreeMap<String, u64>,
    /// The most-open file paths, with counts.
    pub top_files: Vec<(String, u64)>,
    /// The most-open path patterns, with counts: every run of digits in a
    /// path is `*`, so a leak of one fd per request to a new file each time
    /// (`/var/log/app/req-1.log`, `req-2.log`, …) is one growing row
    /// (`/var/log/app/req-*.log`) where `top_files` shows only ones.
    /// Then the most-open directories, keyed by their pattern with a
    /// trailing `/` (`/tmp/`), for names without digits (`.tmpAbCdEf`).
    /// The keys are [`crate::fdpath`]'s. Empty in runs written before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_file_patterns: Vec<(String, u64)>,
    /// TCP sockets by state (ESTABLISHED, CLOSE_WAIT, …).
    pub tcp_states: BTreeMap<String, u64>,
    /// The most common TCP endpoints with counts: "STATE local <- peer-ip"
    /// for accepted connections, "STATE local-ip -> peer" for outgoing ones,
    /// "LISTEN addr" for listeners. Ephemeral ports are left out, so one
    /// leak is one row.
    #[serde(default)]
    pub top_sockets: Vec<(String, u64)>,
}

/// Where live-task counts came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSource {
    /// console-subscriber's gRPC stream: it can drop events under load, so
    /// its counts are a lower bound then (`dropped_events` says).
    #[default]
    Console,
    /// leakscope-agent's tokio task hooks: every spawn and termination is
    /// counted, so the figure is exact.
    AgentHooks,
}

impl TaskSource {
    pub fn describe(self) -> &'static str {
        match self {
            TaskSource::Console => "console-subscriber's event stream",
            TaskSource::AgentHooks => "the agent's task hooks (exact)",
        }
    }
}

/// Live tasks at one tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSample {
    /// Which instrument counted them; runs written before the agent could
    /// count have only the console.
    #[serde(default)]
    pub source: TaskSource,
    pub live_tasks: u64,
    /// Live tasks by spawn location (file:line:col).
    pub by_location: BTreeMap<String, u64>,
    /// Live tasks by name, for named tasks.
    pub by_name: BTreeMap<String, u64>,
    /// Events the instrumented process dropped so far (cumulative); always
    /// 0 from the hooks, which cannot drop.
    #[serde(default)]
    pub dropped_events: u64,
    /// Tasks spawned so far (cumulative), when the source counts spawns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawned_total: Option<u64>,
    /// How long the target's console-subscriber keeps finished tasks (and
    /// their ~51 KB each), when the agent started it and says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_retention_ms: Option<u64>,
}

/// From leakscope-agent's /debug/heap/stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapSample {
    pub allocated: Option<u64>,
    pub resident: Option<u64>,
    pub active: Option<u64>,
    pub allocations_total: Option<u64>,
    pub allocated_bytes_total: Option<u64>,
    /// Allocated and not freed (see leakscope-wire's `HeapStats`); run
    /// directories written before the rename call it `requested_live_bytes`.
    #[serde(alias = "requested_live_bytes")]
    pub live_bytes: Option<u64>,
}

/// Requests served: from the target's /metrics or leakscope's load driver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSample {
    /// Requests the target answered (cumulative); the x axis of per-request
    /// trends.
    pub requests_total: u64,
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub aborted: u64,
    /// Body bytes the driver received (cumulative).
    #[serde(default)]
    pub bytes: u64,
    /// Driver workers active at this tick.
    #[serde(default)]
    pub concurrency: u64,
}
