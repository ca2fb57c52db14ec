//! `leakscope fleet`: the leak verdicts of every instance a
//! Prometheus-compatible server holds the history of.
//!
//! Each instance's series become run directories (one per process life,
//! cut at restarts) that the same analysis and gate as `check` judge, so a
//! replica's LEAK here means what it means for a recording.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use leakscope_analysis::{gate, Analysis, Axis, Verdict};
use leakscope_fleet::{Client, InstanceRuns, Query, SegmentRun, Selectors};
use leakscope_rundir::UnixMs;

#[derive(Args)]
pub struct FleetArgs {
    /// The server's root URL (Prometheus, Thanos, Mimir, VictoriaMetrics…),
    /// under which /api/v1/query_range answers. Plain HTTP.
    #[arg(long, env = "LEAKSCOPE_PROMETHEUS_URL")]
    pub url: String,
    /// Open fds (a gauge).
    #[arg(long, default_value = leakscope_fleet::DEFAULT_FDS)]
    pub fds: String,
    /// Resident memory in bytes (a gauge).
    #[arg(long, default_value = leakscope_fleet::DEFAULT_RSS)]
    pub rss: String,
    /// The allocator's live bytes; no match means no heap figures. `""`
    /// turns it off.
    #[arg(long, default_value = leakscope_fleet::DEFAULT_HEAP)]
    pub heap: String,
    /// The request counter: its increase, resets made monotonic, is the
    /// work every slope is per.
    #[arg(long, default_value = leakscope_fleet::DEFAULT_REQUESTS)]
    pub requests: String,
    /// The fd ceiling; 0 or no series means none.
    #[arg(long, default_value = leakscope_fleet::DEFAULT_MAX_FDS)]
    pub max_fds: String,
    /// The process start time: a change is a restart, and no fit spans one.
    #[arg(long, default_value = leakscope_fleet::DEFAULT_START_TIME)]
    pub start_time: String,
    /// A memory ceiling in bytes per instance, when a series gives one
    /// (a container's memory limit).
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// The label that names an instance.
    #[arg(long, default_value = "instance")]
    pub by: String,
    /// How far back from --end to read.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub range: Duration,
    /// Start of the range (RFC 3339 or Unix seconds); overrides --range.
    #[arg(long, value_parser = instant)]
    pub start: Option<i64>,
    /// End of the range (RFC 3339 or Unix seconds); now by default.
    #[arg(long, value_parser = instant)]
    pub end: Option<i64>,
    /// Seconds between points: the samples' interval. Ranges longer than
    /// 11,000 steps are asked in chunks.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Bound on each request to the server.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Where the run directories go (one per instance and restart); must
    /// be empty or absent. Default: ./leakscope-fleet-END.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Let INCONCLUSIVE on a gated metric pass (it fails by default, as
    /// in `check`: a verdict that could not be reached is not a pass).
    #[arg(long)]
    pub allow_inconclusive: bool,
    /// Print the verdicts as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the HTML report here, the leaking replicas first.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// RFC 3339 (`2026-12-07T06:00:00Z`) or Unix seconds.
fn instant(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?}: neither Unix seconds nor RFC 3339: {e}"))?
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|_| format!("{s:?} is before 1970"))
}

/// What one segment came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Too few requests to judge per request: never a LEAK.
    NoLoad,
    /// Too short (a restart near the range's end) or otherwise unusable.
    Unusable,
    Stable,
    Bounded,
    Inconclusive,
    /// The instance's series could not be used. Ranked below LEAK so that
    /// a leaking replica still leads the output.
    Error,
    Leak,
    Exhausted,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::NoLoad => "NO LOAD",
            Status::Unusable => "UNUSABLE",
            Status::Stable => "STABLE",
            Status::Bounded => "BOUNDED",
            Status::Inconclusive => "INCONCLUSIVE",
            Status::Leak => "LEAK",
            Status::Exhausted => "EXHAUSTED",
            Status::Error => "ERROR",
        })
    }
}

