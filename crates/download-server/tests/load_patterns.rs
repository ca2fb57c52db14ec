//! The load driver's patterns against this server on loopback: here
//! rather than in the driver's crate, so the driver does not depend on
//! the server it drives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use download_server::{Config, Server};
use leakscope_load::{Load, Plan};

struct Target {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

const BIG: usize = 4 << 20;
const SMALL: usize = 512 << 10;

async fn target() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("big.bin"), vec![7u8; BIG]).unwrap();
    std::fs::write(root.join("small.bin"), vec![9u8; SMALL]).unwrap();
    std::fs::write(root.join("sub/a.txt"), b"alpha\n").unwrap();
    std::fs::write(root.join("sub/b.txt"), vec![b'b'; 100_000]).unwrap();
    let mut config = Config::new(root);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Target {
        addr,
        _dir: dir,
        _stop: stop,
    }
}

fn plan(addr: SocketAddr, path: &str, pattern: &str, concurrency: &str) -> Plan {
    Plan {
        urls: vec![format!("http://{addr}{path}").parse().unwrap()],
        pattern: pattern.parse().unwrap(),
        concurrency: concurrency.parse().unwrap(),
        duration: Duration::from_secs(60),
        max_requests: None,
        request_timeout: Duration::from_secs(30),
        rate: None,
    }
}

#[tokio::test]
async fn full_downloads_stop_at_the_request_budget() {
    let t = target().await;
    let mut p = plan(t.addr, "/files/small.bin", "full", "4");
    p.max_requests = Some(20);
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!(s.counts.started, 20, "{s:?}");
    assert_eq!(s.counts.done, 20, "{s:?}");
    assert_eq!(s.counts.failed + s.counts.aborted + s.cut, 0, "{s:?}");
    assert_eq!(s.counts.bytes, 20 * SMALL as u64);
    assert_eq!(s.counts.concurrency, 0, "no worker is active after the end");
}

#[tokio::test]
async fn aborted_downloads_read_little_and_count_as_aborted() {
    let t = target().await;
    let mut p = plan(t.addr, "/files/big.bin", "abort:64KiB", "4");
    p.max_requests = Some(12);
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!(s.counts.aborted, 12, "{s:?}");
    assert_eq!(s.counts.done + s.counts.failed, 0, "{s:?}");
    assert!(s.counts.bytes >= 12 * 65536, "{s:?}");
    // Reads stop at the first frame past 64 KiB, far from the 4 MiB file.
    assert!(s.counts.bytes < 12 * (1 << 20), "{s:?}");
}

