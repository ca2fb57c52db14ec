//! The project checking itself: does the analysis tell each scenario's
//! leaky variant from its fixed one, by the measurement the scenario's
//! symptom names?
//!
//! Thresholds come from what each scenario claims about itself, never from
//! the figures of a run: a per-request leak must be judged LEAK; a handler
//! that "holds the whole file per request in flight" must be measured
//! holding at least a quarter of it per request in flight, and its fix less
//! than that; one that "allocates the whole file per request" likewise per
//! request. A quarter leaves room for sampling error and for what the
//! kernel's socket buffers absorb, and is still far from what a streaming
//! handler holds (a few chunks).

use leakscope_analysis::{describe, Analysis, Axis, MetricAnalysis, MetricId, Unit, Verdict};

use crate::catalogue::{Scenario, ScenarioExt, Symptom, Variant};

/// One run's line in the verdict table.
pub struct Outcome {
    /// The measurement the symptom is judged by, as a sentence.
    pub measured: String,
    /// What the scenario claims, as a sentence.
    pub expected: String,
    /// Why the check failed; `None` when it passed.
    pub failure: Option<String>,
}

pub fn check(scenario: &Scenario, variant: Variant, a: &Analysis) -> Outcome {
    let leaky = variant == Variant::Leaky;
    let metric = scenario.metric();
    let id = metric.as_str();
    let Some(m) = a.metric(id) else {
        return Outcome {
            measured: format!("no {id} figures"),
            expected: expectation(scenario, leaky),
            failure: Some(format!(
                "the run has no {id} series (see its notes: {})",
                a.notes.join("; ")
            )),
        };
    };
    let measured = measured(m, a.axis);
    let mut failure = judge(scenario, leaky, m, a.axis);
    if failure.is_none() && !leaky {
        // Beyond its own symptom, a fix must not leak anything else, save
        // memory in a console run: the analysis itself says that is
        // console-subscriber's retention, not the target.
        let judged = |o: &&MetricAnalysis| {
            !(a.console_on && matches!(o.metric, MetricId::Heap | MetricId::Rss))
        };
        if let Some(other) = a
            .metrics
            .iter()
            .filter(judged)
            .find(|o| matches!(o.verdict(), Some(Verdict::Leak | Verdict::Exhausted)))
        {
            failure = Some(format!(
                "the fixed variant leaks {}: {}",
                other.title,
                describe::metric(other, a.axis)
            ));
        }
    }
    Outcome {
        measured,
        expected: expectation(scenario, leaky),
        failure,
    }
}

fn expectation(s: &Scenario, leaky: bool) -> String {
    let quarter = describe::amount(s.response_bytes() as f64 / 4.0, Unit::Bytes);
    match (s.symptom, leaky) {
        (Symptom::PerRequest, true) => format!("{} LEAK", s.resource),
        (Symptom::PerRequest, false) => format!("{} not LEAK", s.resource),
        (Symptom::PerInFlight, true) => format!("≥ {quarter} per request in flight"),
        (Symptom::PerInFlight, false) => format!("< {quarter} per request in flight"),
        (Symptom::AllocatedPerRequest, true) => format!("≥ {quarter} allocated per request"),
        (Symptom::AllocatedPerRequest, false) => format!("< {quarter} allocated per request"),
    }
}

fn measured(m: &MetricAnalysis, axis: Axis) -> String {
    match (m.verdict(), m.per_in_flight) {
        (Some(v), Some(p)) => format!(
            "{} {v}, {} per request in flight",
            m.id,
            describe::amount(p, m.unit)
        ),
        (Some(v), None) => match m.slope {
            Some(s) if v == Verdict::Leak => format!(
                "{} LEAK {} {}",
                m.id,
                describe::amount(s.value, m.unit),
                describe::per(axis)
            ),
            _ => format!("{} {v}", m.id),
        },
        (None, _) => match m.slope {
            Some(s) => format!(
                "{} {} {}",
                m.id,
                describe::amount(s.value, m.unit),
                describe::per(axis)
            ),
            None => format!("{}: no slope", m.id),
        },
    }
}

fn judge(s: &Scenario, leaky: bool, m: &MetricAnalysis, axis: Axis) -> Option<String> {
    let quarter = s.response_bytes() as f64 / 4.0;
    if m.verdict() == Some(Verdict::Inconclusive) {
        return Some(format!(
            "INCONCLUSIVE: {}",
            m.judgement
                .as_ref()
                .map(|j| j.reason.as_str())
                .unwrap_or("")
        ));
    }
    match s.symptom {
        Symptom::PerRequest => match (leaky, m.verdict()) {
            // A leak fast enough reaches its ceiling within the run
            // (fd-leak at RLIMIT_NOFILE): EXHAUSTED is the leak, named.
            (true, Some(Verdict::Leak | Verdict::Exhausted))
            | (false, Some(Verdict::Bounded | Verdict::Stable)) => None,
            (_, v) => Some(format!(
                "judged {}",
                v.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into())
            )),
        },
        Symptom::PerInFlight => {
            // Still climbing at the end also shows the leaky handler's cost
            // (the plateau is just not reached yet); a fix must not climb.
            if matches!(m.verdict(), Some(Verdict::Leak | Verdict::Exhausted)) {
                return (!leaky).then(|| "judged LEAK".to_string());
            }
            let held = m.per_in_flight.unwrap_or(0.0);
            match (leaky, held >= quarter) {
                (true, true) | (false, false) => None,
                (true, false) => Some(format!(
                    "holds only {} per request in flight",
                    describe::amount(held, m.unit)
                )),
                (false, true) => Some(format!(
                    "holds {} per request in flight",
                    describe::amount(held, m.unit)
                )),
            }
        }
        Symptom::AllocatedPerRequest => {
            if axis != Axis::Requests {
                return Some("no request counter advanced: allocation is per second".into());
            }
            let per = m.slope.map(|e| e.value).unwrap_or(0.0);
            match (leaky, per >= quarter) {
                (true, true) | (false, false) => None,
                _ => Some(format!(
                    "allocates {} per request",
                    describe::amount(per, m.unit)
                )),
            }
        }
    }
}
