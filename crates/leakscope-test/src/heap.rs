//! The heap a test's threads allocated and nobody freed, grouped by the
//! site that allocated it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use leakscope_allocgroup::{Group, GroupTotals};

use crate::report::Budget;

use crate::frames::{self, Frame};
use crate::Config;

/// Live bytes by raw stack at one moment.
pub(crate) struct HeapState {
    by_stack: HashMap<Vec<usize>, u64>,
    pub(crate) bytes: u64,
}

impl HeapState {
    fn live(&self, stack: &Vec<usize>) -> u64 {
        self.by_stack.get(stack).copied().unwrap_or(0)
    }
}

pub(crate) fn state(group: &Group) -> HeapState {
    let mut by_stack: HashMap<Vec<usize>, u64> = HashMap::new();
    let mut bytes = 0;
    for a in group.allocations() {
        bytes += a.size as u64;
        *by_stack.entry(a.frames).or_default() += a.size as u64;
    }
    HeapState { by_stack, bytes }
}

/// Growth at one allocation site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SiteGrowth {
    /// `path:line` of the innermost own frame, or the innermost frame's
    /// function when no frame is own code.
    pub(crate) site: String,
    /// The function at the site.
    pub(crate) function: String,
    pub(crate) bytes: u64,
}

/// Frames whose allocations the harness, the standard library or the
/// runtime keep for the process, not for the test: libtest's capture of
/// printed output grows with every line printed; and a thread the
/// runtime's blocking pool starts keeps its handle and name until it has
/// idled out (10 s), whoever's task made the pool grow.
const BUILT_IN_IGNORES: &[&str] = &[
    "std::io::stdio::",
    "tokio::runtime::blocking::pool::Spawner::spawn_thread",
    "std::thread::Builder::spawn",
    "std::thread::lifecycle::spawn_unchecked",
];

/// Frames only a thread-local's first initialization runs: the lazy
/// storage's slow path and the initializer `thread_local!` generates. That
/// first value (tokio's per-thread parker, a service's own per-thread
/// buffer) lives as long as its thread, not as long as the request that
/// first touched it, and the runtime's threads outlive the runs. What a
/// thread-local gains after its initializer is still judged. The lazy
/// storage's names before and after std renamed its slow path.
const THREAD_LOCAL_INIT: &[&str] = &[
    "std::sys::thread_local::native::lazy::Storage<T,D>::get_or_init_slow",
    "std::sys::thread_local::native::lazy::Storage<T,D>::initialize",
    "::__rust_std_internal_init_fn",
];

fn thread_local_init(frames: &[Frame]) -> bool {
    frames
        .iter()
        .any(|f| THREAD_LOCAL_INIT.iter().any(|i| f.function.contains(i)))
}

/// Whether a built-in ignore made the allocation on the caller's behalf:
/// only the frames inside the innermost own frame count. Deeper frames are
/// the thread's own start (every worker's stack ends in the closure
/// `std::thread::Builder::spawn` wraps around it), not what allocated.
fn allocated_by_built_in(frames: &[Frame]) -> bool {
    frames
        .iter()
        .take_while(|f| !f.is_own())
        .any(|f| BUILT_IN_IGNORES.iter().any(|i| f.function.contains(i)))
}

