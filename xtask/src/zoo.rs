//! `cargo xtask zoo`: leakscope judged on a service it was not written
//! against. Every leak-zoo mode is driven the ways users drive leakscope,
//! and `leakscope check` must fail every leak and pass every bounded mode.
//!
//! The ways ([`Way`]): `leakscope run` with its own load; `leakscope record
//! --pid` while the zoo's own client drives the service, as a short burst
//! or a sustained load, with and without `--metrics`; the busy host, a
//! burst of 6,000 requests of one connection each with 10,000 TIME_WAIT
//! entries on loopback, which must still give every work window 8
//! samples or more;
//! and, for the fd modes, `run` with the zoo's RLIMIT_NOFILE lowered by
//! `prlimit`. The
//! sensitivity cases leak one fd per 100 requests (every way) and 256 B of
//! heap per request (with the agent), within 20,000 requests.
//!
//! Nothing here is tuned to a run: load sizes only make the work span
//! enough samples, and the expectation is the zoo's published truth.

mod drive;
mod timewait;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use leak_zoo::{Mode, Resource, Truth};

use crate::workspace;

#[derive(Debug, clap::Args)]
pub struct ZooArgs {
    /// Only these modes (default: all)
    #[arg(long, value_delimiter = ',')]
    mode: Vec<Mode>,
    /// Only these ways (default: all)
    #[arg(long, value_delimiter = ',')]
    way: Vec<Way>,
    /// Where the run directories and zoo.md go (default: target/xtask-zoo)
    #[arg(long)]
    out: Option<PathBuf>,
}

/// How leakscope meets the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Way {
    /// `leakscope run` starts the zoo (agent and console on; tasks are read
    /// from the agent's hooks) and drives it.
    Run,
    /// `record --pid` over a short burst from the zoo's client (agent and
    /// console on).
    Burst,
    /// `record --pid` over a sustained, paced load (agent and console on).
    Sustained,
    /// As `burst`, with `--metrics` counting requests.
    BurstMetrics,
    /// As `sustained`, with `--metrics` counting requests, and no agent:
    /// memory is judged on RSS and tasks come from the console, as on a
    /// service without leakscope-agent.
    SustainedMetrics,
    /// `run` with `prlimit --nofile` low in the zoo (fd modes only).
    Nofile,
    /// `record --pid` on a busy host: the loopback namespace first holds
    /// 10,000 TIME_WAIT entries that no process owns, then a burst of
    /// 6,000 requests in 2.5 s, one connection each (agent on, console
    /// off). Every work window must have [`MIN_WINDOW_SAMPLES`] samples.
    BusyBurst,
}

/// Samples a work window needs on the busy host: what the issue asks, where
/// a sampler that read every socket of the namespace got 3.
const MIN_WINDOW_SAMPLES: usize = 8;

impl Way {
    const ALL: [Way; 7] = [
        Way::Run,
        Way::Burst,
        Way::Sustained,
        Way::BurstMetrics,
        Way::SustainedMetrics,
        Way::Nofile,
        Way::BusyBurst,
    ];

    fn name(self) -> &'static str {
        match self {
            Way::Run => "run",
            Way::Burst => "record, burst",
            Way::Sustained => "record, sustained",
            Way::BurstMetrics => "record, burst, --metrics",
            Way::SustainedMetrics => "record, sustained, --metrics, RSS only",
            Way::Nofile => "run, prlimit --nofile",
            Way::BusyBurst => "record, busy host: 1 connection per request, 10,000 TIME_WAIT",
        }
    }

    /// Whether leakscope reads the zoo's agent (heap figures). Without it,
    /// memory is judged on RSS, which counts what the allocator keeps after
    /// a free (jemalloc returns pages over 10 s), so only the paced way
    /// goes without.
    fn agent(self) -> bool {
        self != Way::SustainedMetrics
    }

    /// Whether the zoo runs console-subscriber. Not on the busy host: there
    /// every request is a connection and a task, and console-subscriber
    /// keeps each finished task's data (~51 KB) for its retention, which
    /// at 2,400 connections a second holds tens of MiB that swamp a heap
    /// leak of 256 B per request. That confounder is judged on its own
    /// (docs/verdicts.md); this way is about the sampler's pace. Tasks are
    /// counted by the agent's hooks.
    fn console(self) -> bool {
        self != Way::BusyBurst
    }

    fn applies_to(self, mode: Mode) -> bool {
        self != Way::Nofile || mode.truth().leaked() == Some(Resource::Fds)
    }
}