#[tokio::test]
async fn slow_readers_are_held_to_their_rate() {
    let t = target().await;
    let mut p = plan(t.addr, "/files/small.bin", "slow:256KiB/s", "2");
    p.max_requests = Some(2);
    let began = Instant::now();
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!(s.counts.done, 2, "{s:?}");
    // 512 KiB at 256 KiB/s cannot finish in under 2 s (the last frame may
    // arrive just before its due time, hence the margin).
    assert!(
        began.elapsed() >= Duration::from_millis(1_800),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn ranges_must_come_back_as_206_of_the_right_length() {
    let t = target().await;
    let mut p = plan(t.addr, "/files/small.bin", "range:100-199", "2");
    p.max_requests = Some(6);
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!((s.counts.done, s.counts.bytes), (6, 600), "{s:?}");

    let mut p = plan(t.addr, "/files/small.bin", "range:9000000-9000009", "1");
    p.max_requests = Some(3);
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!(s.counts.failed, 3, "{s:?}");
    assert_eq!(s.failures.get("HTTP 416"), Some(&3), "{s:?}");

    // The widest range there is: all of the file, not an overflow to 0.
    let len = SMALL as u64;
    let mut p = plan(
        t.addr,
        "/files/small.bin",
        "range:0-18446744073709551615",
        "1",
    );
    p.max_requests = Some(2);
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!((s.counts.done, s.counts.bytes), (2, 2 * len), "{s:?}");
}

#[tokio::test]
async fn zips_must_be_whole_archives() {
    let t = target().await;
    let mut p = plan(t.addr, "/zip/sub", "zip", "2");
    p.max_requests = Some(4);
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!(s.counts.done, 4, "{s:?}");

    let mut p = plan(t.addr, "/files/sub/b.txt", "zip", "1");
    p.max_requests = Some(2);
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!(s.counts.failed, 2, "{s:?}");
    assert!(
        s.failures
            .keys()
            .any(|k| k.contains("end-of-central-directory")),
        "{s:?}"
    );
}

#[tokio::test]
async fn an_unreachable_target_fails_with_the_reason_and_ends_on_time() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut p = plan(addr, "/", "full", "2");
    p.duration = Duration::from_millis(300);
    let began = Instant::now();
    let s = Load::start(p).unwrap().finish().await;
    assert!(s.counts.failed >= 2, "{s:?}");
    assert!(s.failures.keys().any(|k| k.contains("refused")), "{s:?}");
    assert!(began.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_deadline_cuts_requests_in_flight() {
    let t = target().await;
    // 4 MiB at 64 KiB/s would take a minute; the load lasts half a second.
    let mut p = plan(t.addr, "/files/big.bin", "slow:64KiB/s", "3");
    p.duration = Duration::from_millis(500);
    let began = Instant::now();
    let s = Load::start(p).unwrap().finish().await;
    // Every request that started was cut (on a loaded machine a worker may
    // not have started one in half a second).
    assert!((1..=3).contains(&s.cut), "{s:?}");
    assert_eq!(s.counts.done + s.counts.failed, 0, "{s:?}");
    assert!(began.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_ramp_adds_workers_over_the_run() {
    let t = target().await;
    let mut p = plan(t.addr, "/files/sub/a.txt", "full", "1..4");
    p.duration = Duration::from_secs(6);
    // The schedule itself, exactly: 1 to 4 workers, the 4th from 5/6 of
    // the run (v = 1 + 3f, rounded).
    let at = |f: f64| p.concurrency.at(p.duration.mul_f64(f), p.duration);
    let schedule: Vec<u32> = [0.0, 0.1, 0.3, 0.6, 0.9, 1.0].map(at).to_vec();
    assert_eq!(schedule, [1, 1, 2, 3, 4, 4]);

    // The driver follows it: few workers at first, all four by the end.
    // Watched until the fourth is seen (then the load is stopped) rather
    // than for a fixed time, and the fourth is due a whole second before the
    // deadline: a fixed 1.9 s look at a 2 s ramp missed its last third of a
    // second whenever a loaded machine paused this thread there.
    let load = Load::start(p).unwrap();
    let live = load.counters();
    let began = Instant::now();
    let mut seen = Vec::new();
    while began.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen.push(live.counts().concurrency);
        if seen.last() == Some(&4) {
            break;
        }
    }
    load.stop();
    let s = load.finish().await;
    assert!(s.counts.done > 0, "{s:?}");
    assert!(seen.iter().take(2).all(|&c| c <= 2), "{seen:?}");
    assert_eq!(seen.iter().max(), Some(&4), "{seen:?}");
}

#[tokio::test]
async fn plans_that_cannot_run_are_refused() {
    let mut p = plan("127.0.0.1:1".parse().unwrap(), "/", "full", "1");
    p.urls = vec!["https://example.com/".parse().unwrap()];
    let e = Load::start(p.clone()).err().unwrap().to_string();
    assert!(e.contains("only http://"), "{e}");
    p.urls.clear();
    assert!(Load::start(p.clone()).is_err());
    p.urls = vec!["http://127.0.0.1:1/".parse().unwrap()];
    p.duration = Duration::ZERO;
    assert!(Load::start(p).is_err());
}

#[tokio::test]
async fn a_rate_spaces_requests_out() {
    let t = target().await;
    let mut p = plan(t.addr, "/files/sub/a.txt", "full", "4");
    p.max_requests = Some(20);
    p.rate = Some(40.0);
    let began = Instant::now();
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!(s.counts.done, 20, "{s:?}");
    // Request 19 may not start before 19/40 s.
    assert!(
        began.elapsed() >= Duration::from_millis(475),
        "{:?}",
        began.elapsed()
    );
    let mut bad = plan(t.addr, "/", "full", "1");
    bad.rate = Some(0.0);
    assert!(Load::start(bad).is_err());
}

/// Latency is each request's time to its last byte: a reader held to
/// 256 KiB/s over a 512 KiB file takes at least 2 s, whatever the machine.
#[tokio::test]
async fn latency_is_the_time_to_the_last_byte() {
    let t = target().await;
    let mut p = plan(t.addr, "/files/small.bin", "slow:256KiB/s", "2");
    p.max_requests = Some(2);
    let s = Load::start(p).unwrap().finish().await;
    assert_eq!(s.counts.done, 2, "{s:?}");
    let l = s.latency.expect("latency of two done requests");
    assert!(l.p50 >= Duration::from_millis(1_900), "{l:?}");
    assert!(l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");
    assert!(l.max < Duration::from_secs(30), "{l:?}");
}
