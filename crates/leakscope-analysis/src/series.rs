//! From samples to the series each metric is judged on: the work axis, the
//! baseline before the work, the analysis window while the target worked,
//! and the idle tail after it.
//!
//! The *work axis* is what a resource is measured against, in this order:
//! 1. **requests served**, when a counter advanced in enough samples: the
//!    target's own `/metrics` counter, or leakscope's driver counting only
//!    requests that succeeded;
//! 2. **seconds while leakscope's driver was busy**, when requests were
//!    counted but finish in bursts too rare to fit against (slow downloads);
//! 3. **the target's read/write syscalls** (`syscr + syscw` in
//!    `/proc/PID/io`), when nothing counts requests: a service attached with
//!    `record --pid` while someone else's load runs. Every request costs at
//!    least a read and a write, while timers, leaked tasks ticking and
//!    idle housekeeping cost none, so the count grows with requests only,
//!    and the ticks in which it rose well above its idle level are where
//!    the target served;
//! 4. **the target's CPU time** (user + system, from `/proc/PID/stat`),
//!    when `/proc/PID/io` is unreadable or shows no work: serving costs CPU,
//!    so CPU-seconds measure work done.
//!
//! Without any of these the recording shows no work at all, and nothing can
//! be judged per unit of it ([`Work::None`]).

use std::ops::Range;

use leakscope_rundir::{Sample, SAMPLES_FILE};

use crate::activity::{self, Activity};
use serde::Serialize;

/// Share of the loaded range dropped at its start: connection pools, thread
/// caches and lazily built tables fill in the first requests of any service.
pub const WARM_UP: f64 = 0.10;

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 1/100 s on every
/// Linux architecture.
pub const CPU_QUANTUM_S: f64 = 0.01;

/// Syscall counts are exact: their quantum is one call.
pub const SYSCALL_QUANTUM: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// Requests served.
    Requests,
    /// Read/write syscalls the target made.
    Syscalls,
    /// CPU-seconds the target used.
    Cpu,
    /// Wall-clock seconds.
    Seconds,
}

impl Axis {
    /// "per request", "per CPU-second", "per second".
    pub fn per(self) -> &'static str {
        match self {
            Axis::Requests => "per request",
            Axis::Syscalls => "per read/write syscall",
            Axis::Cpu => "per CPU-second",
            Axis::Seconds => "per second",
        }
    }

    /// The axis's name in charts and sentences.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Requests => "requests served",
            Axis::Syscalls => "read/write syscalls the target made",
            Axis::Cpu => "CPU-seconds the target used",
            Axis::Seconds => "seconds",
        }
    }
}

/// How the analysis found where the target worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// A request counter advanced.
    RequestsCounted,
    /// leakscope's driver was busy, but requests finished too rarely.
    DriverBusy,
    /// Read/write syscalls above the idle level in part of the recording.
    IoActive,
    /// Read/write syscalls at a working level throughout.
    IoSustained,
    /// CPU above the idle level in part of the recording.
    CpuActive,
    /// CPU busy throughout: no idle stretch to tell apart.
    CpuSustained,
    /// No counter advanced and neither syscalls nor CPU rose above their
    /// idle level.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Bytes,
    Count,
}

/// One point of a metric, with every axis so charts can draw any.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub t: f64,
    pub requests: Option<f64>,
    /// Read/write syscalls the target had made by then.
    pub syscalls: Option<f64>,
    /// CPU-seconds the target had used by then.
    pub cpu: Option<f64>,
    pub y: f64,
}

impl Point {
    pub fn x(&self, axis: Axis) -> Option<f64> {
        match axis {
            Axis::Requests => self.requests,
            Axis::Syscalls => self.syscalls,
            Axis::Cpu => self.cpu,
            Axis::Seconds => Some(self.t),
        }
    }
}

/// How a run's samples split up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layout {
    pub axis: Axis,
    pub work: Work,
    /// Sample indices before the work started.
    pub baseline: Range<usize>,
    /// Sample indices analysed: the target working, warm-up dropped.
    pub window: Range<usize>,
    /// Sample indices after the work ended: the settle after `run`'s load,
    /// the quiet end of a `record`. What a resource does here is evidence.
    pub idle: Range<usize>,
    /// Requests served between the window's first and last sample.
    pub window_requests: Option<f64>,
    /// Set when requests were counted but advanced in only this many
    /// samples, too few to fit against, so the axis fell back to time.
    pub sparse_requests: Option<usize>,
}

/// What makes the samples no timeline: a sample earlier than the one
/// before it (by `seq` or `t_ms`), or a request counter that goes down (a
/// counter reset: the target restarted, or another process answers the
/// scrape). Either breaks every slope, so the run cannot be judged.
pub fn disorder(samples: &[Sample]) -> Vec<String> {
    let mut why = Vec::new();
    let back = samples
        .windows(2)
        .find(|w| w[1].seq <= w[0].seq || w[1].t_ms < w[0].t_ms);
    if let Some(w) = back {
        why.push(format!(
            "samples go back (seq {} at {} ms follows seq {} at {} ms): {SAMPLES_FILE} was reordered or mixed",
            w[1].seq, w[1].t_ms, w[0].seq, w[0].t_ms
        ));
    }
    let counted: Vec<(u64, u64)> = samples
        .iter()
        .filter_map(|s| Some((s.seq, s.load.as_ref()?.requests_total)))
        .collect();
    if let Some(w) = counted.windows(2).find(|w| w[1].1 < w[0].1) {
        why.push(format!(
            "the request counter went down from {} to {} at seq {}: a counter reset (the target restarted?) breaks the requests axis",
            w[0].1, w[1].1, w[1].0
        ));
    }
    why
}

