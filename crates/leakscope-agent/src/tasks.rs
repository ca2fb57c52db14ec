//! Live tasks by spawn location, counted by tokio's own task hooks.
//!
//! console-subscriber counts tasks from tracing events it may drop under
//! load (measured: 0.065 of the true figure at 16,000 requests/s) and keeps
//! ~51 KB per finished task. The runtime's `on_task_spawn` /
//! `on_task_terminate` hooks see every spawn and every end, so these counts
//! are exact, and they cost two lock-free map operations per task.
//!
//! Adoption is the runtime builder:
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     leakscope_agent::tasks::runtime().build()?.block_on(async {
//!         // the service, as under #[tokio::main]
//!     });
//!     Ok(())
//! }
//! ```
//!
//! Invariants:
//! - A site's `live` is spawns minus terminations of tasks whose spawn the
//!   hooks saw. tokio calls the terminate hook for `spawn_blocking` tasks
//!   too but the spawn hook only for async ones; a termination whose spawn
//!   was not seen (a blocking task, or a task spawned before the hooks)
//!   is ignored, so no site ever goes negative.
//! - The hooks need `--cfg tokio_unstable`; without it [`install`] does
//!   nothing and [`installed`] is false, and the sidecar falls back to the
//!   console.

use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use leakscope_wire::{TaskSite, TaskSites};

#[cfg(feature = "taskdump")]
mod dump;
#[cfg(feature = "taskdump")]
pub use dump::dump;

/// Set to `off` to build [`runtime`] without the hooks, e.g. to measure
/// what they cost.
pub const ENV_HOOKS: &str = "LEAKSCOPE_TASK_HOOKS";

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Per spawn site. Keyed by the address of the `Location` static: the same
/// call site is the same static, and hashing a pointer is cheaper than a
/// path. Two statics for one `file:line:col` (a generic function
/// monomorphized apart) are merged when read.
struct Counters {
    location: &'static Location<'static>,
    spawned: AtomicU64,
    terminated: AtomicU64,
}

type SiteMap = papaya::HashMap<usize, Counters>;
/// Live task id → spawn site: what joins a task dump, which knows only ids,
/// to spawn locations; and what tells a termination we saw spawn.
type TaskMap = papaya::HashMap<tokio::task::Id, &'static Location<'static>>;

fn sites() -> &'static SiteMap {
    static SITES: std::sync::OnceLock<SiteMap> = std::sync::OnceLock::new();
    SITES.get_or_init(SiteMap::new)
}

fn tasks() -> &'static TaskMap {
    static TASKS: std::sync::OnceLock<TaskMap> = std::sync::OnceLock::new();
    TASKS.get_or_init(TaskMap::new)
}

fn key(location: &'static Location<'static>) -> usize {
    location as *const Location<'static> as usize
}

fn on_spawn(id: tokio::task::Id, location: &'static Location<'static>) {
    let sites = sites().pin();
    let c = sites.get_or_insert_with(key(location), || Counters {
        location,
        spawned: AtomicU64::new(0),
        terminated: AtomicU64::new(0),
    });
    c.spawned.fetch_add(1, Ordering::Relaxed);
    tasks().pin().insert(id, location);
}

fn on_terminate(id: tokio::task::Id) {
    if let Some(location) = tasks().pin().remove(&id) {
        if let Some(c) = sites().pin().get(&key(location)) {
            c.terminated.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where task `id` was spawned, while it lives.
pub fn spawned_at(id: tokio::task::Id) -> Option<&'static Location<'static>> {
    tasks().pin().get(&id).copied()
}

/// Installs the counting hooks on `builder`. They replace any spawn or
/// terminate hook set before (tokio keeps one of each).
pub fn install(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    #[cfg(tokio_unstable)]
    {
        INSTALLED.store(true, Ordering::Relaxed);
        builder
            .on_task_spawn(|meta| on_spawn(meta.id(), meta.spawned_at()))
            .on_task_terminate(|meta| on_terminate(meta.id()))
    }
    #[cfg(not(tokio_unstable))]
    {
        let _ = (on_spawn, on_terminate);
        builder
    }
}

/// `tokio::runtime::Builder::new_multi_thread().enable_all()`, what
/// `#[tokio::main]` builds, with the hooks installed unless
/// `LEAKSCOPE_TASK_HOOKS=off`.
pub fn runtime() -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    let off = std::env::var(ENV_HOOKS)
        .map(|v| matches!(v.trim(), "off" | "0" | "false"))
        .unwrap_or(false);
    if !off {
        install(&mut b);
    }
    b
}

/// Whether a runtime in this process was built with the hooks.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Live and spawned tasks by site, most live first; `None` without hooks.
pub fn snapshot() -> Option<TaskSites> {
    if !installed() {
        return None;
    }
    let mut merged: std::collections::BTreeMap<String, TaskSite> = Default::default();
    for c in sites().pin().values() {
        // Terminations first: a task that spawns and ends in between is
        // then counted spawned and live, never ended and unborn.
        let terminated = c.terminated.load(Ordering::Relaxed);
        let spawned = c.spawned.load(Ordering::Relaxed);
        let terminated = terminated.min(spawned);
        let l = c.location;
        let site = merged
            .entry(format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .or_default();
        site.live += spawned - terminated;
        site.spawned_total += spawned;
    }
    let mut sites: Vec<TaskSite> = merged
        .into_iter()
        .map(|(location, s)| TaskSite { location, ..s })
        .collect();
    sites.sort_by(|a, b| b.live.cmp(&a.live).then(a.location.cmp(&b.location)));
    Some(TaskSites {
        live: sites.iter().map(|s| s.live).sum(),
        spawned_total: sites.iter().map(|s| s.spawned_total).sum(),
        sites,
    })
}
