//! The metric vocabulary: one typed table that the analysis, `check`, the
//! report and xtask all iterate over, so a metric's id, title, unit, noise
//! floor, source, ceiling and gate (with its `check` flag) are said once.
//!
//! The floors are physical, not fitted to any data: a MiB of heap is below
//! one jemalloc arena's caches; RSS moves in larger steps (pages, arenas,
//! retained extents); a handful of fds or tasks is what concurrency alone
//! adds and removes.

use leakscope_rundir::{Limits, Sample};
use serde::Serialize;

use crate::series::Unit;

const MIB: f64 = 1024.0 * 1024.0;

/// The metrics leakscope judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricId {
    Heap,
    Rss,
    Tasks,
    Fds,
    /// Bytes allocated per unit of work: a rate with no verdict.
    Alloc,
}

impl MetricId {
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricId::Heap => "heap",
            MetricId::Rss => "rss",
            MetricId::Tasks => "tasks",
            MetricId::Fds => "fds",
            MetricId::Alloc => "alloc",
        }
    }

    pub fn def(self) -> &'static MetricDef {
        METRICS
            .iter()
            .find(|d| d.id == self)
            .expect("every MetricId has a row in METRICS")
    }

    /// The id as the run's JSON and the CLI spell it ("heap", "fds").
    pub fn parse(s: &str) -> Option<Self> {
        METRICS.iter().map(|d| d.id).find(|id| id.as_str() == s)
    }

    /// A series' id: the metric's own (`fds`), or one kind of it
    /// (`fds.socket`). The one place the two parts are joined.
    pub fn series(self, kind: Option<&str>) -> String {
        match kind {
            Some(k) => format!("{}.{k}", self.as_str()),
            None => self.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for MetricId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a metric's figures come from, and how a user turns that source on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// leakscope-agent's heap statistics.
    Agent,
    /// Live tasks: the agent's task hooks, or console-subscriber.
    Tasks,
    /// `/proc/PID`: any process, no instrumentation.
    Procfs,
}

impl Source {
    /// What to do when the source gave nothing.
    pub fn how_to_enable(self) -> &'static str {
        match self {
            Source::Agent => "record with --agent and leakscope-agent in the target",
            Source::Tasks => {
                "record with --agent and the agent's task hooks in the target \
                 (leakscope_agent::tasks::runtime()), or --console with console-subscriber"
            }
            Source::Procfs => "procfs could not read the process",
        }
    }
}

/// What a metric runs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CeilingKind {
    /// RLIMIT_NOFILE.
    OpenFiles,
    /// The cgroup's memory.max, else the host's memory.
    Memory,
}

/// A ceiling's value and what sets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ceiling {
    pub value: f64,
    /// "RLIMIT_NOFILE", "the cgroup's memory.max", "the host's memory".
    pub what: &'static str,
}

impl CeilingKind {
    pub fn of(self, limits: &Limits) -> Option<Ceiling> {
        match self {
            CeilingKind::OpenFiles => limits.open_files.map(|v| Ceiling {
                value: v as f64,
                what: "RLIMIT_NOFILE",
            }),
            CeilingKind::Memory => limits.memory().map(|(v, what)| Ceiling {
                value: v as f64,
                what,
            }),
        }
    }

    /// Lines in the target's log that say it hit this ceiling.
    pub fn log_signs(self) -> &'static [&'static str] {
        match self {
            CeilingKind::OpenFiles => &["Too many open files", "EMFILE", "os error 24"],
            CeilingKind::Memory => &[
                "memory allocation of",
                "Cannot allocate memory",
                "out of memory",
            ],
        }
    }
}

/// One row of the vocabulary.
#[derive(Debug)]
pub struct MetricDef {
    pub id: MetricId,
    /// "heap allocated".
    pub title: &'static str,
    /// A column heading: "heap", "RSS".
    pub short: &'static str,
    pub unit: Unit,
    /// The smallest growth over a window that counts as more than noise.
    pub floor: f64,
    pub source: Source,
    pub ceiling: Option<CeilingKind>,
    /// A rate (allocation) has a slope and no verdict: allocating is not
    /// leaking.
    pub rate: bool,
    /// The metric's value in one sample (for `alloc`, the cumulative
    /// counter the rate is the slope of).
    pub value: fn(&Sample) -> Option<f64>,
    /// How `leakscope check` holds it to a limit; `None`: not gated.
    pub gate: Option<Gate>,
}

/// A gated metric: `check` fails a LEAK growing faster than the limit per
/// request (0, any LEAK, unless the flag raises it), an EXHAUSTED, and an
/// INCONCLUSIVE unless allowed.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    /// `check`'s flag for the limit, in the metric's unit (a size such as
    /// `1KiB` for bytes, a number for counts).
    pub flag: &'static str,
    /// Gated only while this metric has no figures: RSS stands in for
    /// heap, since with heap figures it adds the allocator's retention to
    /// the same bytes.
    pub unless: Option<MetricId>,
}

pub const METRICS: &[MetricDef] = &[
    MetricDef {
        id: MetricId::Heap,
        title: "heap allocated",
        short: "heap",
        unit: Unit::Bytes,
        floor: MIB,
        source: Source::Agent,
        ceiling: Some(CeilingKind::Memory),
        rate: false,
        value: |s| s.heap.as_ref()?.allocated.map(|v| v as f64),
        gate: Some(Gate {
            flag: "max-heap-per-request",
            unless: None,
        }),
    },
    MetricDef {
        id: MetricId::Rss,
        title: "resident memory (RSS)",
        short: "RSS",
        unit: Unit::Bytes,
        floor: 4.0 * MIB,
        source: Source::Procfs,
        ceiling: Some(CeilingKind::Memory),
        rate: false,
        value: |s| s.proc.as_ref().map(|p| p.rss_bytes as f64),
        gate: Some(Gate {
            flag: "max-rss-per-request",
            unless: Some(MetricId::Heap),
        }),
    },
    MetricDef {
        id: MetricId::Tasks,
        title: "live tasks",
        short: "tasks",
        unit: Unit::Count,
        floor: 4.0,
        source: Source::Tasks,
        ceiling: None,
        rate: false,
        value: |s| s.tasks.as_ref().map(|c| c.live_tasks as f64),
        gate: Some(Gate {
            flag: "max-tasks-per-request",
            unless: None,
        }),
    },
    MetricDef {
        id: MetricId::Fds,
        title: "open fds",
        short: "fds",
        unit: Unit::Count,
        floor: 4.0,
        source: Source::Procfs,
        ceiling: Some(CeilingKind::OpenFiles),
        rate: false,
        value: |s| s.proc.as_ref().map(|p| p.fds as f64),
        gate: Some(Gate {
            flag: "max-fds-per-request",
            unless: None,
        }),
    },
    MetricDef {
        id: MetricId::Alloc,
        title: "allocation",
        short: "allocation",
        unit: Unit::Bytes,
        floor: 0.0,
        source: Source::Agent,
        ceiling: None,
        rate: true,
        value: |s| s.heap.as_ref()?.allocated_bytes_total.map(|v| v as f64),
        gate: None,
    },
];

/// The floor of one kind of fd (`fds.socket`, `fds.pipe`): the same
/// handful as all fds.
pub const FD_KIND_FLOOR: f64 = 4.0;
