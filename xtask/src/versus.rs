//! `cargo xtask bench --only nginx`: the reference server against nginx,
//! side by side on this machine, the same files, the same wrk.
//!
//! Machines are noisy, so no figure stands alone: each round runs every
//! load against both servers back to back (which goes first alternates),
//! and the table gives each figure's median over the rounds and the ratio
//! of the medians. nginx runs with sendfile and one worker per core, the
//! configuration its documentation recommends for static files; the server
//! with `--max-inflight` high enough that admission never refuses.
//!
//! CPU per request is the servers' own user + system time from
//! `/proc/PID/stat` (nginx: the master and its workers) over the requests
//! wrk completed, so wrk's share of the machine is not counted.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::workspace;

/// One load of the comparison.
struct Load {
    name: &'static str,
    file: &'static str,
    size: usize,
    connections: u32,
}

const LOADS: &[Load] = &[
    Load {
        name: "4 KiB, 64 connections",
        file: "4k.bin",
        size: 4 << 10,
        connections: 64,
    },
    Load {
        name: "4 KiB, 1000 connections",
        file: "4k.bin",
        size: 4 << 10,
        connections: 1000,
    },
    Load {
        name: "1 MiB, 64 connections",
        file: "1m.bin",
        size: 1 << 20,
        connections: 64,
    },
];

/// What one wrk run against one server measured.
#[derive(Clone, Copy)]
struct Round {
    requests_per_s: f64,
    bytes_per_s: f64,
    cpu_us_per_request: f64,
    errors: u64,
}

#[derive(clap::Args)]
pub struct VersusArgs {
    /// Rounds per load; the table shows medians (at least 3)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=20))]
    rounds: u32,
    /// Length of each wrk run
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// The executables the comparison needs, or why it is skipped.
pub(crate) fn tools() -> Result<(PathBuf, PathBuf), String> {
    let find = |name: &str| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    match (find("nginx"), find("wrk")) {
        (Some(n), Some(w)) => Ok((n, w)),
        (n, w) => Err(format!(
            "skipped the side-by-side run against nginx: {} not installed (apt-get install nginx-light wrk)",
            [n.is_none().then_some("nginx"), w.is_none().then_some("wrk")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// Runs the comparison; `Ok(false)` when nginx or wrk is missing (said on
/// stderr), which is not a failure.
pub fn run(args: &VersusArgs) -> Result<bool> {
    let (nginx_bin, wrk) = match tools() {
        Ok(t) => t,
        Err(why) => {
            eprintln!("xtask bench: {why}");
            return Ok(false);
        }
    };
    raise_nofile();
    let server_bin = workspace::build_server_release()?;
    let dir = workspace::target_dir().join("xtask-bench");
    let www = files(&dir)?;
    let mut nginx = Nginx::start(&nginx_bin, &dir, &www)?;
    let mut server = Server::start(&server_bin, &www.join("files"), &[])?;
    let mut table: Vec<[Vec<Round>; 2]> = LOADS.iter().map(|_| [vec![], vec![]]).collect();
    let total = args.rounds as usize * LOADS.len() * 2;
    let mut done = 0;
    for round in 0..args.rounds {
        for (i, load) in LOADS.iter().enumerate() {
            // Alternate who goes first, so a drift in the machine's speed
            // does not always favour the same side.
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                done += 1;
                let (name, addr, pids) = match side {
                    0 => ("nginx", nginx.addr, nginx.pids()),
                    _ => ("download-server", server.addr, vec![server.child.id()]),
                };
                eprintln!(
                    "xtask bench: [{done}/{total}] round {} of {}: {}, {name}",
                    round + 1,
                    args.rounds,
                    load.name
                );
                let r = wrk_round(&wrk, addr, load, &pids, args.duration)?;
                table[i][side].push(r);
            }
        }
    }
    nginx.stop();
    server.stop();
    let report = render(&table, args.rounds);
    println!("{report}");
    let path = dir.join("versus-nginx.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask bench: table in {}", path.display());
    Ok(true)
}

/// 1000 connections need more fds than the usual soft limit of 1024, in
/// wrk and in both servers (which inherit it).
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        if limit.current.is_some_and(|c| c < max) {
            limit.current = Some(max.min(65_536));
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                eprintln!("xtask bench: cannot raise RLIMIT_NOFILE: {e}");
            }
        }
    }
}

/// The served tree, generated: `www/files/{4k,1m}.bin` of pseudo-random
/// bytes (incompressible, though neither side compresses).
pub(crate) fn files(dir: &Path) -> Result<PathBuf> {
    let www = dir.join("www");
    let files = www.join("files");
    std::fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for load in LOADS {
        let bytes: Vec<u8> = (0..load.size)
            .map(|_| {
                // xorshift64: any fixed bytes do; these are not all zeros.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let path = files.join(load.file);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(www)
}

/// A port free right now on 127.0.0.1, for nginx's `listen` (nginx cannot
/// report a port it picked itself).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn wait_connectable(addr: SocketAddr, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before it listened ({status})");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) struct Nginx {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Nginx {
    pub(crate) fn start(bin: &Path, dir: &Path, www: &Path) -> Result<Self> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let conf = dir.join("nginx.conf");
        let temp = dir.join("nginx-temp");
        std::fs::create_dir_all(&temp)?;
        // As root, nginx's workers would drop to `nobody`, which may not
        // read the target directory.
        let user = if rustix::process::geteuid().is_root() {
            "user root root;"
        } else {
            ""
        };
        let text = format!(
            "{user}
daemon off;
worker_processes {workers};
worker_rlimit_nofile 8192;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    types {{ application/octet-stream bin; }}
    server {{
        listen {addr};
        root {www};
    }}
}}
",
            workers = std::thread::available_parallelism().map_or(2, |n| n.get()),
            dir = dir.display(),
            temp = temp.display(),
            www = www.display(),
        );
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx")?;
        wait_connectable(addr, &mut child, "nginx")?;
        Ok(Self { child, addr })
    }

    /// The master and its workers: their CPU time is nginx's.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut pids = vec![master];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if stat_fields(pid).is_some_and(|f| f.ppid == master) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn stop(&mut self) {
        // SIGQUIT is nginx's graceful stop; the kill is the backstop.
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The agent's address, when `extra` asked for one (`--debug-listen`).
    pub(crate) debug: Option<SocketAddr>,
}

impl Server {
    /// The release server on a free port, admission never refusing, with
    /// `extra` arguments.
    pub(crate) fn start(bin: &Path, root: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(bin, root, extra, &[])
    }

