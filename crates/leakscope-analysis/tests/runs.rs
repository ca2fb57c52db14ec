//! Whole run directories, written with the real writer: the choice of axis
//! and window, and figures derived from the load.

use std::collections::BTreeMap;

use leakscope_analysis::{analyze, gate, Analysis, Axis, IdleEvidence, MetricId, Verdict, Work};
use leakscope_rundir::{
    HeapSample, Host, LoadSample, Meta, ProcSample, RunWriter, Sample, SCHEMA_VERSION,
};

const MIB: u64 = 1 << 20;

fn meta() -> Meta {
    Meta {
        schema_version: SCHEMA_VERSION,
        leakscope_version: "test".into(),
        command: vec![],
        pid: 1,
        labels: BTreeMap::new(),
        host: Host {
            hostname: "h".into(),
            kernel: "k".into(),
            cpus: 2,
        },
        interval_ms: 250,
        git_revision: None,
        started_unix_ms: 0,
        ended_unix_ms: Some(25_000),
        target_end: None,
        sources: BTreeMap::new(),
        limits: Default::default(),
        oom_kills: None,
        console_retention_ms: None,
    }
}

/// Slow downloads: 16 in flight, each holding 4 MiB, completing in two
/// bursts, so requests served cannot carry a fit and time must.
#[test]
fn slow_downloads_are_judged_over_time_with_what_each_holds_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RunWriter::create(dir.path().join("run"), meta()).unwrap();
    for seq in 0..100u64 {
        let loaded = (4..90).contains(&seq);
        let requests = match seq {
            0..=39 => 0,
            40..=79 => 16,
            _ => 32,
        };
        let heap = 5 * MIB
            + if loaded {
                64 * MIB + (seq % 3) * 100_000
            } else {
                0
            };
        w.append(&Sample {
            seq,
            t_ms: seq * 250,
            heap: Some(HeapSample {
                allocated: Some(heap),
                ..HeapSample::default()
            }),
            load: Some(LoadSample {
                requests_total: requests,
                concurrency: if loaded { 16 } else { 0 },
                bytes: seq.min(89) * 100_000,
                ..LoadSample::default()
            }),
            ..Sample::default()
        })
        .unwrap();
    }
    let a = analyze(&dir.path().join("run")).unwrap();
    assert_eq!(a.axis, Axis::Seconds);
    assert!(
        a.notes.iter().any(|n| n.contains("judged per second")),
        "{:?}",
        a.notes
    );
    let heap = a.metric("heap").unwrap();
    // It rose with the load, stayed level while it ran, and fell back to
    // the baseline once idle: held in flight, not kept.
    let j = heap.judgement.as_ref().unwrap();
    assert_eq!(heap.verdict(), Some(Verdict::Stable), "{j:?}");
    assert_eq!(j.idle, IdleEvidence::Returned, "{j:?}");
    let held = heap.per_in_flight.unwrap();
    assert!((held - 4.0 * MIB as f64).abs() < 0.1 * MIB as f64, "{held}");
    // The window stops where the load did: the drop after it is not in it.
    assert!(a.window.1 <= 90, "{:?}", a.window);
}

fn write(meta: Meta, samples: impl IntoIterator<Item = Sample>) -> (tempfile::TempDir, Analysis) {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RunWriter::create(dir.path().join("run"), meta).unwrap();
    for s in samples {
        w.append(&s).unwrap();
    }
    drop(w);
    let a = analyze(&dir.path().join("run")).unwrap();
    (dir, a)
}

/// A process as procfs sees it: cumulative CPU seconds and open fds.
fn proc(seq: u64, cpu: f64, fds: u64) -> Sample {
    Sample {
        seq,
        t_ms: seq * 250,
        proc: Some(ProcSample {
            cpu_user_seconds: cpu,
            fds,
            rss_bytes: 50 * MIB,
            ..ProcSample::default()
        }),
        ..Sample::default()
    }
}

fn gate(a: &Analysis) -> gate::CheckReport {
    gate::check(
        a,
        &gate::Limits {
            per_request: [(MetricId::Heap, 1024.0), (MetricId::Rss, 1024.0)].into(),
            allow_inconclusive: false,
            also: Default::default(),
        },
    )
}

