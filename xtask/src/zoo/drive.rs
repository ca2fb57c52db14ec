//! Driving one zoo case: the processes, in the order a user would start
//! them. Every wait is bounded, and every child is killed on the way out.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use leakscope_rundir::SAMPLES_FILE;

use super::{timewait, Case, Way};
use crate::workspace::Bins;

/// Time between samples: short runs at a high rate need many samples.
const INTERVAL: &str = "100ms";
/// Samples before the load starts (the baseline) and after it (the idle
/// tail): well past the analysis's MIN_IDLE, and past the cache-TTL mode's
/// 1.1 s settle.
const BASELINE_SAMPLES: usize = 6;
const TAIL_SAMPLES: usize = 20;
/// `run`'s settle: the same idle tail.
const SETTLE: &str = "2s";
/// console-subscriber's retention in the zoo: it holds ~51 KB per finished
/// task until then, so it must end well inside the idle tail for memory to
/// be judged (docs/verdicts.md's advice to users with the console on).
const CONSOLE_RETENTION: &str = "500ms";
/// RLIMIT_NOFILE of the zoo in the `nofile` way: well below the requests
/// each way sends, so every fd mode reaches it.
const LOW_NOFILE: u32 = 256;
/// The load's concurrency, in every way.
const CONCURRENCY: &str = "4";
/// The busy host's TIME_WAIT entries, there before each case of the
/// `busy-burst` way (see `timewait::ensure`).
pub const BUSY_TIME_WAIT: u32 = 10_000;

/// Requests, pace and length of each way's load. A burst goes as fast as
/// the zoo answers for 2 s, twice the cache-TTL mode's lifetime, so a
/// bounded mode has time to level off while the work goes on; the other
/// ways pace 10,000 requests over 4 s. `--every 100` sends 20,000, the
/// sensitivity the issue asks for, in every way. Modes slower than the
/// pace (in-flight's 20 ms task, the pool's 2 ms hold) stop at 8 s.
///
/// The busy host's burst is the one the issue measured: 6,000 requests,
/// one connection each, in about 2.5 s (2,400 a second).
fn load(case: &Case) -> (Option<u64>, Option<u64>, &'static str) {
    let burst = matches!(case.way, Way::Burst | Way::BurstMetrics);
    if case.way == Way::BusyBurst && case.every == 1 {
        return (Some(6_000), Some(2_400), "8s");
    }
    match (case.every > 1, burst || case.way == Way::BusyBurst) {
        (false, true) => (None, None, "2s"),
        (false, false) => (Some(10_000), Some(10_000 / 4), "8s"),
        (true, true) => (Some(20_000), Some(20_000 / 2), "8s"),
        (true, false) => (Some(20_000), Some(20_000 / 4), "8s"),
    }
}

pub fn case(bins: &Bins, case: &Case, dir: &Path) -> Result<()> {
    match case.way {
        Way::Run | Way::Nofile => run(bins, case, dir),
        Way::Burst | Way::Sustained | Way::BurstMetrics | Way::SustainedMetrics => {
            record(bins, case, dir)
        }
        Way::BusyBurst => {
            let tw = timewait::ensure(BUSY_TIME_WAIT).context("filling loopback with TIME_WAIT")?;
            eprintln!("xtask zoo:   {tw} TIME_WAIT entries on loopback");
            record(bins, case, dir)
        }
    }
}

fn zoo_args(case: &Case, agent: bool, metrics: bool) -> Vec<String> {
    let mut a: Vec<String> = ["serve", "--mode", case.mode.name()]
        .map(String::from)
        .into();
    if case.way.console() {
        a.extend(
            [
                "--console",
                "127.0.0.1:0",
                "--console-retention",
                CONSOLE_RETENTION,
            ]
            .map(String::from),
        );
    } else {
        a.extend(["--console", "off"].map(String::from));
    }
    if let Some(bytes) = case.leak_bytes() {
        a.extend(["--leak-bytes".into(), bytes.to_string()]);
    }
    a.extend([
        "--agent".into(),
        if agent { "127.0.0.1:0" } else { "off" }.into(),
    ]);
    a.extend(["--every".into(), case.every.to_string()]);
    if metrics {
        a.push("--metrics".into());
    }
    a
}

/// `leakscope run`: it starts the zoo, waits for its ready line and drives
/// the load itself.
fn run(bins: &Bins, case: &Case, dir: &Path) -> Result<()> {
    let (requests, rate, duration) = load(case);
    let mut cmd = Command::new(&bins.leakscope);
    cmd.args(["run", "--quiet", "--interval", INTERVAL, "--settle", SETTLE])
        .arg("--out")
        .arg(dir)
        .args(["--ready-line", "leak-zoo listening on"])
        .args(["--url", "http://{addr}/", "--load", "full"])
        .args(["--concurrency", CONCURRENCY, "--load-duration", duration])
        .args(["--agent", "http://{addr:leak-zoo agent on}"])
        .args(["--console", "http://{addr:leak-zoo console on}"]);
    if let Some(n) = requests {
        cmd.args(["--requests", &n.to_string()]);
    }
    if let Some(rate) = rate {
        cmd.args(["--rate", &rate.to_string()]);
    }
    cmd.arg("--");
    if case.way == Way::Nofile {
        cmd.arg("prlimit")
            .arg(format!("--nofile={LOW_NOFILE}:{LOW_NOFILE}"))
            .arg("--");
    }
    cmd.arg(&bins.zoo).args(zoo_args(case, true, false));
    // `run` exits 1 when the load mostly failed, which is what exhaustion
    // does; the gate, not the exit status, is what is judged.
    let status = output_of(cmd, Duration::from_secs(120))?;
    if !dir.join(SAMPLES_FILE).exists() {
        bail!("leakscope run wrote no samples ({status})");
    }
    Ok(())
}

