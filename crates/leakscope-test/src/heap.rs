//! The heap a test's threads allocated and nobody freed, grouped by the
//! site that allocated it.

use std::collections::{BTreeMap, HashMap};

use leakscope_allocgroup::Group;

use crate::frames::{self, Frame};
use crate::Config;

/// Live bytes by raw stack at one moment.
pub(crate) struct HeapState {
    by_stack: HashMap<Vec<usize>, u64>,
    pub(crate) bytes: u64,
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
/// printed output grows with every line printed, and a thread the
/// runtime's blocking pool starts keeps its handle and name until it has
/// idled out (10 s), whoever's task made the pool grow.
const BUILT_IN_IGNORES: &[&str] = &[
    "std::io::stdio::",
    "tokio::runtime::blocking::pool::Spawner::spawn_thread",
    "std::thread::Builder::spawn",
    "std::thread::lifecycle::spawn_unchecked",
];

/// Where the heap grew between two states, largest first, with what the
/// ignore options removed left out. Growth is attributed per raw stack,
/// then stacks are merged by site.
pub(crate) fn growth(base: &HeapState, now: &HeapState, config: &Config) -> Growth {
    let mut sites: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut unowned = 0i64;
    let stacks = now.by_stack.keys().chain(
        base.by_stack
            .keys()
            .filter(|k| !now.by_stack.contains_key(*k)),
    );
    for stack in stacks {
        let before = base.by_stack.get(stack).copied().unwrap_or(0);
        let after = now.by_stack.get(stack).copied().unwrap_or(0);
        let grew = after as i64 - before as i64;
        if grew == 0 {
            continue;
        }
        let frames = frames::resolve(stack);
        if frames
            .iter()
            .any(|f| BUILT_IN_IGNORES.iter().any(|i| f.function.contains(i)))
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
        *sites.entry((site, function)).or_default() += grew;
    }
    // What shrank offsets what grew: a connection's buffers freed while
    // the next one's were allocated at a sibling site is no growth.
    let net = sites.values().sum::<i64>().max(0) as u64;
    let mut out: Vec<SiteGrowth> = sites
        .into_iter()
        .filter(|(_, b)| *b > 0)
        .map(|((site, function), bytes)| SiteGrowth {
            site,
            function,
            bytes: bytes as u64,
        })
        .collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.site.cmp(&b.site)));
    Growth {
        net,
        sites: out,
        unowned: unowned.max(0) as u64,
    }
}

/// Heap growth after ignores: the net figure that is judged, and the sites
/// that grew, which the message names.
pub(crate) struct Growth {
    pub(crate) net: u64,
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
