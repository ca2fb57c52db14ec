//! Each mode does what [`Mode::truth`] says, measured on the real binary:
//! the zoo serves on 127.0.0.1:0, its own `client` subcommand drives a
//! bounded number of requests from a separate process, and the test reads
//! `/debug/zoo` and `/proc/PID/fd` before and after.

mod support;

use std::net::TcpStream;

use leak_zoo::{Mode, Resource, Truth, CACHE_COUNT_CAP, POOL_ENTRY_BYTES};
use rustix::process::Signal;
use support::{addr_in, client, num, poll, Zoo};

/// One observation of the zoo.
#[derive(Debug, Clone, Copy)]
struct Snap {
    /// /debug/zoo's count, which includes the socket of that very request.
    inside_fds: u64,
    /// /proc/PID/fd read from here, just after that request.
    outside_fds: u64,
    tasks: u64,
    held: u64,
}

fn snap(zoo: &Zoo) -> Snap {
    let d = zoo.debug();
    Snap {
        inside_fds: num(&d, "fds"),
        outside_fds: zoo.proc_fds(),
        tasks: num(&d, "alive_tasks"),
        held: num(&d, "held_bytes"),
    }
}

/// No connection but our own query's is open: the two fd views differ by
/// exactly that socket, which is closed by the time we look from outside.
fn quiet(s: &Snap) -> bool {
    s.outside_fds + 1 == s.inside_fds
}

/// Growth since `base`: (fds, tasks, held bytes).
fn delta(base: &Snap, now: &Snap) -> (i64, i64, i64) {
    let d = |a: u64, b: u64| b as i64 - a as i64;
    (
        d(base.outside_fds, now.outside_fds),
        d(base.tasks, now.tasks),
        d(base.held, now.held),
    )
}

struct Load {
    requests: u64,
    concurrency: u64,
    every: u64,
    leak_bytes: Option<u64>,
}

const LOAD: Load = Load {
    requests: 500,
    concurrency: 4,
    every: 1,
    leak_bytes: None,
};

struct Checked {
    base: Snap,
    after: Snap,
}

