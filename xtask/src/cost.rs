//! `cargo xtask bench --only cost`: what leakscope costs the service it
//! watches, as the service's CPU per request at a fixed request rate.
//!
//! Throughput on this machine moves ±20% from round to round, so a ratio of
//! two wrk runs cannot show a 3% cost. CPU per request at a rate the server
//! keeps up with can: the work per request is the same whatever the
//! machine's mood, and what the agent or the sidecar adds is added to it.
//! The server's CPU is its process CPU clock (`clock_getcpuclockid`: user +
//! system in nanoseconds, threads that have exited included), read before
//! and after each run; the load runs in its own process, so its CPU is not
//! counted.
//!
//! Every round runs every (load, variant) once; the variants' order rotates
//! from round to round, so a drift in the machine's speed is spread over
//! all of them. The table gives, per variant, the median over the rounds
//! with the lowest and highest, and the ratio of medians to the baseline,
//! with the range of the per-round ratios (a round's variants ran within a
//! minute of each other, so their ratio cancels the slow drift).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::versus::{self, Nginx, Server};
use crate::workspace;

/// A fixed-rate load the server keeps up with (far below its maximum, so
/// latency is service time, not queueing).
struct Load {
    name: &'static str,
    /// One of the files `versus::files` generates.
    file: &'static str,
    rate: u32,
}

const LOADS: &[Load] = &[
    Load {
        name: "4 KiB at 4,000 req/s",
        file: "4k.bin",
        rate: 4_000,
    },
    Load {
        name: "1 MiB at 400 req/s",
        file: "1m.bin",
        rate: 400,
    },
];

/// Keep-alive connections of the load: enough that a slow response does
/// not hold the rate back.
const CONNECTIONS: u32 = 16;
/// How often the agent's `/metrics` is scraped, as a Prometheus would.
const SCRAPE_EVERY: Duration = Duration::from_secs(15);

/// What is measured, each against the row it is compared with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// The download server built with jemalloc and no agent
    /// (`--no-default-features --features plain-jemalloc`).
    Plain,
    /// The default build: jemalloc with heap sampling at the baked-in
    /// rate, the allocation counters, the task hooks, the agent's listener,
    /// `/metrics` scraped every 15 s.
    Agent,
    /// The same process with `leakscope record --pid` attached at 4 Hz
    /// (procfs, agent and metrics sources).
    Sidecar,
    /// The default build with tokio-console's layer on (`--console`).
    Console,
    /// The default build with the task hooks off
    /// (`LEAKSCOPE_TASK_HOOKS=off`): against the agent, what they cost.
    NoHooks,
    /// nginx, one worker per core, sendfile (when installed).
    Nginx,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "download-server, jemalloc alone",
            Variant::Agent => "download-server + agent",
            Variant::Sidecar => "download-server + agent + sidecar at 4 Hz",
            Variant::Console => "download-server + agent + tokio-console",
            Variant::NoHooks => "download-server + agent, task hooks off",
            Variant::Nginx => "nginx",
        }
    }

    /// The row this one's ratio is taken against.
    fn against(self) -> Option<Variant> {
        match self {
            Variant::Plain => None,
            Variant::Agent => Some(Variant::Plain),
            Variant::Sidecar | Variant::Console | Variant::NoHooks => Some(Variant::Agent),
            Variant::Nginx => Some(Variant::Plain),
        }
    }
}

#[derive(clap::Args)]
pub struct CostArgs {
    /// Rounds; the table shows medians and ranges (at least 5)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(5..=50))]
    cost_rounds: u32,
    /// Length of each fixed-rate run
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    cost_seconds: Duration,
}

