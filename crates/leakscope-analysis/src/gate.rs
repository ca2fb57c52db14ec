//! The CI gate: which limits a run breaks, which it could not be checked
//! against, and whether it can be judged at all. `leakscope check` prints
//! [`CheckReport`]; its JSON form (`--json`) is this struct, versioned by
//! [`CHECK_SCHEMA`] and described by `docs/check-json.schema.json`.
//!
//! The gate cannot pass by accident:
//! - an unusable run ([`crate::Analysis::unusable`]) is neither pass nor
//!   fail: exit 2, with the reasons;
//! - EXHAUSTED always fails;
//! - a LEAK fails when its slope per request is above the metric's limit,
//!   and always on an axis that is not requests (there is no per-request
//!   figure to hold against a per-request limit);
//! - INCONCLUSIVE on a gated metric fails, unless allowed;
//! - with no heap figures, RSS is gated in their place;
//! - a limit with no source to check it against is named, not silently
//!   passed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::{
    describe, Analysis, Attribution, Axis, Confounder, Estimate, Gate, MetricAnalysis, MetricId,
    Unit, Verdict, METRICS,
};

/// The version of [`CheckReport`]'s JSON, `schema_version` in it and the
/// version in `docs/check-json.schema.json`'s `$id`. 2: the attribution,
/// the detection limits, the confounders and the recording's facts were
/// added, and `schema` became `schema_version`.
pub const CHECK_SCHEMA: u32 = 2;

/// Per-request limits of the gate, each finite and non-negative.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// The most a LEAK may add per request, by gated metric (bytes for
    /// heap and RSS, a count for fds and tasks); a gated metric not named
    /// is held to 0: any LEAK fails.
    pub per_request: BTreeMap<MetricId, f64>,
    /// INCONCLUSIVE on a gated metric passes instead of failing.
    pub allow_inconclusive: bool,
    /// Metrics a sensitivity was asked for (`check --sensitivity`): gated
    /// too, even one the table gates only without another's figures (RSS
    /// beside heap), since a verdict that cannot reach the asked
    /// sensitivity must fail.
    pub also: BTreeSet<MetricId>,
}

impl Limits {
    /// The limit of a gated metric; `None` for one the gate does not hold.
    pub fn of(&self, id: MetricId) -> Option<f64> {
        id.def()
            .gate
            .map(|_| self.per_request.get(&id).copied().unwrap_or(0.0))
    }
}

/// What `leakscope check` found, as text or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub schema_version: u32,
    pub run: PathBuf,
    pub scenario: String,
    pub variant: String,
    /// Samples in the run.
    pub samples: usize,
    /// When the recording started (Unix milliseconds), how long it ran
    /// (`None`: unfinished) and how the target ended, in words: what the
    /// text's "recorded:" line says.
    pub started_unix_ms: u64,
    pub recorded_secs: Option<f64>,
    pub target_end: String,
    /// `false`: the run cannot carry a verdict (exit 2); see `unusable`.
    pub usable: bool,
    pub unusable: Vec<String>,
    /// What slopes are per: "requests", "cpu" or "seconds".
    pub axis: Axis,
    /// "per request", "per CPU-second", "per second".
    pub per: &'static str,
    pub window_requests: Option<f64>,
    pub metrics: Vec<CheckedMetric>,
    pub breaches: Vec<Breach>,
    /// Gated metrics that could not be checked, and why.
    pub unchecked: Vec<Unchecked>,
    pub notes: Vec<String>,
    /// Usable and nothing breached.
    pub pass: bool,
    /// The allocation site in the target's own code whose live bytes grew
    /// most between the first and last heap profile: what to fix. Added in
    /// schema 1 without a bump (a new field breaks no reader).
    pub allocation_site: Option<AllocationSite>,
    /// Everything behind the growth: the top allocation sites (heap
    /// profile diff) and dhat's, spawn sites and task names, where the
    /// growing sites' tasks were parked (task dump), fd kinds, fd paths and
    /// path patterns, TCP states and endpoints.
    pub attribution: Attribution,
    /// What the run knows can mimic a leak, and the metrics it decided.
    pub confounders: Vec<Confounder>,
}

/// A frame of a heap profile's stack, named as `go tool pprof` names it.
#[derive(Debug, Clone, Serialize)]
pub struct AllocationSite {
    /// Qualified Rust path: `download_server::scenarios::session_map::handle::{{closure}}`.
    pub function: String,
    pub file: String,
    pub line: i64,
    /// Sampled live bytes gained between the two profiles.
    pub growth_bytes: f64,
}

