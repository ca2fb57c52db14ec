//! Holds fds, of known kinds and counts, for the procfs source's tests.
//! Each way prints its ready line (`test_targets::fd_holder`) once its fds
//! are open, and ends by itself: `kinds` and `listener` (whose stdin is
//! part of what is counted, so may be /dev/null) after a minute, the
//! others when their stdin closes.

use std::any::Any;
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use test_targets::fd_holder::{HOLDING, PORT, READY};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    way: Way,
}

#[derive(Subcommand)]
enum Way {
    /// One of every kind: 7 + 2 files (DIR's `served.bin` and
    /// `other.bin`), 5 per-request logs (in DIR's `logs-12/`), a pipe, a
    /// unix socket pair, a listener with 3 connections to itself, and 2
    /// connections to PEER (which the test then closes: CLOSE_WAIT).
    Kinds { dir: PathBuf, peer: SocketAddr },
    /// N connections to a listener of its own (both ends held); on each
    /// line of stdin, closes them and opens N new ones (new inodes, new
    /// ports). Prints the ready line after each round.
    Churn { n: usize },
    /// N fds of /dev/null (a leak grown large), within the hard limit,
    /// until stdin closes; prints `HOLDING n`.
    DevNull { n: u64 },
    /// A listener on 0.0.0.0 (run it in a network namespace of its own);
    /// prints `PORT p`.
    Listener,
}

fn main() {
    match Args::parse().way {
        Way::Kinds { dir, peer } => {
            let keep = kinds(&dir, peer);
            println!("{READY}");
            hold_a_minute(keep);
        }
        Way::Churn { n } => churn(n),
        Way::DevNull { n } => {
            let n = n.min(raise_nofile(n + 64).saturating_sub(64));
            let held: Vec<std::fs::File> = (0..n)
                .map(|_| std::fs::File::open("/dev/null").unwrap())
                .collect();
            println!("{HOLDING}{}", held.len());
            wait_for_stdin_end(held);
        }
        Way::Listener => {
            let listener = TcpListener::bind("0.0.0.0:0").unwrap();
            println!("{PORT}{}", listener.local_addr().unwrap().port());
            hold_a_minute(listener);
        }
    }
}

/// Keeps `held` until stdin closes (the test is done, or gone).
fn wait_for_stdin_end<T>(held: T) {
    for _ in std::io::stdin().lock().lines() {}
    drop(held);
}

/// Keeps `held` until killed, or a minute: a test that forgets to kill it
/// leaves nothing behind for long.
fn hold_a_minute<T>(held: T) {
    std::thread::sleep(Duration::from_secs(60));
    drop(held);
}

fn kinds(dir: &Path, peer: SocketAddr) -> Vec<Box<dyn Any + Send>> {
    let mut keep: Vec<Box<dyn Any + Send>> = Vec::new();
    for (name, n) in [("served.bin", 7), ("other.bin", 2)] {
        for _ in 0..n {
            keep.push(Box::new(std::fs::File::open(dir.join(name)).unwrap()));
        }
    }
    for i in 1..=5 {
        let log = dir.join("logs-12").join(format!("req-{i}.log"));
        keep.push(Box::new(std::fs::File::create(log).unwrap()));
    }
    keep.push(Box::new(std::io::pipe().unwrap()));
    keep.push(Box::new(std::os::unix::net::UnixStream::pair().unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (s, _) = listener.accept().unwrap();
        keep.push(Box::new((c, s)));
    }
    keep.push(Box::new(listener));
    for _ in 0..2 {
        keep.push(Box::new(TcpStream::connect(peer).unwrap()));
    }
    keep
}

fn churn(n: usize) {
    // Both ends are ours: twice the fds.
    raise_nofile(2 * n as u64 + 64);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = || -> Vec<(TcpStream, TcpStream)> {
        (0..n)
            .map(|_| {
                let c = TcpStream::connect(addr).unwrap();
                (c, listener.accept().unwrap().0)
            })
            .collect()
    };
    let mut held = connect();
    println!("{READY}");
    for _ in std::io::stdin().lock().lines() {
        drop(held);
        held = connect();
        println!("{READY}");
    }
}

/// Raises RLIMIT_NOFILE towards `want` (the hard limit too, which root may
/// do; a container may refuse it) and returns the soft limit it got.
fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_none_or(|c| c >= want) {
        return now.current.unwrap_or(u64::MAX);
    }
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(now.maximum.map_or(want, |m| m.max(want))),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return want;
    }
    let hard = now.maximum.map_or(want, |m| m.min(want));
    let within = Rlimit {
        current: Some(hard),
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, within) {
        Ok(()) => hard,
        Err(_) => now.current.unwrap_or(0),
    }
}
