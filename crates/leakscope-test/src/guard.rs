//! [`Guard`]: leak checks for tests that keep `#[tokio::test]`.
//!
//! `#[tokio::test]` builds a runtime for the test alone, so the runtime's
//! alive-task count and its I/O driver's registrations are still exact per
//! test. What the guard cannot do is install hooks on a runtime already
//! built: no spawn sites, no parked stacks. Heap is recorded on the test's
//! own thread (all of it on a current-thread runtime, the default), and
//! reported as a warning, since a guard runs the body once and one-time
//! initialization cannot be told from a leak without a warm-up. The
//! message lists what it did not see.

use std::time::{Duration, Instant};

use leakscope_allocgroup::{Entered, Group};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::{fds, heap, registered, report, Config, Report};

/// Counts what the current test's runtime runs, from now until
/// [`Guard::check`].
///
/// ```ignore
/// #[tokio::test]
/// async fn handler_leaves_nothing() {
///     let guard = leakscope_test::Guard::new("handler_leaves_nothing");
///     handler().await;
///     guard.assert_clean().await;
/// }
/// ```
pub struct Guard {
    test: String,
    config: Config,
    handle: Handle,
    alive: usize,
    registered: u64,
    fds: fds::FdSet,
    heap: heap::HeapState,
    running: fds::Running,
    entered: Option<Entered>,
    group: Group,
}

impl Guard {
    /// Starts counting. Call it first thing in the test body.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(test: &str) -> Self {
        Self::with_config(test, Config::default())
    }

    /// [`Guard::new`] with ignores and a `settle`; warm-up and iterations
    /// do not apply (the guard does not run the body).
    pub fn with_config(test: &str, config: Config) -> Self {
        let handle = Handle::current();
        let running = fds::Running::begin(test, config.exclusive);
        let group = Group::new();
        let (alive, registered, fds, heap) = leakscope_allocgroup::outside(|| {
            (
                handle.metrics().num_alive_tasks(),
                registered(&handle),
                fds::snapshot(),
                heap::state(&group),
            )
        });
        let entered = Some(group.enter());
        Guard {
            test: test.to_string(),
            config,
            handle,
            alive,
            registered,
            fds,
            heap,
            running,
            entered,
            group,
        }
    }

    /// Waits for stragglers on goleak's schedule (or the `settle`) and
    /// says what is left.
    pub async fn check(mut self) -> Report {
        let t0 = Instant::now();
        let mut sleep = Duration::from_micros(1);
        let mut checks = 0;
        loop {
            checks += 1;
            let (alive, reg) = (
                self.handle.metrics().num_alive_tasks(),
                registered(&self.handle),
            );
            let done = match self.config.settle {
                Some(d) => t0.elapsed() >= d,
                None => checks > crate::RETRIES,
            };
            if done || (alive <= self.alive && reg <= self.registered) {
                break;
            }
            tokio::time::sleep(sleep).await;
            sleep = (sleep * 2).min(crate::MAX_SLEEP);
        }
        drop(self.entered.take());
        leakscope_allocgroup::outside(|| self.report(checks, t0.elapsed()))
    }

    /// [`Guard::check`], panicking with the report when it fails and
    /// printing its warnings when it does not.
    pub async fn assert_clean(self) {
        let report = self.check().await;
        if report.fails() {
            panic!("{report}");
        }
        if report.has_warnings() {
            eprintln!("{report}");
        }
    }

    fn report(&self, checks: u32, waited: Duration) -> Report {
        let alive = self.handle.metrics().num_alive_tasks();
        let overlapped = self.running.overlapped();
        let fds_fail = self.config.exclusive || overlapped.is_empty();
        let now_fds = fds::snapshot();
        let now = heap::state(&self.group);
        let heap = heap::growth(&[&self.heap, &now], &self.config);
        let mut blind = vec![
            "spawn sites and parked stacks: #[tokio::test] builds its runtime without \
             leakscope's hooks (use #[leakscope_test::test] to see them)"
                .to_string(),
        ];
        if self.handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
            blind.push(
                "heap allocated on the runtime's worker threads: only the test's own \
                 thread is recorded"
                    .to_string(),
            );
        }
        if !leakscope_allocgroup::hooked() {
            blind.push("heap: the global allocator does not record allocation groups".into());
        }
        if !cfg!(tokio_unstable) {
            blind.push("fd registrations: built without --cfg tokio_unstable".into());
        }
        let tasks = alive.saturating_sub(self.alive);
        Report {
            test: self.test.clone(),
            rerun: format!("cargo test -- --exact {}", self.test),
            tasks: if tasks > 0 {
                vec![report::LeakedTasks {
                    site: None,
                    count: tasks,
                    parked: Vec::new(),
                }]
            } else {
                Vec::new()
            },
            registered_fds: registered(&self.handle).saturating_sub(self.registered) as usize,
            fds: fds::appeared(&self.fds, &now_fds, |t| self.config.path_ignored(t))
                .into_iter()
                .map(|f| report::OpenFd {
                    fd: f.fd,
                    kind: f.kind.to_string(),
                    target: f.target,
                    link: f.link,
                })
                .collect(),
            fds_fail,
            overlapped: if fds_fail { Vec::new() } else { overlapped },
            heap: heap
                .sites
                .into_iter()
                .filter(|_| heap.judged > self.config.heap_tolerance)
                .map(|h| report::HeapSite {
                    site: h.site,
                    function: h.function,
                    bytes_per_iteration: h.bytes,
                })
                .collect(),
            heap_fail: false,
            heap_tolerance: self.config.heap_tolerance,
            // The guard sees no runs begin or end.
            peak: None,
            allocated: None,
            iterations: 1,
            warmup: 0,
            blind,
            errors: self.config.bad_patterns.clone(),
            checks,
            waited,
        }
    }
}
