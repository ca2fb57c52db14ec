//! The heap scenarios, measured in-process with leakscope-agent's counter of
//! bytes requested and not freed. Heap is process-wide, so the tests take
//! turns.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::scenario::{live_heap, settles, start, start_download};
use common::{get, pattern, Fixture};
use download_server::scenarios::Variant;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1 << 20;

/// How long the stalled clients' producers are given before the heap is read.
enum Until {
    /// The heap has grown by this much (≤ 15 s): for the leaky variant, the
    /// amount the leak must reach. Waiting for exactly that, instead of for
    /// the heap to stop moving, keeps a producer that a loaded machine
    /// paused for 200 ms from being measured half-way.
    Grown(i64),
    /// The heap stopped moving (two readings 200 ms apart within 256 KiB),
    /// ≤ 15 s: for the fixed variant, whose reading is checked against an
    /// upper bound, so an early reading cannot fail it wrongly.
    StopsMoving,
}

/// Heap held while `k` clients stall on `path` (after its first 16 KiB), and
/// after they hang up.
async fn held_by_stalled(
    fx: &Fixture,
    variant: Variant,
    path: &str,
    k: usize,
    until: Until,
) -> (i64, i64) {
    let server = start(fx, variant).await;
    let addr = server.addr;
    let before = live_heap() as i64;
    let path = path.to_string();
    let clients: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        (0..k)
            .map(|_| start_download(addr, &path, 16 * 1024))
            .collect()
    })
    .await
    .unwrap();
    // Let producers run ahead as far as the variant lets them.
    match until {
        Until::Grown(expected) => {
            let grew = settles(Duration::from_secs(15), || {
                live_heap() as i64 - before >= expected
            })
            .await;
            if !grew {
                eprintln!(
                    "the heap did not grow by {expected} B within 15 s; measuring it as it is"
                );
            }
        }
        Until::StopsMoving => {
            let mut last = live_heap() as i64;
            for _ in 0..75 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = live_heap() as i64;
                if (now - last).abs() < 256 * 1024 {
                    break;
                }
                last = now;
            }
        }
    }
    let during = live_heap() as i64 - before;
    drop(clients);
    let released = settles(Duration::from_secs(10), || {
        (live_heap() as i64 - before) < 4 * MIB as i64
    })
    .await;
    if !released {
        eprintln!("the heap stayed 4 MiB or more above its start for 10 s after the clients left");
    }
    let after = live_heap() as i64 - before;
    drop(server);
    (during, after)
}

/// The most a TCP send buffer can grow to (tcp_wmem's max). Bytes the
/// server has written into it are the kernel's, not the heap's, so a stalled
/// client's share of a leak is the file minus this.
fn kernel_send_buffer() -> i64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 * MIB as i64)
}

/// Size of the content each stalled client asks for: at least twice the
/// kernel's send buffer, so most of it must wait somewhere.
fn content_size() -> i64 {
    (8 * MIB as i64).max(2 * kernel_send_buffer())
}

/// Runs `k` stalled clients against each variant and checks the contract:
/// leaky holds the whole content per client (minus what the kernel's send
/// buffer took), fixed at most 512 KiB per client, and both let go after.
async fn compare_stalled(name: &str, fx: &Fixture, path: &str, k: usize) {
    let expected = k as i64 * (content_size() - kernel_send_buffer());
    let (leaky, leaky_after) =
        held_by_stalled(fx, Variant::Leaky, path, k, Until::Grown(expected)).await;
    let (fixed, fixed_after) =
        held_by_stalled(fx, Variant::Fixed, path, k, Until::StopsMoving).await;
    eprintln!("{name}: leaky held {leaky} (after {leaky_after}), fixed {fixed} (after {fixed_after}) for {k} stalled clients");
    assert!(
        leaky >= expected,
        "leaky held {leaky}, expected >= {expected}"
    );
    let bound = k as i64 * 512 * 1024 + 2 * MIB as i64;
    assert!(fixed <= bound, "fixed held {fixed}, bound {bound}");
    assert!(leaky_after < 4 * MIB as i64, "leaky kept {leaky_after}");
    assert!(fixed_after < 4 * MIB as i64, "fixed kept {fixed_after}");
}

fn write_big_file(fx: &Fixture) {
    let content = pattern(content_size() as usize);
    std::fs::write(fx.root().join("big-scenario.bin"), content).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_whole_file_holds_each_file_while_it_downloads() {
    let _turn = SERIAL.lock().await;
    let fx = Fixture::new();
    write_big_file(&fx);
    let path = "/s/buffer-whole-file/big-scenario.bin";
    compare_stalled("buffer-whole-file", &fx, path, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_channel_queues_the_file_for_a_slow_client() {
    let _turn = SERIAL.lock().await;
    let fx = Fixture::new();
    write_big_file(&fx);
    let path = "/s/unbounded-channel/big-scenario.bin";
    compare_stalled("unbounded-channel", &fx, path, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_in_memory_holds_each_archive_while_it_downloads() {
    let _turn = SERIAL.lock().await;
    let fx = Fixture::new();
    let dir = fx.root().join("bundle");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..4 {
        let part = pattern(content_size() as usize / 4);
        std::fs::write(dir.join(format!("part{i}.bin")), part).unwrap();
    }
    compare_stalled("zip-in-memory", &fx, "/s/zip-in-memory/bundle", 6).await;
}

/// Heap growth over the first and second halves of `n` small downloads.
async fn session_growth(fx: &Fixture, variant: Variant, n: usize) -> (i64, i64) {
    let server = start(fx, variant).await;
    let url = server.url("/s/unbounded-session-map/hello.txt");
    let run = |count: usize| {
        let url = url.clone();
        async move {
            let mut tasks = Vec::new();
            for w in 0..8 {
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in (w..count).step_by(8) {
                        assert_eq!(get(&url, &[]).await.status, 200);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    // Warm up connection pools and allocator caches first.
    run(200).await;
    let start = live_heap() as i64;
    run(n / 2).await;
    let half = live_heap() as i64;
    run(n / 2).await;
    let end = live_heap() as i64;
    drop(server);
    (half - start, end - half)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_map_grows_forever_and_the_cache_plateaus() {
    let _turn = SERIAL.lock().await;
    let fx = Fixture::new();
    let n = 12_000; // well past the cache's 4,096 entries
    let (l1, l2) = session_growth(&fx, Variant::Leaky, n).await;
    let (f1, f2) = session_growth(&fx, Variant::Fixed, n).await;
    eprintln!(
        "session map: leaky +{l1} then +{l2}; fixed +{f1} then +{f2} per {} requests",
        n / 2
    );
    // Each leaked session holds at least its 1 KiB resume table.
    let per_half = (n / 2) as i64 * 1024;
    assert!(
        l1 >= per_half * 9 / 10 && l2 >= per_half * 9 / 10,
        "leaky grew {l1}, {l2}"
    );
    // Past capacity the cache only replaces entries: the second half adds
    // less than a tenth of what the leak adds.
    assert!(f2 < per_half / 10, "fixed grew {f2} in the second half");
}
