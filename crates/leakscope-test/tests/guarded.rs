//! The checks on real runtimes, tasks, sockets and heap: each rule both
//! ways, a leak caught and its clean twin passing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leakscope_test::{check, test_id, Config, Flavor, Guard, Spec};

#[global_allocator]
static ALLOC: leakscope_test::TrackingAllocator = leakscope_test::TrackingAllocator::system();

fn spec(name: &'static str, flavor: Flavor) -> Spec {
    Spec::new(flavor, test_id!(name))
}

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[test]
fn a_leaked_task_is_named_by_its_spawn_site_and_ignoring_it_passes() {
    let body = || async {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = rx.await;
        });
        std::mem::forget(tx);
    };
    let r = check(&spec("task", Flavor::MultiThread), &Config::new(), body);
    assert!(r.fails(), "{r}");
    assert_eq!(r.tasks.len(), 1, "{r}");
    if cfg!(tokio_unstable) {
        let site = r.tasks[0].site.clone().unwrap();
        assert!(
            site.starts_with("crates/leakscope-test/tests/guarded.rs:"),
            "{site}"
        );
        let ignore = site.rsplit_once(':').unwrap().0.to_string();
        let r = check(
            &spec("task", Flavor::MultiThread),
            &Config::new().ignore_site(ignore),
            body,
        );
        assert!(!r.fails(), "{r}");
    }
    assert_eq!(
        r.rerun,
        "cargo test -p leakscope-test --test guarded -- --exact task"
    );
}

#[test]
fn heap_growth_fails_after_a_warm_up_with_bytes_per_iteration() {
    let body = || async {
        KEPT.lock().unwrap().push(vec![1u8; 10_000]);
    };
    let cfg = Config::new().warmup(1).iterations(4);
    let r = check(&spec("heap", Flavor::CurrentThread), &cfg, body);
    assert!(r.fails(), "{r}");
    let top = &r.heap[0];
    assert!(
        top.site
            .starts_with("crates/leakscope-test/tests/guarded.rs:"),
        "{r}"
    );
    // The buffer, and its share of the outer Vec growing.
    assert!((10_000..10_100).contains(&top.bytes_per_iteration), "{r}");
    // A tolerance above the growth passes.
    let r = check(
        &spec("heap", Flavor::CurrentThread),
        &cfg.clone().heap_tolerance(20_000),
        body,
    );
    assert!(!r.fails(), "{r}");
}

#[test]
fn a_bounded_cache_passes_once_warm() {
    static CACHE: Mutex<std::collections::VecDeque<Vec<u8>>> =
        Mutex::new(std::collections::VecDeque::new());
    let body = || async {
        let mut c = CACHE.lock().unwrap();
        c.push_back(vec![2u8; 1000]);
        if c.len() > 16 {
            c.pop_front();
        }
    };
    let r = check(
        &spec("cache", Flavor::CurrentThread),
        &Config::new().warmup(32).iterations(32),
        body,
    );
    assert!(!r.fails(), "{r}");
}

/// A site that grows once, in one measured run, and never again: one-time
/// work that landed after the warm-up, not a leak (CPython's `[3, 0, 0]`).
#[test]
fn growth_in_one_run_of_three_is_not_a_leak() {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    static ONCE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let body = || async {
        if RUN.fetch_add(1, Ordering::Relaxed) == 2 {
            ONCE.lock().unwrap().push(vec![3u8; 50_000]);
        }
    };
    let cfg = Config::new().warmup(1);
    let r = check(&spec("once", Flavor::CurrentThread), &cfg, body);
    assert_eq!(RUN.load(Ordering::Relaxed), 4);
    assert_eq!(ONCE.lock().unwrap().len(), 1);
    assert!(!r.fails(), "{r}");
}

thread_local! {
    static PER_THREAD: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![4u8; 4096]);
}

