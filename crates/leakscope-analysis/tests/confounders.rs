//! console-subscriber's retention decides memory verdicts: growth it can
//! explain reads INCONCLUSIVE, never LEAK; a leak faster than it could
//! hold, or memory still kept after its retention passed, stays LEAK.

use std::collections::BTreeMap;

use leakscope_analysis::{analyze, confound, Analysis, Verdict};
use leakscope_rundir::{
    LoadSample, Meta, ProcSample, RunWriter, Sample, SourceInfo, SourceName, TaskSample,
    SCHEMA_VERSION,
};

fn meta(console: bool) -> Meta {
    let mut sources = BTreeMap::new();
    if console {
        sources.insert(
            SourceName::Console,
            SourceInfo {
                enabled: true,
                error: None,
                samples: 100,
                failed: 0,
                mean_cost_ms: 0.1,
            },
        );
    }
    Meta {
        schema_version: SCHEMA_VERSION,
        interval_ms: 100,
        sources,
        ..Meta::default()
    }
}

struct Case {
    console: bool,
    /// RSS added per request while working; kept after.
    per_request: u64,
    /// What the agent said the console's retention is.
    retention_ms: Option<u64>,
    /// What the recorder was told (`--console-retention`, environ).
    told_ms: Option<u64>,
    /// Idle ticks after the work (100 ms each).
    idle_ticks: u64,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            console: true,
            per_request: 40_000,
            retention_ms: None,
            told_ms: None,
            idle_ticks: 30,
        }
    }
}

/// 10 idle samples, 60 samples of 100 requests each (one task spawned per
/// request), then `idle_ticks` idle samples, at 100 ms.
fn judge(c: Case) -> Analysis {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut w = RunWriter::create(
        &run,
        Meta {
            console_retention_ms: c.told_ms,
            ..meta(c.console)
        },
    )
    .unwrap();
    for seq in 0..70 + c.idle_ticks {
        let requests = seq.saturating_sub(10).min(60) * 100;
        // Small jitter, well under the RSS floor.
        let rss = 50_000_000 + requests * c.per_request + (seq % 3) * 4096;
        w.append(&Sample {
            seq,
            t_ms: seq * 100,
            proc: Some(ProcSample {
                rss_bytes: rss,
                fds: 10,
                ..ProcSample::default()
            }),
            tasks: Some(TaskSample {
                live_tasks: 3,
                spawned_total: Some(requests),
                console_retention_ms: c.retention_ms,
                ..TaskSample::default()
            }),
            load: Some(LoadSample {
                requests_total: requests,
                ..LoadSample::default()
            }),
            ..Sample::default()
        })
        .unwrap();
    }
    analyze(&run).unwrap()
}

fn rss(a: &Analysis) -> Verdict {
    a.metric("rss").unwrap().verdict().unwrap()
}

#[test]
fn growth_the_console_can_hold_is_inconclusive_with_the_reason() {
    let a = judge(Case {
        console: true,
        per_request: 40_000,
        retention_ms: Some(10_000),
        told_ms: None,
        idle_ticks: 30,
    });
    assert_eq!(rss(&a), Verdict::Inconclusive);
    let m = a.metric("rss").unwrap();
    assert!(m.forecast.is_none());
    let c = &a.confounders[0];
    assert_eq!(c.kind, confound::CONSOLE_RETENTION);
    assert!(c.metrics.contains(&"rss".to_string()), "{c:?}");
    assert!(c.reason.contains("10.0 s"), "{}", c.reason);
}

#[test]
fn without_the_console_the_same_growth_is_a_leak() {
    let a = judge(Case {
        console: false,
        per_request: 40_000,
        retention_ms: None,
        told_ms: None,
        idle_ticks: 30,
    });
    assert_eq!(rss(&a), Verdict::Leak);
    assert!(a.confounders.is_empty());
}

#[test]
fn memory_kept_after_the_retention_passed_is_a_leak() {
    let a = judge(Case {
        console: true,
        per_request: 40_000,
        retention_ms: Some(500),
        told_ms: None,
        idle_ticks: 30,
    });
    assert_eq!(rss(&a), Verdict::Leak, "{:?}", a.confounders);
}

#[test]
fn a_retention_the_recorder_was_told_counts_as_the_agents() {
    let a = judge(Case {
        console: true,
        per_request: 40_000,
        retention_ms: None,
        told_ms: Some(500),
        idle_ticks: 30,
    });
    assert_eq!(rss(&a), Verdict::Leak, "{:?}", a.confounders);
    let a = judge(Case {
        console: true,
        per_request: 40_000,
        retention_ms: None,
        told_ms: None,
        idle_ticks: 30,
    });
    assert_eq!(rss(&a), Verdict::Inconclusive);
    assert!(
        a.confounders[0].reason.contains("--console-retention"),
        "{}",
        a.confounders[0].reason
    );
}

#[test]
fn growth_beyond_what_the_console_holds_at_the_end_is_a_leak() {
    // A 1 s retention holds ~1,000 tasks (64 MiB at most) at the end of a
    // 6 s window that grew 240 MB; the idle tail is too short to show it.
    let a = judge(Case {
        told_ms: Some(1000),
        idle_ticks: 5,
        ..Case::default()
    });
    assert_eq!(rss(&a), Verdict::Leak, "{:?}", a.confounders);
    // With a 10 s retention it could hold all 6,000: it decides.
    let a = judge(Case {
        told_ms: Some(10_000),
        idle_ticks: 5,
        ..Case::default()
    });
    assert_eq!(rss(&a), Verdict::Inconclusive, "{:?}", a.metrics);
}

#[test]
fn a_leak_faster_than_the_console_could_hold_is_a_leak() {
    let a = judge(Case {
        console: true,
        per_request: 8 * confound::TASK_FOOTPRINT as u64,
        retention_ms: None,
        told_ms: None,
        idle_ticks: 30,
    });
    assert_eq!(rss(&a), Verdict::Leak, "{:?}", a.confounders);
}
