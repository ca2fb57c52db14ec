//! Leak-trend analysis of leakscope run directories.
//!
//! Pure: it reads a run directory (through `leakscope-rundir`, the same
//! crate that wrote it) and computes, per metric of the [`metrics`] table,
//! a robust slope per unit of work with a 95% interval and a verdict
//! ([`trend`] states the rule, [`series`] the work axis, [`ceiling`] the
//! limits), the attribution behind growth ([`attribution`]), and whether
//! the run can carry a gate at all ([`gate`]). No network, no clock, no
//! rendering.

mod activity;
pub mod attribution;
pub(crate) mod ceiling;
pub mod confound;
pub mod describe;
pub mod gate;
mod measure;
pub(crate) mod metrics;
pub mod pprof;
pub mod sensitivity;
pub(crate) mod series;
pub mod trend;

use measure::{fd_kinds, level, rate, Frame};

use std::path::{Path, PathBuf};

use leakscope_rundir::{Meta, Run, RunDirError, Sample, TaskSource, SAMPLES_FILE, TARGET_LOG};
use serde::Serialize;

pub use attribution::Attribution;
pub use ceiling::{Exhaustion, Forecast};
pub use metrics::{Ceiling, CeilingKind, Gate, MetricDef, MetricId, Source, METRICS};
pub use series::{Axis, Point, Unit, Work};
pub use trend::{Fit, IdleEvidence, Judgement, Verdict};

/// The median, `None` for no values. Sorts `v` in place. The analysis's
/// only median: each caller says what an empty input means to it.
///
/// ```
/// use leakscope_analysis::median;
/// assert_eq!(median(&mut []), None);
/// assert_eq!(median(&mut [3.0, 1.0, 10.0, 2.0]), Some(2.5));
/// ```
pub fn median(v: &mut [f64]) -> Option<f64> {
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

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricAnalysis {
    /// "fds", or "fds.socket" for one kind of a metric: [`MetricId::series`]
    /// of `metric` and `kind`, as `check --json` and the report print it.
    pub id: String,
    /// The vocabulary row this series measures.
    pub metric: MetricId,
    /// The fd kind this series counts (`socket`, `file`, …) when it is one
    /// kind of its metric; `None` for the metric as a whole.
    pub kind: Option<String>,
    pub title: String,
    pub unit: Unit,
    /// A rate metric (allocation) has a slope and no verdict: allocating is
    /// not leaking.
    pub rate: bool,
    pub floor: f64,
    pub judgement: Option<Judgement>,
    /// Per unit of work (see the analysis's axis), with its interval.
    pub slope: Option<Estimate>,
    pub r2: Option<f64>,
    /// Median before the work started.
    pub baseline: Option<f64>,
    /// With leakscope's load driver, for a metric that is not a leak: the
    /// rise from the baseline to the plateau divided by the requests in
    /// flight, i.e. what each request holds while it runs.
    pub per_in_flight: Option<f64>,
    /// The ceiling this metric runs into, when the run recorded it.
    pub ceiling: Option<Ceiling>,
    /// EXHAUSTED: when and how the ceiling was reached.
    pub exhaustion: Option<Exhaustion>,
    /// LEAK: time to the ceiling at the observed rate.
    pub forecast: Option<Forecast>,
    /// Every sample's value, for charts.
    pub points: Vec<Point>,
}

impl MetricAnalysis {
    pub fn verdict(&self) -> Option<Verdict> {
        self.judgement.as_ref().map(|j| j.verdict)
    }
}

/// Something the run knows can mimic a leak, and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confounder {
    /// A stable name: `console_retention`.
    pub kind: String,
    /// The metrics (ids) whose verdict it turned INCONCLUSIVE.
    pub metrics: Vec<String>,
    /// What it is, the figures behind it, and what to do.
    pub reason: String,
}

/// leakscope's own load over the run, when it drove one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadTotals {
    pub succeeded: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub dir: PathBuf,
    pub meta: Meta,
    pub samples: usize,
    /// What every slope is "per".
    pub axis: Axis,
    /// How the window was found.
    pub work: Work,
    /// Requests served in the analysis window.
    pub window_requests: Option<f64>,
    /// Sample indices of the analysis window.
    pub window: (usize, usize),
    /// Its first and last x (requests, CPU-seconds or seconds).
    pub window_x: Option<(f64, f64)>,
    /// Sample indices of the idle tail after the work.
    pub idle: (usize, usize),
    /// Units of work per second over the window (requests/s, CPU cores).
    pub work_per_second: Option<f64>,
    pub load: Option<LoadTotals>,
    pub metrics: Vec<MetricAnalysis>,
    pub attribution: Attribution,
    /// console-subscriber answered in this run. Its retained task data then
    /// grows the heap per request until retention ends, so heap and RSS
    /// speak for the target plus its instrumentation.
    pub console_on: bool,
    /// What the run knows can mimic a leak (console-subscriber's retention,
    /// …), and which metrics it decided: such a metric reads INCONCLUSIVE
    /// with the confounder's reason, never LEAK.
    pub confounders: Vec<Confounder>,
    /// Why this run cannot carry a gate: too few samples, no work found,
    /// the load mostly failed. Empty for a usable run.
    pub unusable: Vec<String>,
    /// Things the reader of the report must know: torn lines, missing
    /// profiles, absent sources, too few samples.
    pub notes: Vec<String>,
}

