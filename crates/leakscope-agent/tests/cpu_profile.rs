//! CPU profiles: name the busy function, one at a time, SVG on request.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{get, gunzip, start_agent};
use pprof::protos::Message;

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
    let stop = Arc::new(AtomicBool::new(false));
    let burner = {
        let stop = stop.clone();
        std::thread::spawn(move || std::hint::black_box(burn_cpu_for_profile_test(&stop)))
    };

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

    let profile =
        pprof::protos::Profile::decode(gunzip(&r.body).as_slice()).expect("pprof protobuf");
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let ours: Vec<u64> = profile
        .function
        .iter()
        .filter(|f| s(f.name).contains("burn_cpu_for_profile_test"))
        .map(|f| f.id)
        .collect();
    assert!(
        !ours.is_empty(),
        "burn_cpu_for_profile_test not in the profile"
    );
    let locations: Vec<u64> = profile
        .location
        .iter()
        .filter(|l| l.line.iter().any(|line| ours.contains(&line.function_id)))
        .map(|l| l.id)
        .collect();
    let (mut hit, mut all) = (0i64, 0i64);
    for smp in &profile.sample {
        all += smp.value[0];
        if smp.location_id.iter().any(|id| locations.contains(id)) {
            hit += smp.value[0];
        }
    }
    // One thread spins for the whole 2 s at 100 Hz: ~200 samples.
    assert!(hit >= 100, "{hit} of {all} samples in the busy function");

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
    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let stop = stop.clone();
        std::thread::spawn(move || syscall_heavy_for_profile_test(&stop))
    };
    let r = tokio::task::spawn_blocking(move || get(addr, "/debug/pprof/profile?seconds=2"))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let profile = pprof::protos::Profile::decode(gunzip(&r.body).as_slice()).unwrap();
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let ours: Vec<u64> = profile
        .function
        .iter()
        .filter(|f| s(f.name).contains("syscall_heavy_for_profile_test"))
        .map(|f| f.id)
        .collect();
    let locations: Vec<u64> = profile
        .location
        .iter()
        .filter(|l| l.line.iter().any(|line| ours.contains(&line.function_id)))
        .map(|l| l.id)
        .collect();
    let hit: i64 = profile
        .sample
        .iter()
        .filter(|smp| smp.location_id.iter().any(|id| locations.contains(id)))
        .map(|smp| smp.value[0])
        .sum();
    assert!(
        hit >= 80,
        "only {hit} samples under the syscall-heavy function"
    );
}
