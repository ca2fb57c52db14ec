//! Leak assertions for tokio tests: goleak for tokio, which holds when
//! tests run in parallel.
//!
//! ```ignore
//! #[leakscope_test::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn download_leaves_nothing_behind() {
//!     let server = start().await;
//!     get(server.addr, "/file").await;
//!     server.shutdown().await;
//! }
//! ```
//!
//! The attribute builds the test's runtime with task hooks, puts the test's
//! thread and the runtime's threads in an allocation group, runs the body,
//! waits for stragglers on goleak's schedule and checks, **before the
//! runtime shuts down** (dropping it would cancel a leaked task and hide
//! it), that nothing the test started is still there:
//! - tasks: exact per test (its own runtime), by spawn site, with where
//!   each is parked when tokio's task dumps are built in;
//! - fds: the runtime's I/O driver registrations, exact; the process-wide
//!   `/proc/self/fd` difference fails only when no other guarded test
//!   overlapped (see [`fds`](crate::Config::exclusive));
//! - heap: what the test's threads allocated and nobody freed, by site,
//!   per iteration, judged after a [`warm-up`](Config::warmup).
//!
//! [`Guard`] does what it can for tests that keep `#[tokio::test]`.

mod config;
mod fds;
mod frames;
mod guard;
mod heap;
mod report;
mod tasks;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leakscope_allocgroup::Group;
use tokio::runtime::Runtime;

pub use config::Config;
pub use guard::Guard;
pub use leakscope_test_macros::test;
pub use report::{bytes, Budget, HeapSite, LeakedTasks, OpenFd, Parked, Report};

/// The runtime flavor, as `#[tokio::test(flavor = ...)]` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread,
}

/// Which test this is, for the message and the rerun command.
#[derive(Debug, Clone, Copy)]
pub struct TestId {
    pub package: &'static str,
    pub crate_name: &'static str,
    pub bin_name: Option<&'static str>,
    pub module_path: &'static str,
    pub name: &'static str,
}