/// `leakscope record --pid` on a zoo started here, while the zoo's own
/// client drives it: a burst as fast as it goes, or a paced load; on the
/// busy host, one connection per request.
fn record(bins: &Bins, case: &Case, dir: &Path) -> Result<()> {
    let metrics = matches!(case.way, Way::BurstMetrics | Way::SustainedMetrics);
    let agent = case.way.agent();
    let mut zoo = Zoo::start(&bins.zoo, &zoo_args(case, agent, metrics))?;
    let mut cmd = Command::new(&bins.leakscope);
    cmd.args([
        "record",
        "--quiet",
        "--interval",
        INTERVAL,
        "--duration",
        "90s",
    ])
    .args(["--pid", &zoo.child.id().to_string()])
    .arg("--out")
    .arg(dir);
    if let Some(console) = &zoo.console {
        cmd.args(["--console", &format!("http://{console}")]);
        // With the agent, the sidecar learns the console's retention from
        // it; without, a user says it, as here (docs/verdicts.md).
        if zoo.agent.is_none() {
            cmd.args(["--console-retention", CONSOLE_RETENTION]);
        }
    }
    if metrics {
        cmd.args(["--metrics", &format!("http://{}/metrics", zoo.addr)]);
    }
    if let Some(agent) = &zoo.agent {
        cmd.args(["--agent", &format!("http://{agent}")]);
    }
    let mut recorder = Killed(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting leakscope record")?,
    );
    wait_samples(dir, BASELINE_SAMPLES, &mut recorder.0)?;
    let (requests, rate, duration) = load(case);
    let mut client = Command::new(&bins.zoo);
    client
        .args(["client", "--url", &format!("http://{}/", zoo.addr)])
        .args(["--concurrency", CONCURRENCY, "--duration", duration]);
    if let Some(n) = requests {
        client.args(["--requests", &n.to_string()]);
    }
    if let Some(rate) = rate {
        client.args(["--rate", &rate.to_string()]);
    }
    if case.way == Way::BusyBurst {
        client.arg("--close");
    }
    // The client exits 1 when most requests failed; that is the zoo's
    // business (exhaustion), not a harness error.
    output_of(client, Duration::from_secs(60))?;
    let seen = count_samples(dir);
    wait_samples(dir, seen + TAIL_SAMPLES, &mut recorder.0)?;
    rustix::process::kill_process(pid(&recorder.0), rustix::process::Signal::INT)
        .context("stopping leakscope record")?;
    let status = wait_bounded(&mut recorder.0, Duration::from_secs(30))?;
    zoo.stop();
    if !status.success() {
        bail!("leakscope record exited {status}");
    }
    Ok(())
}

fn pid(child: &Child) -> rustix::process::Pid {
    rustix::process::Pid::from_raw(child.id() as i32).expect("a child's pid is positive")
}

/// Runs a command to its end (killed after `limit`); its output is
/// discarded but for a failure's stderr.
fn output_of(mut cmd: Command, limit: Duration) -> Result<std::process::ExitStatus> {
    let mut child = Killed(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?,
    );
    wait_bounded(&mut child.0, limit)
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("still running after {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count_samples(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join(SAMPLES_FILE))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits until the recorder has written `n` samples (100 ms each).
fn wait_samples(dir: &Path, n: usize, recorder: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_samples(dir) < n {
        if let Some(status) = recorder.try_wait()? {
            bail!("leakscope record ended early ({status})");
        }
        if Instant::now() > deadline {
            bail!(
                "leakscope record wrote {} of {n} samples in 30 s",
                count_samples(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A child killed when dropped, so no error path leaves one behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A zoo server started directly, as a user's service would be.
struct Zoo {
    child: Child,
    addr: String,
    /// None when started with `--console off`.
    console: Option<String>,
    agent: Option<String>,
}

impl Zoo {
    fn start(exe: &Path, args: &[String]) -> Result<Zoo> {
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting leak-zoo")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the start-up lines, then drains stdout until the zoo ends.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut console, mut agent) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while addr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("leak-zoo printed no ready line in 10 s");
                }
            };
            if let Some(a) = line.strip_prefix("leak-zoo console on ") {
                console = Some(a.trim().to_string());
            } else if let Some(a) = line.strip_prefix("leak-zoo agent on ") {
                agent = Some(a.trim().to_string());
            } else if let Some(a) = line.strip_prefix("leak-zoo listening on ") {
                addr = Some(a.trim().to_string());
            }
        }
        Ok(Zoo {
            child,
            addr: addr.unwrap_or_default(),
            console,
            agent,
        })
    }

    /// SIGTERM, then SIGKILL if it has not ended within 5 s.
    fn stop(&mut self) {
        let _ = rustix::process::kill_process(pid(&self.child), rustix::process::Signal::TERM);
        if wait_bounded(&mut self.child, Duration::from_secs(5)).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Zoo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