/// One zoo process under one way.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub mode: Mode,
    pub way: Way,
    /// The zoo's `--every`: the action on every Nth request only.
    pub every: u64,
}

impl Case {
    fn label(&self) -> String {
        match self.every {
            1 => self.mode.name().to_string(),
            n => format!("{} --every {n}", self.mode.name()),
        }
    }

    /// Without the agent a heap leak shows only in RSS, which moves in
    /// pages and allocator extents (its noise floor is MiBs), so those ways
    /// leak 4 KiB per request, "a few KiB" as the services did; with
    /// the agent, the mode's default 256 B.
    fn leak_bytes(&self) -> Option<u64> {
        (self.mode == Mode::Heap && !self.way.agent()).then_some(4096)
    }

    fn dir_name(&self) -> String {
        let way = format!("{:?}", self.way).to_lowercase();
        format!("{}-{way}-every{}", self.mode.name(), self.every)
    }
}

/// What `leakscope check` said about a case, and whether that is the truth.
struct Row {
    case: Case,
    /// check's exit status.
    exit: Option<i32>,
    /// Verdict and figure of the metric the truth is about.
    verdict: String,
    figure: String,
    truth: String,
    failure: Option<String>,
    /// Right, with a physical caveat the table shows.
    caveat: Option<&'static str>,
}

pub fn run(args: ZooArgs) -> ExitCode {
    match zoo(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask zoo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn plan(args: &ZooArgs) -> Vec<Case> {
    let modes: Vec<Mode> = match args.mode.is_empty() {
        true => Mode::ALL.to_vec(),
        false => args.mode.clone(),
    };
    let ways: Vec<Way> = match args.way.is_empty() {
        true => Way::ALL.to_vec(),
        false => args.way.clone(),
    };
    let mut cases = Vec::new();
    for &way in &ways {
        for &mode in &modes {
            if way.applies_to(mode) {
                cases.push(Case {
                    mode,
                    way,
                    every: 1,
                });
            }
        }
    }
    // Sensitivity: one fd per 100 requests, every way (heap at 256 B per
    // request is the heap mode's default, with the agent in `run`).
    if modes.contains(&Mode::FdFile) {
        for &way in &ways {
            cases.push(Case {
                mode: Mode::FdFile,
                way,
                every: 100,
            });
        }
    }
    cases
}

fn zoo(args: ZooArgs) -> Result<bool> {
    let bins = workspace::build_release()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace::target_dir().join("xtask-zoo"));
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let cases = plan(&args);
    let started = Instant::now();
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        eprintln!(
            "xtask zoo: [{}/{}] {} — {} ({:.0} s so far)",
            i + 1,
            cases.len(),
            case.label(),
            case.way.name(),
            started.elapsed().as_secs_f64()
        );
        let dir = out.join(case.dir_name());
        let row = match drive::case(&bins, case, &dir) {
            Ok(()) => enough_samples(judge(&bins.leakscope, case, &dir), &dir),
            Err(e) => Row::failed(*case, format!("could not drive it: {e:#}")),
        };
        if let Some(why) = &row.failure {
            eprintln!("xtask zoo:   WRONG: {why}");
        }
        rows.push(row);
    }
    let table = table(&rows);
    println!("{table}");
    let md = out.join("zoo.md");
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    let wrong = rows.iter().filter(|r| r.failure.is_some()).count();
    eprintln!(
        "xtask zoo: {} of {} cases right in {:.0} s (table in {})",
        rows.len() - wrong,
        rows.len(),
        started.elapsed().as_secs_f64(),
        md.display()
    );
    Ok(wrong == 0)
}