impl Analysis {
    pub fn metric(&self, id: &str) -> Option<&MetricAnalysis> {
        self.metrics.iter().find(|m| m.id == id)
    }

    /// The series of a vocabulary row (not one of its kinds).
    pub fn of(&self, id: MetricId) -> Option<&MetricAnalysis> {
        self.metric(id.as_str())
    }

    /// `scenario` and `variant` labels, or the directory name and "run".
    pub fn scenario(&self) -> String {
        self.meta
            .labels
            .get(leakscope_rundir::labels::SCENARIO)
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
            .get(leakscope_rundir::labels::VARIANT)
            .cloned()
            .unwrap_or_else(|| "run".into())
    }
}

/// Reads and analyses one run directory. Errors only when it cannot be read
/// at all; anything partial becomes a note, anything that voids a verdict
/// an entry of [`Analysis::unusable`].
#[must_use = "the analysis is the verdict; dropping it measures nothing"]
pub fn analyze(dir: &Path) -> Result<Analysis, RunDirError> {
    let run = Run::open(dir)?;
    let mut notes: Vec<String> = run.warnings.iter().map(|w| w.to_string()).collect();
    let samples = &run.samples;
    let layout = series::layout(samples);
    notes.extend(axis_note(&layout));
    let frame = Frame {
        dir,
        meta: &run.meta,
        samples,
        in_flight: in_flight(samples, &layout),
        work_per_second: work_per_second(samples, &layout),
        layout,
    };
    let mut metrics = Vec::new();
    for def in METRICS {
        let pts = series::points(samples, def.value);
        let m = if def.rate {
            rate(&frame, def, pts)
        } else {
            level(&frame, def, None, def.title.into(), def.floor, pts)
        };
        match m {
            Some(m) => metrics.push(m),
            None => notes.push(format!(
                "no {} figures in this run ({})",
                def.title,
                def.source.how_to_enable()
            )),
        }
    }
    metrics.extend(fd_kinds(&frame));
    ceiling::account_kinds(&mut metrics);
    let console_on = run
        .meta
        .sources
        .get(&leakscope_rundir::SourceName::Console)
        .is_some_and(|c| c.samples > c.failed);
    notes.extend(console_notes(samples, &frame.layout, console_on, &metrics));
    let confounders: Vec<Confounder> = console_on
        .then(|| confound::console_retention(samples, &run.meta, &frame.layout, &mut metrics))
        .flatten()
        .into_iter()
        .collect();
    distrust_dropped_tasks(samples, &frame.layout, &mut metrics);
    if let Some(n) = run.meta.oom_kills.filter(|n| *n > 0) {
        notes.push(format!(
            "the OOM killer ended {n} process(es) in the target's cgroup during the recording"
        ));
    }
    let attribution = attribution::attribute(dir, samples, &frame.layout, &mut notes);
    let load = load_totals(samples);
    let layout = &frame.layout;
    let unusable = unusable(samples, layout, load);
    // The report's reader must see them too, not only the gate.
    notes.extend(unusable.iter().map(|u| format!("cannot be gated: {u}")));
    Ok(Analysis {
        dir: dir.to_path_buf(),
        meta: run.meta.clone(),
        samples: samples.len(),
        axis: layout.axis,
        work: layout.work,
        window_requests: layout.window_requests,
        window: (layout.window.start, layout.window.end),
        window_x: window_x(samples, layout),
        idle: (layout.idle.start, layout.idle.end),
        work_per_second: frame.work_per_second,
        unusable,
        load,
        metrics,
        attribution,
        console_on,
        confounders,
        notes,
    })
}

fn axis_note(layout: &series::Layout) -> Option<String> {
    if let Some(rises) = layout.sparse_requests {
        return Some(format!(
            "requests completed in only {rises} sample(s) (slow downloads finish in bursts): judged {}",
            layout.axis.per()
        ));
    }
    match layout.work {
        Work::CpuActive => Some(
            "no request counter advanced (no --metrics, no load driver): judged per CPU-second the target used, \
             over the ticks in which it worked"
                .into(),
        ),
        Work::CpuSustained => Some(
            "no request counter advanced and the target was busy throughout: judged per CPU-second it used, \
             with no idle stretch to show what it keeps"
                .into(),
        ),
        _ => None,
    }
}

/// Median requests in flight over the window, with leakscope's driver.
fn in_flight(samples: &[Sample], layout: &series::Layout) -> Option<f64> {
    let mut v: Vec<f64> = samples[layout.window.clone()]
        .iter()
        .filter_map(|s| s.load.as_ref())
        .filter(|l| l.concurrency > 0)
        .map(|l| l.concurrency as f64)
        .collect();
    median(&mut v)
}