pub fn requests(s: &Sample) -> Option<f64> {
    s.load.as_ref().map(|l| l.requests_total as f64)
}

pub fn cpu(s: &Sample) -> Option<f64> {
    s.proc
        .as_ref()
        .map(|p| p.cpu_user_seconds + p.cpu_system_seconds)
}

pub fn syscalls(s: &Sample) -> Option<f64> {
    s.proc.as_ref()?.io_syscalls.map(|n| n as f64)
}

/// Where sample `s` lies on `axis`.
pub fn x(s: &Sample, axis: Axis) -> Option<f64> {
    match axis {
        Axis::Requests => requests(s),
        Axis::Syscalls => syscalls(s),
        Axis::Cpu => cpu(s),
        Axis::Seconds => Some(s.t_ms as f64 / 1000.0),
    }
}

/// Finds the work in the samples; see the module doc for the order.
pub fn layout(samples: &[Sample]) -> Layout {
    let reqs: Vec<Option<f64>> = samples.iter().map(requests).collect();
    let rises: Vec<usize> = (1..samples.len())
        .filter(|&i| matches!((reqs[i - 1], reqs[i]), (Some(a), Some(b)) if b > a))
        .collect();
    if rises.len() >= crate::trend::MIN_POINTS {
        return request_layout(samples, &reqs, rises[0], rises[rises.len() - 1]);
    }
    let sparse = (!rises.is_empty()).then_some(rises.len());
    if let Some((first, last)) = driver_busy(samples) {
        let mut l = span_layout(samples, first, last, Axis::Seconds, Work::DriverBusy);
        l.sparse_requests = sparse;
        return l;
    }
    let mut l = activity_layout(samples, Axis::Syscalls, SYSCALL_QUANTUM)
        .filter(|l| l.work != Work::None)
        .unwrap_or_else(|| {
            activity_layout(samples, Axis::Cpu, CPU_QUANTUM_S).unwrap_or_else(|| {
                let mut l = whole(samples, Axis::Seconds, Work::None);
                l.idle = samples.len()..samples.len();
                l
            })
        });
    l.sparse_requests = sparse;
    l
}

/// The window runs from the first request (plus warm-up) to the last sample
/// in which the count still rose; samples after it are the idle tail.
fn request_layout(samples: &[Sample], reqs: &[Option<f64>], first: usize, last: usize) -> Layout {
    let x0 = reqs[first - 1].unwrap_or(0.0);
    let x1 = reqs[last].unwrap_or(x0);
    let from = x0 + WARM_UP * (x1 - x0);
    let start = (first..=last)
        .find(|&i| reqs[i].is_some_and(|r| r >= from))
        .unwrap_or(first);
    Layout {
        axis: Axis::Requests,
        work: Work::RequestsCounted,
        baseline: 0..first,
        window: start..last + 1,
        idle: last + 1..samples.len(),
        window_requests: Some(reqs[last].unwrap_or(0.0) - reqs[start].unwrap_or(0.0)),
        sparse_requests: None,
    }
}

/// First and last sample in which leakscope's driver was busy (workers
/// active, or bytes or requests arriving).
fn driver_busy(samples: &[Sample]) -> Option<(usize, usize)> {
    let active = |i: usize| {
        let Some(l) = samples[i].load.as_ref() else {
            return false;
        };
        let prev = i.checked_sub(1).and_then(|p| samples[p].load.as_ref());
        l.concurrency > 0
            || prev.is_some_and(|p| l.bytes > p.bytes || l.requests_total > p.requests_total)
    };
    let n = samples.len();
    Some((
        (0..n).find(|&i| active(i))?,
        (0..n).rev().find(|&i| active(i))?,
    ))
}

/// A window over samples `first..=last` on `axis`, warm-up dropped.
fn span_layout(samples: &[Sample], first: usize, last: usize, axis: Axis, work: Work) -> Layout {
    let x = |i: usize| samples.get(i).and_then(|s| x(s, axis));
    let (x0, x1) = (x(first).unwrap_or(0.0), x(last).unwrap_or(0.0));
    let from = x0 + WARM_UP * (x1 - x0);
    let start = (first..=last)
        .find(|&i| x(i).is_some_and(|v| v >= from))
        .unwrap_or(first);
    // Clamped, so an empty recording gives empty ranges, never past its end.
    let n = samples.len();
    Layout {
        axis,
        work,
        baseline: 0..first.min(n),
        window: start.min(n)..(last + 1).min(n),
        idle: (last + 1).min(n)..n,
        window_requests: None,
        sparse_requests: None,
    }
}