impl Row {
    fn failed(case: Case, why: String) -> Row {
        Row {
            case,
            exit: None,
            verdict: "-".into(),
            figure: "-".into(),
            truth: truth_text(case),
            failure: Some(why),
            caveat: None,
        }
    }
}

/// On the busy host, a right verdict also needs a work window of
/// [`MIN_WINDOW_SAMPLES`]: the sampler kept its pace.
fn enough_samples(mut row: Row, dir: &Path) -> Row {
    if row.case.way != Way::BusyBurst || row.failure.is_some() {
        return row;
    }
    let (from, to) = match leakscope_analysis::analyze(dir) {
        Ok(a) => a.window,
        Err(e) => {
            row.failure = Some(format!("the analysis could not read the run: {e}"));
            return row;
        }
    };
    let n = to.saturating_sub(from);
    if n < MIN_WINDOW_SAMPLES {
        row.failure = Some(format!(
            "{n} samples in the work window, under {MIN_WINDOW_SAMPLES}"
        ));
    } else {
        row.figure = format!("{} ({n} samples in the window)", row.figure);
    }
    row
}

fn truth_text(case: Case) -> String {
    match case.mode.truth() {
        Truth::Leak {
            resource,
            per_action,
        } => {
            let n = per_action.resolve(case.mode.leak_bytes(case.leak_bytes()));
            let unit = match resource {
                Resource::Fds => "fd",
                Resource::Tasks => "task",
                Resource::Heap => "B",
            };
            match case.every {
                1 => format!("leaks {n} {unit} per request"),
                e => format!("leaks {n} {unit} per {e} requests"),
            }
        }
        Truth::Bounded { .. } => "bounded".into(),
    }
}

/// The metric ids that can show a resource's leak: heap or, without the
/// agent, RSS.
fn metric_ids(resource: Resource) -> &'static [&'static str] {
    use leakscope_analysis::MetricId;
    const FDS: &[&str] = &[MetricId::Fds.as_str()];
    const TASKS: &[&str] = &[MetricId::Tasks.as_str()];
    const HEAP: &[&str] = &[MetricId::Heap.as_str(), MetricId::Rss.as_str()];
    match resource {
        Resource::Fds => FDS,
        Resource::Tasks => TASKS,
        Resource::Heap => HEAP,
    }
}

/// Runs `leakscope check --json` on the run and holds it to the truth.
fn judge(leakscope: &Path, case: &Case, dir: &Path) -> Row {
    let output = match std::process::Command::new(leakscope)
        .args(["check", "--json", "--quiet"])
        .arg(dir)
        .output()
    {
        Ok(o) => o,
        Err(e) => return Row::failed(*case, format!("cannot run leakscope check: {e}")),
    };
    let exit = output.status.code();
    let report: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(v) => v,
        Err(e) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Row::failed(*case, format!("check printed no JSON ({e}): {stderr}"));
        }
    };
    let metrics = report["metrics"].as_array().cloned().unwrap_or_default();
    let mut caveat = None;
    let find = |id: &str| metrics.iter().find(|m| m["metric"] == id).cloned();
    let (verdict, figure, failure) = match case.mode.truth() {
        Truth::Leak { resource, .. } => {
            let m = metric_ids(resource).iter().find_map(|id| find(id));
            let verdict = m.as_ref().map(|m| m["verdict"].to_string());
            // INCONCLUSIVE counts only for the one reason physics allows:
            // console-subscriber dropped events, so task counts are a lower
            // bound (the gate then fails, as it must).
            let dropped = m
                .as_ref()
                .is_some_and(|m| m["summary"].as_str().is_some_and(|s| s.contains("dropped")));
            let caught = verdict.as_deref().is_some_and(|v| {
                v.contains("LEAK")
                    || v.contains("EXHAUSTED")
                    || v.contains("INCONCLUSIVE") && dropped
            });
            let failure = match (exit, caught) {
                (Some(1), true) => exact_tasks(&report, m.as_ref(), case),
                (Some(1), false) => Some("check failed, but not on the leaked resource".into()),
                _ => Some(format!("a leak not caught: check exited {exit:?}")),
            };
            (verdict, m, failure)
        }
        Truth::Bounded { .. } => {
            let failure = match exit {
                Some(0) => None,
                Some(1) if !case.way.agent() && only_rss(&report) => {
                    caveat = Some("RSS only: allocator retention, see docs/verdicts.md");
                    None
                }
                _ => Some(format!(
                    "a bounded mode failed the gate (exit {exit:?}): {}",
                    breaches(&report)
                )),
            };
            let worst = metrics
                .iter()
                .find(|m| m["gated"] == true && m["verdict"] != "STABLE")
                .or_else(|| metrics.first())
                .cloned();
            (
                worst.as_ref().map(|m| m["verdict"].to_string()),
                worst,
                failure,
            )
        }
    };
    Row {
        case: *case,
        exit,
        verdict: verdict.unwrap_or_else(|| "-".into()).replace('"', ""),
        figure: figure
            .map(|m| format!("{}: {}", m["metric"].as_str().unwrap_or("?"), summary(&m)))
            .unwrap_or_else(|| "-".into()),
        truth: truth_text(*case),
        failure,
        caveat,
    }
}

