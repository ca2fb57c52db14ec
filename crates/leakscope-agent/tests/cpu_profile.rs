//! CPU profiles: name the busy function, one at a time, SVG on request.
//!
//! pprof-rs samples on the process's CPU time (ITIMER_PROF), so how many
//! samples a thread earns depends on how much CPU the machine gave it, not
//! on wall time: on a loaded CI machine a spinning thread may get a fraction
//! of a core. The sample counts are therefore checked against the CPU time
//! the profiled thread itself measured (CLOCK_THREAD_CPUTIME_ID) within the
//! profile's own time window, never against the seconds requested.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{attributed_to, get, gunzip, start_agent};

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

/// One thread's CPU time against wall-clock time: readings the thread takes
/// of itself every few milliseconds while it works.
#[derive(Default)]
struct CpuLog(Mutex<Vec<(SystemTime, Duration)>>);

impl CpuLog {
    /// Called by the measured thread: a reading when `next` has passed.
    fn tick(&self, next: &mut Instant) {
        let now = Instant::now();
        if now < *next {
            return;
        }
        *next = now + Duration::from_millis(5);
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let cpu = Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
        self.0.lock().unwrap().push((SystemTime::now(), cpu));
    }

    /// CPU time the thread used between its first and last readings inside
    /// `[from, to]`: a lower bound of what it used in that window.
    fn used_within(&self, from: SystemTime, to: SystemTime) -> Duration {
        let log = self.0.lock().unwrap();
        let inside: Vec<Duration> = log
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|&(_, cpu)| cpu)
            .collect();
        match (inside.first(), inside.last()) {
            (Some(a), Some(b)) => *b - *a,
            _ => Duration::ZERO,
        }
    }
}

/// Checks that a pprof profile gives `function` at least half the samples
/// the CPU time its thread used during the profile is worth (one per
/// 1/hz seconds). The CPU time comes from the thread's own clock over the
/// profile's own window (`time_nanos` + `duration_nanos`), so a thread the
/// machine starved is expected to have few samples, and one that ran but
/// lost its samples (a blocklist, a broken unwinder) still fails.
fn assert_samples_match_cpu(gzipped: &[u8], function: &str, log: &CpuLog) {
    use pprof::protos::Message;
    let profile =
        pprof::protos::Profile::decode(gunzip(gzipped).as_slice()).expect("pprof protobuf");
    assert!(profile.period > 0, "no sampling period in the profile");
    let hz = 1e9 / profile.period as f64;
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(profile.time_nanos as u64);
    let end = start + Duration::from_nanos(profile.duration_nanos as u64);
    let cpu = log.used_within(start, end).as_secs_f64();
    let got = attributed_to(gzipped, function);
    let expected = cpu * hz;
    eprintln!(
        "{function}: {} of {} samples for {cpu:.3} s of its thread's CPU at {hz} Hz \
         (worth {expected:.0})",
        got.value, got.total
    );
    // Below 0.1 s the bound would demand too few samples to mean anything.
    assert!(
        cpu >= 0.1,
        "the thread running {function} got only {cpu:.3} s of CPU in the profile window"
    );
    assert!(
        got.value as f64 >= 0.5 * expected,
        "{} of {} samples in {function}, for {cpu:.3} s of its thread's CPU at {hz} Hz",
        got.value,
        got.total
    );
}

/// The function the profile must name. Not inlined, and it does real work
/// so the optimiser cannot remove the loop. Logs its own CPU time.
#[inline(never)]
fn burn_cpu_for_profile_test(stop: &AtomicBool, log: &CpuLog) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        log.tick(&mut next);
    }
    x
}

/// GETs `target` until it is not refused with 409 (another profile holds
/// the slot), for at most a minute; returns the last reply.
fn get_unless_busy(addr: std::net::SocketAddr, target: &str) -> common::Reply {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(addr, target);
        if r.status != 409 || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_names_the_busy_function_and_refuses_a_second_one() {
    let _serial = SERIAL.lock().await;
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();
    let log = Arc::new(CpuLog::default());
    let burner_log = log.clone();
    let (stop, burner) = on_a_thread(move |stop| {
        std::hint::black_box(burn_cpu_for_profile_test(stop, &burner_log));
    });

    // A long first profile, and a second request sent while it runs must
    // be refused rather than queued. Which request reaches the agent first
    // is up to the scheduler: a second one that wins the slot runs its 1 s
    // profile (200) and is sent again, and the first, refused meanwhile,
    // is sent again too. On a loaded machine a second request can reach
    // the agent only after the first's 10 s ended; then the first is sent
    // again. The test fails only if no second request is refused in 60 s.
    let long = move || {
        tokio::task::spawn_blocking(move || {
            get_unless_busy(addr, "/debug/pprof/profile?seconds=10")
        })
    };
    let mut first = long();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no second request was refused");
        if first.is_finished() {
            let r = first.await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            first = long();
        }
        let second =
            tokio::task::spawn_blocking(move || get(addr, "/debug/pprof/profile?seconds=1"))
                .await
                .unwrap();
        if second.status == 409 {
            break;
        }
        assert_eq!(second.status, 200, "{}", second.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
    // One thread spins for the whole profile: about one sample per 10 ms of
    // CPU it was given.
    assert_samples_match_cpu(&r.body, "burn_cpu_for_profile_test", &log);

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
/// Logs its own CPU time (which counts kernel time too, as ITIMER_PROF does).
#[inline(never)]
fn syscall_heavy_for_profile_test(stop: &AtomicBool, log: &CpuLog) {
    use std::io::Read;
    let mut f = std::fs::File::open("/dev/zero").unwrap();
    let mut buf = [0u8; 1];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        f.read_exact(&mut buf).unwrap();
        log.tick(&mut next);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_in_syscalls_are_kept() {
    let _serial = SERIAL.lock().await;
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();
    let log = Arc::new(CpuLog::default());
    let reader_log = log.clone();
    let (stop, t) = on_a_thread(move |stop| syscall_heavy_for_profile_test(stop, &reader_log));
    let r = tokio::task::spawn_blocking(move || get(addr, "/debug/pprof/profile?seconds=4"))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_samples_match_cpu(&r.body, "syscall_heavy_for_profile_test", &log);
}
