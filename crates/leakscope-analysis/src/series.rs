//! From samples to the series each metric is judged on: the x axis
//! (requests served, or seconds when nothing counted requests), the
//! baseline before the load, and the analysis window.

use leakscope_rundir::Sample;
use serde::Serialize;

/// Share of the loaded range dropped at its start: connection pools, thread
/// caches and lazily built tables fill in the first requests of any service.
pub const WARM_UP: f64 = 0.10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    Requests,
    Seconds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Bytes,
    Count,
}

/// One point of a metric, with both axes so charts can draw either.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub t: f64,
    pub requests: Option<f64>,
    pub y: f64,
}

/// How a run's samples split up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layout {
    pub axis: Axis,
    /// Sample indices before the load started.
    pub baseline: std::ops::Range<usize>,
    /// Sample indices analysed: load running, warm-up dropped.
    pub window: std::ops::Range<usize>,
    /// Requests served between the window's first and last sample.
    pub window_requests: Option<f64>,
    /// Set when requests were counted but advanced in only this many
    /// samples, too few to fit against, so the axis fell back to time.
    pub sparse_requests: Option<usize>,
}

pub fn requests(s: &Sample) -> Option<f64> {
    s.load.as_ref().map(|l| l.requests_total as f64)
}

/// Finds the load in the samples. With a request counter that advanced, the
/// window runs from the first request (plus warm-up) to the last sample in
/// which the count still rose: samples after the load ended would pile up
/// at one x and drag the fit. Without one, it is the whole recording minus
/// the warm-up, on a time axis.
pub fn layout(samples: &[Sample]) -> Layout {
    let n = samples.len();
    let reqs: Vec<Option<f64>> = samples.iter().map(requests).collect();
    let start_count = reqs.iter().flatten().next().copied();
    let first_rise = start_count.and_then(|c0| reqs.iter().position(|r| r.is_some_and(|r| r > c0)));
    let last_rise = (1..n)
        .rev()
        .find(|&i| matches!((reqs[i - 1], reqs[i]), (Some(a), Some(b)) if b > a));
    // The count must advance in enough samples to carry a fit; slow
    // downloads (seconds each) may complete in a handful of bursts, and
    // then time is the better axis.
    let rises = (1..n)
        .filter(|&i| matches!((reqs[i - 1], reqs[i]), (Some(a), Some(b)) if b > a))
        .count();
    if rises < crate::trend::MIN_POINTS {
        let mut l = time_layout(samples);
        l.sparse_requests = (rises > 0).then_some(rises);
        return l;
    }
    if let (Some(first), Some(last)) = (first_rise, last_rise) {
        let x0 = reqs[first].unwrap_or(0.0);
        let x1 = reqs[last].unwrap_or(x0);
        let from = x0 + WARM_UP * (x1 - x0);
        let start = (first..=last)
            .find(|&i| reqs[i].is_some_and(|r| r >= from))
            .unwrap_or(first);
        return Layout {
            axis: Axis::Requests,
            baseline: 0..first,
            window: start..last + 1,
            window_requests: Some(reqs[last].unwrap_or(0.0) - reqs[start].unwrap_or(0.0)),
            sparse_requests: None,
        };
    }
    time_layout(samples)
}

/// The time axis. When leakscope's driver ran the load, its activity (workers
/// busy, bytes arriving) marks where the load ran, so the baseline before it
/// and the settle after it stay out of the window; otherwise the window is
/// the whole recording.
fn time_layout(samples: &[Sample]) -> Layout {
    let n = samples.len();
    let active = |i: usize| {
        let Some(l) = samples[i].load.as_ref() else {
            return false;
        };
        let prev = i.checked_sub(1).and_then(|p| samples[p].load.as_ref());
        l.concurrency > 0
            || prev.is_some_and(|p| l.bytes > p.bytes || l.requests_total > p.requests_total)
    };
    let (first, last) = match (
        (0..n).find(|&i| active(i)),
        (0..n).rev().find(|&i| active(i)),
    ) {
        (Some(f), Some(l)) => (f, l),
        _ => (0, n.saturating_sub(1)),
    };
    let t = |i: usize| samples.get(i).map_or(0.0, |s| s.t_ms as f64);
    let from = t(first) + WARM_UP * (t(last) - t(first));
    let start = (first..n).find(|&i| t(i) >= from).unwrap_or(first);
    Layout {
        axis: Axis::Seconds,
        baseline: 0..first,
        window: start..(last + 1).min(n),
        window_requests: None,
        sparse_requests: None,
    }
}
/// A metric's points over the whole run; `None` where the sample lacks it.
pub fn points(samples: &[Sample], value: impl Fn(&Sample) -> Option<f64>) -> Vec<Option<Point>> {
    samples
        .iter()
        .map(|s| {
            value(s).map(|y| Point {
                t: s.t_ms as f64 / 1000.0,
                requests: requests(s),
                y,
            })
        })
        .collect()
}

/// The (x, y) pairs of `range` on `axis`.
pub fn xy(points: &[Option<Point>], range: std::ops::Range<usize>, axis: Axis) -> Vec<(f64, f64)> {
    points[range]
        .iter()
        .flatten()
        .filter_map(|p| match axis {
            Axis::Requests => p.requests.map(|r| (r, p.y)),
            Axis::Seconds => Some((p.t, p.y)),
        })
        .collect()
}
