//! What a guarded test may leave behind, and how long it waits for
//! stragglers.

use std::time::Duration;

/// Options of a guarded test. `Config::default()` ignores nothing, waits
/// for stragglers as goleak does (20 retries, backoff capped at 100 ms),
/// runs the body once and tolerates no heap growth.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub(crate) ignore_sites: Vec<String>,
    pub(crate) ignore_frames: Vec<String>,
    pub(crate) ignore_paths: Vec<glob::Pattern>,
    pub(crate) bad_patterns: Vec<String>,
    pub(crate) heap_tolerance: u64,
    pub(crate) limit_peak: Option<u64>,
    pub(crate) limit_allocated: Option<u64>,
    pub(crate) warmup: u32,
    pub(crate) iterations: u32,
    pub(crate) settle: Option<Duration>,
    pub(crate) exclusive: bool,
}

/// CPython's `regrtest -R 3:3` measures three runs after its warm-up.
const DEFAULT_ITERATIONS: u32 = 3;

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ignores tasks spawned at a site whose `file:line:col` contains
    /// `site` (`"src/pool.rs"`, `"src/pool.rs:41"`), and heap allocated
    /// there.
    pub fn ignore_site(mut self, site: impl Into<String>) -> Self {
        self.ignore_sites.push(site.into());
        self
    }

    /// Ignores tasks parked in, and heap allocated through, a frame whose
    /// function name contains `frame` (`"hyper::client::pool"`).
    pub fn ignore_frame(mut self, frame: impl Into<String>) -> Self {
        self.ignore_frames.push(frame.into());
        self
    }

    /// Ignores fds whose target matches the shell pattern (`/tmp/*.log`,
    /// `socket:*`, `anon_inode:[eventfd]`). A malformed pattern fails the
    /// test with the pattern's error rather than ignoring nothing.
    pub fn ignore_path(mut self, pattern: &str) -> Self {
        match glob::Pattern::new(pattern) {
            Ok(p) => self.ignore_paths.push(p),
            Err(e) => self.bad_patterns.push(format!("{pattern:?}: {e}")),
        }
        self
    }

    /// Heap growth tolerated per measured iteration, in bytes.
    pub fn heap_tolerance(mut self, bytes: u64) -> Self {
        self.heap_tolerance = bytes;
        self
    }

    /// Fails the test when its threads hold more than `bytes` of heap at
    /// once during a measured run, above what they held when the run
    /// began: pytest-memray's `limit_memory`, dhat's `max_bytes`. For
    /// memory held only while a request is in flight (a whole file
    /// buffered, an unbounded queue), which no leak check can see.
    pub fn limit_peak(mut self, bytes: u64) -> Self {
        self.limit_peak = Some(bytes);
        self
    }

    /// Fails the test when its threads allocate more than `bytes` in a
    /// measured run, freed or not: dhat's `total_bytes`. For allocation
    /// churn (a fresh buffer per chunk) that holds little at any moment.
    pub fn limit_allocated(mut self, bytes: u64) -> Self {
        self.limit_allocated = Some(bytes);
        self
    }

    /// Runs the body `n` times before the baseline is taken, so one-time
    /// initialization (a `OnceLock`, a pool filling, a cache reaching its
    /// cap) is not judged; heap growth only fails a test with `n >= 1`.
    pub fn warmup(mut self, n: u32) -> Self {
        self.warmup = n;
        self
    }

    /// Measured runs of the body after the warm-up (3 when unset, as
    /// CPython's refleak runs measure 3). Heap growth is reported per run,
    /// and a site is judged a leak only when it grew in every one.
    pub fn iterations(mut self, n: u32) -> Self {
        self.iterations = n;
        self
    }

    /// Keeps re-checking for up to `d` before failing, instead of goleak's
    /// schedule: for work that ends on a timer (a TTL, a graceful close).
    pub fn settle(mut self, d: Duration) -> Self {
        self.settle = Some(d);
        self
    }

    /// Runs while no other guarded test of the binary runs, so the
    /// process-wide fd difference is this test's alone and can fail it
    /// (files opened with `std::fs`, raw pipes, eventfds, timerfds).
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    pub(crate) fn measured_iterations(&self) -> u32 {
        match self.iterations {
            0 => DEFAULT_ITERATIONS,
            n => n,
        }
    }

    pub(crate) fn site_ignored(&self, site: &str) -> bool {
        self.ignore_sites.iter().any(|s| site.contains(s.as_str()))
    }

    pub(crate) fn frame_ignored(&self, function: &str) -> bool {
        self.ignore_frames
            .iter()
            .any(|f| function.contains(f.as_str()))
    }

    pub(crate) fn path_ignored(&self, target: &str) -> bool {
        self.ignore_paths.iter().any(|p| p.matches(target))
    }
}