/// Each run makes the blocking pool start one more thread, whose
/// thread-local gets its first value: that lives as long as the thread,
/// so it passes. What a thread-local gains after that is judged.
#[test]
fn a_thread_locals_first_value_passes_and_its_growth_fails() {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    fn body(grow: bool) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        move || {
            Box::pin(async move {
                // n blocking tasks that wait for each other need n threads.
                let n = RUN.fetch_add(1, Ordering::Relaxed) + 1;
                let barrier = Arc::new(std::sync::Barrier::new(n));
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        let b = Arc::clone(&barrier);
                        tokio::task::spawn_blocking(move || {
                            b.wait();
                            PER_THREAD.with(|v| {
                                if grow {
                                    v.borrow_mut().extend_from_slice(&[5u8; 1000]);
                                }
                            })
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        }
    }
    let cfg = Config::new().warmup(1);
    let r = check(&spec("tls", Flavor::MultiThread), &cfg, body(false));
    assert!(!r.fails(), "{r}");
    RUN.store(0, Ordering::Relaxed);
    let r = check(&spec("tls", Flavor::MultiThread), &cfg, body(true));
    assert!(r.fails(), "{r}");
}

/// A whole buffer held while the request runs leaks nothing, yet is over a
/// peak limit; churned chunks hold little at once, yet are over an
/// allocation limit. Each limit sees only its own kind.
#[test]
fn heap_limits_catch_what_is_held_in_flight_or_churned() {
    const MIB: u64 = 1 << 20;
    let whole = || async {
        let buf = std::hint::black_box(vec![1u8; 4 << 20]);
        tokio::task::yield_now().await;
        drop(buf);
    };
    let churn = || async {
        for _ in 0..64 {
            drop(std::hint::black_box(vec![2u8; 64 << 10]));
            tokio::task::yield_now().await;
        }
    };
    let cfg = Config::new().warmup(1);
    let held = check(
        &spec("whole", Flavor::MultiThread),
        &cfg.clone().limit_peak(MIB),
        whole,
    );
    assert!(held.fails(), "{held}");
    let peak = held.peak.unwrap();
    assert!((4 * MIB..5 * MIB).contains(&peak.used), "{held}");
    assert!(held.heap.is_empty() && held.tasks.is_empty(), "{held}");
    let roomy = check(
        &spec("whole", Flavor::MultiThread),
        &cfg.clone().limit_peak(8 * MIB),
        whole,
    );
    assert!(!roomy.fails(), "{roomy}");

    let churned = check(
        &spec("churn", Flavor::MultiThread),
        &cfg.clone().limit_peak(MIB).limit_allocated(MIB),
        churn,
    );
    assert!(churned.fails(), "{churned}");
    assert!(!churned.peak.unwrap().exceeded(), "{churned}");
    assert!(churned.allocated.unwrap().used >= 4 * MIB, "{churned}");
    assert!(
        churned.to_string().contains("limit_allocated("),
        "{churned}"
    );
}

#[test]
fn a_registered_socket_kept_past_the_test_fails_exactly() {
    static KEPT: Mutex<Vec<tokio::net::UdpSocket>> = Mutex::new(Vec::new());
    let body = || async {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        KEPT.lock().unwrap().push(s);
    };
    let r = check(&spec("fd", Flavor::MultiThread), &Config::new(), body);
    if cfg!(tokio_unstable) {
        // One per measured run, three runs.
        assert_eq!(r.registered_fds, 3, "{r}");
        assert!(r.fails(), "{r}");
    }
    KEPT.lock().unwrap().clear();
}

#[test]
fn an_exclusive_test_judges_a_plain_file_it_left_open() {
    static FILES: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.txt");
    std::fs::write(&path, b"x").unwrap();
    let p = path.clone();
    let body = move || {
        let p = p.clone();
        async move {
            FILES.lock().unwrap().push(std::fs::File::open(&p).unwrap());
        }
    };
    let r = check(
        &spec("file", Flavor::CurrentThread),
        &Config::new().exclusive(),
        body.clone(),
    );
    assert!(r.fails(), "{r}");
    assert!(
        r.fds
            .iter()
            .any(|f| f.kind == "file" && f.target.ends_with("kept.txt")),
        "{r}"
    );
    let pattern = format!("{}/*", dir.path().display());
    let cfg = Config::new().exclusive().ignore_path(&pattern);
    let r = check(&spec("file", Flavor::CurrentThread), &cfg, body);
    assert!(!r.fails(), "{r}");
    FILES.lock().unwrap().clear();
}

#[test]
fn settle_waits_for_work_that_ends_on_a_timer() {
    let body = || async {
        tokio::spawn(tokio::time::sleep(Duration::from_millis(800)));
    };
    // goleak's schedule gives up after about half a second...
    let r = check(&spec("settle", Flavor::MultiThread), &Config::new(), body);
    assert!(r.fails(), "{r}");
    // ...an explicit settle waits it out.
    let cfg = Config::new().settle(Duration::from_secs(3));
    let r = check(&spec("settle", Flavor::MultiThread), &cfg, body);
    assert!(!r.fails(), "{r}");
}

#[test]
fn a_malformed_ignore_pattern_fails_with_its_error() {
    let r = check(
        &spec("bad", Flavor::CurrentThread),
        &Config::new().ignore_path("[oops"),
        || async {},
    );
    assert!(r.fails());
    assert!(r.to_string().contains("bad option: \"[oops\""), "{r}");
}

#[tokio::test]
async fn the_guard_counts_a_leaked_task_under_tokio_test() {
    let guard = Guard::new("the_guard_counts_a_leaked_task_under_tokio_test");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rx.await;
    });
    let r = guard.check().await;
    assert!(r.fails(), "{r}");
    assert_eq!(r.tasks[0].count, 1);
    assert!(
        r.to_string()
            .contains("#[tokio::test] builds its runtime without"),
        "{r}"
    );
    drop(tx);
}

#[tokio::test]
async fn the_guard_passes_a_clean_test() {
    let guard = Guard::new("the_guard_passes_a_clean_test");
    let t = tokio::spawn(async { 1 + 1 });
    assert_eq!(t.await.unwrap(), 2);
    guard.assert_clean().await;
}

/// What a build without `--cfg tokio_unstable` cannot see, it says, and
/// still counts the task.
#[test]
fn the_build_says_what_it_cannot_see() {
    let body = || async {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = rx.await;
        });
        std::mem::forget(tx);
    };
    let r = check(&spec("blind", Flavor::CurrentThread), &Config::new(), body);
    assert!(r.fails(), "{r}");
    let count: usize = r.tasks.iter().map(|t| t.count).sum();
    assert_eq!(count, 3, "one per measured run: {r}");
    let said = r.blind.iter().any(|b| b.contains("tokio_unstable"));
    if cfg!(tokio_unstable) {
        assert!(r.tasks.iter().all(|t| t.site.is_some()), "{r}");
        assert!(!said, "{r}");
    } else {
        assert!(r.tasks.iter().all(|t| t.site.is_none()), "{r}");
        assert!(said, "{r}");
    }
}
