//! One instance's series, cut at its restarts, as run directories.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use leakscope_rundir::{
    HeapSample, LoadSample, Meta, ProcSample, RunWriter, Sample, SourceInfo, SourceName, TargetEnd,
};

use crate::api::{Matrix, Points};
use crate::{Data, FleetError, Query};

/// A start time that moves by more than this is a new process: exporters
/// give it to the second or better, and it never drifts otherwise.
const RESTART_S: f64 = 1.0;

/// One run directory: a process's life within the range.
#[derive(Debug, Clone)]
pub struct SegmentRun {
    /// From 1, in time order.
    pub index: usize,
    pub dir: PathBuf,
    pub from_unix_ms: i64,
    pub to_unix_ms: i64,
    pub samples: usize,
    /// The counter's increase over the segment, resets made monotonic.
    pub requests: f64,
    /// `process_max_fds` at its end; `None`: 0 or absent, no ceiling.
    pub max_fds: Option<u64>,
}

/// An instance's segments, or why its series could not be used.
#[derive(Debug)]
pub struct InstanceRuns {
    pub instance: String,
    pub result: Result<Vec<SegmentRun>, FleetError>,
}

/// Writes every instance's segments under `out/<instance>/segment-N`.
pub fn write_runs(data: &Data, q: &Query, out: &Path) -> Vec<InstanceRuns> {
    let counters = counters(data, &q.by);
    let names: BTreeSet<&String> = data.fds.by_instance.keys().collect();
    names
        .into_iter()
        .map(|name| InstanceRuns {
            instance: name.clone(),
            result: instance(data, q, name, counters.get(name), out),
        })
        .collect()
}

/// Each counter series made monotonic (a drop is a reset: the new value
/// is what was counted since), by instance.
fn counters(data: &Data, by: &str) -> BTreeMap<String, Vec<(String, Points)>> {
    let mut out: BTreeMap<String, Vec<(String, Points)>> = BTreeMap::new();
    for s in &data.requests {
        let name = s.labels.get(by).cloned().unwrap_or_default();
        let mut total = 0.0;
        let mut prev: Option<f64> = None;
        let mut cum = Points::new();
        for (&t, &v) in &s.points {
            if let Some(p) = prev {
                total += if v >= p { v - p } else { v };
            }
            // A NaN or negative count stays as it is, for the check below.
            cum.insert(t, if v.is_finite() && v >= 0.0 { total } else { v });
            prev = Some(v).filter(|v| v.is_finite());
        }
        out.entry(name)
            .or_default()
            .push((format!("{:?}", s.labels), cum));
    }
    out
}

/// The latest value at or before `t`, else the first after it.
fn at(points: Option<&Points>, t: i64) -> Option<f64> {
    let p = points?;
    p.range(..=t)
        .next_back()
        .or_else(|| p.range(t..).next())
        .map(|(_, v)| *v)
}

/// The value at exactly `t`, checked to be a finite level ≥ 0.
fn level(m: &Matrix, label: &str, name: &str, t: i64) -> Result<Option<f64>, FleetError> {
    match m.by_instance.get(name).and_then(|p| p.get(&t)) {
        None => Ok(None),
        Some(&v) => finite(&m.query, label, name, t, v).map(Some),
    }
}

fn finite(query: &str, label: &str, name: &str, t: i64, v: f64) -> Result<f64, FleetError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(FleetError::NotFinite {
            query: query.to_string(),
            label: label.to_string(),
            instance: name.to_string(),
            value: format!("{v}"),
            at: t as f64 / 1000.0,
        })
    }
}

/// One tick of an instance: what a run directory's sample holds.
struct Tick {
    t: i64,
    fds: f64,
    rss: f64,
    heap: Option<f64>,
    requests: Option<f64>,
    start: Option<f64>,
    max_fds: Option<f64>,
    memory_limit: Option<f64>,
}

fn ticks(
    data: &Data,
    q: &Query,
    name: &str,
    counters: Option<&Vec<(String, Points)>>,
) -> Result<Vec<Tick>, FleetError> {
    let by = q.by.as_str();
    let fds = data.fds.by_instance.get(name).cloned().unwrap_or_default();
    let mut out = Vec::with_capacity(fds.len());
    for &t in fds.keys() {
        let (Some(f), Some(r)) = (
            level(&data.fds, by, name, t)?,
            level(&data.rss, by, name, t)?,
        ) else {
            continue;
        };
        let mut requests = None;
        for (series, cum) in counters.into_iter().flatten() {
            if let Some(v) = cum.range(..=t).next_back().map(|(_, v)| *v) {
                let v = finite(series, by, name, t, v)?;
                requests = Some(requests.unwrap_or(0.0) + v);
            }
        }
        let start = at(data.start_time.by_instance.get(name), t)
            .map(|v| finite(&data.start_time.query, by, name, t, v))
            .transpose()?;
        out.push(Tick {
            t,
            fds: f,
            rss: r,
            heap: level(&data.heap, by, name, t)?,
            requests,
            start,
            max_fds: level(&data.max_fds, by, name, t)?,
            memory_limit: level(&data.memory_limit, by, name, t)?,
        });
    }
    Ok(out)
}

