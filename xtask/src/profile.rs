//! `cargo xtask profile`: every leak scenario, leaky and fixed, under the
//! real sidecar and the real server, then the HTML report and a verdict
//! table the project is held to.
//!
//! Each run is `leakscope run` on a fresh `download-server` process: one
//! variant per process so measurements never mix, and the release binaries
//! so the figures are the product's. Progress comes from the run directory
//! itself (samples.jsonl grows a line per tick), the same contract the
//! report reads.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use leakscope_rundir::labels;

use crate::catalogue::{self, Scenario, ScenarioExt, Variant};
use crate::expect;
use crate::workspace::{self, Bins};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variants {
    Leaky,
    Fixed,
    Both,
}

#[derive(Args)]
pub struct ProfileArgs {
    /// Profile only this scenario (repeat for several; default: all, or two
    /// with --quick). `download-server --list-scenarios` lists them.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    #[arg(long, value_enum, default_value_t = Variants::Both)]
    variant: Variants,
    /// Load per run [default: 8s; 4s with --quick]
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Requests at once for every scenario [default: each scenario's own]
    #[arg(long)]
    concurrency: Option<u32>,
    /// Where report directories go [default: reports/ in the workspace]
    #[arg(long)]
    out: Option<PathBuf>,
    /// A smoke run: fd-leak and buffer-whole-file, 4 s each
    #[arg(long)]
    quick: bool,
}

const QUICK: &[&Scenario] = &[
    &download_server::scenarios::FD_LEAK,
    &download_server::scenarios::BUFFER_WHOLE_FILE,
];

/// After the load, what the sidecar keeps watching: long enough to see
/// in-flight memory released, short enough for the 3-minute budget.
const SETTLE: Duration = Duration::from_secs(1);

pub fn run(args: ProfileArgs) -> ExitCode {
    match profile(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask profile: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Planned {
    scenario: &'static Scenario,
    variant: Variant,
    dir: PathBuf,
}

fn profile(args: ProfileArgs) -> Result<ExitCode> {
    if args.concurrency == Some(0) {
        bail!("--concurrency must be at least 1");
    }
    let started = Instant::now();
    let bins = workspace::build_release()?;
    let built = started.elapsed();
    let names: Vec<String> = if args.scenarios.is_empty() && args.quick {
        QUICK.iter().map(|s| s.name.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    let scenarios = catalogue::select(&names)?;
    let duration = args.duration.unwrap_or(if args.quick {
        Duration::from_secs(4)
    } else {
        Duration::from_secs(8)
    });
    if duration < Duration::from_secs(2) {
        bail!("--duration {duration:?} is too short for a trend (at least 2s)");
    }

    let data = workspace::target_dir().join("leakscope-profile-data");
    eprintln!("xtask: test data in {}", data.display());
    catalogue::generate(&data, &scenarios)?;

    let reports = args
        .out
        .unwrap_or_else(|| workspace::root().join("reports"));
    let report_dir = fresh_dir(&reports)?;
    let runs_dir = report_dir.join("runs");
    fs::create_dir_all(&runs_dir).with_context(|| format!("creating {}", runs_dir.display()))?;

    let variants: &[Variant] = match args.variant {
        Variants::Leaky => &[Variant::Leaky],
        Variants::Fixed => &[Variant::Fixed],
        Variants::Both => &[Variant::Leaky, Variant::Fixed],
    };
    let plan: Vec<Planned> = scenarios
        .iter()
        .flat_map(|s| {
            variants.iter().map(|&v| Planned {
                scenario: s,
                variant: v,
                dir: runs_dir.join(format!("{}-{v}", s.name)),
            })
        })
        .collect();

    // Ctrl-C: the run in flight stops itself (leakscope and the server get
    // the signal too); no new run starts, and what was recorded is reported.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }

    let mut done = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            eprintln!("xtask: interrupted; reporting the runs finished so far");
            break;
        }
        let label = format!(
            "[{}/{}] {} {}",
            i + 1,
            plan.len(),
            p.scenario.name,
            p.variant
        );
        match record(&bins, &data, p, duration, args.concurrency, &label) {
            Ok(()) => done.push(p),
            Err(e) => eprintln!("xtask: {label}: {e:#}"),
        }
    }
    if done.is_empty() {
        bail!("no run finished; see the logs in {}", runs_dir.display());
    }

    let index = render(&bins, &done, &report_dir)?;
    let failures = verdict_table(&done);
    point_latest(&reports, &report_dir);
    eprintln!(
        "\nreport: {}\nwall time: {:.0} s after the build ({:.0} s building)",
        index.display(),
        (started.elapsed() - built).as_secs_f64(),
        built.as_secs_f64()
    );
    let missing = plan.len() - done.len();
    if failures > 0 || missing > 0 {
        eprintln!("xtask profile: FAILED: {failures} verdict(s) wrong, {missing} run(s) missing");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `<reports>/<UTC timestamp>`, made unique if two runs share a second.
fn fresh_dir(reports: &Path) -> Result<PathBuf> {
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    for n in 0..100 {
        let name = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let dir = reports.join(name);
        match fs::create_dir_all(reports).and_then(|()| fs::create_dir(&dir)) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!(
        "could not make a fresh directory under {}",
        reports.display()
    )
}

fn record(
    bins: &Bins,
    data: &Path,
    p: &Planned,
    duration: Duration,
    concurrency: Option<u32>,
    label: &str,
) -> Result<()> {
    let s = &p.scenario;
    let mut cmd = Command::new(&bins.leakscope);
    cmd.arg("run")
        .arg("--quiet")
        .arg("--out")
        .arg(&p.dir)
        .args(["--ready-line", "listening on"])
        .args(["--agent", "http://{addr:debug listening on}"])
        .args(["--metrics", "http://{addr}/metrics"])
        .args(["--load", &s.load.pattern.to_string()])
        .args(["--url", &format!("http://{{addr}}{}", s.url_path())])
        .args([
            "--concurrency",
            &concurrency.unwrap_or(s.load.concurrency).to_string(),
        ])
        .args(["--load-duration", &format!("{}ms", duration.as_millis())])
        .args(["--settle", &format!("{}ms", SETTLE.as_millis())])
        .args(["--label", &format!("{}={}", labels::SCENARIO, s.name)])
        .args(["--label", &format!("{}={}", labels::VARIANT, p.variant)]);
    if let Some(rate) = s.max_rate {
        cmd.args(["--rate", &rate.to_string()]);
    }
    if s.metric() == leakscope_analysis::MetricId::Tasks {
        // Where the leaked tasks are parked, for the report. The server is
        // stopped right after, so the dump's risk (tokio's multi-thread
        // dump can wedge a runtime) costs at most the stop's grace time.
        // leakscope_agent::ENV_TASK_DUMPS, spelt out: depending on the
        // agent would build jemalloc into xtask.
        cmd.arg("--task-dump").env("LEAKSCOPE_TASK_DUMPS", "on");
    }
    cmd.arg("--")
        .arg(&bins.server)
        .arg("--root")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
        .args(["--variant", p.variant.as_str()]);
    let log_path = p.dir.with_extension("log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    cmd.stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));

    let bar = ProgressBar::new((duration + SETTLE).as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:40} [{bar:24}] {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bins.leakscope.display()))?;
    let start = Instant::now();
    let mut progress = Progress::default();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        bar.set_position(start.elapsed().as_millis() as u64);
        bar.set_message(progress.line(&p.dir));
        std::thread::sleep(Duration::from_millis(200));
    };
    bar.set_position(bar.length().unwrap_or(0));
    if !status.success() {
        bar.abandon_with_message(format!("failed ({status}); log: {}", log_path.display()));
        bail!(
            "leakscope run failed ({status}); see {}",
            log_path.display()
        );
    }
    bar.finish_with_message(progress.line(&p.dir));
    Ok(())
}

/// "N samples, R requests", from the run directory as it grows. Reads only
/// what was appended since the last look, so a long run costs the same per
/// refresh as a short one.
#[derive(Default)]
struct Progress {
    read: u64,
    samples: usize,
    requests: Option<u64>,
}

impl Progress {
    fn line(&mut self, dir: &Path) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = fs::File::open(leakscope_rundir::RunFile::Samples.path(dir)) else {
            return "starting".into();
        };
        let mut fresh = Vec::new();
        if f.seek(SeekFrom::Start(self.read)).is_ok() && f.read_to_end(&mut fresh).is_ok() {
            // Only whole lines: the one being written is read next time.
            let whole = fresh.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for l in fresh[..whole]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                self.samples += 1;
                if let Ok(s) = serde_json::from_slice::<leakscope_rundir::Sample>(l) {
                    if let Some(l) = s.load {
                        self.requests = Some(l.done + l.failed + l.aborted);
                    }
                }
            }
            self.read += whole as u64;
        }
        match self.requests {
            Some(r) => format!("{} samples, {r} requests", self.samples),
            None => format!("{} samples", self.samples),
        }
    }
}

fn render(bins: &Bins, done: &[&Planned], report_dir: &Path) -> Result<PathBuf> {
    let out = Command::new(&bins.leakscope)
        .arg("report")
        .args(done.iter().map(|p| &p.dir))
        .arg("--out")
        .arg(report_dir)
        .stderr(Stdio::inherit())
        .output()
        .context("running leakscope report")?;
    if !out.status.success() {
        bail!("leakscope report failed ({})", out.status);
    }
    let index = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    check_report(&index)?;
    Ok(index)
}

/// The report must stand alone: its pages exist, and each carries its
/// charts inline.
fn check_report(index: &Path) -> Result<()> {
    let html = fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut pages = 0;
    for part in html.split("href=\"").skip(1) {
        let target = part.split('"').next().unwrap_or("");
        if !target.ends_with(".html") || target.contains("://") {
            continue;
        }
        let page = dir.join(target);
        let text = fs::read_to_string(&page)
            .with_context(|| format!("the index links {target}, which cannot be read"))?;
        if !text.contains("<svg") {
            bail!("{} has no chart", page.display());
        }
        pages += 1;
    }
    if pages == 0 {
        bail!("{} links no scenario page", index.display());
    }
    Ok(())
}

/// Prints scenario × variant with what was measured and what was expected;
/// returns how many were wrong.
fn verdict_table(done: &[&Planned]) -> usize {
    eprintln!(
        "\n{:<26} {:<6} {:<46} {:<32} check",
        "scenario", "variant", "measured", "expected"
    );
    let mut failures = 0;
    for p in done {
        let outcome = match leakscope_analysis::analyze(&p.dir) {
            Ok(a) => expect::check(p.scenario, p.variant, &a),
            Err(e) => expect::Outcome {
                measured: "unreadable run".into(),
                expected: String::new(),
                failure: Some(e.to_string()),
            },
        };
        let check = match &outcome.failure {
            None => "ok".to_string(),
            Some(why) => {
                failures += 1;
                format!("WRONG: {why}")
            }
        };
        eprintln!(
            "{:<26} {:<6} {:<46} {:<32} {check}",
            p.scenario.name, p.variant, outcome.measured, outcome.expected
        );
    }
    failures
}

/// `<reports>/latest` → the newest report, relative so the tree can move.
fn point_latest(reports: &Path, report_dir: &Path) {
    let latest = reports.join("latest");
    let Some(name) = report_dir.file_name() else {
        return;
    };
    if fs::symlink_metadata(&latest).is_ok() {
        if let Err(e) = fs::remove_file(&latest) {
            eprintln!("xtask: cannot replace {}: {e}", latest.display());
            return;
        }
    }
    if let Err(e) = std::os::unix::fs::symlink(name, &latest) {
        eprintln!("xtask: cannot link {}: {e}", latest.display());
    }
}
