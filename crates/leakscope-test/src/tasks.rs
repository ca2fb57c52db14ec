//! The tasks of one test's runtime, from tokio's spawn and terminate hooks.
//!
//! Every guarded test builds its own runtime, and the hooks are installed
//! on that runtime only, so the set below is exactly the test's tasks,
//! whatever else the process runs. Without `--cfg tokio_unstable` the hooks
//! do not exist and the runtime's alive-task count stands in: still exact
//! per test, but without spawn sites.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::Location;
use std::sync::{Arc, Mutex};

use tokio::runtime::{Builder, Runtime};
use tokio::task::Id;

/// Live tasks of one runtime, by id, with their spawn site.
#[derive(Default)]
pub(crate) struct TaskLog {
    live: Mutex<HashMap<Id, &'static Location<'static>>>,
}

/// What a runtime's tasks looked like at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskState {
    /// Live task ids by spawn site, when the hooks are installed.
    pub(crate) by_id: Option<HashMap<Id, String>>,
    /// The runtime's own count of alive tasks.
    pub(crate) alive: usize,
}

impl TaskLog {
    /// Installs the hooks on `builder`; a no-op without tokio_unstable.
    pub(crate) fn install(self: &Arc<Self>, builder: &mut Builder) {
        #[cfg(tokio_unstable)]
        {
            let on_spawn = Arc::clone(self);
            let on_end = Arc::clone(self);
            builder
                .on_task_spawn(move |meta| {
                    leakscope_allocgroup::outside(|| {
                        lock(&on_spawn.live).insert(meta.id(), meta.spawned_at());
                    })
                })
                .on_task_terminate(move |meta| {
                    leakscope_allocgroup::outside(|| {
                        lock(&on_end.live).remove(&meta.id());
                    })
                });
        }
        #[cfg(not(tokio_unstable))]
        let _ = builder;
    }

    pub(crate) fn state(&self, rt: &Runtime) -> TaskState {
        let by_id = cfg!(tokio_unstable).then(|| {
            lock(&self.live)
                .iter()
                .map(|(id, l)| (*id, format!("{}:{}:{}", l.file(), l.line(), l.column())))
                .collect()
        });
        TaskState {
            by_id,
            alive: rt.metrics().num_alive_tasks(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tasks alive now that were not at the baseline, by spawn site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NewTasks {
    /// Site → ids, when sites are known.
    pub(crate) by_site: BTreeMap<String, Vec<Id>>,
    /// New tasks without a known site (no hooks): the count difference.
    pub(crate) unsited: usize,
}

impl NewTasks {
    pub(crate) fn between(base: &TaskState, now: &TaskState) -> Self {
        match (&base.by_id, &now.by_id) {
            (Some(b), Some(n)) => {
                let known: HashSet<&Id> = b.keys().collect();
                let mut by_site: BTreeMap<String, Vec<Id>> = BTreeMap::new();
                for (id, site) in n {
                    if !known.contains(id) {
                        by_site.entry(site.clone()).or_default().push(*id);
                    }
                }
                NewTasks {
                    by_site,
                    unsited: 0,
                }
            }
            _ => NewTasks {
                by_site: BTreeMap::new(),
                unsited: now.alive.saturating_sub(base.alive),
            },
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.unsited + self.by_site.values().map(Vec::len).sum::<usize>()
    }
}

/// Where one task is parked: the frames of its stack, innermost first.
#[cfg(all(tokio_unstable, feature = "taskdump"))]
pub(crate) async fn parked(
    handle: &tokio::runtime::Handle,
) -> Option<HashMap<Id, Vec<crate::frames::Frame>>> {
    use std::time::Duration;
    // A current-thread runtime is dumped from inside itself; the dump
    // must not wait on a worker blocked for good, hence the deadline.
    let dump = tokio::time::timeout(Duration::from_secs(5), handle.dump())
        .await
        .ok()?;
    let out = leakscope_allocgroup::outside(|| {
        dump.tasks()
            .iter()
            .map(|t| {
                let stack = t
                    .trace()
                    .resolve_backtraces()
                    .first()
                    .map(crate::frames::of_dump)
                    .unwrap_or_default();
                (t.id(), stack)
            })
            .collect()
    });
    Some(out)
}

#[cfg(not(all(tokio_unstable, feature = "taskdump")))]
pub(crate) async fn parked(
    _: &tokio::runtime::Handle,
) -> Option<HashMap<Id, Vec<crate::frames::Frame>>> {
    None
}

/// The tasks `ids` grouped by where they are parked, or `None` when every
/// one is parked in a frame the config ignores.
pub(crate) fn group_parked(
    ids: &[Id],
    parked: Option<&HashMap<Id, Vec<crate::frames::Frame>>>,
    config: &crate::Config,
) -> Option<Vec<crate::Parked>> {
    let Some(parked) = parked else {
        return Some(Vec::new());
    };
    let mut groups: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    let mut ignored = 0;
    for id in ids {
        let stack = parked.get(id).map(Vec::as_slice).unwrap_or_default();
        if stack.iter().any(|f| config.frame_ignored(&f.function)) {
            ignored += 1;
            continue;
        }
        let leaf = stack
            .first()
            .map(|f| f.function.clone())
            .unwrap_or_else(|| "a future that is not tokio's (no leaf in the dump)".into());
        let own = stack.iter().find(|f| f.is_own()).map(|f| match &f.place {
            Some(p) => format!("{} ({p})", f.function),
            None => f.function.clone(),
        });
        *groups.entry((leaf, own)).or_default() += 1;
    }
    if ignored == ids.len() {
        return None;
    }
    let mut out: Vec<crate::Parked> = groups
        .into_iter()
        .map(|((leaf, own), count)| crate::Parked { count, leaf, own })
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.count));
    Some(out)
}