/// Work per wall-clock second over the window.
fn work_per_second(samples: &[Sample], layout: &series::Layout) -> Option<f64> {
    let w = samples.get(layout.window.clone())?;
    let (a, b) = (w.first()?, w.last()?);
    let x = |s: &Sample| series::x(s, layout.axis);
    let dt = b.t_ms.saturating_sub(a.t_ms) as f64 / 1000.0;
    let v = (x(b)? - x(a)?) / dt;
    (dt > 0.0 && v.is_finite() && v > 0.0).then_some(v)
}

/// Events console-subscriber dropped between the window's first and last
/// sample, when both carry the count.
fn dropped_in_window(samples: &[Sample], layout: &series::Layout) -> Option<u64> {
    let dropped = |i: usize| {
        samples
            .get(i)
            .and_then(|s| s.tasks.as_ref())
            .map(|c| c.dropped_events)
    };
    let (a, b) = (
        dropped(layout.window.start)?,
        dropped(layout.window.end.saturating_sub(1))?,
    );
    (b > a).then_some(b - a)
}

/// Live-task counts seen through dropped events are a lower bound: a
/// LEAK stays a LEAK (it grew at least that much), but "levelled off" or
/// "no growth" may be spawns the console never saw, so they become
/// INCONCLUSIVE.
fn distrust_dropped_tasks(
    samples: &[Sample],
    layout: &series::Layout,
    metrics: &mut [MetricAnalysis],
) {
    let Some(n) = dropped_in_window(samples, layout) else {
        return;
    };
    for m in metrics.iter_mut().filter(|m| m.metric == MetricId::Tasks) {
        if let Some(j) = m.judgement.as_mut() {
            if matches!(
                j.verdict,
                Verdict::Bounded | Verdict::Stable | Verdict::Inconclusive
            ) {
                j.verdict = Verdict::Inconclusive;
                // Counts that are a lower bound rule nothing out.
                j.detection_limit = None;
                j.reason = format!(
                    "console-subscriber dropped {n} events during the window, so live-task counts are a lower bound \
                     and a plateau may be spawns it never saw ({}); load it more gently, or count tasks in-process",
                    j.reason
                );
            }
        }
    }
}

fn console_notes(
    samples: &[Sample],
    layout: &series::Layout,
    console_on: bool,
    metrics: &[MetricAnalysis],
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(t) = samples.iter().rev().find_map(|s| s.tasks.as_ref()) {
        notes.push(match t.source {
            TaskSource::AgentHooks => format!("live tasks counted by {}", t.source.describe()),
            TaskSource::Console => format!(
                "live tasks from {}, which drops events under load; \
                 leakscope_agent::tasks::runtime() in the target counts them exactly",
                t.source.describe()
            ),
        });
    }
    // Events console-subscriber dropped while the window ran: its task
    // counts are then a lower bound.
    if let Some(n) = dropped_in_window(samples, layout) {
        notes.push(format!(
            "the target's console-subscriber dropped {n} events during the window (its event buffer was full): \
             live-task counts are a lower bound"
        ));
    }
    let memory = metrics
        .iter()
        .any(|m| matches!(m.metric, MetricId::Heap | MetricId::Rss));
    if console_on && memory {
        notes.push(
            "console-subscriber was on in the target: it keeps every finished task's data until its retention \
             ends (10 s with leakscope-agent, 1 h by default), so heap and RSS include that, growing per request \
             for as long; judge memory on a run without the console"
                .into(),
        );
    }
    notes
}

/// leakscope's driver's totals at the last sample that has them.
fn load_totals(samples: &[Sample]) -> Option<LoadTotals> {
    let l = samples.iter().rev().find_map(|s| s.load.as_ref())?;
    (l.done + l.failed + l.aborted > 0).then_some(LoadTotals {
        succeeded: l.done + l.aborted,
        failed: l.failed,
    })
}

/// Why the run cannot carry a verdict a gate may trust.
fn unusable(samples: &[Sample], layout: &series::Layout, load: Option<LoadTotals>) -> Vec<String> {
    let mut why = series::disorder(samples);
    let n = samples.len();
    if n == 0 {
        why.push(format!(
            "no sample was taken: {SAMPLES_FILE} is empty (the target ended, or the recorder stopped, before the first tick)"
        ));
    } else if n < trend::MIN_POINTS {
        why.push(format!(
            "only {n} sample(s), and a verdict needs {}: record longer or at a shorter --interval",
            trend::MIN_POINTS
        ));
    }
    if let Some(l) = load.filter(|l| l.failed > l.succeeded) {
        why.push(format!(
            "most of leakscope's load failed ({} failed, {} succeeded): the target was not serving it; check --url and {TARGET_LOG}",
            l.failed, l.succeeded
        ));
    }
    if n > 0 && layout.work == Work::None {
        why.push(
            "the target did no measurable work: no request counter advanced and its CPU time stayed at its idle level; \
             drive load while recording (--load/--url), or attach while the service is busy"
                .to_string(),
        );
    }
    why
}

fn window_x(samples: &[Sample], layout: &series::Layout) -> Option<(f64, f64)> {
    let w = &samples[layout.window.clone()];
    let x = |s: &Sample| series::x(s, layout.axis);
    Some((x(w.first()?)?, x(w.last()?)?))
}