/// The most-grown heap site's first frame in the target's own code.
fn allocation_site(a: &Analysis) -> Option<AllocationSite> {
    a.attribution.heap_sites.iter().find_map(|h| {
        let f = h.frames.get(h.own?)?;
        Some(AllocationSite {
            function: f.function.clone(),
            file: f.file.clone(),
            line: f.line,
            growth_bytes: h.growth,
        })
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckedMetric {
    pub metric: String,
    pub title: String,
    /// What slopes, limits and levels of this metric count.
    pub unit: Unit,
    pub verdict: Option<Verdict>,
    /// Whether the gate holds this metric against a limit.
    pub gated: bool,
    pub slope: Option<Estimate>,
    pub r2: Option<f64>,
    /// The verdict sentence.
    pub summary: String,
    /// LEAK: when the ceiling is reached at this rate.
    pub forecast: Option<String>,
    /// EXHAUSTED: what failed afterwards.
    pub exhausted: Option<String>,
    /// STABLE and BOUNDED: the smallest leak per unit of work (`per`) this
    /// run could have detected, i.e. what the verdict rules out.
    pub detection_limit: Option<f64>,
    /// BOUNDED or STABLE under leakscope's load: what each request holds
    /// while in flight.
    pub per_in_flight: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Breach {
    pub metric: String,
    pub verdict: Verdict,
    /// The slope per request, when the axis is requests.
    pub per_request: Option<f64>,
    pub limit: Option<f64>,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unchecked {
    pub metric: String,
    pub why: String,
}

/// The metrics the gate holds to a limit: those with a [`Gate`] in the
/// table, less those that stand in for a metric this run has figures of
/// (RSS, when heap is there).
fn gated(a: &Analysis, limits: &Limits) -> Vec<MetricId> {
    METRICS
        .iter()
        .filter(|d| match d.gate {
            _ if limits.also.contains(&d.id) => true,
            Some(Gate {
                unless: Some(other),
                ..
            }) => a.of(other).is_none(),
            Some(_) => true,
            None => false,
        })
        .map(|d| d.id)
        .collect()
}

#[must_use = "the report decides the exit status"]
pub fn check(a: &Analysis, limits: &Limits) -> CheckReport {
    let ids = gated(a, limits);
    let mut breaches = Vec::new();
    let mut unchecked = Vec::new();
    for &id in &ids {
        let limit = limits.of(id).unwrap_or(0.0);
        match a.of(id) {
            None => unchecked.push(Unchecked {
                metric: id.to_string(),
                why: format!(
                    "no {} figures: {}",
                    id.def().title,
                    id.def().source.how_to_enable()
                ),
            }),
            Some(m) => judge(a, m, limit, limits, &mut breaches, &mut unchecked),
        }
    }
    let metrics = a
        .metrics
        .iter()
        .map(|m| CheckedMetric {
            metric: m.id.clone(),
            title: m.title.clone(),
            unit: m.unit,
            verdict: m.verdict(),
            gated: ids.iter().any(|id| id.as_str() == m.id),
            slope: m.slope,
            r2: m.r2,
            summary: describe::metric(m, a.axis),
            forecast: describe::forecast(m, a.axis),
            exhausted: describe::exhaustion(m),
            detection_limit: m.judgement.as_ref().and_then(|j| j.detection_limit),
            per_in_flight: m.per_in_flight,
        })
        .collect();
    // A load that failed because a resource ran out is the verdict, not a
    // reason to refuse one: EXHAUSTED explains the failures.
    let exhausted = breaches.iter().any(|b| b.verdict == Verdict::Exhausted);
    let usable = a.unusable.is_empty() || exhausted;
    CheckReport {
        schema_version: CHECK_SCHEMA,
        run: a.dir.clone(),
        scenario: a.scenario(),
        variant: a.variant(),
        samples: a.samples,
        started_unix_ms: a.meta.started_unix_ms,
        recorded_secs: a.meta.recorded_secs(),
        target_end: a.meta.target_end_text(),
        usable,
        unusable: a.unusable.clone(),
        axis: a.axis,
        per: a.axis.per(),
        window_requests: a.window_requests,
        metrics,
        pass: usable && breaches.is_empty(),
        breaches,
        unchecked,
        notes: a.notes.clone(),
        allocation_site: allocation_site(a),
        attribution: a.attribution.clone(),
        confounders: a.confounders.clone(),
    }
}

fn judge(
    a: &Analysis,
    m: &MetricAnalysis,
    limit: f64,
    limits: &Limits,
    breaches: &mut Vec<Breach>,
    unchecked: &mut Vec<Unchecked>,
) {
    let Some(verdict) = m.verdict() else { return };
    let slope = m.slope.map(|s| s.value);
    let per_request = slope.filter(|_| a.axis == Axis::Requests);
    let limit_text = format!("limit {} per request", describe::amount(limit, m.unit));
    let why = match verdict {
        Verdict::Exhausted => Some(format!(
            "{} EXHAUSTED: {}",
            m.title,
            describe::metric(m, a.axis)
        )),
        Verdict::Leak => match per_request {
            Some(s) if s <= limit => None,
            Some(_) => Some(format!(
                "{} {} ({limit_text})",
                m.title,
                describe::metric(m, a.axis)
            )),
            None => Some(format!(
                "{} {} (judged {}, so no per-request figure to hold to the {limit_text}: any LEAK fails)",
                m.title,
                describe::metric(m, a.axis),
                a.axis.per()
            )),
        },
        Verdict::Inconclusive if limits.allow_inconclusive => {
            unchecked.push(Unchecked {
                metric: m.id.clone(),
                why: format!(
                    "INCONCLUSIVE, allowed by --allow-inconclusive: {}",
                    describe::metric(m, a.axis)
                ),
            });
            None
        }
        Verdict::Inconclusive => Some(format!(
            "{} INCONCLUSIVE: {} (pass --allow-inconclusive to accept)",
            m.title,
            describe::metric(m, a.axis)
        )),
        Verdict::Bounded | Verdict::Stable => None,
    };
    if let Some(why) = why {
        breaches.push(Breach {
            metric: m.id.clone(),
            verdict,
            per_request,
            limit: Some(limit),
            why,
        });
    }
}
