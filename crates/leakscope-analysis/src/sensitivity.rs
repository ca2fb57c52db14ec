//! A sensitivity asked for: "this run must rule out leaks above X per
//! request". A STABLE or BOUNDED verdict whose detection limit
//! ([`crate::trend::detection_limit`]) is above what was asked cannot
//! promise that, so it reads INCONCLUSIVE and says how much more work
//! would reach it.

use std::collections::BTreeMap;

use crate::{describe, Analysis, MetricId, Verdict};

/// Applies the asked sensitivities (per unit of the run's work axis) to
/// the metrics they name, whole metrics and their kinds alike.
pub fn require(a: &mut Analysis, wanted: &BTreeMap<MetricId, f64>) {
    let axis = a.axis;
    let span = a.window_x.map(|(x0, x1)| x1 - x0).filter(|s| *s > 0.0);
    for m in a.metrics.iter_mut() {
        let Some(&want) = wanted.get(&m.metric) else {
            continue;
        };
        let Some(j) = m.judgement.as_mut() else {
            continue;
        };
        let Some(limit) = j.detection_limit else {
            continue;
        };
        if !matches!(j.verdict, Verdict::Stable | Verdict::Bounded) || limit <= want {
            continue;
        }
        // The limit falls at least in proportion to the work (its floor
        // term exactly so, its interval term faster), so this much work
        // is enough, if the target behaves as it did.
        let factor = limit / want;
        let more = match span {
            Some(s) => format!(
                "; about {factor:.1}× the work would reach it ({} {} in the window instead of {})",
                describe::amount(s * factor, crate::Unit::Count),
                axis.name(),
                describe::amount(s, crate::Unit::Count),
            ),
            None => format!("; about {factor:.1}× the work would reach it"),
        };
        j.reason = format!(
            "{} until proven otherwise: this run rules out only leaks above {} {}, not the {} asked{more}",
            j.verdict,
            describe::amount(limit, m.unit),
            axis.per(),
            describe::amount(want, m.unit),
        );
        j.verdict = Verdict::Inconclusive;
    }
}