    /// [`Server::start`] with environment variables set for the server.
    pub(crate) fn start_with_env(
        bin: &Path,
        root: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0", "--max-inflight", "100000"])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting download-server")?;
        let stdout = child.stdout.take().context("download-server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut debug = None;
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("debug listening on ") {
                        debug = Some(a.parse().context("the agent's address")?);
                    } else if let Some(a) = line.strip_prefix("listening on ") {
                        break a.parse().context("download-server's address")?;
                    }
                }
                _ => {
                    let status = child.wait()?;
                    bail!("download-server exited before it listened ({status})");
                }
            }
        };
        Ok(Self { child, addr, debug })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

struct StatFields {
    ppid: u32,
    cpu_ticks: u64,
}

/// `ppid` and `utime + stime` from `/proc/PID/stat`.
fn stat_fields(pid: u32) -> Option<StatFields> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    Some(StatFields {
        ppid: f.get(1)?.parse().ok()?,
        cpu_ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| stat_fields(p))
        .map(|f| f.cpu_ticks)
        .sum()
}

/// One wrk run; its requests, errors and the servers' CPU time.
fn wrk_round(
    wrk: &Path,
    addr: SocketAddr,
    load: &Load,
    pids: &[u32],
    duration: Duration,
) -> Result<Round> {
    let url = format!("http://{addr}/files/{}", load.file);
    let before = cpu_ticks(pids);
    let out = Command::new(wrk)
        .args(["-t2", &format!("-c{}", load.connections)])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg(&url)
        .output()
        .context("running wrk")?;
    let after = cpu_ticks(pids);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let parsed = parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))?;
    // USER_HZ is 100 on every Linux architecture.
    let cpu_s = (after - before) as f64 / 100.0;
    let requests = parsed.requests.max(1) as f64;
    Ok(Round {
        requests_per_s: parsed.requests as f64 / parsed.seconds,
        bytes_per_s: parsed.requests as f64 * load.size as f64 / parsed.seconds,
        cpu_us_per_request: cpu_s * 1e6 / requests,
        errors: parsed.errors,
    })
}

