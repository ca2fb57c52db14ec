//! Each zoo mode's action under leakscope-test's leak assertion, judged
//! against the zoo's own ground truth ([`Mode::truth`]): every leaking
//! mode fails its guarded check and the message names what leaked (the
//! spawn site or allocation site in `modes.rs`, or the fds by kind); every
//! bounded look-alike passes once it is warm.
//!
//! The zoo was written apart from the download server, so this is the
//! guard tried on code it was not shaped around.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use leak_zoo::modes::Zoo;
// The zoo's allocator (jemalloc behind the agent's counters, which feed
// the allocation groups), linked as the zoo binary links it.
use leak_zoo::{Amount, Mode, Resource, Truth};
use leakscope_agent as _;
use leakscope_test::{check, test_id, Config, Flavor, Report, Spec};

/// Actions per run.
const ACTS: u64 = 8;
/// Measured runs (leakscope-test's default).
const RUNS: u64 = 3;

/// Actions a bounded mode needs before it stops growing: its cache's
/// entries, or its pool's entries. Leaks need only one, for one-time
/// set-up (the zoo's statics).
fn warmup_acts(truth: Truth) -> u64 {
    match truth {
        Truth::Leak { .. } => 1,
        Truth::Bounded { bound, .. } => {
            let entries = match bound.held_bytes {
                Amount::LeakBytes(n) => n,
                Amount::Fixed(_) => 0,
            };
            entries.max(bound.fds).max(1)
        }
    }
}

/// Whether the mode touches fds the runtime does not register (raw
/// sockets, pipes, files): those are judged process-wide, so alone.
fn touches_raw_fds(mode: Mode, truth: Truth) -> bool {
    let leaks_fds = truth.leaked() == Some(Resource::Fds);
    let pools_fds = matches!(truth, Truth::Bounded { bound, .. } if bound.fds > 0);
    leaks_fds || pools_fds || Zoo::needs_scratch(mode)
}

fn guarded(mode: Mode) -> Report {
    let truth = mode.truth();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::write(&scratch, b"leak-zoo scratch\n").unwrap();
    let zoo: Arc<tokio::sync::OnceCell<Arc<Zoo>>> = Arc::default();
    let seq = Arc::new(AtomicU64::new(0));
    let leak_bytes = mode.leak_bytes(None);
    let body = move || {
        let (zoo, seq, scratch) = (Arc::clone(&zoo), Arc::clone(&seq), scratch.clone());
        async move {
            // Made in the first warm-up run: the cache-ttl purge task it
            // spawns is the zoo's, for its life, not a request's.
            let zoo = zoo
                .get_or_init(|| async { Zoo::new(mode, leak_bytes, Some(scratch)) })
                .await;
            for _ in 0..ACTS {
                zoo.act(seq.fetch_add(1, Ordering::Relaxed)).await.unwrap();
            }
        }
    };
    let mut config = Config::new()
        .warmup(warmup_acts(truth).div_ceil(ACTS) as u32 + 1)
        .iterations(RUNS as u32);
    if let Truth::Bounded { settle, .. } = truth {
        if !settle.is_zero() {
            // The truth says how long the mode takes to let go (a TTL and
            // the purge after it).
            config = config.settle(settle * 2);
        }
    }
    if touches_raw_fds(mode, truth) {
        config = config.exclusive();
    }
    let report = check(
        &Spec::new(Flavor::MultiThread, test_id!(mode.name())).workers(2),
        &config,
        body,
    );
    drop(dir);
    report
}

/// The report of a leaking mode names what leaked, as much of it as the
/// truth says.
fn assert_names_the_leak(mode: Mode, resource: Resource, per_action: Amount, r: &Report) {
    let text = r.to_string();
    assert!(r.fails(), "{mode}: leaks, yet passed:\n{text}");
    let leaked = per_action.resolve(mode.leak_bytes(None)) * ACTS * RUNS;
    match resource {
        Resource::Fds => assert!(r.fds.len() as u64 >= leaked, "{mode}:\n{text}"),
        Resource::Tasks => {
            let tasks: usize = r.tasks.iter().map(|t| t.count).sum();
            assert!(tasks as u64 >= leaked, "{mode}:\n{text}");
            if cfg!(tokio_unstable) {
                assert!(
                    text.contains("crates/leak-zoo/src/modes.rs:"),
                    "{mode}:\n{text}"
                );
            }
        }
        Resource::Heap => {
            let per_run: u64 = r.heap.iter().map(|h| h.bytes_per_iteration).sum();
            assert!(per_run * RUNS >= leaked, "{mode}:\n{text}");
            assert!(
                text.contains("crates/leak-zoo/src/modes.rs:"),
                "{mode}:\n{text}"
            );
        }
    }
    eprintln!("{mode}: fails as it should:\n{text}");
}

fn judge(mode: Mode) {
    let r = guarded(mode);
    match mode.truth() {
        Truth::Leak {
            resource,
            per_action,
        } => assert_names_the_leak(mode, resource, per_action, &r),
        Truth::Bounded { .. } => assert!(!r.fails(), "{mode}: bounded, yet failed:\n{r}"),
    }
}

macro_rules! guarded_modes {
    ($($test:ident => $mode:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                judge(Mode::$mode);
            }
        )*

        #[test]
        fn every_mode_is_judged_here() {
            let judged = [$(Mode::$mode),*];
            for m in Mode::ALL {
                assert!(judged.contains(&m), "{m} has no guarded test");
            }
        }
    };
}

guarded_modes! {
    fd_file => FdFile,
    fd_pipe => FdPipe,
    fd_udp => FdUdp,
    fd_tcp => FdTcp,
    fd_eventfd => FdEventfd,
    fd_timerfd => FdTimerfd,
    task_timer => TaskTimer,
    task_channel => TaskChannel,
    task_joinset => TaskJoinset,
    heap => Heap,
    cache_count => CacheCount,
    cache_ttl => CacheTtl,
    in_flight => InFlight,
    pool => Pool,
    healthy => Healthy,
}
