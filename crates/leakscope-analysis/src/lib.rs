//! Leak-trend analysis of leakscope run directories.
//!
//! Pure: it reads a run directory (through `leakscope-rundir`, the same
//! crate that wrote it) and computes, per metric, a robust slope against
//! requests served with a 95% interval and a LEAK / BOUNDED / STABLE /
//! INCONCLUSIVE verdict ([`trend`] states the rule), plus the attribution
//! behind growth ([`attribution`]). No network, no clock, no rendering.

pub mod attribution;
pub mod describe;
pub mod pprof;
pub mod series;
pub mod trend;

use std::path::{Path, PathBuf};

use leakscope_rundir::{Meta, Run, RunDirError, Sample};
use serde::Serialize;

pub use attribution::Attribution;
pub use series::{Axis, Point, Unit};
pub use trend::{Fit, Judgement, Verdict};

const MIB: f64 = 1024.0 * 1024.0;

/// The metrics judged, with the smallest growth over a window that counts
/// as more than noise. The floors are physical, not fitted to any data: a
/// MiB of heap is below one jemalloc arena's caches; RSS moves in larger
/// steps (pages, arenas, retained extents); a handful of fds or tasks is
/// what concurrency alone adds and removes.
struct MetricDef {
    id: &'static str,
    title: &'static str,
    unit: Unit,
    floor: f64,
    value: fn(&Sample) -> Option<f64>,
}

const LEVELS: &[MetricDef] = &[
    MetricDef {
        id: "heap",
        title: "heap allocated",
        unit: Unit::Bytes,
        floor: MIB,
        value: |s| s.heap.as_ref()?.allocated.map(|v| v as f64),
    },
    MetricDef {
        id: "rss",
        title: "resident memory (RSS)",
        unit: Unit::Bytes,
        floor: 4.0 * MIB,
        value: |s| s.proc.as_ref().map(|p| p.rss_bytes as f64),
    },
    MetricDef {
        id: "tasks",
        title: "live tasks",
        unit: Unit::Count,
        floor: 4.0,
        value: |s| s.console.as_ref().map(|c| c.live_tasks as f64),
    },
    MetricDef {
        id: "fds",
        title: "open fds",
        unit: Unit::Count,
        floor: 4.0,
        value: |s| s.proc.as_ref().map(|p| p.fds as f64),
    },
];

const FD_KIND_FLOOR: f64 = 4.0;

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricAnalysis {
    pub id: String,
    pub title: String,
    pub unit: Unit,
    /// A rate metric (allocation) has a slope and no verdict: allocating is
    /// not leaking.
    pub rate: bool,
    pub floor: f64,
    pub judgement: Option<Judgement>,
    /// Per request (or per second on a time axis), with its interval.
    pub slope: Option<Estimate>,
    pub r2: Option<f64>,
    /// Median before the load started.
    pub baseline: Option<f64>,
    /// BOUNDED with leakscope's load driver: the rise from the baseline to
    /// the plateau divided by the requests in flight, i.e. what each
    /// request holds while it runs.
    pub per_in_flight: Option<f64>,
    /// Every sample's value, for charts.
    pub points: Vec<Point>,
}

impl MetricAnalysis {
    pub fn verdict(&self) -> Option<Verdict> {
        self.judgement.as_ref().map(|j| j.verdict)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub dir: PathBuf,
    pub meta: Meta,
    pub samples: usize,
    pub axis: Axis,
    /// Requests served in the analysis window.
    pub window_requests: Option<f64>,
    /// Sample indices of the analysis window.
    pub window: (usize, usize),
    /// Its first and last x (requests or seconds).
    pub window_x: Option<(f64, f64)>,
    pub metrics: Vec<MetricAnalysis>,
    pub attribution: Attribution,
    /// console-subscriber answered in this run. Its retained task data then
    /// grows the heap per request until retention ends, so heap and RSS
    /// speak for the target plus its instrumentation.
    pub console_on: bool,
    /// Things the reader of the report must know: torn lines, missing
    /// profiles, absent sources, too few samples.
    pub notes: Vec<String>,
}

impl Analysis {
    pub fn metric(&self, id: &str) -> Option<&MetricAnalysis> {
        self.metrics.iter().find(|m| m.id == id)
    }

    /// `scenario` and `variant` labels, or the directory name and "run".
    pub fn scenario(&self) -> String {
        self.meta
            .labels
            .get("scenario")
            .cloned()
            .unwrap_or_else(|| {
                self.dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "run".into())
            })
    }