/// Ticks whose every figure equals the tick before it, dropped. Why: with
/// a query step shorter than the scrape interval, Prometheus's lookback
/// hands back the same scrape at several steps, and the fit would count
/// one reading as several independent ones, its interval too narrow. A
/// real new scrape of a working process moves its counter or its RSS; one
/// that moves nothing adds nothing to a per-request fit.
fn drop_repeats(ticks: Vec<Tick>) -> Vec<Tick> {
    let mut out: Vec<Tick> = Vec::with_capacity(ticks.len());
    for t in ticks {
        let same = out.last().is_some_and(|p| {
            (p.fds, p.rss, p.heap, p.requests, p.start)
                == (t.fds, t.rss, t.heap, t.requests, t.start)
        });
        if !same {
            out.push(t);
        }
    }
    out
}

/// Index ranges of `ticks` between restarts.
fn segments(ticks: &[Tick]) -> Vec<std::ops::Range<usize>> {
    let mut cuts = vec![0];
    for i in 1..ticks.len() {
        if let (Some(a), Some(b)) = (ticks[i - 1].start, ticks[i].start) {
            if (b - a).abs() > RESTART_S {
                cuts.push(i);
            }
        }
    }
    cuts.push(ticks.len());
    cuts.windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| w[0]..w[1])
        .collect()
}

fn instance(
    data: &Data,
    q: &Query,
    name: &str,
    counters: Option<&Vec<(String, Points)>>,
    out: &Path,
) -> Result<Vec<SegmentRun>, FleetError> {
    // Without its counter a replica would read NO LOAD, and pass a gate,
    // however it leaks: that is an error to show, not a verdict.
    if counters.is_none_or(|c| c.is_empty()) {
        return Err(FleetError::NoCounter {
            query: q.selectors.requests.clone(),
            label: q.by.clone(),
            instance: name.to_string(),
        });
    }
    let ticks = drop_repeats(ticks(data, q, name, counters)?);
    let segs = segments(&ticks);
    let last = segs.len();
    segs.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let dir = out.join(dir_name(name)).join(format!("segment-{}", i + 1));
            write_segment(&ticks[r], q, name, i + 1, i + 1 == last, dir)
        })
        .collect()
}

/// An instance label as a directory name: `10.0.0.7:9100` → `10.0.0.7_9100`.
fn dir_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." => format!("instance{s}"),
        _ => s,
    }
}

/// A positive ceiling; 0 (or none) means no limit, never a division by it.
fn ceiling(v: Option<f64>) -> Option<u64> {
    v.filter(|v| *v >= 1.0).map(|v| v as u64)
}

fn write_segment(
    ticks: &[Tick],
    q: &Query,
    name: &str,
    index: usize,
    last: bool,
    dir: PathBuf,
) -> Result<SegmentRun, FleetError> {
    let (first, end) = (&ticks[0], &ticks[ticks.len() - 1]);
    let r0 = first.requests.unwrap_or(0.0);
    let mut meta = Meta {
        interval_ms: q.step.saturating_mul(1000),
        started_unix_ms: first.t.max(0) as u64,
        ended_unix_ms: Some(end.t.max(0) as u64),
        target_end: Some(if last {
            TargetEnd::StillRunning
        } else {
            TargetEnd::Vanished
        }),
        ..Meta::default()
    };
    meta.host.hostname = name.to_string();
    for (k, v) in [
        ("instance", name.to_string()),
        ("segment", index.to_string()),
        (leakscope_rundir::labels::SCENARIO, name.to_string()),
        (
            leakscope_rundir::labels::VARIANT,
            format!("segment {index}"),
        ),
    ] {
        meta.labels.insert(k.into(), v);
    }
    meta.limits.open_files = ceiling(end.max_fds);
    meta.limits.cgroup_memory_max = ceiling(end.memory_limit);
    meta.sources.insert(
        SourceName::Metrics,
        SourceInfo {
            enabled: true,
            samples: ticks.len() as u64,
            ..SourceInfo::default()
        },
    );
    let err = |source| FleetError::RunDir {
        dir: dir.clone(),
        source,
    };
    let mut w = RunWriter::create(&dir, meta).map_err(err)?;
    for (seq, t) in ticks.iter().enumerate() {
        w.append(&sample(seq as u64, t, first.t, r0)).map_err(err)?;
    }
    Ok(SegmentRun {
        index,
        dir: dir.clone(),
        from_unix_ms: first.t,
        to_unix_ms: end.t,
        samples: ticks.len(),
        requests: end.requests.unwrap_or(0.0) - r0,
        max_fds: ceiling(end.max_fds),
    })
}