/// The whole recording as the window, with no baseline or idle tail.
fn whole(samples: &[Sample], axis: Axis, work: Work) -> Layout {
    let n = samples.len();
    let mut l = span_layout(samples, 0, n.saturating_sub(1), axis, work);
    l.baseline = 0..0;
    l.idle = n..n;
    l
}

/// An activity axis (syscalls or CPU): the window spans the ticks in which
/// the counter rose at its working level rather than its idle one. `None`
/// when too few samples carry the counter.
fn activity_layout(samples: &[Sample], axis: Axis, quantum: f64) -> Option<Layout> {
    let (active, sustained) = match axis {
        Axis::Syscalls => (Work::IoActive, Work::IoSustained),
        _ => (Work::CpuActive, Work::CpuSustained),
    };
    Some(
        match activity::working_ticks(samples, |s| x(s, axis), quantum)? {
            // Tick `first` is the interval that ends at sample `first`: the
            // work began after sample `first - 1`, the last idle level.
            Activity::Part(first, last) => span_layout(samples, first - 1, last, axis, active),
            Activity::Throughout => whole(samples, axis, sustained),
            Activity::None => whole(samples, Axis::Seconds, Work::None),
        },
    )
}

/// A metric's points over the whole run; `None` where the sample lacks it.
pub fn points(samples: &[Sample], value: impl Fn(&Sample) -> Option<f64>) -> Vec<Option<Point>> {
    samples
        .iter()
        .map(|s| {
            value(s).map(|y| Point {
                t: s.t_ms as f64 / 1000.0,
                requests: requests(s),
                syscalls: syscalls(s),
                cpu: cpu(s),
                y,
            })
        })
        .collect()
}

/// The (x, y) pairs of `range` on `axis`.
pub fn xy(points: &[Option<Point>], range: Range<usize>, axis: Axis) -> Vec<(f64, f64)> {
    points[range]
        .iter()
        .flatten()
        .filter_map(|p| p.x(axis).map(|x| (x, p.y)))
        .collect()
}

/// The levels of `range`.
pub fn levels(points: &[Option<Point>], range: Range<usize>) -> Vec<f64> {
    points[range].iter().flatten().map(|p| p.y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_rundir::ProcSample;

    fn sample(i: u64, cpu_s: f64) -> Sample {
        Sample {
            seq: i,
            t_ms: i * 250,
            proc: Some(ProcSample {
                cpu_user_seconds: cpu_s,
                ..ProcSample::default()
            }),
            ..Sample::default()
        }
    }

    /// Idle 10 ticks, busy 20 (one core: 0.25 s per tick), idle 10, with a
    /// lone spike (a heap-profile dump) in each idle stretch.
    #[test]
    fn cpu_window_is_where_the_target_burned_cpu_and_ignores_lone_spikes() {
        let mut cpu_s = 0.0;
        let mut samples = Vec::new();
        for i in 0..40u64 {
            cpu_s += match i {
                3 | 35 => 0.2,
                10..=29 => 0.25,
                _ => 0.0,
            };
            samples.push(sample(i, cpu_s));
        }
        let l = layout(&samples);
        assert_eq!(l.axis, Axis::Cpu);
        assert_eq!(l.work, Work::CpuActive);
        assert_eq!(l.baseline, 0..9);
        assert_eq!(l.window.end, 30);
        assert!((9..13).contains(&l.window.start), "{:?}", l.window);
        assert_eq!(l.idle, 30..40);
    }

    /// `record --pid` on a service that slows as it leaks: 3 fast ticks,
    /// then 17 at half the pace, then idle. Every busy tick is work; a split
    /// by difference put the slow ones with the idle ones (the leak zoo's
    /// task-channel mode, judged on 3 samples).
    #[test]
    fn a_service_slowing_down_is_still_working() {
        let mut io = 0.0;
        let samples: Vec<Sample> = (0..45u64)
            .map(|i| {
                io += match i {
                    6..=8 => 2200.0,
                    9..=25 => 1000.0,
                    _ => 5.0,
                };
                Sample {
                    seq: i,
                    t_ms: i * 100,
                    proc: Some(ProcSample {
                        io_syscalls: Some(io as u64),
                        ..ProcSample::default()
                    }),
                    ..Sample::default()
                }
            })
            .collect();
        let l = layout(&samples);
        assert_eq!((l.axis, l.work), (Axis::Syscalls, Work::IoActive));
        assert_eq!(l.baseline, 0..5);
        assert_eq!(l.window.end, 26);
        assert_eq!(l.idle, 26..45);
    }

    #[test]
    fn cpu_at_its_quantum_is_no_work_and_steady_cpu_is_sustained() {
        let quiet: Vec<Sample> = (0..20)
            .map(|i| sample(i, (i / 7) as f64 * CPU_QUANTUM_S))
            .collect();
        assert_eq!(layout(&quiet).work, Work::None);
        let busy: Vec<Sample> = (0..20).map(|i| sample(i, i as f64 * 0.2)).collect();
        let l = layout(&busy);
        assert_eq!((l.axis, l.work), (Axis::Cpu, Work::CpuSustained));
        assert!(l.idle.is_empty());
    }
}