/// Counted by the agent's hooks, on the requests axis, a task leak must
/// measure its truth within ±2% (the bar): the count is exact, so
/// only the tick's skew between reading tasks and requests is left.
fn exact_tasks(
    report: &serde_json::Value,
    m: Option<&serde_json::Value>,
    case: &Case,
) -> Option<String> {
    let Truth::Leak {
        resource: Resource::Tasks,
        per_action,
    } = case.mode.truth()
    else {
        return None;
    };
    let hooks = leakscope_rundir::TaskSource::AgentHooks.describe();
    let exact = report["notes"].as_array().is_some_and(|n| {
        n.iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains(hooks)))
    });
    if !exact || report["axis"] != "requests" {
        return None;
    }
    let truth = per_action.resolve(0) as f64 / case.every as f64;
    let measured = m.and_then(|m| m["slope"]["value"].as_f64())?;
    ((measured - truth).abs() > 0.02 * truth).then(|| {
        format!(
            "counted by the hooks, it measured {measured:.3} per request against {truth:.2} ± 2%"
        )
    })
}

/// Whether every breach is on RSS: without the agent, what the allocator
/// keeps after freeing a churning cache can grow RSS through a
/// seconds-long load the way a leak would, and docs/verdicts.md says so. The
/// gate failing on it is conservative, not a missed leak.
fn only_rss(report: &serde_json::Value) -> bool {
    let breaches = report["breaches"].as_array().cloned().unwrap_or_default();
    report["usable"] == true
        && !breaches.is_empty()
        && breaches
            .iter()
            .all(|b| b["metric"] == leakscope_analysis::MetricId::Rss.as_str())
}

fn summary(m: &serde_json::Value) -> String {
    let mut s = m["summary"].as_str().unwrap_or("").to_string();
    if let Some(e) = m["exhausted"].as_str() {
        let _ = write!(s, "; {e}");
    }
    s.replace('|', "/")
}

fn breaches(report: &serde_json::Value) -> String {
    let mut why: Vec<String> = report["breaches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["why"].as_str().map(str::to_string))
        .collect();
    why.extend(
        report["unusable"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(|u| format!("unusable: {u}"))),
    );
    why.join("; ")
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| mode | way | check | verdict | measured | truth | right |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.case.label(),
            r.case.way.name(),
            r.exit.map_or("-".into(), |c| c.to_string()),
            r.verdict,
            r.figure,
            r.truth,
            match (&r.failure, r.caveat) {
                (None, None) => "yes".to_string(),
                (None, Some(c)) => format!("yes ({c})"),
                (Some(why), _) => format!("NO: {}", why.replace('|', "/")),
            }
        );
    }
    t
}