#[derive(Debug, Serialize)]
struct SegmentReport {
    segment: usize,
    from_unix_ms: i64,
    to_unix_ms: i64,
    samples: usize,
    requests: f64,
    max_fds: Option<u64>,
    status: Status,
    /// The worst metric's sentence, its forecast, or why it was not judged.
    headline: String,
    forecast: Option<String>,
    dir: PathBuf,
    /// `check --json`'s report of this segment.
    check: gate::CheckReport,
}

#[derive(Serialize)]
struct InstanceReport {
    instance: String,
    status: Status,
    error: Option<String>,
    segments: Vec<SegmentReport>,
}

#[derive(Serialize)]
struct FleetReport {
    url: String,
    by: String,
    start: i64,
    end: i64,
    step_s: u64,
    /// The worst instance's status.
    status: Status,
    pass: bool,
    instances: Vec<InstanceReport>,
}

/// Exit 0: every instance judged passed; 1: a LEAK or EXHAUSTED (or
/// INCONCLUSIVE, unless allowed), as `check`; 2: the server or an
/// instance's series could not be used, or no instance served enough
/// requests to be judged.
pub fn run(args: FleetArgs) -> ExitCode {
    match fleet(&args) {
        Ok(code) => code,
        Err(e) => {
            tell!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn query(args: &FleetArgs) -> anyhow::Result<Query> {
    let step = args.step.as_secs();
    if step == 0 {
        bail!("--step must be at least 1 s");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs() as i64;
    let end = args.end.unwrap_or(now);
    let range = i64::try_from(args.range.as_secs()).unwrap_or(i64::MAX);
    let start = args.start.unwrap_or(end.saturating_sub(range));
    if start >= end {
        bail!("the range is empty: start {start} is not before end {end}");
    }
    if start < 0 {
        bail!("the range starts before 1970 (start {start})");
    }
    if step > end.abs_diff(start) {
        bail!(
            "--step {step} s is longer than the range ({} s)",
            end.abs_diff(start)
        );
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(Query {
        selectors: Selectors {
            fds: args.fds.clone(),
            rss: args.rss.clone(),
            heap: opt(&args.heap),
            requests: args.requests.clone(),
            max_fds: args.max_fds.clone(),
            start_time: args.start_time.clone(),
            memory_limit: args.memory_limit.clone(),
        },
        by: args.by.clone(),
        // Aligned to the step, so every query's points fall on one grid.
        start: start.saturating_sub(start.rem_euclid(i64::try_from(step).unwrap_or(i64::MAX))),
        end,
        step,
    })
}

fn fleet(args: &FleetArgs) -> anyhow::Result<ExitCode> {
    let q = query(args)?;
    let client = Client::new(&args.url, args.timeout);
    let data = leakscope_fleet::fetch(&client, &q)
        .with_context(|| format!("reading the fleet's series from {}", args.url))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("leakscope-fleet-{}", q.end)));
    let runs = leakscope_fleet::write_runs(&data, &q, &out);
    let limits = gate::Limits {
        allow_inconclusive: args.allow_inconclusive,
        ..gate::Limits::default()
    };
    let mut analyses = Vec::new();
    let mut instances: Vec<InstanceReport> = runs
        .into_iter()
        .map(|r| judge(r, &limits, &mut analyses))
        .collect();
    // Worst first: the leaking replica leads the text, the JSON and the report.
    instances.sort_by(|a, b| b.status.cmp(&a.status).then(a.instance.cmp(&b.instance)));
    let status = instances
        .iter()
        .map(|i| i.status)
        .max()
        .unwrap_or(Status::NoLoad);
    let leak = instances
        .iter()
        .any(|i| matches!(i.status, Status::Leak | Status::Exhausted));
    let judged = instances.iter().any(|i| {
        matches!(
            i.status,
            Status::Stable
                | Status::Bounded
                | Status::Inconclusive
                | Status::Leak
                | Status::Exhausted
        )
    });
    let errors = instances.iter().any(|i| i.status == Status::Error);
    let failed = instances.iter().any(|i| {
        i.segments
            .iter()
            .any(|s| s.check.usable && !s.check.pass && s.status != Status::NoLoad)
    });
    let report = FleetReport {
        url: args.url.clone(),
        by: q.by.clone(),
        start: q.start,
        end: q.end,
        step_s: q.step,
        status,
        pass: judged && !errors && !failed,
        instances,
    };
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, &out);
    }
    if let Some(dir) = &args.report {
        write_report(&report, analyses, dir)?;
    }
    Ok(if leak || failed {
        ExitCode::from(1)
    } else if errors || !judged {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Analyses and gates each segment of an instance, as `check` would.
fn judge(r: InstanceRuns, limits: &gate::Limits, analyses: &mut Vec<Analysis>) -> InstanceReport {
    let segs = match r.result {
        Ok(s) => s,
        Err(e) => {
            return InstanceReport {
                instance: r.instance,
                status: Status::Error,
                error: Some(e.to_string()),
                segments: Vec::new(),
            }
        }
    };
    let mut segments = Vec::new();
    for s in segs {
        match leakscope_analysis::analyze(&s.dir) {
            Ok(a) => {
                segments.push(segment(&s, &a, limits));
                analyses.push(a);
            }
            Err(e) => {
                return InstanceReport {
                    instance: r.instance,
                    status: Status::Error,
                    error: Some(format!("segment {}: {e}", s.index)),
                    segments,
                }
            }
        }
    }
    let status = segments
        .iter()
        .map(|s| s.status)
        .filter(|s| *s != Status::Unusable)
        .max()
        .unwrap_or(if segments.is_empty() {
            Status::NoLoad
        } else {
            Status::Unusable
        });
    InstanceReport {
        instance: r.instance,
        status,
        error: None,
        segments,
    }
}

fn segment(s: &SegmentRun, a: &Analysis, limits: &gate::Limits) -> SegmentReport {
    let check = gate::check(a, limits);
    // A ceiling reached stands on any axis: a leak that exhausts its fds
    // often stops the request counter too, and must not read NO LOAD.
    let exhausted = check
        .metrics
        .iter()
        .find(|m| m.gated && m.verdict == Some(Verdict::Exhausted));
    let (status, headline, forecast) =
        if let (Some(m), false) = (exhausted, a.axis == Axis::Requests) {
            (
                Status::Exhausted,
                format!("{}: {}", m.title, m.summary),
                m.exhausted.clone(),
            )
        } else if a.axis != Axis::Requests {
            (
                Status::NoLoad,
                format!(
                    "{:.0} requests over {} samples: too few to judge per request",
                    s.requests, s.samples
                ),
                None,
            )
        } else if !check.usable {
            (Status::Unusable, check.unusable.join("; "), None)
        } else {
            let worst = check
                .metrics
                .iter()
                .filter(|m| m.gated)
                .filter_map(|m| Some((rank(m.verdict?), m)))
                .max_by_key(|(r, _)| *r);
            match worst {
                Some((st, m)) => (
                    st,
                    format!("{}: {}", m.title, m.summary),
                    m.forecast.clone().or_else(|| m.exhausted.clone()),
                ),
                None => (Status::Unusable, "no gated metric was judged".into(), None),
            }
        };
    SegmentReport {
        segment: s.index,
        from_unix_ms: s.from_unix_ms,
        to_unix_ms: s.to_unix_ms,
        samples: s.samples,
        requests: s.requests,
        max_fds: s.max_fds,
        status,
        headline,
        forecast,
        dir: s.dir.clone(),
        check,
    }
}

fn rank(v: Verdict) -> Status {
    match v {
        Verdict::Leak => Status::Leak,
        Verdict::Exhausted => Status::Exhausted,
        Verdict::Bounded => Status::Bounded,
        Verdict::Stable => Status::Stable,
        Verdict::Inconclusive => Status::Inconclusive,
    }
}

fn print_text(r: &FleetReport, out: &Path) {
    say!(
        "fleet: {} instance(s) by {:?}, {} to {}, step {} s",
        r.instances.len(),
        r.by,
        UnixMs((r.start.max(0) as u64).saturating_mul(1000)),
        UnixMs((r.end.max(0) as u64).saturating_mul(1000)),
        r.step_s
    );
    for i in &r.instances {
        say!("{:<12} {}", i.status, i.instance);
        if let Some(e) = &i.error {
            say!("  error: {e}");
        }
        for s in &i.segments {
            let limit = match s.max_fds {
                Some(n) => format!("fd limit {n}"),
                None => "no fd limit".into(),
            };
            say!(
                "  segment {} ({} samples, {:.0} requests, {limit}): {} {}",
                s.segment,
                s.samples,
                s.requests,
                s.status,
                s.headline
            );
            if let Some(f) = &s.forecast {
                say!("    forecast: {f}");
            }
        }
    }
    say!("run directories: {}", out.display());
    let worst: Vec<&str> = r
        .instances
        .iter()
        .filter(|i| i.status == r.status)
        .map(|i| i.instance.as_str())
        .collect();
    say!(
        "fleet: {} ({}){}",
        r.status,
        worst.join(", "),
        if r.pass { ", pass" } else { "" }
    );
}

/// The report, with each instance's scenario named by its place in the
/// verdict order, so the index lists the leaking replicas first.
fn write_report(r: &FleetReport, mut analyses: Vec<Analysis>, dir: &Path) -> anyhow::Result<()> {
    for a in &mut analyses {
        let instance = a.meta.labels.get("instance").cloned().unwrap_or_default();
        if let Some((n, i)) = r
            .instances
            .iter()
            .enumerate()
            .find(|(_, i)| i.instance == instance)
        {
            a.meta.labels.insert(
                leakscope_rundir::labels::SCENARIO.into(),
                format!("{:02} {} ({})", n + 1, i.instance, i.status),
            );
        }
    }
    let w = leakscope_report::render(&analyses, dir)
        .with_context(|| format!("writing the report to {}", dir.display()))?;
    tell!("report: {}", w.index.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_rundir::{LoadSample, Meta, ProcSample, RunWriter, Sample};

    /// A replica whose fds reach their limit while its request counter
    /// stalls (every request failing with EMFILE is not counted): the
    /// ceiling stands, it never reads NO LOAD.
    #[test]
    fn an_exhausted_replica_without_load_reads_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("seg");
        let meta = Meta {
            interval_ms: 15_000,
            limits: leakscope_rundir::Limits {
                open_files: Some(1024),
                ..Default::default()
            },
            ..Meta::default()
        };
        let mut w = RunWriter::create(&run, meta).unwrap();
        for seq in 0..80u64 {
            w.append(&Sample {
                seq,
                t_ms: seq * 15_000,
                proc: Some(ProcSample {
                    fds: (100 + seq * 40).min(1024),
                    rss_bytes: 50 << 20,
                    ..ProcSample::default()
                }),
                load: Some(LoadSample {
                    requests_total: 7,
                    ..LoadSample::default()
                }),
                ..Sample::default()
            })
            .unwrap();
        }
        let a = leakscope_analysis::analyze(&run).unwrap();
        assert_ne!(
            a.axis,
            Axis::Requests,
            "the premise: no load to judge per request"
        );
        let s = SegmentRun {
            index: 1,
            dir: run,
            from_unix_ms: 0,
            to_unix_ms: 80 * 15_000,
            samples: 80,
            requests: 0.0,
            max_fds: Some(1024),
        };
        let r = segment(&s, &a, &gate::Limits::default());
        assert_eq!(r.status, Status::Exhausted, "{r:?}");
    }
}