/// One run of one variant under one load.
#[derive(Clone, Copy, Debug)]
struct Measure {
    cpu_us_per_request: f64,
    /// CPU of the agent's own threads per request (agent build only).
    agent_us_per_request: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

/// The processes under test, started once and kept for every round.
struct Targets {
    plain: Server,
    agent: Server,
    console: Server,
    no_hooks: Server,
    nginx: Option<Nginx>,
    leakscope: PathBuf,
    dir: PathBuf,
}

pub fn run(args: &CostArgs) -> Result<()> {
    let dir = workspace::target_dir().join("xtask-bench");
    let (plain_bin, agent_bin, leakscope) = build(&dir)?;
    let www = versus::files(&dir)?;
    let root = www.join("files");
    let nginx = match versus::tools() {
        Ok((nginx, _)) => Some(Nginx::start(&nginx, &dir, &www)?),
        Err(why) => {
            eprintln!("xtask bench: cost: no nginx row ({why})");
            None
        }
    };
    let targets = Targets {
        plain: Server::start(&plain_bin, &root, &[])?,
        agent: Server::start(&agent_bin, &root, &["--debug-listen", "127.0.0.1:0"])?,
        console: Server::start(
            &agent_bin,
            &root,
            &["--debug-listen", "127.0.0.1:0", "--console", "127.0.0.1:0"],
        )?,
        no_hooks: Server::start_with_env(
            &agent_bin,
            &root,
            &["--debug-listen", "127.0.0.1:0"],
            &[("LEAKSCOPE_TASK_HOOKS", "off")],
        )?,
        nginx,
        leakscope,
        dir: dir.clone(),
    };
    // Every agent build is scraped alike, so their rows differ only in
    // what each row says.
    let mut scrapers = Vec::new();
    for server in [&targets.agent, &targets.console, &targets.no_hooks] {
        let debug = server
            .debug
            .context("the agent build printed no debug address")?;
        scrapers.push(Scraper::start(debug));
    }
    let mut variants = vec![
        Variant::Plain,
        Variant::Agent,
        Variant::Sidecar,
        Variant::Console,
        Variant::NoHooks,
    ];
    if targets.nginx.is_some() {
        variants.push(Variant::Nginx);
    }
    let mut results: Vec<Vec<Vec<Measure>>> = vec![vec![Vec::new(); variants.len()]; LOADS.len()];
    let total = args.cost_rounds as usize * LOADS.len() * variants.len();
    let mut done = 0;
    for round in 0..args.cost_rounds as usize {
        for (l, load) in LOADS.iter().enumerate() {
            for k in 0..variants.len() {
                let v = (k + round) % variants.len();
                done += 1;
                eprintln!(
                    "xtask bench: cost [{done}/{total}] round {}: {}, {}",
                    round + 1,
                    load.name,
                    variants[v].name()
                );
                let m = measure(&targets, variants[v], load, args.cost_seconds)?;
                results[l][v].push(m);
            }
        }
    }
    let table = render(&variants, &results, args);
    println!("{table}");
    let path = dir.join("cost.md");
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask bench: cost table in {}", path.display());
    Ok(())
}

/// The two server builds (copied apart, since both land on the same path)
/// and the release leakscope.
fn build(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let release = workspace::target_dir().join("release");
    let cargo = |args: &[&str]| -> Result<()> {
        let status = Command::new(workspace::cargo())
            .current_dir(workspace::root())
            .args(["build", "--release"])
            .args(args)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    eprintln!("xtask bench: cost: building download-server without the agent");
    cargo(&[
        "-p",
        "download-server",
        "--no-default-features",
        "--features",
        "plain-jemalloc",
    ])?;
    let plain = dir.join("download-server-plain");
    std::fs::copy(release.join("download-server"), &plain)?;
    eprintln!("xtask bench: cost: building download-server with the agent, and leakscope");
    cargo(&["-p", "download-server", "-p", "leakscope"])?;
    let agent = dir.join("download-server-agent");
    std::fs::copy(release.join("download-server"), &agent)?;
    Ok((plain, agent, release.join("leakscope")))
}

impl Targets {
    /// The download server a variant runs on; `None` for nginx.
    fn server(&self, v: Variant) -> Option<&Server> {
        match v {
            Variant::Plain => Some(&self.plain),
            Variant::Agent | Variant::Sidecar => Some(&self.agent),
            Variant::Console => Some(&self.console),
            Variant::NoHooks => Some(&self.no_hooks),
            Variant::Nginx => None,
        }
    }
}

/// One fixed-rate run: the target's CPU over it, per completed request.
fn measure(t: &Targets, v: Variant, load: &Load, secs: Duration) -> Result<Measure> {
    let (addr, pids) = match (t.server(v), &t.nginx) {
        (Some(server), _) => (server.addr, vec![server.pid()]),
        (None, Some(nginx)) => (nginx.addr, nginx.pids()),
        (None, None) => bail!("no nginx"),
    };
    let sidecar = match v {
        Variant::Sidecar => Some(attach(t, secs)?),
        _ => None,
    };
    let agent_pid = (v != Variant::Plain)
        .then(|| t.server(v))
        .flatten()
        .map(Server::pid);
    let agent_before = agent_pid.map(agent_threads_ns).transpose()?;
    let before = cpu_ns(&pids)?;
    let out = Command::new(&t.leakscope)
        .args(["load", "-q", "--url"])
        .arg(format!("http://{addr}/files/{}", load.file))
        .args(["--concurrency", &CONNECTIONS.to_string()])
        .args(["--rate", &load.rate.to_string()])
        .arg("--load-duration")
        .arg(format!("{}ms", secs.as_millis()))
        .stderr(Stdio::inherit())
        .output()
        .context("running leakscope load")?;
    let after = cpu_ns(&pids)?;
    let agent_after = agent_pid.map(agent_threads_ns).transpose()?;
    if let Some(mut s) = sidecar {
        stop(&mut s);
    }
    if !out.status.success() {
        bail!("leakscope load failed ({})", out.status);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let j: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("leakscope load's summary line: {line}"))?;
    let num = |k: &str| j[k].as_f64().with_context(|| format!("{k} in {j}"));
    let done = num("done")?;
    let expected = load.rate as f64 * secs.as_secs_f64();
    if done < 0.95 * expected {
        bail!(
            "{}: {done} requests done of the {expected} a {} run asks for: the rate is not kept, so CPU per request would be of another load",
            v.name(),
            load.name
        );
    }
    Ok(Measure {
        cpu_us_per_request: (after - before) as f64 / 1e3 / done,
        agent_us_per_request: agent_before
            .zip(agent_after)
            .map(|(b, a)| a.saturating_sub(b) as f64 / 1e3 / done),
        p50_ms: num("latency_p50_ms")?,
        p99_ms: num("latency_p99_ms")?,
        failed: num("failed")? as u64,
    })
}

/// `leakscope record --pid` on the agent build at 4 Hz, attached and
/// sampling before the run starts.
fn attach(t: &Targets, secs: Duration) -> Result<Child> {
    let debug = t.agent.debug.context("no debug address")?;
    let out = t.dir.join("cost-sidecar-run");
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(&t.leakscope)
        .args(["record", "-q", "--pid", &t.agent.pid().to_string()])
        .args(["--interval", "250ms"])
        .arg("--duration")
        .arg(format!("{}ms", secs.as_millis() + 5_000))
        .arg("--agent")
        .arg(format!("http://{debug}"))
        .arg("--metrics")
        .arg(format!("http://{}/metrics", t.agent.addr))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting leakscope record")?;
    // Attached once its first samples are on disk.
    let samples = out.join("samples.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&samples).map_or(true, |m| m.len() == 0) {
        if let Some(status) = child.try_wait()? {
            bail!("leakscope record ended before its first sample ({status})");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("leakscope record wrote no sample within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// Ends a recording as Ctrl-C does, and waits for it.
fn stop(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
    let _ = child.wait();
}

/// The processes' CPU time so far (user + system, every thread, exited ones
/// included), in nanoseconds, from their process CPU clocks.
fn cpu_ns(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for &pid in pids {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: plain C calls with valid out-pointers.
        let ts = unsafe {
            if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
                bail!("no CPU clock for process {pid}");
            }
            let mut ts: libc::timespec = std::mem::zeroed();
            if libc::clock_gettime(clock, &mut ts) != 0 {
                bail!(
                    "reading process {pid}'s CPU clock: {}",
                    std::io::Error::last_os_error()
                );
            }
            ts
        };
        total += ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    }
    Ok(total)
}

/// CPU time so far of the process's threads named as the agent names its
/// own (`leakscope-agent`: its listener and its blocking threads, which it
/// keeps), in nanoseconds from each thread's schedstat. What the sidecar
/// asks of the target is answered there; the procfs reads run in the
/// sidecar's own process.
fn agent_threads_ns(pid: u32) -> Result<u64> {
    let tasks = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&tasks).with_context(|| format!("listing {tasks}"))? {
        let dir = entry?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != "leakscope-agent" {
            continue;
        }
        // A thread that ended between the listing and here has no file.
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        let on_cpu = stat.split_whitespace().next().unwrap_or("0");
        total += on_cpu
            .parse::<u64>()
            .with_context(|| format!("{}: {stat:?}", dir.display()))?;
    }
    Ok(total)
}

/// GETs the agent's `/metrics` every [`SCRAPE_EVERY`] until dropped, as a
/// Prometheus would.
struct Scraper {
    stop: std::sync::mpsc::Sender<()>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Self {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || loop {
            if let Err(e) = get(addr, "/metrics") {
                eprintln!("xtask bench: cost: scraping the agent's /metrics: {e:#}");
            }
            match rx.recv_timeout(SCRAPE_EVERY) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        });
        Scraper { stop }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// One GET on a connection of its own, read to the end.
fn get(addr: SocketAddr, path: &str) -> Result<()> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    c.read_to_end(&mut body)?;
    if !body.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    Ok(())
}

/// Median, lowest and highest; NaN for no values (a table cell reads
/// "NaN", never a panic).
fn median_and_range(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    let med = leakscope_analysis::median(&mut s).unwrap_or(f64::NAN);
    let lo = s.iter().copied().fold(f64::NAN, f64::min);
    let hi = s.iter().copied().fold(f64::NAN, f64::max);
    (med, lo, hi)
}

/// The table: per load and variant, CPU per request (median, lowest,
/// highest), the ratio to the row it is compared with, and latency.
fn render(variants: &[Variant], results: &[Vec<Vec<Measure>>], args: &CostArgs) -> String {
    let mut s = format!(
        "CPU per request at a fixed rate: user + system of the server's processes, {} interleaved rounds of {} s, {CONNECTIONS} keep-alive connections\n\n\
         | load | variant | CPU per request: median (lowest–highest) | against | ratio of medians (per-round range) | p50 / p99 latency, median |\n|---|---|---|---|---|---|\n",
        args.cost_rounds,
        args.cost_seconds.as_secs_f64()
    );
    for (l, load) in LOADS.iter().enumerate() {
        let cpu =
            |v: usize| -> Vec<f64> { results[l][v].iter().map(|m| m.cpu_us_per_request).collect() };
        for (i, &v) in variants.iter().enumerate() {
            let (med, lo, hi) = median_and_range(&cpu(i));
            let (p50, _, _) =
                median_and_range(&results[l][i].iter().map(|m| m.p50_ms).collect::<Vec<_>>());
            let (p99, _, _) =
                median_and_range(&results[l][i].iter().map(|m| m.p99_ms).collect::<Vec<_>>());
            let ratio = v
                .against()
                .and_then(|a| variants.iter().position(|x| *x == a))
                .map(|j| {
                    let (base, _, _) = median_and_range(&cpu(j));
                    let per_round: Vec<f64> =
                        cpu(i).iter().zip(cpu(j)).map(|(a, b)| a / b).collect();
                    let (_, rlo, rhi) = median_and_range(&per_round);
                    (
                        variants[j].name(),
                        format!("{:.3}× ({rlo:.3}–{rhi:.3})", med / base),
                    )
                });
            let (against, ratio) = ratio.unwrap_or(("—", "—".into()));
            let _ = writeln!(
                s,
                "| {} | {} | {med:.2} µs ({lo:.2}–{hi:.2}) | {against} | {ratio} | {p50:.2} / {p99:.2} ms |",
                load.name,
                v.name(),
            );
        }
    }
    agent_threads(&mut s, variants, results);
    let failed: u64 = results.iter().flatten().flatten().map(|m| m.failed).sum();
    if failed > 0 {
        let _ = writeln!(s, "\n{failed} requests failed over all runs");
    }
    s
}

/// Where the sidecar's cost is paid: its questions are answered on the
/// agent's threads, so their CPU per request with the sidecar attached,
/// less without, is what it costs the target, stated against the server's
/// whole CPU per request. Precise where the whole-process ratio is not: the
/// kernel's loopback work, charged to whichever process it interrupts, does
/// not land on these threads.
fn agent_threads(s: &mut String, variants: &[Variant], results: &[Vec<Vec<Measure>>]) {
    let at = |v| variants.iter().position(|x| *x == v);
    let (Some(agent), Some(sidecar)) = (at(Variant::Agent), at(Variant::Sidecar)) else {
        return;
    };
    let _ = writeln!(
        s,
        "\nCPU per request of the agent's own threads (`leakscope-agent`), which answer the sidecar, medians:\n\n\
         | load | without the sidecar | with it at 4 Hz | the sidecar's share of the server's CPU per request |\n|---|---|---|---|"
    );
    for (l, load) in LOADS.iter().enumerate() {
        let threads = |i: usize| -> Vec<f64> {
            results[l][i]
                .iter()
                .filter_map(|m| m.agent_us_per_request)
                .collect()
        };
        let (without, _, _) = median_and_range(&threads(agent));
        let (with, _, _) = median_and_range(&threads(sidecar));
        let whole: Vec<f64> = results[l][agent]
            .iter()
            .map(|m| m.cpu_us_per_request)
            .collect();
        let (whole, _, _) = median_and_range(&whole);
        let _ = writeln!(
            s,
            "| {} | {without:.3} µs | {with:.3} µs | {:.2}% |",
            load.name,
            100.0 * (with - without) / whole
        );
    }
}
