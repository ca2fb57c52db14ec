//! The agent as a continuous-profiling scrape target: the exact requests
//! the configurations in docs/continuous-profiling.md make Parca and
//! Grafana Alloy send, against a real agent, each body read by the real
//! `go tool pprof`.
//!
//! Parca (scrape_interval 10s): `GET /debug/pprof/heap` and
//! `GET /debug/pprof/profile?seconds=10` (Parca's delta profiles ask for
//! `seconds=<scrape interval>`, and its default scrape timeout is the
//! interval + 3 s). Alloy's `pyroscope.scrape` (scrape_interval 15s, the
//! default): `GET /debug/pprof/heap` and `GET /debug/pprof/profile?seconds=14`
//! (`scrape_interval - 1`). Both send what Go's HTTP client sends
//! (`Accept-Encoding: gzip`, a User-Agent).
//!
//! Needs Go's toolchain: `cargo test` lists it as ignored, and `cargo xtask
//! test` runs it where `go` is installed (CI installs golang-go, and there a
//! missing `go` fails the run rather than skipping it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The test runs only when asked (`--ignored`), so a missing Go fails it.
fn require_go() {
    let ok = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs Go's toolchain (apt-get install golang-go)"
    );
}

/// One scrape as a Go scraper sends it; `(status, body, elapsed)`.
fn scrape(addr: SocketAddr, target: &str, user_agent: &str) -> (u16, Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {user_agent}\r\n\
         Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read reply");
    let elapsed = started.elapsed();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let status = String::from_utf8_lossy(&raw[..split])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, raw[split + 4..].to_vec(), elapsed)
}

/// `go tool pprof -top` of a body: its text, after asserting it parsed.
fn pprof_top(dir: &Path, name: &str, body: &[u8]) -> String {
    let file = dir.join(name);
    std::fs::write(&file, body).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", "-nodecount=20"])
        .arg(&file)
        .env("PPROF_TMPDIR", dir)
        .output()
        .expect("go tool pprof runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof rejected {name}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[inline(never)]
fn held_by_scrape_test(total: usize) -> Vec<Vec<u8>> {
    (0..total / 4096).map(|i| vec![i as u8; 4096]).collect()
}

#[inline(never)]
fn spin_for_scrape_test(stop: &AtomicBool) -> u64 {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    x
}

/// A scraper's two requests: the heap profile, then a delta CPU profile of
/// `seconds`, which must answer within `seconds + 3`.
fn scrape_like(addr: SocketAddr, dir: &Path, who: &str, seconds: u64) {
    let (status, body, _) = scrape(addr, "/debug/pprof/heap", who);
    assert_eq!(
        status,
        200,
        "{who} heap: {}",
        String::from_utf8_lossy(&body)
    );
    let top = pprof_top(dir, &format!("{who}-heap.pb.gz"), &body);
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert!(top.contains("held_by_scrape_test"), "{who} heap:\n{top}");

    let target = format!("/debug/pprof/profile?seconds={seconds}");
    let (status, body, took) = scrape(addr, &target, who);
    assert_eq!(status, 200, "{who} cpu: {}", String::from_utf8_lossy(&body));
    eprintln!("{who}: {target} answered in {took:.2?}");
    let window = Duration::from_secs(seconds);
    assert!(took >= window, "{who}: profiled {took:?}, asked {seconds}s");
    assert!(
        took < window + Duration::from_secs(3),
        "{who}: {took:?} is past seconds + 3, the scrape would time out"
    );
    let top = pprof_top(dir, &format!("{who}-cpu.pb.gz"), &body);
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(top.contains("spin_for_scrape_test"), "{who} cpu:\n{top}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs go: cargo xtask test runs it where Go is installed"]
async fn parca_and_alloy_scrapes_get_profiles_go_tool_pprof_reads() {
    require_go();
    let agent = common::start_agent();
    let addr = agent.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _held = held_by_scrape_test(32 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = stop.clone();
        std::thread::spawn(move || spin_for_scrape_test(&stop))
    };
    // The Go default memory path is not served: it would be a different
    // profile (allocations since start) under the same name.
    let (status, body, _) = scrape(addr, "/debug/pprof/allocs", "parca");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    let (dir2, addr2) = (dir.path().to_path_buf(), addr);
    tokio::task::spawn_blocking(move || {
        scrape_like(addr2, &dir2, "parca", 10);
        scrape_like(addr2, &dir2, "alloy", 14);
    })
    .await
    .expect("scrapes pass");
    stop.store(true, Ordering::Relaxed);
    let _ = spinner.join();
    agent.shutdown().await;
}