/// Starts `mode`, applies `load`, and waits until the zoo holds what the
/// truth says: exactly per-action × actions more of the leaked resource and
/// nothing more of the others, or no more than the bound.
fn check_truth(mode: Mode, load: Load) -> Checked {
    let every = load.every.to_string();
    let leak_bytes = load.leak_bytes.map(|n| n.to_string());
    let mut args = vec!["--mode", mode.name(), "--every", &every];
    if let Some(lb) = &leak_bytes {
        args.extend(["--leak-bytes", lb]);
    }
    let zoo = Zoo::start(&args);
    let base = poll("a quiet baseline", || snap(&zoo), quiet);

    let requests = load.requests.to_string();
    let concurrency = load.concurrency.to_string();
    let url = zoo.url();
    let run = client(&[
        "--url",
        &url,
        "--requests",
        &requests,
        "--concurrency",
        &concurrency,
        "--duration",
        "300s",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let summary = run.summary.as_ref().expect("a summary line");
    assert_eq!(num(summary, "ok"), load.requests, "{summary}");
    assert_eq!(num(summary, "failed"), 0, "{summary}");
    let d = zoo.debug();
    assert_eq!(num(&d, "requests"), load.requests, "{d}");
    let actions = load.requests / load.every;
    assert_eq!(num(&d, "actions"), actions, "{d}");
    assert_eq!(d["mode"], mode.name());

    let lb = mode.leak_bytes(load.leak_bytes);
    let after = match mode.truth() {
        Truth::Leak {
            resource,
            per_action,
        } => {
            let grow = (per_action.resolve(lb) * actions) as i64;
            assert!(grow > 0, "{mode}: this load leaks nothing");
            let want = |r| if r == resource { grow } else { 0 };
            let want = (
                want(Resource::Fds),
                want(Resource::Tasks),
                want(Resource::Heap),
            );
            poll(
                &format!("{mode} to have grown by exactly (fds, tasks, bytes) {want:?}"),
                || snap(&zoo),
                |s| quiet(s) && delta(&base, s) == want,
            )
        }
        Truth::Bounded { bound, .. } => {
            let held = bound.held_bytes.resolve(lb) as i64;
            poll(
                &format!("{mode} to be within its bound {bound:?} (held {held})"),
                || snap(&zoo),
                |s| {
                    let (fds, tasks, bytes) = delta(&base, s);
                    quiet(s)
                        && (0..=bound.fds as i64).contains(&fds)
                        && (0..=bound.tasks as i64).contains(&tasks)
                        && (0..=held).contains(&bytes)
                },
            )
        }
    };
    Checked { base, after }
}

macro_rules! truth_tests {
    ($($name:ident: $mode:expr,)*) => {
        $(
            #[test]
            fn $name() {
                check_truth($mode, LOAD);
            }
        )*
    };
}

truth_tests! {
    fd_file: Mode::FdFile,
    fd_pipe: Mode::FdPipe,
    fd_udp: Mode::FdUdp,
    fd_tcp: Mode::FdTcp,
    fd_eventfd: Mode::FdEventfd,
    fd_timerfd: Mode::FdTimerfd,
    task_timer: Mode::TaskTimer,
    task_channel: Mode::TaskChannel,
    task_joinset: Mode::TaskJoinset,
    heap: Mode::Heap,
    cache_ttl: Mode::CacheTtl,
    in_flight: Mode::InFlight,
    healthy: Mode::Healthy,
}

/// More requests than the cap: the cache ends exactly full, not larger.
#[test]
fn cache_count() {
    let requests = CACHE_COUNT_CAP + 500;
    let c = check_truth(Mode::CacheCount, Load { requests, ..LOAD });
    assert_eq!(c.after.held - c.base.held, CACHE_COUNT_CAP * 4096);
}

/// The pool grows with concurrency (one socket and one buffer per entry)
/// and never past it.
#[test]
fn pool() {
    let c = check_truth(
        Mode::Pool,
        Load {
            concurrency: 8,
            ..LOAD
        },
    );
    let (fds, tasks, bytes) = delta(&c.base, &c.after);
    assert_eq!(bytes % POOL_ENTRY_BYTES as i64, 0);
    let entries = bytes / POOL_ENTRY_BYTES as i64;
    assert!((1..=8).contains(&entries), "{entries} entries");
    assert_eq!(fds, entries, "one socket per entry");
    assert_eq!(tasks, 0);
}

/// An RSS-sized heap leak: 4 KiB per request.
#[test]
fn heap_4096() {
    let c = check_truth(
        Mode::Heap,
        Load {
            leak_bytes: Some(4096),
            ..LOAD
        },
    );
    assert_eq!(c.after.held - c.base.held, 500 * 4096);
}

/// Sensitivity: one fd per 100 requests is still exactly counted.
#[test]
fn fd_file_every_100() {
    let c = check_truth(Mode::FdFile, Load { every: 100, ..LOAD });
    assert_eq!(c.after.outside_fds - c.base.outside_fds, 5);
}

/// Naming every mode's test here makes adding a mode without one a
/// compile error.
#[test]
fn every_mode_has_a_test() {
    for mode in Mode::ALL {
        let _test: fn() = match mode {
            Mode::FdFile => fd_file,
            Mode::FdPipe => fd_pipe,
            Mode::FdUdp => fd_udp,
            Mode::FdTcp => fd_tcp,
            Mode::FdEventfd => fd_eventfd,
            Mode::FdTimerfd => fd_timerfd,
            Mode::TaskTimer => task_timer,
            Mode::TaskChannel => task_channel,
            Mode::TaskJoinset => task_joinset,
            Mode::Heap => heap,
            Mode::CacheCount => cache_count,
            Mode::CacheTtl => cache_ttl,
            Mode::InFlight => in_flight,
            Mode::Pool => pool,
            Mode::Healthy => healthy,
        };
    }
}

/// At the fd limit the zoo keeps running: requests answer 500 with the
/// error, it is logged, accepts that fail with EMFILE are retried, and once
/// fds free up the zoo answers again.
#[test]
fn fd_limit_is_survived() {
    let mut zoo = Zoo::start_with_fd_limit(128, &["--mode", "fd-file"]);
    let url = zoo.url();
    let run = client(&[
        "--url",
        &url,
        "--requests",
        "400",
        "--concurrency",
        "2",
        "--duration",
        "300s",
    ]);
    let summary = run.summary.as_ref().expect("a summary line");
    assert!(num(summary, "ok") > 0, "{run:?}");
    assert!(num(summary, "failed") > 0, "{run:?}");
    assert!(zoo.is_running(), "the zoo exited at its fd limit");
    let log = zoo.stderr();
    assert!(
        log.contains("leak-zoo: request failed: Too many open files"),
        "{log}"
    );

    // More connections than free fds: the accept loop meets EMFILE.
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(zoo.addr).expect("connect (backlog)"))
        .collect();
    poll(
        "an accept failure in the log",
        || zoo.stderr(),
        |log| log.contains("leak-zoo: accept failed: Too many open files"),
    );
    assert!(zoo.is_running(), "the zoo exited on EMFILE from accept");
    drop(held);

    let d = poll(
        "the zoo to answer /debug/zoo again",
        || zoo.get("/debug/zoo").ok(),
        |r| matches!(r, Some((200, _))),
    );
    let d: serde_json::Value = serde_json::from_str(&d.expect("answered").1).expect("JSON");
    assert_eq!(num(&d, "requests"), 400, "{d}");
    assert_eq!(num(&d, "actions") + num(&d, "failed_actions"), 400, "{d}");
    assert_eq!(num(&d, "failed_actions"), num(summary, "failed"), "{d}");
    let status = zoo.signal_and_wait(Signal::TERM);
    assert!(status.success(), "{status}");
}

/// SIGTERM and Ctrl-C end the zoo with status 0, and the scratch file goes.
#[test]
fn signals_exit_cleanly() {
    for signal in [Signal::TERM, Signal::INT] {
        let mut zoo = Zoo::start(&["--mode", "fd-file"]);
        let scratch = std::env::temp_dir().join(format!("leak-zoo-{}.tmp", zoo.pid));
        assert!(scratch.exists(), "{}", scratch.display());
        let url = zoo.url();
        let run = client(&["--url", &url, "--requests", "20", "--duration", "300s"]);
        assert_eq!(run.code, Some(0), "{run:?}");
        let status = zoo.signal_and_wait(signal);
        assert!(status.success(), "{signal:?}: {status}");
        assert!(!scratch.exists(), "{} left behind", scratch.display());
    }
}

/// The console and agent lines come before the listening line, each with
/// an address leakscope's `{addr:PREFIX}` can read, and each answers.
#[test]
fn startup_lines_and_metrics() {
    let zoo = Zoo::start(&[
        "--mode",
        "healthy",
        "--agent",
        "127.0.0.1:0",
        "--console",
        "127.0.0.1:0",
        "--metrics",
    ]);
    let prefixes = [
        "leak-zoo console on ",
        "leak-zoo agent on ",
        "leak-zoo listening on ",
    ];
    assert_eq!(zoo.lines.len(), prefixes.len(), "{:?}", zoo.lines);
    for (line, prefix) in zoo.lines.iter().zip(prefixes) {
        assert!(line.starts_with(prefix), "{line:?}");
        let addr = addr_in(&line[prefix.len()..]);
        assert_ne!(addr.port(), 0, "{line:?}");
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
    let agent = addr_in(&zoo.lines[1]["leak-zoo agent on ".len()..]);
    let (status, _) = support::get(agent, "/debug").expect("agent /debug");
    assert_eq!(status, 200);

    let url = zoo.url();
    let run = client(&["--url", &url, "--requests", "10", "--duration", "300s"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    for _ in 0..2 {
        let (status, body) = zoo.get("/metrics").expect("/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("\nhttp_requests_total 10\n"), "{body}");
        zoo.debug();
    }

    let plain = Zoo::start(&["--mode", "healthy"]);
    assert_eq!(plain.lines.len(), 1, "{:?}", plain.lines);
    let (status, _) = plain.get("/metrics").expect("/metrics");
    assert_eq!(status, 404);
}

/// The client only ever talks to loopback.
#[test]
fn client_refuses_non_loopback() {
    for url in [
        "http://192.0.2.1:80/",
        "http://example.com/",
        "http://[2001:db8::1]/",
    ] {
        let run = client(&["--url", url, "--duration", "1s"]);
        assert_eq!(run.code, Some(2), "{url}: {run:?}");
        assert!(run.stderr.contains("loopback"), "{url}: {run:?}");
        assert!(run.summary.is_none(), "{url}: {run:?}");
    }
}