fn sample(seq: u64, t: &Tick, t0: i64, r0: f64) -> Sample {
    Sample {
        seq,
        t_ms: (t.t - t0).max(0) as u64,
        proc: Some(ProcSample {
            rss_bytes: t.rss as u64,
            fds: t.fds as u64,
            ..ProcSample::default()
        }),
        heap: t.heap.map(|a| HeapSample {
            allocated: Some(a as u64),
            ..HeapSample::default()
        }),
        load: t.requests.map(|r| LoadSample {
            requests_total: (r - r0).max(0.0).round() as u64,
            ..LoadSample::default()
        }),
        ..Sample::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: i64, start: Option<f64>) -> Tick {
        Tick {
            t,
            fds: 1.0,
            rss: 1.0,
            heap: None,
            requests: None,
            start,
            max_fds: None,
            memory_limit: None,
        }
    }

    /// The lookback's repeats of one scrape go; a new reading stays even
    /// when only one figure moved.
    #[test]
    fn repeated_readings_count_once() {
        let mut t: Vec<Tick> = (0..6).map(|i| tick(i, Some(1.0))).collect();
        t[3].requests = Some(5.0);
        t[4].requests = Some(5.0);
        t[5].rss = 2.0;
        let kept: Vec<i64> = drop_repeats(t).iter().map(|x| x.t).collect();
        assert_eq!(kept, [0, 3, 5]);
    }

    #[test]
    fn a_moved_start_time_cuts_and_a_missing_one_does_not() {
        let t = [
            tick(0, Some(100.0)),
            tick(1, None),
            tick(2, Some(100.4)),
            tick(3, Some(500.0)),
            tick(4, Some(500.0)),
        ];
        assert_eq!(segments(&t), vec![0..3, 3..5]);
        assert!(segments(&[]).is_empty());
    }

    #[test]
    fn a_counter_reset_counts_what_the_new_process_counted() {
        let s = crate::Series {
            labels: [("instance".to_string(), "a".to_string())].into(),
            points: [(0, 10.0), (1, 15.0), (2, 3.0), (3, 7.0)].into(),
        };
        let data = Data {
            requests: vec![s],
            ..Data::default()
        };
        let c = counters(&data, "instance");
        let cum: Vec<f64> = c["a"][0].1.values().copied().collect();
        assert_eq!(cum, vec![0.0, 5.0, 8.0, 12.0]);
    }

    #[test]
    fn zero_fds_limit_is_no_ceiling_and_names_are_safe() {
        assert_eq!(ceiling(Some(0.0)), None);
        assert_eq!(ceiling(None), None);
        assert_eq!(ceiling(Some(1024.0)), Some(1024));
        assert_eq!(dir_name("10.0.0.7:9100"), "10.0.0.7_9100");
        assert_eq!(dir_name(".."), "instance..");
        assert_eq!(dir_name("a/../b"), "a_.._b");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn points() -> impl Strategy<Value = Points> {
        proptest::collection::btree_map(
            0i64..40,
            prop_oneof![
                4 => 0.0f64..1e6,
                1 => Just(f64::NAN),
                1 => Just(f64::INFINITY),
                1 => Just(-1.0),
            ],
            0..30,
        )
        .prop_map(|m| m.into_iter().map(|(k, v)| (k * 15_000, v)).collect())
    }

    fn matrix(names: usize) -> impl Strategy<Value = Matrix> {
        proptest::collection::vec(points(), names).prop_map(|v| Matrix {
            query: "q".into(),
            by_instance: v
                .into_iter()
                .enumerate()
                .map(|(i, p)| (format!("i{i}"), p))
                .collect(),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Any series, NaN, ±Inf, negatives, gaps and restarts included:
        /// run directories a reader opens, or an error naming the
        /// instance, never a panic.
        #[test]
        fn any_series_become_readable_runs_or_an_error(
            fds in matrix(2), rss in matrix(2), start in matrix(2), max_fds in matrix(2),
            counter in points(),
        ) {
            let data = Data {
                fds,
                rss,
                start_time: start,
                max_fds,
                requests: vec![crate::Series {
                    labels: [("instance".to_string(), "i0".to_string())].into(),
                    points: counter,
                }],
                ..Data::default()
            };
            let q = Query {
                selectors: crate::Selectors::default(),
                by: "instance".into(),
                start: 0,
                end: 600,
                step: 15,
            };
            let out = tempfile::tempdir().unwrap();
            for r in write_runs(&data, &q, out.path()) {
                for s in r.result.iter().flatten() {
                    let run = leakscope_rundir::Run::open(&s.dir).unwrap();
                    prop_assert_eq!(run.samples.len(), s.samples);
                    prop_assert!(s.requests >= 0.0 && s.requests.is_finite());
                }
            }
        }
    }
}