/// Where the heap grew over the measured runs, largest first, with what
/// the ignore options removed left out. `states` are the baseline, then
/// the heap after each measured run (the last one settled).
///
/// A site leaks when it grew in **every** measured run: CPython's
/// refleak rule (`regrtest -R`), which tells a leak (`[5, 5, 6]`) from
/// one-time work that lands in a measured run (`[3, 0, 0]`), a buffer
/// that doubled once, or a slot that keeps the latest value. Growth is
/// attributed per raw stack, then stacks are merged by site.
pub(crate) fn growth(states: &[&HeapState], config: &Config) -> Growth {
    let runs = states.len().saturating_sub(1);
    let mut sites: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut unowned = 0i64;
    for stack in changed_stacks(states) {
        let deltas: Vec<i64> = states
            .windows(2)
            .map(|w| w[1].live(stack) as i64 - w[0].live(stack) as i64)
            .collect();
        let grew: i64 = deltas.iter().sum();
        let frames = frames::resolve(stack);
        if allocated_by_built_in(&frames)
            || thread_local_init(&frames)
            || frames.iter().any(|f| config.frame_ignored(&f.function))
        {
            continue;
        }
        if !frames.iter().any(Frame::is_own) {
            // No frame of the workspace's code: the runtime's or a
            // library's own threads at work (a worker's first poll, a
            // thread's start). Said, never judged.
            unowned += grew;
            continue;
        }
        let (site, function) = site_of(&frames);
        if config.site_ignored(&site) {
            continue;
        }
        let per_run = sites
            .entry((site, function))
            .or_insert_with(|| vec![0; runs]);
        for (sum, d) in per_run.iter_mut().zip(deltas) {
            *sum += d;
        }
    }
    // What shrank offsets what grew: a connection's buffers freed while
    // the next one's were allocated at a sibling site is no growth.
    let net = sites.values().flatten().sum::<i64>().max(0) as u64;
    let mut out: Vec<SiteGrowth> = sites
        .into_iter()
        .filter(|(_, d)| d.iter().all(|d| *d > 0))
        .map(|((site, function), d)| SiteGrowth {
            site,
            function,
            bytes: d.iter().sum::<i64>() as u64,
        })
        .collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.site.cmp(&b.site)));
    let every_run: u64 = out.iter().map(|s| s.bytes).sum();
    Growth {
        judged: net.min(every_run),
        sites: out,
        unowned: unowned.max(0) as u64,
    }
}

/// Stacks whose live bytes differ between any two consecutive states.
fn changed_stacks<'a>(states: &[&'a HeapState]) -> BTreeSet<&'a Vec<usize>> {
    let mut out = BTreeSet::new();
    for w in states.windows(2) {
        let (a, b) = (w[0], w[1]);
        for (k, v) in &b.by_stack {
            if a.by_stack.get(k) != Some(v) {
                out.insert(k);
            }
        }
        for k in a.by_stack.keys() {
            if !b.by_stack.contains_key(k) {
                out.insert(k);
            }
        }
    }
    out
}

/// Heap growth after ignores: the figure that is judged (what grew in
/// every run, less what shrank elsewhere), and the sites that grew in
/// every run, which the message names.
pub(crate) struct Growth {
    pub(crate) judged: u64,
    pub(crate) sites: Vec<SiteGrowth>,
    /// Growth with no frame of the workspace's code on its stack.
    pub(crate) unowned: u64,
}

fn site_of(frames: &[Frame]) -> (String, String) {
    match frames.iter().find(|f| f.is_own()) {
        Some(f) => (
            f.place.clone().unwrap_or_else(|| f.function.clone()),
            f.function.clone(),
        ),
        None => {
            let f = frames
                .iter()
                .find(|f| !f.function.starts_with("leakscope_"));
            let function = f.map(|f| f.function.clone()).unwrap_or_else(|| "??".into());
            (function.clone(), function)
        }
    }
}

/// The most a measured run held at once and allocated, from the group's
/// running totals; `None` where they are not kept (no hooked allocator,
/// or more groups at once than slots).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Usage {
    peak: Option<u64>,
    allocated: Option<u64>,
}

impl Usage {
    /// Starts a run: the peak restarts from what is held now.
    pub(crate) fn begin(&self, group: &Group) -> Option<GroupTotals> {
        group.reset_peak();
        group.totals()
    }

    pub(crate) fn end(&mut self, group: &Group, start: Option<GroupTotals>) {
        let (Some(start), Some(end)) = (start, group.totals()) else {
            return;
        };
        if !leakscope_allocgroup::hooked() {
            return;
        }
        let peak = end.peak.saturating_sub(start.live);
        let allocated = end.allocated.saturating_sub(start.allocated);
        self.peak = Some(self.peak.unwrap_or(0).max(peak));
        self.allocated = Some(self.allocated.unwrap_or(0).max(allocated));
    }

    pub(crate) fn peak_budget(&self, config: &Config) -> Option<Budget> {
        Some(Budget {
            limit: config.limit_peak?,
            used: self.peak?,
        })
    }

    pub(crate) fn allocated_budget(&self, config: &Config) -> Option<Budget> {
        Some(Budget {
            limit: config.limit_allocated?,
            used: self.allocated?,
        })
    }
}