/// The attached case the verdicts issue reported: no request counter, a
/// few seconds of someone else's load that leaks sockets, then an idle
/// tail. Judged over the whole recording on time, the flat tail read as a
/// plateau; on the CPU axis over the ticks of work it is a leak, and the
/// tail confirms it.
#[test]
fn attached_without_a_counter_a_burst_that_leaks_is_judged_per_cpu_second_and_kept() {
    let mut cpu = 0.0;
    let mut fds = 12;
    let samples = (0..60u64).map(|i| {
        if (10..30).contains(&i) {
            cpu += 0.24 + 0.01 * (i % 3) as f64;
            fds += 300;
        }
        proc(i, cpu, fds)
    });
    let (_d, a) = write(meta(), samples);
    assert_eq!(a.axis, Axis::Cpu);
    assert_eq!(a.work, Work::CpuActive);
    let m = a.metric("fds").unwrap();
    let j = m.judgement.as_ref().unwrap();
    assert_eq!(m.verdict(), Some(Verdict::Leak), "{j:?}");
    assert_eq!(j.idle, IdleEvidence::Kept, "{j:?}");
    assert!(a.unusable.is_empty(), "{:?}", a.unusable);
    let r = gate(&a);
    assert!(!r.pass && r.usable);
    assert!(
        r.breaches.iter().any(|b| b.metric == "fds"),
        "{:?}",
        r.breaches
    );
    // RSS is gated in heap's place, and tasks are named as unchecked.
    assert!(
        r.unchecked.iter().any(|u| u.metric == "tasks"),
        "{:?}",
        r.unchecked
    );
    assert!(r.metrics.iter().any(|m| m.metric == "rss" && m.gated));
}

/// The same burst where the fds come back once idle: held in flight.
#[test]
fn a_burst_whose_fds_come_back_once_idle_was_held_in_flight() {
    let mut cpu = 0.0;
    let samples = (0..60u64).map(|i| {
        let busy = (10..30).contains(&i);
        if busy {
            cpu += 0.25;
        }
        proc(i, cpu, if busy { 12 + (i - 9) * 20 } else { 12 })
    });
    let (_d, a) = write(meta(), samples);
    let m = a.metric("fds").unwrap();
    let j = m.judgement.as_ref().unwrap();
    assert_eq!(m.verdict(), Some(Verdict::Stable), "{j:?}");
    assert_eq!(j.idle, IdleEvidence::Returned);
    assert!(gate(&a).pass);
}

/// An fd leak that ran into RLIMIT_NOFILE: EXHAUSTED, with the moment,
/// the rate before it, what failed afterwards and the forecast absent.
#[test]
fn an_fd_leak_at_its_limit_is_exhausted_and_fails_the_gate() {
    let mut m = meta();
    m.limits.open_files = Some(1024);
    let samples = (0..40u64).map(|i| {
        let served = i.saturating_sub(2) * 50;
        let fds = (12 + served).min(1021);
        let mut s = proc(i, i as f64 * 0.2, fds);
        s.load = Some(LoadSample {
            requests_total: served,
            done: served,
            failed: if fds >= 1021 { i * 7 } else { 0 },
            concurrency: 4,
            ..LoadSample::default()
        });
        s
    });
    let (_d, a) = write(m, samples);
    assert_eq!(a.axis, Axis::Requests);
    let fds = a.metric("fds").unwrap();
    assert_eq!(
        fds.verdict(),
        Some(Verdict::Exhausted),
        "{:?}",
        fds.judgement
    );
    let e = fds.exhaustion.as_ref().unwrap();
    assert_eq!(e.ceiling.what, "RLIMIT_NOFILE");
    assert!(e.failed_after.unwrap() > 0);
    let slope = fds.slope.unwrap().value;
    assert!((slope - 1.0).abs() < 0.02, "{slope}");
    let r = gate(&a);
    assert!(r.breaches.iter().any(|b| b.verdict == Verdict::Exhausted));
}

