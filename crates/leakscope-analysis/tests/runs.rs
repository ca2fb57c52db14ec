//! Whole run directories, written with the real writer: the choice of axis
//! and window, and figures derived from the load.

use std::collections::BTreeMap;

use leakscope_analysis::{analyze, Axis, Verdict};
use leakscope_rundir::{HeapSample, Host, LoadSample, Meta, RunWriter, Sample, SCHEMA_VERSION};

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
        a.notes.iter().any(|n| n.contains("judged over time")),
        "{:?}",
        a.notes
    );
    let heap = a.metric("heap").unwrap();
    assert_eq!(
        heap.verdict(),
        Some(Verdict::Bounded),
        "{:?}",
        heap.judgement
    );
    let held = heap.per_in_flight.unwrap();
    assert!((held - 4.0 * MIB as f64).abs() < 0.1 * MIB as f64, "{held}");
    // The window stops where the load did: the drop after it is not in it.
    assert!(a.window.1 <= 90, "{:?}", a.window);
}
