//! Tokio runtime metrics of the host's runtime.
//!
//! Read from the `Handle` the host started the agent in, never from the
//! agent's own runtime, so the agent's tasks are not counted. Figures that
//! tokio only exposes under `--cfg tokio_unstable` are `null` without it.

use serde::Serialize;
use tokio::runtime::Handle;

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeStats {
    /// "multi_thread" or "current_thread".
    pub flavor: &'static str,
    pub workers: usize,
    /// Tasks spawned and not yet finished: the figure a task leak grows.
    pub alive_tasks: usize,
    pub global_queue_depth: usize,
    /// Whether the build had `--cfg tokio_unstable` (the `null`s below).
    pub tokio_unstable: bool,
    /// Tasks spawned since the runtime started (cumulative).
    pub spawned_tasks_total: Option<u64>,
    pub blocking_threads: Option<usize>,
    pub idle_blocking_threads: Option<usize>,
    pub blocking_queue_depth: Option<usize>,
    pub remote_schedules_total: Option<u64>,
    pub budget_forced_yields_total: Option<u64>,
    pub io_driver_ready_total: Option<u64>,
    pub workers_detail: Vec<WorkerStats>,
    /// Live tasks by spawn site from the task hooks
    /// ([`crate::tasks::runtime`]); `null` when no runtime has them.
    pub hooks: Option<leakscope_rundir::TaskSites>,
    /// How long the agent's console endpoint keeps finished tasks, when it
    /// runs: a sidecar judging memory needs it, since every retained task
    /// holds ~51 KB until then ([`crate::console::retention`]).
    pub console_retention_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStats {
    pub busy_seconds_total: f64,
    pub parks_total: u64,
    pub local_queue_depth: Option<usize>,
    pub polls_total: Option<u64>,
    pub steals_total: Option<u64>,
}

pub fn stats(handle: &Handle) -> RuntimeStats {
    let m = handle.metrics();
    let flavor = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    let workers_detail = (0..m.num_workers())
        .map(|w| WorkerStats {
            busy_seconds_total: m.worker_total_busy_duration(w).as_secs_f64(),
            parks_total: m.worker_park_count(w),
            #[cfg(tokio_unstable)]
            local_queue_depth: Some(m.worker_local_queue_depth(w)),
            #[cfg(not(tokio_unstable))]
            local_queue_depth: None,
            #[cfg(tokio_unstable)]
            polls_total: Some(m.worker_poll_count(w)),
            #[cfg(not(tokio_unstable))]
            polls_total: None,
            #[cfg(tokio_unstable)]
            steals_total: Some(m.worker_steal_count(w)),
            #[cfg(not(tokio_unstable))]
            steals_total: None,
        })
        .collect();
    let mut s = RuntimeStats {
        flavor,
        workers: m.num_workers(),
        alive_tasks: m.num_alive_tasks(),
        global_queue_depth: m.global_queue_depth(),
        tokio_unstable: cfg!(tokio_unstable),
        spawned_tasks_total: None,
        blocking_threads: None,
        idle_blocking_threads: None,
        blocking_queue_depth: None,
        remote_schedules_total: None,
        budget_forced_yields_total: None,
        io_driver_ready_total: None,
        workers_detail,
        hooks: crate::tasks::snapshot(),
        console_retention_ms: crate::console::retention().map(|d| d.as_millis() as u64),
    };
    #[cfg(tokio_unstable)]
    {
        s.spawned_tasks_total = Some(m.spawned_tasks_count());
        s.blocking_threads = Some(m.num_blocking_threads());
        s.idle_blocking_threads = Some(m.num_idle_blocking_threads());
        s.blocking_queue_depth = Some(m.blocking_queue_depth());
        s.remote_schedules_total = Some(m.remote_schedule_count());
        s.budget_forced_yields_total = Some(m.budget_forced_yield_count());
        s.io_driver_ready_total = Some(m.io_driver_ready_count());
    }
    #[cfg(not(tokio_unstable))]
    let _ = &mut s;
    s
}