/// A LEAK under a known ceiling says when it gets there.
#[test]
fn a_leak_under_its_ceiling_has_a_forecast() {
    let mut m = meta();
    m.limits.open_files = Some(100_000);
    let samples = (0..40u64).map(|i| {
        let served = i * 500;
        let mut s = proc(i, i as f64 * 0.2, 12 + served / 100);
        s.load = Some(LoadSample {
            requests_total: served,
            done: served,
            concurrency: 4,
            ..LoadSample::default()
        });
        s
    });
    let (_d, a) = write(m, samples);
    let fds = a.metric("fds").unwrap();
    assert_eq!(fds.verdict(), Some(Verdict::Leak));
    let f = fds.forecast.as_ref().unwrap();
    // 0.01 fd per request at 2000 requests/s: 20 fds/s from 402 open.
    assert!((f.per_second - 20.0).abs() < 0.5, "{f:?}");
    assert!(
        (f.seconds - (100_000.0 - 402.0) / 20.0).abs() < 200.0,
        "{f:?}"
    );
}

#[test]
fn runs_a_gate_cannot_trust_are_unusable() {
    // No sample at all (an empty samples.jsonl).
    let (_d, a) = write(meta(), []);
    assert!(!gate(&a).usable);
    // Most of the load failed (a URL typo: every request a 404).
    let samples = (0..30u64).map(|i| {
        let mut s = proc(i, i as f64 * 0.1, 12);
        s.load = Some(LoadSample {
            requests_total: 0,
            failed: i * 30,
            concurrency: 4,
            ..LoadSample::default()
        });
        s
    });
    let (_d, a) = write(meta(), samples);
    let r = gate(&a);
    assert!(!r.usable && !r.pass, "{:?}", r.unusable);
    assert!(r.unusable.iter().any(|u| u.contains("load failed")));
    // Idle from start to end: no work to judge by.
    let (_d, a) = write(meta(), (0..30u64).map(|i| proc(i, 0.0, 12)));
    assert!(a.unusable.iter().any(|u| u.contains("no measurable work")));
    // A leak recorded in reverse (samples.jsonl reordered): no timeline.
    let (_d, a) = write(meta(), (0..30u64).rev().map(|i| proc(i, i as f64, 12 + i)));
    assert!(!gate(&a).usable, "{:?}", a.unusable);
    assert!(a.unusable.iter().any(|u| u.contains("samples go back")));
    // A request counter that resets half-way (the target restarted).
    let samples = (0..30u64).map(|i| {
        let mut s = proc(i, i as f64 * 0.1, 12 + i);
        s.load = Some(LoadSample {
            requests_total: (i % 15) * 100,
            done: (i % 15) * 100,
            concurrency: 4,
            ..LoadSample::default()
        });
        s
    });
    let (_d, a) = write(meta(), samples);
    assert!(!gate(&a).usable, "{:?}", a.unusable);
    assert!(a.unusable.iter().any(|u| u.contains("counter went down")));
}

/// An fd leak that ran into its limit is the finding, not a reason to
/// refuse a verdict: the load failing afterwards does not make the run
/// unusable, and the gate fails it (exit 1, not 2).
#[test]
fn a_load_that_failed_because_fds_ran_out_is_judged_not_refused() {
    let mut m = meta();
    m.limits.open_files = Some(256);
    let samples = (0..40u64).map(|i| {
        let served = (i.saturating_sub(2) * 20).min(240);
        let mut s = proc(i, i as f64 * 0.2, (12 + served).min(256));
        s.load = Some(LoadSample {
            requests_total: served,
            done: served,
            failed: i.saturating_sub(14) * 400,
            concurrency: 4,
            ..LoadSample::default()
        });
        s
    });
    let (_d, a) = write(m, samples);
    assert!(!a.unusable.is_empty(), "most of this load failed");
    let r = gate(&a);
    assert!(r.usable && !r.pass, "{:?} {:?}", r.unusable, r.breaches);
    assert!(r
        .breaches
        .iter()
        .any(|b| b.metric == "fds" && b.verdict == Verdict::Exhausted));
}

