//! One metric of one run: its series judged by the trend rule (a level,
//! or a rate per second), then held against its ceiling; and the fd
//! kinds, each judged as a level of its own.

use super::*;

/// What every series of one run is judged against.
pub(crate) struct Frame<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) meta: &'a Meta,
    pub(crate) samples: &'a [Sample],
    pub(crate) layout: series::Layout,
    /// Median requests in flight during the window (leakscope's driver).
    pub(crate) in_flight: Option<f64>,
    pub(crate) work_per_second: Option<f64>,
}

/// One level metric: the trend rule, then its ceiling.
pub(crate) fn level(
    f: &Frame,
    def: &MetricDef,
    kind: Option<String>,
    title: String,
    floor: f64,
    pts: Vec<Option<series::Point>>,
) -> Option<MetricAnalysis> {
    if pts.iter().all(Option::is_none) {
        return None;
    }
    let l = &f.layout;
    let ceiling = def.ceiling.and_then(|k| k.of(&f.meta.limits));
    // Only the whole of a metric meets its ceiling, not one kind of it.
    let whole = kind.is_none();
    let reached = ceiling
        .as_ref()
        .filter(|_| whole)
        .and_then(|c| ceiling::reached(&pts, c.value, floor))
        .or_else(|| oom_reached(f, def, &pts).filter(|_| whole));
    // At the ceiling the series is flat because it cannot grow: judge the
    // samples before it, and take no idle evidence from after it.
    let (window, idle) = match reached {
        Some(r) => (l.baseline.end.min(r)..(r + 1).min(pts.len()), r..r),
        None => (l.window.clone(), l.idle.clone()),
    };
    let xy = series::xy(&pts, window, l.axis);
    let baseline = series::levels(&pts, l.baseline.clone());
    let idle = series::levels(&pts, idle);
    let evidence = trend::Evidence {
        window: &xy,
        baseline: &baseline,
        idle: &idle,
        floor,
    };
    let mut judgement = trend::judge_evidence(&evidence, &|v| describe::amount(v, def.unit));
    let exhaustion = reached.map(|r| exhaust(f, def, &pts, r, ceiling.clone(), &mut judgement));
    let forecast = match (
        &ceiling,
        judgement.verdict,
        judgement.fit,
        f.work_per_second,
    ) {
        (Some(c), Verdict::Leak, Some(fit), Some(wps)) if whole => {
            let last = pts.iter().rev().flatten().next().map(|p| p.y)?;
            ceiling::forecast(c.clone(), fit.slope, wps, last)
        }
        _ => None,
    };
    let baseline = median(&mut baseline.clone());
    let per_in_flight = match (judgement.verdict, judgement.plateau, baseline, f.in_flight) {
        (Verdict::Bounded | Verdict::Stable, Some(p), Some(b), Some(c)) => Some((p - b) / c),
        _ => None,
    };
    Some(MetricAnalysis {
        id: def.id.series(kind.as_deref()),
        metric: def.id,
        kind,
        title,
        unit: def.unit,
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
        per_in_flight,
        ceiling,
        exhaustion,
        forecast,
        points: pts.into_iter().flatten().collect(),
    })
}

/// A memory metric of a target the OOM killer ended: at its ceiling at the
/// last sample.
fn oom_reached(f: &Frame, def: &MetricDef, pts: &[Option<series::Point>]) -> Option<usize> {
    let killed = f.meta.oom_kills.is_some_and(|n| n > 0);
    (killed && def.ceiling == Some(CeilingKind::Memory))
        .then(|| pts.iter().rposition(Option::is_some))
        .flatten()
}

/// Turns a judgement into EXHAUSTED at sample `r`, with what followed.
fn exhaust(
    f: &Frame,
    def: &MetricDef,
    pts: &[Option<series::Point>],
    r: usize,
    ceiling: Option<Ceiling>,
    j: &mut Judgement,
) -> Exhaustion {
    let p = pts[r].expect("reached is a sample with a value");
    let failed = |i: usize| f.samples.get(i)?.load.as_ref().map(|l| l.failed);
    let last = f.samples.len().saturating_sub(1);
    let failed_after = failed(last)
        .zip(failed(r))
        .map(|(b, a)| b.saturating_sub(a));
    let oom_killed =
        f.meta.oom_kills.is_some_and(|n| n > 0) && def.ceiling == Some(CeilingKind::Memory);
    let log = def
        .ceiling
        .and_then(|k| ceiling::log_signs(&f.dir.join(TARGET_LOG), k));
    let ceiling = ceiling.unwrap_or(Ceiling {
        value: p.y,
        what: "the memory the OOM killer allowed",
    });
    let rate = j
        .fit
        .filter(|fit| fit.lo > 0.0)
        .map(|fit| {
            format!(
                ", growing {} {} until then",
                describe::amount(fit.slope, def.unit),
                f.layout.axis.per()
            )
        })
        .unwrap_or_default();
    let after = p
        .requests
        .map(|n| format!(" after {n:.0} requests"))
        .unwrap_or_default();
    j.verdict = Verdict::Exhausted;
    j.reason = if oom_killed {
        format!(
            "the OOM killer ended the target at {:.1} s{after}{rate}",
            p.t
        )
    } else {
        format!(
            "reached its ceiling ({} of {}) at {:.1} s{after}{rate}",
            ceiling.what,
            describe::amount(ceiling.value, def.unit),
            p.t
        )
    };
    Exhaustion {
        ceiling,
        sample: r,
        t: p.t,
        requests: p.requests,
        level: p.y,
        failed_after,
        oom_killed,
        log,
    }
}

/// Allocation: bytes allocated per unit of work, from the cumulative
/// counter.
pub(crate) fn rate(
    f: &Frame,
    def: &MetricDef,
    pts: Vec<Option<series::Point>>,
) -> Option<MetricAnalysis> {
    if pts.iter().all(Option::is_none) {
        return None;
    }
    let fit = trend::theil_sen(&series::xy(&pts, f.layout.window.clone(), f.layout.axis));
    Some(MetricAnalysis {
        id: def.id.series(None),
        metric: def.id,
        kind: None,
        title: def.title.into(),
        unit: def.unit,
        rate: true,
        floor: def.floor,
        judgement: None,
        slope: fit.map(|f| Estimate {
            value: f.slope,
            lo: f.lo,
            hi: f.hi,
        }),
        r2: fit.map(|f| f.r2),
        baseline: None,
        per_in_flight: None,
        ceiling: None,
        exhaustion: None,
        forecast: None,
        points: pts.into_iter().flatten().collect(),
    })
}

/// One series per kind of fd (file, socket, pipe, anon_inode, …).
pub(crate) fn fd_kinds(f: &Frame) -> Vec<MetricAnalysis> {
    let kinds: std::collections::BTreeSet<String> = f
        .samples
        .iter()
        .filter_map(|s| s.proc.as_ref())
        .flat_map(|p| p.fds_by_kind.keys().cloned())
        .collect();
    let def = MetricId::Fds.def();
    kinds
        .into_iter()
        .filter_map(|kind| {
            let pts = series::points(f.samples, |s| {
                s.proc
                    .as_ref()
                    .map(|p| p.fds_by_kind.get(&kind).copied().unwrap_or(0) as f64)
            });
            level(
                f,
                def,
                Some(kind.clone()),
                format!("{kind} fds"),
                metrics::FD_KIND_FLOOR,
                pts,
            )
        })
        .collect()
}
