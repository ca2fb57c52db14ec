//! Known confounders decide verdicts, not just notes.
//!
//! console-subscriber keeps every finished task's data (its span fields and
//! two histograms of poll and scheduling times) until its retention ends:
//! 10 s with leakscope-agent's console, 1 h by default. While it holds
//! them, a service that spawns a task per request grows its heap and RSS
//! per request exactly as a leak would (measured: a clean service, 6,000
//! one-connection requests, RSS +296 MB that stayed 14 s later). So a
//! memory LEAK in a run with the console on stands only when the console
//! cannot explain it: it grew over the window by more than the console can
//! hold at its end ([`TASK_FOOTPRINT`] for each task spawned within the
//! retention before it), or it was still there once the retention had
//! passed after the work. Otherwise it reads INCONCLUSIVE with the reason
//! and what to do, and carries no forecast. A run whose idle tail
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

/// The longest retention console-subscriber is documented with (its own
/// default), assumed when the run does not say: it explains the most.
pub const DEFAULT_RETENTION_MS: u64 = 3_600_000;

/// What the console can hold at the window's end: the tasks spawned within
/// the retention before it (never before the window: what was held before
/// is in the starting level), and the window's span on the work axis.
/// `None` when the run did not count spawns (the agent's hooks do; the
/// console stream does not).
fn held_at_end(
    samples: &[Sample],
    layout: &series::Layout,
    retention_ms: u64,
) -> Option<(u64, f64)> {
    let w = samples.get(layout.window.clone())?;
    let spawned = |s: &Sample| s.tasks.as_ref()?.spawned_total;
    let end = w.iter().rev().find(|s| spawned(s).is_some())?;
    let from = end.t_ms.saturating_sub(retention_ms);
    let since = w.iter().find(|s| s.t_ms >= from && spawned(s).is_some())?;
    let x = |s: &Sample| series::x(s, layout.axis);
    let span = x(w.last()?)? - x(w.first()?)?;
    Some((spawned(end)?.saturating_sub(spawned(since)?), span))
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
    let retention = retention_ms(samples, meta);
    let passed = retention.is_some_and(|r| retention_passed(samples, layout, r));
    let held = held_at_end(samples, layout, retention.unwrap_or(DEFAULT_RETENTION_MS));
    // The most memory the console can explain at the window's end.
    let explains = held.map(|(tasks, _)| tasks as f64 * TASK_FOOTPRINT);
    let per = layout.axis.per();
    let mut decided = Vec::new();
    for m in metrics
        .iter_mut()
        .filter(|m| matches!(m.metric, MetricId::Heap | MetricId::Rss))
    {
        let (Some(j), Some(slope)) = (m.judgement.as_mut(), m.slope) else {
            continue;
        };
        // Growth beyond all the console could hold stands (its held
        // tasks level off once the retention is shorter than the window),
        // and so does memory still kept once the console has let go.
        let kept_past = passed && j.idle == crate::IdleEvidence::Kept;
        let grew = held.map(|(_, span)| slope.lo * span);
        let beyond = matches!((grew, explains), (Some(g), Some(e)) if g > e);
        if j.verdict != Verdict::Leak || kept_past || beyond {
            continue;
        }
        j.verdict = Verdict::Inconclusive;
        j.reason = format!(
            "grows {} {per}, which console-subscriber's retention can explain ({})",
            describe::amount(slope.value, m.unit),
            match (explains, held) {
                (Some(e), Some((tasks, _))) => format!(
                    "{tasks} tasks held at the window's end, up to {}",
                    describe::amount(e, m.unit)
                ),
                _ => "the run did not count task spawns".into(),
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
            match held {
                Some((tasks, _)) => format!(", and the target spawned {tasks} tasks within it"),
                None => String::new(),
            }
        ),
    })
}