impl TestId {
    /// The test's path as libtest names it (`module::name`).
    pub fn path(&self) -> String {
        match self.module_path.split_once("::") {
            Some((_, rest)) => format!("{rest}::{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// `cargo test` for this test alone.
    pub fn rerun(&self) -> String {
        let target = if let Some(bin) = self.bin_name {
            format!("--bin {bin}")
        } else if self.crate_name == self.package.replace('-', "_") {
            "--lib".to_string()
        } else {
            format!("--test {}", self.crate_name)
        };
        format!(
            "cargo test -p {} {target} -- --exact {}",
            self.package,
            self.path()
        )
    }
}

/// How to run one guarded test: what the attribute's arguments say.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub flavor: Flavor,
    pub worker_threads: Option<usize>,
    pub start_paused: bool,
    pub test: TestId,
}

impl Spec {
    /// A spec as the attribute writes one with only `flavor` given: for a
    /// test that calls [`check`] once per case of a table, each case named
    /// by [`test_id!`].
    pub fn new(flavor: Flavor, test: TestId) -> Self {
        Spec {
            flavor,
            worker_threads: None,
            start_paused: false,
            test,
        }
    }

    /// The attribute's `worker_threads = n`.
    pub fn workers(mut self, n: usize) -> Self {
        self.worker_threads = Some(n);
        self
    }
}

/// The [`TestId`] of `name` in the calling crate and module, as
/// `#[leakscope_test::test]` writes it (the package, crate, binary and
/// module come from where the macro is used).
#[macro_export]
macro_rules! test_id {
    ($name:expr) => {
        $crate::TestId {
            package: ::core::env!("CARGO_PKG_NAME"),
            crate_name: ::core::env!("CARGO_CRATE_NAME"),
            bin_name: ::core::option_env!("CARGO_BIN_NAME"),
            module_path: ::core::module_path!(),
            name: $name,
        }
    };
}

/// What a test body may return: `()` or a `Result` whose error fails it.
pub trait TestOutput {
    fn into_result(self) -> Result<(), String>;
}

impl TestOutput for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Debug> TestOutput for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// The attribute's entry point: runs `body` guarded and panics with the
/// report when it leaked. Warnings go to stderr (libtest shows them for a
/// failing test, or with `--nocapture`).
pub fn run_test<F, Fut>(spec: Spec, config: Config, body: F)
where
    F: Fn() -> Fut,
    Fut: Future,
    Fut::Output: TestOutput,
{
    let report = check(&spec, &config, body);
    if report.fails() {
        panic!("{report}");
    }
    if report.has_warnings() {
        eprintln!("{report}");
    }
}

/// Runs `body` as [`run_test`] does and returns what it found instead of
/// panicking: for tests of a leak that is there on purpose.
pub fn check<F, Fut>(spec: &Spec, config: &Config, body: F) -> Report
where
    F: Fn() -> Fut,
    Fut: Future,
    Fut::Output: TestOutput,
{
    let running = fds::Running::begin(&spec.test.path(), config.exclusive);
    let group = Arc::new(Group::new());
    let log = Arc::new(tasks::TaskLog::default());
    let rt = match build(spec, &log, &group) {
        Ok(rt) => rt,
        Err(e) => panic!("leakscope: cannot build the test's runtime: {e}"),
    };
    for _ in 0..config.warmup {
        run_body(&rt, &group, &body);
    }
    let base = Snapshot::take(&rt, &log, &group);
    // The heap after each run but the last, whose state is the settled one.
    let mut runs = Vec::new();
    let mut usage = heap::Usage::default();
    for i in 0..config.measured_iterations() {
        let start = usage.begin(&group);
        run_body(&rt, &group, &body);
        usage.end(&group, start);
        if i + 1 < config.measured_iterations() {
            runs.push(leakscope_allocgroup::outside(|| heap::state(&group)));
        }
    }
    let judge_heap = config.warmup > 0 && leakscope_allocgroup::hooked();
    let (now, checks, waited) = settle(&rt, &log, &group, &base, config, &running, judge_heap);
    let measured = Measured {
        base: &base,
        runs: &runs,
        usage,
        now: &now,
        checks,
        waited,
    };
    let report = assemble(spec, config, &rt, &group, &measured, &running);
    // Only now: shutting the runtime down cancels what it still runs.
    drop(rt);
    report
}

fn build(spec: &Spec, log: &Arc<tasks::TaskLog>, group: &Arc<Group>) -> std::io::Result<Runtime> {
    let mut b = match spec.flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all();
    if let Some(n) = spec.worker_threads {
        b.worker_threads(n);
    }
    if spec.start_paused {
        b.start_paused(true);
    }
    // Workers and blocking threads work for this test alone: what they
    // allocate is the test's.
    let g = Arc::clone(group);
    b.on_thread_start(move || g.enter_for_good());
    log.install(&mut b);
    b.build()
}

fn run_body<F, Fut>(rt: &Runtime, group: &Group, body: &F)
where
    F: Fn() -> Fut,
    Fut: Future,
    Fut::Output: TestOutput,
{
    let entered = group.enter();
    let out = rt.block_on(body());
    drop(entered);
    if let Err(e) = out.into_result() {
        panic!("test failed: {e}");
    }
}

/// The test's footprint at one moment.
struct Snapshot {
    tasks: tasks::TaskState,
    registered: u64,
    fds: fds::FdSet,
    heap: heap::HeapState,
}

impl Snapshot {
    fn take(rt: &Runtime, log: &tasks::TaskLog, group: &Group) -> Self {
        leakscope_allocgroup::outside(|| Snapshot {
            tasks: log.state(rt),
            registered: registered(rt.handle()),
            fds: fds::snapshot(),
            heap: heap::state(group),
        })
    }
}

/// fds the runtime's I/O driver holds registered now.
pub(crate) fn registered(handle: &tokio::runtime::Handle) -> u64 {
    #[cfg(tokio_unstable)]
    {
        let m = handle.metrics();
        m.io_driver_fd_registered_count()
            .saturating_sub(m.io_driver_fd_deregistered_count())
    }
    #[cfg(not(tokio_unstable))]
    {
        let _ = handle;
        0
    }
}

/// goleak's schedule: 20 retries, sleeping 1 µs doubling up to 100 ms.
const RETRIES: u32 = 20;
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Re-checks until nothing is left or the schedule (or `settle`) runs out;
/// the last snapshot, how many checks, and how long it waited.
fn settle(
    rt: &Runtime,
    log: &tasks::TaskLog,
    group: &Group,
    base: &Snapshot,
    config: &Config,
    running: &fds::Running,
    judge_heap: bool,
) -> (Snapshot, u32, Duration) {
    let t0 = Instant::now();
    let deadline = config.settle.map(|d| t0 + d);
    let mut sleep = Duration::from_micros(1);
    let mut checks = 0;
    loop {
        let now = Snapshot::take(rt, log, group);
        checks += 1;
        let out_of_time = match deadline {
            Some(d) => Instant::now() >= d,
            None => checks > RETRIES,
        };
        if out_of_time || clean(base, &now, config, running, judge_heap) {
            return (now, checks, t0.elapsed());
        }
        let _in = group.enter();
        rt.block_on(async move { tokio::time::sleep(sleep).await });
        sleep = (sleep * 2).min(MAX_SLEEP);
    }
}

fn clean(
    base: &Snapshot,
    now: &Snapshot,
    config: &Config,
    running: &fds::Running,
    heap: bool,
) -> bool {
    let new = tasks::NewTasks::between(&base.tasks, &now.tasks);
    let tasks_ok = new.unsited == 0 && new.by_site.keys().all(|s| config.site_ignored(s));
    let fds_ok = now.registered <= base.registered
        && (!judges_fds(config, running)
            || fds::appeared(&base.fds, &now.fds, |t| config.path_ignored(t)).is_empty());
    let tolerance = config.heap_tolerance * u64::from(config.measured_iterations());
    let heap_ok = !heap || now.heap.bytes <= base.heap.bytes + tolerance;
    tasks_ok && fds_ok && heap_ok
}

fn judges_fds(config: &Config, running: &fds::Running) -> bool {
    config.exclusive || running.overlapped().is_empty()
}

/// What a guarded run measured: the baseline, the heap between the
/// measured runs, the settled end, and how long settling took.
struct Measured<'a> {
    base: &'a Snapshot,
    runs: &'a [heap::HeapState],
    usage: heap::Usage,
    now: &'a Snapshot,
    checks: u32,
    waited: Duration,
}

fn assemble(
    spec: &Spec,
    config: &Config,
    rt: &Runtime,
    group: &Group,
    m: &Measured<'_>,
    running: &fds::Running,
) -> Report {
    let (base, now) = (m.base, m.now);
    let iterations = config.measured_iterations();
    let overlapped = running.overlapped();
    let fds_fail = config.exclusive || overlapped.is_empty();
    let mut report = Report {
        test: spec.test.path(),
        rerun: spec.test.rerun(),
        tasks: leaked_tasks(rt, group, base, now, config),
        registered_fds: now.registered.saturating_sub(base.registered) as usize,
        fds: leakscope_allocgroup::outside(|| {
            fds::appeared(&base.fds, &now.fds, |t| config.path_ignored(t))
                .into_iter()
                .map(|f| OpenFd {
                    fd: f.fd,
                    kind: f.kind.to_string(),
                    target: f.target,
                    link: f.link,
                })
                .collect()
        }),
        fds_fail,
        overlapped: if fds_fail { Vec::new() } else { overlapped },
        heap: Vec::new(),
        heap_fail: config.warmup > 0,
        heap_tolerance: config.heap_tolerance,
        peak: m.usage.peak_budget(config),
        allocated: m.usage.allocated_budget(config),
        iterations,
        warmup: config.warmup,
        blind: blind(),
        errors: config.bad_patterns.clone(),
        checks: m.checks,
        waited: m.waited,
    };
    let states: Vec<&heap::HeapState> = std::iter::once(&base.heap)
        .chain(m.runs)
        .chain(std::iter::once(&now.heap))
        .collect();
    if (config.limit_peak.is_some() && report.peak.is_none())
        || (config.limit_allocated.is_some() && report.allocated.is_none())
    {
        report.blind.push(
            "heap limits: no running totals for this test's allocation group \
             (no hooked allocator, or over 1,000 groups at once)"
                .to_string(),
        );
    }
    let heap = leakscope_allocgroup::outside(|| heap::growth(&states, config));
    if heap.unowned > 0 {
        report.blind.push(format!(
            "{} of heap grew with no frame of the workspace's code on its stack \
             (the runtime's or a library's own threads): not judged",
            bytes(heap.unowned)
        ));
    }
    if heap.judged > config.heap_tolerance * u64::from(iterations) {
        report.heap = heap
            .sites
            .into_iter()
            .map(|h| HeapSite {
                site: h.site,
                function: h.function,
                bytes_per_iteration: h.bytes.div_ceil(u64::from(iterations)),
            })
            .collect();
    }
    report
}

fn leaked_tasks(
    rt: &Runtime,
    group: &Group,
    base: &Snapshot,
    now: &Snapshot,
    config: &Config,
) -> Vec<LeakedTasks> {
    let new = tasks::NewTasks::between(&base.tasks, &now.tasks);
    if new.count() == 0 {
        return Vec::new();
    }
    let parked = {
        let _in = group.enter();
        rt.block_on(tasks::parked(rt.handle()))
    };
    let mut out = Vec::new();
    for (site, ids) in &new.by_site {
        if config.site_ignored(site) {
            continue;
        }
        let stacks =
            leakscope_allocgroup::outside(|| tasks::group_parked(ids, parked.as_ref(), config));
        let Some(stacks) = stacks else { continue };
        out.push(LeakedTasks {
            site: Some(site.clone()),
            count: ids.len(),
            parked: stacks,
        });
    }
    if new.unsited > 0 {
        out.push(LeakedTasks {
            site: None,
            count: new.unsited,
            parked: Vec::new(),
        });
    }
    out
}

/// What this build cannot see, for the message.
fn blind() -> Vec<String> {
    let mut out = Vec::new();
    if !cfg!(tokio_unstable) {
        out.push(
            "spawn sites and fd registrations: built without --cfg tokio_unstable \
             (tasks are counted, not placed)"
                .to_string(),
        );
    } else if !cfg!(feature = "taskdump") {
        out.push("where tasks are parked: leakscope-test built without `taskdump`".to_string());
    }
    if !leakscope_allocgroup::hooked() {
        out.push(
            "heap: the global allocator does not record allocation groups \
             (install leakscope_test::TrackingAllocator, or leakscope-agent's `alloc-groups`)"
                .to_string(),
        );
    }
    out
}

/// A global allocator that lets guarded tests see their heap, for test
/// binaries that do not use leakscope-agent's allocator:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: leakscope_test::TrackingAllocator = leakscope_test::TrackingAllocator::system();
/// ```
pub type TrackingAllocator = leakscope_allocgroup::Tracking<std::alloc::System>;
