//! Trend fitting and the verdict rule.
//!
//! The fit is Theil–Sen (the median of pairwise slopes) with Sen's
//! rank-based 95% confidence interval. Allocator figures move in steps
//! (thread caches, arena growth, a dump of a heap profile), and a
//! least-squares line chases those; the median slope does not. Long series
//! are first reduced to at most [`MAX_POINTS`] bin medians, which keeps the
//! pairwise step cheap and blunts the autocorrelation of neighbouring
//! samples (the interval still assumes independent points, so read it as
//! "about 95%").
//!
//! A resource has three signatures, and the rule reads all three: growth
//! per unit of work while the target works (the *window*, on the work axis
//! of [`crate::series`]), whether that growth levels off while work goes
//! on, and what stays once the target is idle again (the *idle tail*).
//!
//! 1. Fewer than [`MIN_POINTS`] points in the window: INCONCLUSIVE.
//! 2. Growth over the window (slope × span) at least the metric's noise
//!    floor and the slope's interval above zero: the series grows. Then the
//!    *tail* (last third of the window) decides:
//!    - tail slope at least half the overall slope: LEAK (it still grows at
//!      the rate it did);
//!    - tail interval entirely below half the overall slope: BOUNDED (it
//!      grew, then slowed to a plateau while work went on: a cache or a
//!      pool filling up);
//!    - otherwise: INCONCLUSIVE (may be slowing; record longer).
//! 3. Not growing over the window, but the window's level stands at least a
//!    noise floor above the baseline taken before the work: BOUNDED (it
//!    rose with the work and stayed: in-flight buffers, pools, a warm cache).
//! 4. Otherwise: STABLE.
//! 5. The idle tail, when it has at least [`MIN_IDLE`] samples, is evidence
//!    (its level is the median of its last [`MIN_IDLE`] samples, so what is
//!    released during the settle counts):
//!    - back within one noise floor of the baseline: whatever rose was held
//!      only while requests were in flight, and a leak never gives back, so
//!      the verdict is STABLE ("held in flight") whatever 2–3 said;
//!    - still a floor or more above it: a LEAK is confirmed ("kept once
//!      idle"), unless it fell more than a floor from where the work left
//!      it and kept less than the window grew: that is BOUNDED, as is an
//!      INCONCLUSIVE window that did the same (a TTL cache
//!      that purged, leaving a map's capacity), since a leak keeps what it
//!      grew; a BOUNDED stays BOUNDED (a cache keeps its entries too).
//!
//! The floors are physical (see [`crate::metrics`]); the one ratio, half
//! the overall rate, splits "still growing" from "levelling off" in the
//! middle. [`crate::ceiling`] adds EXHAUSTED on top: a metric that reached
//! its ceiling is judged on the samples before it did.

use serde::Serialize;

/// Bin medians a fit works on at most.
pub const MAX_POINTS: usize = 200;
/// Fewer points than this in the window cannot support a verdict.
pub const MIN_POINTS: usize = 8;
/// The tail must keep at least this share of the overall slope to be
/// "still growing".
pub const TAIL_RATIO: f64 = 0.5;
/// Idle samples the tail needs before it counts as evidence: its median
/// then stands on at least four readings, so one odd reading cannot decide.
pub const MIN_IDLE: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// Units of y per unit of x.
    pub slope: f64,
    /// 95% confidence interval of the slope.
    pub lo: f64,
    pub hi: f64,
    pub intercept: f64,
    /// Of the Theil–Sen line, on the points it was fitted to.
    pub r2: f64,
    /// Points the fit used (after binning).
    pub n: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Leak,
    /// A leak that reached its ceiling (the process ran out of descriptors,
    /// or memory).
    Exhausted,
    Bounded,
    Stable,
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Leak => "LEAK",
            Verdict::Exhausted => "EXHAUSTED",
            Verdict::Bounded => "BOUNDED",
            Verdict::Stable => "STABLE",
            Verdict::Inconclusive => "INCONCLUSIVE",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One sentence: which rule decided, with the figures.
    pub reason: String,
    pub fit: Option<Fit>,
    pub tail: Option<Fit>,
    /// slope × the window's x span.
    pub growth: f64,
    /// BOUNDED: the level it settled at (median of the tail).
    pub plateau: Option<f64>,
    /// BOUNDED: the x where it first reached 90% of its rise to the plateau.
    pub plateau_from: Option<f64>,
    /// The level before the work (the baseline's median, or the window's
    /// first tenth without one).
    pub start_level: Option<f64>,
    /// The median of the window's last third: where the level stood when
    /// the work ended.
    pub tail_level: Option<f64>,
    /// The median of the idle tail's last [`MIN_IDLE`] samples, when it had
    /// that many.
    pub idle_level: Option<f64>,
    /// What the idle tail showed.
    pub idle: IdleEvidence,
    /// STABLE and BOUNDED: the smallest leak per unit of work this run
    /// could have called LEAK (see [`detection_limit`]); what the verdict
    /// rules out. `None` where the window could not be fitted.
    pub detection_limit: Option<f64>,
}

