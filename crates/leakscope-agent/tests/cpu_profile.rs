//! CPU profiles: name the busy function, one at a time, SVG on request.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{attributed_to, get, start_agent};

/// Runs `work` on a thread of its own until the returned flag is set.
fn on_a_thread(
    work: impl FnOnce(&AtomicBool) + Send + 'static,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    (stop, std::thread::spawn(move || work(&flag)))
}

/// The profiling slot is process-wide: these tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The function the profile must name. Not inlined, and it does real work
/// so the optimiser cannot remove the loop.
#[inline(never)]
fn burn_cpu_for_profile_test(stop: &AtomicBool) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_names_the_busy_function_and_refuses_a_second_one() {
    let _serial = SERIAL.lock().await;
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();
    let (stop, burner) = on_a_thread(|stop| {
        std::hint::black_box(burn_cpu_for_profile_test(stop));
    });

    let first = tokio::task::spawn_blocking(move || get(addr, "/debug/pprof/profile?seconds=2"));
    // While it runs, a second profile is refused rather than queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::task::spawn_blocking(move || get(addr, "/debug/pprof/profile?seconds=1"))
        .await
        .unwrap();
    assert_eq!(second.status, 409, "{}", second.text());

    let r = first.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("x-leakscope-note")
        .unwrap_or("")
        .contains("pprof-rs keeps"));

    let busy = attributed_to(&r.body, "burn_cpu_for_profile_test");
    assert!(
        !busy.files.is_empty(),
        "burn_cpu_for_profile_test not in the profile"
    );
    // One thread spins for the whole 2 s at 100 Hz: ~200 samples.
    assert!(
        busy.value >= 100,
        "{} of {} samples in the busy function",
        busy.value,
        busy.total
    );

    // After the first finished, the slot is free again; SVG on request.
    let svg =
        tokio::task::spawn_blocking(move || get(addr, "/debug/pprof/profile?seconds=1&format=svg"))
            .await
            .unwrap();
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.text().contains("<svg") && svg.text().contains("burn_cpu_for_profile_test"));
    stop.store(true, Ordering::Relaxed);
    burner.join().unwrap();

    // An idle process still gets an image, one that says why it is empty.
    let idle = tokio::task::spawn_blocking(move || {
        get(addr, "/debug/pprof/profile?seconds=1&format=svg&hz=1")
    })
    .await
    .unwrap();
    assert_eq!(idle.status, 200);
    assert!(idle.text().contains("<svg"), "{}", idle.text());
    agent.shutdown().await;
}

/// Samples taken inside syscalls are kept (no libc/pthread/vdso blocklist).
/// One-byte reads spend most of their CPU in the kernel and libc, as an I/O
/// server does; with the README's blocklist most of these samples vanish.
#[inline(never)]
fn syscall_heavy_for_profile_test(stop: &AtomicBool) {
    use std::io::Read;
    let mut f = std::fs::File::open("/dev/zero").unwrap();
    let mut buf = [0u8; 1];
    while !stop.load(Ordering::Relaxed) {
        f.read_exact(&mut buf).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_in_syscalls_are_kept() {
    let _serial = SERIAL.lock().await;
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();
    let (stop, t) = on_a_thread(syscall_heavy_for_profile_test);
    let r = tokio::task::spawn_blocking(move || get(addr, "/debug/pprof/profile?seconds=2"))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let hit = attributed_to(&r.body, "syscall_heavy_for_profile_test").value;
    assert!(
        hit >= 80,
        "only {hit} samples under the syscall-heavy function"
    );
}
