//! The benchmark behind `xtask/bench/sampler-busy-host.sh`: CPU per procfs
//! sample of a target holding 100 fds on a host with 100,000 TIME_WAIT
//! entries, the sock_diag netlink way beside the `/proc/PID/net` way.
//!
//! It starts the target (itself, re-executed to hold its fds), fills the
//! loopback namespace with TIME_WAIT entries (connections the client side
//! closes first, so no process owns them), then samples the target both
//! ways in interleaved rounds and prints each round and the median and
//! range. A third row, "netlink, cold", is a new source every sample: every
//! socket is new to it, so each sample pays the dump of the connection
//! table that a target opening connections all the time would cause. CPU is this process's user+sys (CLOCK_PROCESS_CPUTIME_ID); it is
//! single-threaded, so that is the sampling alone.
//!
//!   cargo run --release -p leakscope --example sampler_busy_host -- \
//!       [TIME_WAIT (100000)] [ROUNDS (7)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use leakscope::sources::procfs::{ProcSource, ProcSourceError, SocketWay};
use rustix::time::{clock_gettime, ClockId};

/// Connections per loopback destination address: under the 28,232 ports of
/// the default ephemeral range, so each one is a new 4-tuple, not a reused
/// TIME_WAIT entry (`tcp_tw_reuse` is on for loopback by default).
const PER_ADDRESS: u32 = 10_000;
/// The target's descriptors: stdio and these make 100.
const HELD_SOCKET_PAIRS: usize = 30;
const HELD_FILES: usize = 32;
/// How long a round's samples of one way run, at least.
const ROUND: Duration = Duration::from_millis(400);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("hold") {
        return hold();
    }
    let tw: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
    let mut target = Command::new(std::env::current_exe()?)
        .arg("hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the target")?;
    let mut ready = String::new();
    let stdout = target.stdout.take().context("the target's stdout")?;
    BufReader::new(stdout)
        .read_line(&mut ready)
        .context("the target's ready line")?;
    let pid = target.id() as i32;
    let started = Instant::now();
    fill_time_wait(tw)?;
    println!(
        "filled in {:.1} s: TIME_WAIT {} (net/sockstat)",
        started.elapsed().as_secs_f64(),
        time_wait_now()
    );
    let ways = [
        (
            "netlink",
            ProcSource::with_socket_way(pid, SocketWay::Netlink)?,
        ),
        (
            "/proc/net",
            ProcSource::with_socket_way(pid, SocketWay::ProcNet)?,
        ),
    ];
    let first = ways[0].1.sample()?;
    println!(
        "target: {} fds ({:?}), TCP {:?}",
        first.fds, first.fds_by_kind, first.tcp_states
    );
    let names = ["netlink", "/proc/net", "netlink, cold"];
    let mut per: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    println!("round | way | samples | CPU µs per sample | wall µs per sample");
    for round in 0..rounds {
        // Interleaved, the order turned each round.
        for i in 0..3 {
            let k = (round + i) % 3;
            let (n, cpu, wall) = match k {
                2 => measure(|| ProcSource::with_socket_way(pid, SocketWay::Netlink)?.sample())?,
                _ => measure(|| ways[k].1.sample())?,
            };
            per[k].push(cpu);
            println!("{round} | {} | {n} | {cpu:.0} | {wall:.0}", names[k]);
        }
    }
    println!("TIME_WAIT at the end: {}", time_wait_now());
    for (k, name) in names.iter().enumerate() {
        let (med, lo, hi) = spread(&mut per[k]);
        println!("{name}: median {med:.0} µs CPU per sample (range {lo:.0}–{hi:.0}) over {rounds} rounds");
    }
    let _ = target.stdin.take().map(|mut i| i.write_all(b"\n"));
    let _ = target.kill();
    let _ = target.wait();
    Ok(())
}

/// Samples one way for at least [`ROUND`]: how many, and CPU and wall µs
/// per sample.
fn measure<T>(
    mut sample: impl FnMut() -> Result<T, ProcSourceError>,
) -> Result<(u32, f64, f64), ProcSourceError> {
    let (cpu0, wall0) = (cpu_ns(), Instant::now());
    let mut n = 0;
    while n < 3 || wall0.elapsed() < ROUND {
        sample()?;
        n += 1;
    }
    let cpu = (cpu_ns() - cpu0) as f64 / 1e3 / f64::from(n);
    let wall = wall0.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    Ok((n, cpu, wall))
}

fn cpu_ns() -> i128 {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
}

fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// `n` TIME_WAIT entries on loopback: to 127.0.0.2, .3, … (a listener on
/// each), the client side closing first so that it, owned by no process
/// once closed, holds TIME_WAIT; the server side closes after the FIN.
fn fill_time_wait(n: u32) -> anyhow::Result<()> {
    let addresses = n.div_ceil(PER_ADDRESS);
    for a in 0..addresses {
        let ip = Ipv4Addr::new(127, 0, 0, 2 + a as u8);
        let listener = TcpListener::bind(SocketAddr::from((ip, 0)))
            .with_context(|| format!("a listener on {ip}"))?;
        let to = listener.local_addr()?;
        for _ in 0..PER_ADDRESS.min(n - a * PER_ADDRESS) {
            let Ok(client) = TcpStream::connect(to) else {
                continue;
            };
            let Ok((server, _)) = listener.accept() else {
                continue;
            };
            drop(client);
            drop(server);
        }
    }
    Ok(())
}

/// TIME_WAIT entries now, from the `tw` field of /proc/net/sockstat.
fn time_wait_now() -> u64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp = s.lines().find(|l| l.starts_with("TCP:")).unwrap_or("");
    let mut it = tcp.split_whitespace();
    while let Some(w) = it.next() {
        if w == "tw" {
            return it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    0
}

/// The target: stdio, a listener with 30 connections to itself (both
/// ends), a unix pair, and 32 open files: 100 fds, held until stdin ends.
fn hold() -> anyhow::Result<()> {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    for _ in 0..HELD_SOCKET_PAIRS {
        let c = TcpStream::connect(listener.local_addr()?)?;
        let (s, _) = listener.accept()?;
        keep.push(Box::new((c, s)));
    }
    keep.push(Box::new(listener));
    keep.push(Box::new(std::os::unix::net::UnixStream::pair()?));
    let exe = std::env::current_exe()?;
    for _ in 0..HELD_FILES {
        keep.push(Box::new(std::fs::File::open(&exe)?));
    }
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}