    pub fn variant(&self) -> String {
        self.meta
            .labels
            .get("variant")
            .cloned()
            .unwrap_or_else(|| "run".into())
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Reads and analyses one run directory. Errors only when it cannot be read
/// at all; anything partial becomes a note.
pub fn analyze(dir: &Path) -> Result<Analysis, RunDirError> {
    let run = Run::open(dir)?;
    let mut notes: Vec<String> = run.warnings.iter().map(|w| w.to_string()).collect();
    let samples = &run.samples;
    let layout = series::layout(samples);
    if samples.len() < trend::MIN_POINTS {
        notes.push(format!(
            "only {} sample(s): too few for a verdict; record longer or at a shorter --interval",
            samples.len()
        ));
    }
    if let Some(rises) = layout.sparse_requests {
        notes.push(format!(
            "requests completed in only {rises} sample(s) (slow downloads finish in bursts): judged over time, per second"
        ));
    } else if layout.axis == Axis::Seconds {
        notes.push(
            "no request counter advanced (no --metrics and no load driver): slopes are per second, not per request"
                .into(),
        );
    }
    let in_flight = median(
        samples[layout.window.clone()]
            .iter()
            .filter_map(|s| s.load.as_ref())
            .filter(|l| l.concurrency > 0)
            .map(|l| l.concurrency as f64)
            .collect(),
    );
    let mut metrics = Vec::new();
    let level = |id: &str, title: &str, unit: Unit, floor: f64, pts: Vec<Option<Point>>| {
        if pts.iter().all(Option::is_none) {
            return None;
        }
        let window = series::xy(&pts, layout.window.clone(), layout.axis);
        let baseline: Vec<f64> = pts[layout.baseline.clone()]
            .iter()
            .flatten()
            .map(|p| p.y)
            .collect();
        let judgement = trend::judge_fmt(&window, &baseline, floor, &|v| describe::amount(v, unit));
        let baseline = median(baseline);
        let per_in_flight = match (&judgement, baseline, in_flight) {
            (j, Some(b), Some(c)) if j.verdict == Verdict::Bounded => {
                j.plateau.map(|p| (p - b) / c)
            }
            _ => None,
        };
        Some(MetricAnalysis {
            per_in_flight,
            id: id.to_string(),
            title: title.to_string(),
            unit,
            rate: false,
            floor,
            slope: judgement.fit.map(|f| Estimate {
                value: f.slope,
                lo: f.lo,
                hi: f.hi,
            }),
            r2: judgement.fit.map(|f| f.r2),
            judgement: Some(judgement),
            baseline,
            points: pts.into_iter().flatten().collect(),
        })
    };
    for def in LEVELS {
        let pts = series::points(samples, def.value);
        match level(def.id, def.title, def.unit, def.floor, pts) {
            Some(m) => metrics.push(m),
            None => notes.push(format!(
                "no {} figures in this run ({})",
                def.title,
                source_of(def.id)
            )),
        }
    }
    let kinds: std::collections::BTreeSet<String> = samples
        .iter()
        .filter_map(|s| s.proc.as_ref())
        .flat_map(|p| p.fds_by_kind.keys().cloned())
        .collect();
    for kind in kinds {
        let k = kind.clone();
        let pts = series::points(samples, move |s| {
            s.proc
                .as_ref()
                .map(|p| p.fds_by_kind.get(&k).copied().unwrap_or(0) as f64)
        });
        if let Some(m) = level(
            &format!("fds.{kind}"),
            &format!("{kind} fds"),
            Unit::Count,
            FD_KIND_FLOOR,
            pts,
        ) {
            metrics.push(m);
        }
    }
    // Allocation: bytes allocated per request, from the cumulative counter.
    let pts = series::points(samples, |s| {
        s.heap.as_ref()?.allocated_bytes_total.map(|v| v as f64)
    });
    if pts.iter().any(Option::is_some) {
        let fit = trend::theil_sen(&series::xy(&pts, layout.window.clone(), layout.axis));
        metrics.push(MetricAnalysis {
            id: "alloc".into(),
            title: "allocation".into(),
            unit: Unit::Bytes,
            rate: true,
            floor: 0.0,
            judgement: None,
            slope: fit.map(|f| Estimate {
                value: f.slope,
                lo: f.lo,
                hi: f.hi,
            }),
            r2: fit.map(|f| f.r2),
            baseline: None,
            per_in_flight: None,
            points: pts.into_iter().flatten().collect(),
        });
    }

    // Events console-subscriber dropped while the window ran: its task
    // counts are then a lower bound.
    let dropped = |i: usize| {
        samples
            .get(i)
            .and_then(|s| s.console.as_ref())
            .map(|c| c.dropped_events)
    };
    if let (Some(a), Some(b)) = (
        dropped(layout.window.start),
        dropped(layout.window.end.saturating_sub(1)),
    ) {
        if b > a {
            notes.push(format!(
                "the target's console-subscriber dropped {} events during the window (its event buffer was full): \
                 live-task counts are a lower bound",
                b - a
            ));
        }
    }
    let console_on = run
        .meta
        .sources
        .get("console")
        .is_some_and(|c| c.samples > c.failed);
    let memory = metrics
        .iter()
        .any(|m| matches!(m.id.as_str(), "heap" | "rss"));
    if console_on && memory {
        notes.push(
            "console-subscriber was on in the target: it keeps every finished task's data until its retention \
             ends (10 s with leakscope-agent, 1 h by default), so heap and RSS include that, growing per request \
             for as long; judge memory on a run without the console"
                .into(),
        );
    }
    let attribution = attribute(dir, samples, &layout, &mut notes);
    Ok(Analysis {
        dir: dir.to_path_buf(),
        meta: run.meta.clone(),
        samples: samples.len(),
        axis: layout.axis,
        window_requests: layout.window_requests,
        window: (layout.window.start, layout.window.end),
        window_x: window_x(samples, &layout),
        metrics,
        attribution,
        console_on,
        notes,
    })
}

fn window_x(samples: &[Sample], layout: &series::Layout) -> Option<(f64, f64)> {
    let w = &samples[layout.window.clone()];
    let x = |s: &Sample| match layout.axis {
        Axis::Requests => series::requests(s),
        Axis::Seconds => Some(s.t_ms as f64 / 1000.0),
    };
    Some((x(w.first()?)?, x(w.last()?)?))
}

fn map(m: &std::collections::BTreeMap<String, u64>) -> Vec<(String, f64)> {
    m.iter().map(|(k, v)| (k.clone(), *v as f64)).collect()
}

fn list(m: &[(String, u64)]) -> Vec<(String, f64)> {
    m.iter().map(|(k, v)| (k.clone(), *v as f64)).collect()
}

fn source_of(id: &str) -> &'static str {
    match id {
        "heap" => "record with --agent and leakscope-agent in the target",
        "tasks" => "record with --console and console-subscriber in the target",
        _ => "procfs could not read the process",
    }
}

fn attribute(
    dir: &Path,
    samples: &[Sample],
    layout: &series::Layout,
    notes: &mut Vec<String>,
) -> Attribution {
    let mut a = Attribution::default();
    let window: Vec<&Sample> = samples[layout.window.clone()].iter().collect();
    if !window.is_empty() {
        let k = window.len().div_ceil(10);
        let (head, tail) = (&window[..k], &window[window.len() - k..]);
        let g = |get: &dyn Fn(&Sample) -> Vec<(String, f64)>| attribution::growth(head, tail, get);
        a.task_locations = g(&|s| {
            s.console
                .as_ref()
                .map(|c| map(&c.by_location))
                .unwrap_or_default()
        });
        a.task_names = g(&|s| {
            s.console
                .as_ref()
                .map(|c| map(&c.by_name))
                .unwrap_or_default()
        });
        a.fd_kinds = g(&|s| {
            s.proc
                .as_ref()
                .map(|p| map(&p.fds_by_kind))
                .unwrap_or_default()
        });
        a.fd_paths = g(&|s| {
            s.proc
                .as_ref()
                .map(|p| list(&p.top_files))
                .unwrap_or_default()
        });
        a.tcp_states = g(&|s| {
            s.proc
                .as_ref()
                .map(|p| map(&p.tcp_states))
                .unwrap_or_default()
        });
        a.sockets = g(&|s| {
            s.proc
                .as_ref()
                .map(|p| list(&p.top_sockets))
                .unwrap_or_default()
        });
    }
    // Heap: the first and the last profile that exist on disk.
    let named: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.heap_profile.as_ref())
        .collect();
    let present: Vec<&String> = named
        .iter()
        .copied()
        .filter(|n| dir.join(n).is_file())
        .collect();
    for missing in named.iter().filter(|n| !dir.join(n).is_file()) {
        notes.push(format!(
            "heap profile {missing} is listed in samples.jsonl but missing"
        ));
    }
    if let (Some(first), Some(last)) = (present.first(), present.last()) {
        if first != last {
            match attribution::heap_sites(dir, first, last) {
                Ok(sites) => {
                    a.heap_sites = sites;
                    a.heap_profiles = Some(((*first).clone(), (*last).clone()));
                }
                Err(e) => notes.push(format!("heap attribution skipped: {e}")),
            }
        } else {
            notes.push("one heap profile only: no allocation sites to diff".into());
        }
    }
    let dhat = dir.join("dhat-heap.json");
    if dhat.is_file() {
        match attribution::dhat_sites(&dhat) {
            Ok(sites) => a.dhat_sites = sites,
            Err(e) => notes.push(e),
        }
    }
    a
}
