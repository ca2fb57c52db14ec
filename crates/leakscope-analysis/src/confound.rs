//! Known confounders decide verdicts, not just notes.
//!
//! console-subscriber keeps every finished task's data (its span fields and
//! two histograms of poll and scheduling times) until its retention ends:
//! 10 s with leakscope-agent's console, 1 h by default. While it holds
//! them, a service that spawns a task per request grows its heap and RSS
//! per request exactly as a leak would (measured: a clean service, 6,000
//! one-connection requests, RSS +296 MB that stayed 14 s later). So a
//! memory LEAK in a run with the console on stands only when it grows
//! faster than the console could explain: [`TASK_FOOTPRINT`] per task
//! spawned per unit of work. Otherwise it reads INCONCLUSIVE with the
//! reason and what to do, and carries no forecast. A run whose idle tail
//! shows the memory coming back is already STABLE by the idle rule.

use leakscope_rundir::{Meta, Sample};

use crate::{describe, series, Confounder, MetricAnalysis, MetricId, Verdict};

/// The most one finished task costs while console-subscriber retains it.
/// Measured ~51 KB (two HdrHistograms of ~25 KB each, plus the span's
/// fields) against ~373 B with the console off; 64 KiB bounds it with room
/// for allocator rounding.
pub const TASK_FOOTPRINT: f64 = 64.0 * 1024.0;

/// The stable name of this confounder in the JSON.
pub const CONSOLE_RETENTION: &str = "console_retention";

/// Tasks spawned per unit of work over the window, when the run counted
/// spawns (the agent's hooks do; the console stream does not).
fn spawns_per_unit(samples: &[Sample], layout: &series::Layout) -> Option<f64> {
    let w = samples.get(layout.window.clone())?;
    let at = |s: &Sample| Some((series::x(s, layout.axis)?, s.tasks.as_ref()?.spawned_total?));
    let (x0, s0) = w.iter().find_map(at)?;
    let (x1, s1) = w.iter().rev().find_map(at)?;
    let per = s1.saturating_sub(s0) as f64 / (x1 - x0);
    (x1 > x0 && per.is_finite()).then_some(per)
}

/// The console's retention: what the agent said, else what the user or
/// the target's environment told the recorder.
fn retention_ms(samples: &[Sample], meta: &Meta) -> Option<u64> {
    samples
        .iter()
        .rev()
        .find_map(|s| s.tasks.as_ref()?.console_retention_ms)
        .or(meta.console_retention_ms)
}

/// Whether the idle tail's last [`crate::trend::MIN_IDLE`] samples, which
/// decide its level, were all read after the retention had passed since
/// the work ended: what the memory kept then, the console no longer holds.
fn retention_passed(samples: &[Sample], layout: &series::Layout, retention_ms: u64) -> bool {
    let idle = &samples[layout.idle.clone()];
    let (Some(end), Some(first_deciding)) = (
        layout
            .window
            .end
            .checked_sub(1)
            .and_then(|i| samples.get(i)),
        idle.len()
            .checked_sub(crate::trend::MIN_IDLE)
            .and_then(|i| idle.get(i)),
    ) else {
        return false;
    };
    first_deciding.t_ms.saturating_sub(end.t_ms) > retention_ms
}

/// Turns memory LEAKs that console-subscriber's retention can explain into
/// INCONCLUSIVE; returns the confounder when it decided any.
pub fn console_retention(
    samples: &[Sample],
    meta: &Meta,
    layout: &series::Layout,
    metrics: &mut [MetricAnalysis],
) -> Option<Confounder> {
    let spawns = spawns_per_unit(samples, layout);
    let retention = retention_ms(samples, meta);
    let passed = retention.is_some_and(|r| retention_passed(samples, layout, r));
    let explains = spawns.map(|s| s * TASK_FOOTPRINT);
    let per = layout.axis.per();
    let mut decided = Vec::new();
    for m in metrics
        .iter_mut()
        .filter(|m| matches!(m.metric, MetricId::Heap | MetricId::Rss))
    {
        let (Some(j), Some(slope)) = (m.judgement.as_mut(), m.slope) else {
            continue;
        };
        // A leak faster than the console could ever hold stands, and so
        // does memory still kept once the console has let go.
        let kept_past = passed && j.idle == crate::IdleEvidence::Kept;
        if j.verdict != Verdict::Leak || kept_past || explains.is_some_and(|e| slope.lo > e) {
            continue;
        }
        j.verdict = Verdict::Inconclusive;
        j.reason = format!(
            "grows {} {per}, which console-subscriber's retention can explain ({})",
            describe::amount(slope.value, m.unit),
            match explains {
                Some(e) => format!(
                    "up to {} {per} held until it ends",
                    describe::amount(e, m.unit)
                ),
                None => "the run did not count task spawns".into(),
            }
        );
        m.forecast = None;
        decided.push(m.id.clone());
    }
    (!decided.is_empty()).then(|| Confounder {
        kind: CONSOLE_RETENTION.into(),
        metrics: decided,
        reason: format!(
            "console-subscriber was on: it keeps every finished task's data (up to {} each) until its retention ends \
             ({}){}. To judge memory, record an idle tail longer than the retention (--settle) so the memory can come \
             back, or record without console-subscriber",
            describe::amount(TASK_FOOTPRINT, crate::Unit::Bytes),
            match retention {
                Some(r) => format!("here {:.1} s, longer than the idle tail the run recorded after the work", r as f64 / 1000.0),
                None => "TOKIO_CONSOLE_RETENTION, 1 h by default; LEAKSCOPE_CONSOLE_RETENTION, 10 s by default, with \
                         leakscope-agent's console; the run did not say which: pass --console-retention"
                    .into(),
            },
            match spawns {
                Some(s) => format!(", and the target spawned {s:.2} tasks {per}"),
                None => String::new(),
            }
        ),
    })
}