/// What the idle tail says about a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleEvidence {
    /// Too few idle samples (none after the work, or a short settle).
    None,
    /// Back within a floor of the baseline: held only in flight.
    Returned,
    /// A floor or more above the baseline once idle.
    Kept,
}

/// Everything one metric's verdict rests on.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// (work, level) while the target worked, warm-up dropped.
    pub window: &'a [(f64, f64)],
    /// Levels before the work began; may be empty.
    pub baseline: &'a [f64],
    /// Levels after the work ended; may be empty.
    pub idle: &'a [f64],
    /// The smallest growth of this metric that is not noise.
    pub floor: f64,
}

/// Medians of consecutive, equally sized bins (points sorted by x), at most
/// `max` of them.
pub fn bin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    if sorted.len() <= max {
        return sorted;
    }
    let per = sorted.len().div_ceil(max);
    sorted
        .chunks(per)
        .filter_map(|c| {
            // `chunks` yields no empty bin, so none is dropped here.
            let mut xs: Vec<f64> = c.iter().map(|p| p.0).collect();
            let mut ys: Vec<f64> = c.iter().map(|p| p.1).collect();
            Some((crate::median(&mut xs)?, crate::median(&mut ys)?))
        })
        .collect()
}

/// Theil–Sen slope with Sen's 95% interval; `None` without two distinct x.
#[must_use = "a fit that is not read decides nothing"]
pub fn theil_sen(points: &[(f64, f64)]) -> Option<Fit> {
    let pts = bin(points, MAX_POINTS);
    let n = pts.len();
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dx = pts[j].0 - pts[i].0;
            if dx != 0.0 {
                slopes.push((pts[j].1 - pts[i].1) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(|a, b| a.total_cmp(b));
    let m = slopes.len();
    let slope = crate::median(&mut slopes.clone())?;
    // Sen (1968): the interval's ends are order statistics of the slopes,
    // C = z·sqrt(Var S) apart around the middle, Var S = n(n-1)(2n+5)/18.
    let nf = n as f64;
    let c = 1.959_964 * (nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0).sqrt();
    let lo_i = (((m as f64 - c) / 2.0).floor().max(1.0) as usize).min(m) - 1;
    let hi_i = (((m as f64 + c) / 2.0).ceil().max(1.0) as usize).min(m) - 1;
    let mut resid: Vec<f64> = pts.iter().map(|p| p.1 - slope * p.0).collect();
    let intercept = crate::median(&mut resid)?;
    let mean_y = pts.iter().map(|p| p.1).sum::<f64>() / nf;
    let ss_tot: f64 = pts.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    let ss_res: f64 = pts
        .iter()
        .map(|p| (p.1 - (intercept + slope * p.0)).powi(2))
        .sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    Some(Fit {
        slope,
        lo: slopes[lo_i],
        hi: slopes[hi_i],
        intercept,
        r2,
        n,
    })
}

/// Judges one series with no idle tail. `window` is the analysis window,
/// `baseline` the values before the work (may be empty), `floor` the
/// smallest growth of this metric that is not noise.
#[must_use = "the judgement is the verdict"]
pub fn judge(window: &[(f64, f64)], baseline: &[f64], floor: f64) -> Judgement {
    judge_evidence(
        &Evidence {
            window,
            baseline,
            idle: &[],
            floor,
        },
        &g,
    )
}

/// The whole rule of the module doc; `fmt` writes the metric's amounts in
/// its reasons ("4.0 MiB" rather than 4194304).
#[must_use = "the judgement is the verdict"]
pub fn judge_evidence(e: &Evidence, fmt: &dyn Fn(f64) -> String) -> Judgement {
    let mut j = judge_window(e.window, e.baseline, e.floor, fmt);
    apply_idle(&mut j, e, fmt);
    if !matches!(j.verdict, Verdict::Stable | Verdict::Bounded) {
        j.detection_limit = None;
    }
    j
}

/// The smallest leak per unit of work that rule 2 would have called LEAK
/// on this run: what a STABLE or BOUNDED verdict rules out.
///
/// Why it is exact rather than a rule of thumb: take the run's noise as
/// what is left once its fitted slope is taken out, and put a leak of `r`
/// per unit of work under it. Every pairwise slope moves by `r - slope`,
/// so the Theil–Sen slope becomes `r`, its interval's lower end
/// `r - (slope - lo)` and the tail's slope `r - (slope - tail)`. Rule 2
/// then needs r·span ≥ floor, `r > slope - lo`, and the tail at least
/// half of `r`: the largest of the three bounds is the limit. The floor
/// term shrinks as 1/work, the interval's at least as fast, so more work
/// lowers the limit at least in proportion.
pub fn detection_limit(fit: &Fit, tail: Option<&Fit>, span: f64, floor: f64) -> Option<f64> {
    if span.is_nan() || span <= 0.0 {
        return None;
    }
    let by_floor = floor / span;
    let by_interval = fit.slope - fit.lo;
    let by_tail = tail.map_or(0.0, |t| (fit.slope - t.slope) / (1.0 - TAIL_RATIO));
    let r = by_floor.max(by_interval).max(by_tail);
    r.is_finite().then_some(r)
}

/// Rule 5: what stays once the target is idle.
fn apply_idle(j: &mut Judgement, e: &Evidence, fmt: &dyn Fn(f64) -> String) {
    if e.idle.len() < MIN_IDLE {
        return;
    }
    // The end of the tail decides: what is released during the settle (a
    // TTL purge, console-subscriber's retention) shows in its last samples.
    let end = &e.idle[e.idle.len() - MIN_IDLE..];
    let (Some(start), Some(idle)) = (j.start_level, crate::median(&mut end.to_vec())) else {
        return;
    };
    j.idle_level = Some(idle);
    let kept = idle - start;
    if kept < e.floor {
        j.idle = IdleEvidence::Returned;
        // An INCONCLUSIVE window (too short or slowing) counts too: a leak
        // never gives back, whatever the window could not decide.
        let judged = j.fit.is_some() || j.verdict == Verdict::Inconclusive && j.growth > 0.0;
        if matches!(
            j.verdict,
            Verdict::Leak | Verdict::Bounded | Verdict::Inconclusive
        ) && judged
        {
            let peak = j.plateau.or(j.tail_level).unwrap_or(start + j.growth);
            j.verdict = Verdict::Stable;
            // What was held in flight, for the per-request figure.
            j.plateau = Some(peak);
            j.reason = format!(
                "held in flight: rose to {} while working and fell back to {} once idle, within the floor {} of the baseline {}",
                fmt(peak),
                fmt(idle),
                fmt(e.floor),
                fmt(start)
            );
        }
    } else if matches!(j.verdict, Verdict::Leak | Verdict::Inconclusive)
        && gave_back(e, idle)
        && kept + e.floor < j.growth
    {
        // It kept something, but fell from where the work left it and kept
        // less than the window grew: a leak keeps all its growth (a TTL
        // cache purging while a map keeps its capacity does not).
        j.idle = IdleEvidence::Kept;
        let peak = window_end(e).unwrap_or(start + j.growth);
        j.verdict = Verdict::Bounded;
        j.plateau = Some(peak);
        j.reason = format!(
            "grew {} while working, then gave back all but {} once idle: a leak keeps what it grew",
            fmt(j.growth),
            fmt(kept)
        );
    } else {
        j.idle = IdleEvidence::Kept;
        if j.verdict == Verdict::Leak {
            j.reason.push_str(&format!(
                "; once idle it kept {} above the baseline",
                fmt(kept)
            ));
        }
    }
}

/// The level where the work left off: the median of the window's last
/// [`MIN_IDLE`] points.
fn window_end(e: &Evidence) -> Option<f64> {
    let from = e.window.len().checked_sub(MIN_IDLE)?;
    crate::median(&mut e.window[from..].iter().map(|p| p.1).collect::<Vec<_>>())
}

/// Whether the idle level fell more than a floor below where the work left
/// off. A count that lags (console-subscriber catching up) rises instead.
fn gave_back(e: &Evidence, idle: f64) -> bool {
    window_end(e).is_some_and(|end| end - idle > e.floor)
}

/// Rules 1–4, on the window alone.
fn judge_window(
    window: &[(f64, f64)],
    baseline: &[f64],
    floor: f64,
    fmt: &dyn Fn(f64) -> String,
) -> Judgement {
    if window.len() < MIN_POINTS {
        return inconclusive(
            baseline,
            format!(
                "{} samples in the analysis window; a verdict needs {MIN_POINTS}",
                window.len()
            ),
        );
    }
    let Some(fit) = theil_sen(window) else {
        return inconclusive(
            baseline,
            "the load did not advance during the window".into(),
        );
    };
    let mut sorted = window.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (x0, x1) = (sorted[0].0, sorted[sorted.len() - 1].0);
    let growth = fit.slope * (x1 - x0);
    let tail_pts = last_third(&sorted);
    let tail = theil_sen(&tail_pts);
    let mut tail_ys: Vec<f64> = tail_pts.iter().map(|p| p.1).collect();
    // Never empty: the tail keeps at least half of the window.
    let Some(plateau) = crate::median(&mut tail_ys) else {
        return inconclusive(baseline, "the window's last third holds no sample".into());
    };
    // Never empty: the baseline, else the window's first tenth.
    let Some(start_level) = start_level(baseline, &sorted) else {
        return inconclusive(baseline, "no level to start from".into());
    };
    let mut j = Judgement {
        verdict: Verdict::Stable,
        reason: String::new(),
        fit: Some(fit),
        tail,
        growth,
        plateau: None,
        plateau_from: None,
        start_level: Some(start_level),
        tail_level: Some(plateau),
        idle_level: None,
        idle: IdleEvidence::None,
        detection_limit: detection_limit(&fit, tail.as_ref(), x1 - x0, floor),
    };
    // Where the series first reached 90% of the way to `level`.
    let reached = |level: f64| {
        let target = start_level + 0.9 * (level - start_level);
        sorted.iter().find(|p| p.1 >= target).map(|p| p.0)
    };
    if growth >= floor && fit.lo > 0.0 {
        judge_growth(&mut j, fit, floor, fmt);
        if j.verdict == Verdict::Bounded {
            j.plateau = Some(plateau);
            j.plateau_from = reached(plateau);
        }
        return j;
    }
    let rise = plateau - start_level;
    if !baseline.is_empty() && rise >= floor {
        j.verdict = Verdict::Bounded;
        j.plateau = Some(plateau);
        j.plateau_from = reached(plateau);
        j.reason = format!(
            "rose {} above the pre-load baseline with the load, then stayed level (window growth {} under the floor {})",
            fmt(rise),
            fmt(growth),
            fmt(floor)
        );
        return j;
    }
    j.reason = if fit.lo > 0.0 {
        format!(
            "grows {}, under the noise floor {}",
            fmt(growth),
            fmt(floor)
        )
    } else {
        format!(
            "no significant growth (slope interval {} to {} per unit)",
            g(fit.lo),
            g(fit.hi)
        )
    };
    j
}

/// No verdict, for `reason`; the level before the load when there was one.
fn inconclusive(baseline: &[f64], reason: String) -> Judgement {
    Judgement {
        verdict: Verdict::Inconclusive,
        reason,
        fit: None,
        tail: None,
        growth: 0.0,
        plateau: None,
        plateau_from: None,
        start_level: crate::median(&mut baseline.to_vec()),
        tail_level: None,
        idle_level: None,
        idle: IdleEvidence::None,
        detection_limit: None,
    }
}

/// The window's last third by work (`sorted` by x), or its second half
/// when the last third has too few points to fit.
fn last_third(sorted: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let (x0, x1) = (sorted[0].0, sorted[sorted.len() - 1].0);
    let tail_from = x0 + (x1 - x0) * 2.0 / 3.0;
    let tail: Vec<(f64, f64)> = sorted
        .iter()
        .copied()
        .filter(|p| p.0 >= tail_from)
        .collect();
    if tail.len() < MIN_POINTS / 2 {
        sorted[sorted.len() / 2..].to_vec()
    } else {
        tail
    }
}

/// The level growth is measured from: the pre-load baseline, else the
/// window's first tenth.
fn start_level(baseline: &[f64], sorted: &[(f64, f64)]) -> Option<f64> {
    let mut b = baseline.to_vec();
    if b.is_empty() {
        b = sorted
            .iter()
            .take(sorted.len().div_ceil(10))
            .map(|p| p.1)
            .collect();
    }
    crate::median(&mut b)
}

/// The window grew past the floor with its slope interval above zero: a
/// leak if the last third still grows at `TAIL_RATIO` of the rate, bounded
/// if its interval is below that, else inconclusive.
fn judge_growth(j: &mut Judgement, fit: Fit, floor: f64, fmt: &dyn Fn(f64) -> String) {
    let growth = j.growth;
    let Some(tail) = j.tail else {
        j.verdict = Verdict::Inconclusive;
        j.reason = "grows, but the tail has too few distinct points to tell if it slows".into();
        return;
    };
    let share = 100.0 * tail.slope / fit.slope;
    if tail.slope >= TAIL_RATIO * fit.slope {
        j.verdict = Verdict::Leak;
        j.reason = format!(
            "grows {} over the window (floor {}), slope interval above zero, and the last third still grows at {share:.0}% of that rate",
            fmt(growth),
            fmt(floor),
        );
    } else if tail.hi < TAIL_RATIO * fit.slope {
        j.verdict = Verdict::Bounded;
        j.reason = format!(
            "grew {} over the window, then the last third slowed to {share:.0}% of that rate (interval below {:.0}%)",
            fmt(growth),
            100.0 * TAIL_RATIO
        );
    } else {
        j.verdict = Verdict::Inconclusive;
        j.reason = format!(
            "grows {} over the window, but the last third's rate ({share:.0}% of it) cannot be told from a plateau or a leak; record longer",
            fmt(growth),
        );
    }
}

/// Numbers in reasons: short, no spurious digits.
fn g(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3e}")
    }
}