/// Attached by pid with /proc/PID/io readable: the window is where the
/// target made read/write syscalls, not where it burned CPU. Leaked tasks
/// ticking keep the CPU busy after the load; they make no syscalls.
#[test]
fn attached_the_window_follows_syscalls_not_cpu_kept_busy_by_timers() {
    let (mut cpu, mut calls, mut fds) = (0.0, 100u64, 12);
    let samples = (0..60u64).map(|i| {
        let serving = (10..30).contains(&i);
        // After the load, ticking timers burn as much CPU as serving did.
        cpu += if i >= 10 { 0.2 } else { 0.0 };
        if serving {
            calls += 4_000 + 10 * (i % 3);
            fds += 40;
        }
        calls += 2; // the console's own stream, a constant trickle
        let mut s = proc(i, cpu, fds);
        s.proc.as_mut().unwrap().io_syscalls = Some(calls);
        s
    });
    let (_d, a) = write(meta(), samples);
    assert_eq!((a.axis, a.work), (Axis::Syscalls, Work::IoActive));
    assert!(a.idle.1 - a.idle.0 >= 25, "idle tail {:?}", a.idle);
    let m = a.metric("fds").unwrap();
    let j = m.judgement.as_ref().unwrap();
    assert_eq!(m.verdict(), Some(Verdict::Leak), "{j:?}");
    assert_eq!(j.idle, IdleEvidence::Kept);
    let slope = m.slope.unwrap().value;
    assert!((slope - 0.01).abs() < 0.001, "{slope} fds per syscall");
}

/// A TTL cache under a burst: the heap grows with the work, then the purge
/// gives nearly all of it back, and the map keeps its capacity (more than
/// a floor). A leak keeps what it grew, so this is BOUNDED, not a LEAK.
#[test]
fn growth_given_back_once_idle_is_not_a_leak_even_if_a_remnant_stays() {
    let samples = (0..50u64).map(|i| {
        let served = i.saturating_sub(5).min(20) * 1000;
        let heap = match i {
            0..=5 => 5 * MIB,
            6..=25 => 5 * MIB + (i - 5) * 8 * MIB,
            // Idle, before the purge: all of it still held.
            26..=29 => 165 * MIB,
            _ => 8 * MIB,
        };
        let mut s = proc(i, i as f64 * 0.1, 12);
        s.heap = Some(HeapSample {
            allocated: Some(heap),
            ..HeapSample::default()
        });
        s.load = Some(LoadSample {
            requests_total: served,
            done: served,
            concurrency: 4,
            ..LoadSample::default()
        });
        s
    });
    let (_d, a) = write(meta(), samples);
    let m = a.metric("heap").unwrap();
    let j = m.judgement.as_ref().unwrap();
    assert_eq!(m.verdict(), Some(Verdict::Bounded), "{j:?}");
    assert!(j.reason.contains("gave back"), "{}", j.reason);
    assert!(gate(&a).pass);
}

/// A count that lags (console-subscriber catching up after the load) keeps
/// rising in the idle tail: nothing was given back, so the leak stands even
/// though the fitted growth runs ahead of the lagging readings.
#[test]
fn a_lagging_count_that_rises_once_idle_is_still_a_leak() {
    let samples = (0..50u64).map(|i| {
        let served = i.saturating_sub(5).min(30) * 250;
        let mut s = proc(i, i as f64 * 0.1, 12);
        s.load = Some(LoadSample {
            requests_total: served,
            done: served,
            concurrency: 4,
            ..LoadSample::default()
        });
        // Seen 2 samples late, then catching up by 30 a sample once idle.
        let seen = i.saturating_sub(7).min(30) * 220 + i.saturating_sub(37) * 30;
        s.tasks = Some(leakscope_rundir::TaskSample {
            live_tasks: 3 + seen,
            ..Default::default()
        });
        s
    });
    let (_d, a) = write(meta(), samples);
    let m = a.metric("tasks").unwrap();
    assert_eq!(m.verdict(), Some(Verdict::Leak), "{:?}", m.judgement);
}