struct WrkOutput {
    requests: u64,
    seconds: f64,
    errors: u64,
}

/// "  123456 requests in 5.00s, 1.23GB read", plus the error lines wrk
/// prints only when there were errors.
fn parse_wrk(text: &str) -> Result<WrkOutput> {
    let mut out = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some((n, rest)) = line.split_once(" requests in ") {
            let secs = rest.split(',').next().unwrap_or_default();
            let seconds = parse_seconds(secs).context("wrk's duration")?;
            out = Some((n.trim().parse::<u64>()?, seconds));
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
    }
    let (requests, seconds) = out.context("no \"requests in\" line")?;
    Ok(WrkOutput {
        requests,
        seconds,
        errors,
    })
}

/// wrk's durations: "5.00s", "1.00m", "500.00ms".
fn parse_seconds(s: &str) -> Result<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        bail!("unknown duration {s:?}");
    };
    Ok(num.parse::<f64>()? * scale)
}

/// The table: medians per side and their ratio, where above 1.0× means the
/// reference server did better (more per second, or less CPU per request).
fn render(table: &[[Vec<Round>; 2]], rounds: u32) -> String {
    let mut s = format!(
        "| load (median of {rounds} interleaved rounds) | nginx | download-server | ratio (≥ 1.0× is as good as nginx) |\n|---|---|---|---|\n"
    );
    // Rounds are at least 3, so NaN (no rounds) cannot print.
    let med = |rs: &[Round], f: fn(&Round) -> f64| {
        leakscope_analysis::median(&mut rs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    for (load, [ng, ds]) in LOADS.iter().zip(table) {
        let (a, b, unit) = if load.size >= 1 << 20 {
            (
                med(ng, |r| r.bytes_per_s) / 1e9,
                med(ds, |r| r.bytes_per_s) / 1e9,
                "GB/s",
            )
        } else {
            (
                med(ng, |r| r.requests_per_s) / 1e3,
                med(ds, |r| r.requests_per_s) / 1e3,
                "k req/s",
            )
        };
        let _ = writeln!(
            s,
            "| {} | {a:.2} {unit} | {b:.2} {unit} | {:.2}× |",
            load.name,
            b / a
        );
    }
    // CPU per request at the first load (small files, 64 connections).
    let (ng, ds) = (&table[0][0], &table[0][1]);
    let (a, b) = (
        med(ng, |r| r.cpu_us_per_request),
        med(ds, |r| r.cpu_us_per_request),
    );
    let _ = writeln!(
        s,
        "| CPU per request, {} (user + system) | {a:.1} µs | {b:.1} µs | {:.2}× |",
        LOADS[0].name,
        a / b
    );
    let errors: Vec<String> = LOADS
        .iter()
        .zip(table)
        .flat_map(|(load, sides)| {
            ["nginx", "download-server"]
                .iter()
                .zip(sides)
                .filter_map(move |(name, rs)| {
                    let e: u64 = rs.iter().map(|r| r.errors).sum();
                    (e > 0).then(|| format!("{name} at {}: {e} errors", load.name))
                })
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\nwrk counted errors: {}", errors.join("; "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read_with_its_errors() {
        let text = "Running 5s test @ http://127.0.0.1:1/files/4k.bin
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  300.00us   8.00ms   90.00%
  301234 requests in 5.00s, 1.23GB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  60246.80
Transfer/sec:    246.00MB
";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.requests, 301_234);
        assert!((w.seconds - 5.0).abs() < 1e-9);
        assert_eq!(w.errors, 9);
        assert!((parse_seconds("500.00ms").unwrap() - 0.5).abs() < 1e-9);
        assert!(parse_wrk("nothing").is_err());
    }
}
